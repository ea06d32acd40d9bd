use proptest::prelude::*;

use super::*;
use crate::event::ProbeKind;

fn event(seq: u64) -> RawEvent {
    RawEvent {
        arg: 0xffff_ffff_8280_7a40,
        cpu: 1,
        tid: 43,
        stack_id: 7,
        ..RawEvent::new(ProbeKind::SpinLock, 42, 1_000 + seq)
    }
    .with_comm("fopen")
}

fn sample_records() -> Vec<Record> {
    vec![
        Record {
            seq: 0,
            body: Body::Hello(Hello {
                agent_version: "0.1.0".into(),
                kernel_release: "6.1.0-test".into(),
                cpus: 1,
                agent_start_ns: 5,
                monotonic_ns: 6,
                agent_pid: 77,
            }),
        },
        Record {
            seq: 1,
            body: Body::Events((0..100).map(event).collect()),
        },
        Record {
            seq: 2,
            body: Body::Stack {
                id: 7,
                ips: vec![0xffff_ffff_8100_0000, 1, 2],
            },
        },
        Record {
            seq: 3,
            body: Body::Artifact {
                name: "kallsyms".into(),
                offset: 0,
                data: b"ffff t x\n".to_vec(),
                last: true,
            },
        },
        Record {
            seq: 4,
            body: Body::Heartbeat {
                monotonic_ns: 123_456_789,
            },
        },
        Record {
            seq: 5,
            body: Body::Args(vec![EventArgs {
                tid: 101,
                ts_ns: 1_000_000,
                args: [0xffff_8880_0000_1000, 4096, 0, 1, u64::MAX],
            }]),
        },
        Record {
            seq: 6,
            body: Body::Tallies(Tallies {
                pid: 42,
                counts: vec![
                    Tally {
                        kind: ProbeKind::SpinLock as u32,
                        stack_id: 7,
                        hits: 1 << 40,
                    },
                    Tally {
                        kind: ProbeKind::SpinLock as u32,
                        stack_id: -2,
                        hits: 1,
                    },
                ],
            }),
        },
        Record {
            seq: 7,
            body: Body::ProgramRuns(ProgramRuns {
                pid: 42,
                programs: vec![ProgramRun {
                    program: "spin_lock_fentry".into(),
                    runs: 12_345,
                    run_ns: u64::MAX,
                }],
            }),
        },
        Record {
            seq: 8,
            body: Body::Finished(Totals::default()),
        },
    ]
}

#[test]
fn frames_round_trip_through_a_stream() {
    let records = sample_records();
    let mut stream = Vec::new();
    for r in &records {
        write_frame(&mut stream, r).unwrap();
    }
    let mut reader = FrameReader::new(stream.as_slice());
    for want in &records {
        assert_eq!(&reader.next_record().unwrap(), want);
    }
    assert!(matches!(reader.next_record(), Err(DecodeError::Eof)));
    assert_eq!(reader.bytes_read(), stream.len() as u64);
}

#[test]
fn header_layout_is_as_documented() {
    let frame = encode_frame(&sample_records()[0]).unwrap();
    assert_eq!(&frame[0..4], b"GSCP");
    assert_eq!(u16::from_le_bytes([frame[4], frame[5]]), WIRE_VERSION);
    assert_eq!(&frame[6..8], &[0, 0]);
    let len = u32::from_le_bytes(frame[8..12].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - HEADER_LEN);
}

#[test]
fn packed_events_layout_is_as_documented() {
    let first = RawEvent {
        arg: 0x1122_3344_5566_7788,
        stack_id: 7,
        tid: 43,
        ..RawEvent::new(ProbeKind::SpinLock, 42, 1_000)
    }
    .with_comm("fopen");
    // Five nanoseconds later, another lock: only the time and `arg` change.
    let second = RawEvent {
        ts_ns: 1_005,
        arg: 0x99,
        ..first
    };
    let mut out = Vec::new();
    packed::pack(&mut out, &[first, second]);
    let mut want = vec![2]; // two events
    // The first, against an all-zero event: kind, pid, tid, arg and comm changed.
    want.push(1 | 4 | 8 | 32 | 128);
    want.extend([0xD0, 0x0F]); // time +1000, zigzag 2000 as a varint
    want.push(14); // stack 7, zigzag
    want.extend([ProbeKind::SpinLock as u8, 42, 43]);
    want.extend(0x1122_3344_5566_7788u64.to_le_bytes());
    want.extend(*b"fopen\0\0\0\0\0\0\0\0\0\0\0");
    // The second: arg changed.
    want.extend([32, 10, 14]);
    want.extend(0x99u64.to_le_bytes());
    assert_eq!(out, want);
    assert_eq!(packed::unpack(&out), Ok(vec![first, second]));
}

#[test]
fn artifact_bytes_are_a_length_and_the_bytes() {
    let record = Record {
        seq: 5,
        body: Body::Artifact {
            name: "btf".into(),
            offset: 300,
            data: vec![0xAB; 200],
            last: true,
        },
    };
    let frame = encode_frame(&record).unwrap();
    // seq 5, variant, the name, offset 300, then 200 as a varint and the bytes
    // themselves, then `last`: what postcard writes for any sequence of u8.
    let variant = postcard::to_allocvec(&Body::Artifact {
        name: String::new(),
        offset: 0,
        data: Vec::new(),
        last: false,
    })
    .unwrap()[0];
    let mut want = vec![5, variant, 3];
    want.extend(*b"btf");
    want.extend([0xAC, 0x02, 0xC8, 0x01]);
    want.extend([0xAB; 200]);
    want.push(1);
    assert_eq!(&frame[HEADER_LEN..], want.as_slice());
    assert_eq!(decode_payload(&frame[HEADER_LEN..]).unwrap(), record);
}

#[test]
fn bad_magic_is_rejected() {
    let mut frame = encode_frame(&sample_records()[0]).unwrap();
    frame[0] = b'X';
    assert!(matches!(
        decode_frame(&frame),
        Err(DecodeError::BadMagic(_))
    ));
}

#[test]
fn newer_wire_version_is_rejected_with_both_versions() {
    let mut frame = encode_frame(&sample_records()[0]).unwrap();
    frame[4..6].copy_from_slice(&(WIRE_VERSION + 1).to_le_bytes());
    match decode_frame(&frame) {
        Err(e @ DecodeError::UnsupportedVersion { got, supported }) => {
            assert_eq!(got, WIRE_VERSION + 1);
            assert_eq!(supported, WIRE_VERSION);
            assert!(e.to_string().contains("upgrade"));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn oversized_length_is_rejected_before_allocating() {
    let mut frame = encode_frame(&sample_records()[0]).unwrap();
    frame[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
    assert!(matches!(
        decode_frame(&frame),
        Err(DecodeError::TooLarge(_))
    ));
}

#[test]
fn truncation_anywhere_is_reported_not_panicked() {
    let frame = encode_frame(&sample_records()[1]).unwrap();
    for cut in 1..frame.len() {
        let mut reader = FrameReader::new(&frame[..cut]);
        assert!(
            matches!(reader.next_record(), Err(DecodeError::Truncated { .. })),
            "cut at {cut}"
        );
    }
}

#[test]
fn corrupt_payload_is_an_error() {
    let mut frame = encode_frame(&sample_records()[0]).unwrap();
    // An enum tag far outside Body's variants.
    frame[HEADER_LEN + 1] = 0xfb;
    frame[HEADER_LEN + 2] = 0xff;
    assert!(decode_frame(&frame).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The decoder never panics on arbitrary bytes after a valid header.
    #[test]
    fn decoder_survives_arbitrary_payloads(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut frame = Vec::new();
        frame.extend_from_slice(&MAGIC);
        frame.extend_from_slice(&WIRE_VERSION.to_le_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        let _ = decode_frame(&frame);
    }

    /// The decoder never panics on arbitrary bytes, header included.
    #[test]
    fn decoder_survives_arbitrary_streams(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut reader = FrameReader::new(bytes.as_slice());
        for _ in 0..4 {
            if reader.next_record().is_err() { break; }
        }
    }

    /// Any event batch round-trips exactly.
    #[test]
    fn events_round_trip(seq in any::<u64>(), ts in any::<u64>(), pid in any::<u32>(), stack in any::<i32>()) {
        let mut e = event(0);
        e.ts_ns = ts; e.pid = pid; e.stack_id = stack;
        let rec = Record { seq, body: Body::Events(vec![e; 3]) };
        let (back, used) = decode_frame(&encode_frame(&rec).unwrap()).unwrap();
        prop_assert_eq!(back, rec);
        prop_assert!(used > HEADER_LEN);
    }
}

// ---- Whole streams ----

fn arb_event() -> impl Strategy<Value = RawEvent> {
    (
        any::<u64>(),
        any::<u64>(),
        1u32..5,
        any::<u32>(),
        any::<i32>(),
        any::<[u8; 16]>(),
    )
        .prop_map(|(ts_ns, arg, kind, pid, stack_id, comm)| RawEvent {
            ts_ns,
            arg,
            ip: arg ^ ts_ns,
            kind,
            cpu: pid % 4,
            pid,
            tid: pid,
            stack_id,
            flags: 0,
            comm,
        })
}

fn arb_body() -> impl Strategy<Value = Body> {
    use proptest::collection::vec;
    prop_oneof![
        any::<u64>().prop_map(|monotonic_ns| Body::Heartbeat { monotonic_ns }),
        (any::<u32>(), vec(any::<u64>(), 0..8)).prop_map(|(id, ips)| Body::Stack { id, ips }),
        ("[a-z]{0,8}", ".{0,40}").prop_map(|(level, message)| Body::Log { level, message }),
        (vec(any::<u8>(), 0..64), any::<u64>(), any::<bool>()).prop_map(|(data, offset, last)| {
            Body::Artifact {
                name: "kallsyms".into(),
                offset,
                data,
                last,
            }
        }),
        vec(arb_event(), 0..24).prop_map(Body::Events),
        (any::<u32>(), "[0-9a-f]{0,64}").prop_map(|(agent_pid, secret)| Body::Connect(Connect {
            agent_pid,
            agent_start_ns: 1,
            connection: 2,
            after: Some(LinkLoss {
                lost_ns: 1,
                restored_ns: 2,
                attempts: 3,
                why: "closed".into(),
                acked: 4
            }),
            secret,
        })),
        (any::<u32>(), any::<u64>())
            .prop_map(|(id, guest_ns)| Body::ClockEcho(ClockEcho { id, guest_ns })),
    ]
}

fn arb_stream() -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(arb_body(), 1..30).prop_map(|bodies| {
        bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Record {
                seq: i as u64,
                body,
            })
            .collect()
    })
}

fn encode_all(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for r in records {
        write_frame(&mut bytes, r).unwrap();
        ends.push(bytes.len());
    }
    (bytes, ends)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A stream of any records decodes to the same records, in order, then ends cleanly.
    #[test]
    fn whole_streams_round_trip_in_sequence(records in arb_stream()) {
        let (bytes, _) = encode_all(&records);
        let mut reader = FrameReader::new(bytes.as_slice());
        for (i, want) in records.iter().enumerate() {
            let got = reader.next_record().unwrap();
            prop_assert_eq!(got.seq, i as u64);
            prop_assert_eq!(&got, want);
        }
        prop_assert!(matches!(reader.next_record(), Err(DecodeError::Eof)));
        prop_assert_eq!(reader.bytes_read(), bytes.len() as u64);
    }

    /// What a link that drops and resends puts on the wire (each connection resends from
    /// an earlier record), de-duplicated by sequence number as the collector does, is the
    /// original stream exactly: nothing lost, nothing twice.
    #[test]
    fn resent_streams_deduplicate_to_the_original(records in arb_stream(), cuts in proptest::collection::vec((0usize..30, 0usize..30), 0..4)) {
        let n = records.len();
        let mut wire = Vec::new();
        let mut sent = 0;
        for (upto, back) in cuts {
            let upto = upto.min(n).max(sent);
            wire.extend_from_slice(&records[sent..upto]);
            // The next connection resends from an unacknowledged record.
            sent = upto.saturating_sub(back.min(upto));
        }
        wire.extend_from_slice(&records[sent..]);
        let (bytes, _) = encode_all(&wire);
        let mut reader = FrameReader::new(bytes.as_slice());
        let mut next = 0u64;
        let mut applied = Vec::new();
        let mut duplicates = 0;
        loop {
            match reader.next_record() {
                Ok(r) if r.seq < next => duplicates += 1,
                Ok(r) => {
                    prop_assert_eq!(r.seq, next, "a gap");
                    next = r.seq + 1;
                    applied.push(r);
                }
                Err(DecodeError::Eof) => break,
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        prop_assert_eq!(&applied, &records);
        prop_assert_eq!(duplicates, wire.len() - records.len());
    }

    /// A stream damaged anywhere (a byte flipped, or cut short) never panics the
    /// decoder, and every record in the frames before the damage comes out intact.
    #[test]
    fn damaged_streams_keep_the_intact_prefix(records in arb_stream(), at in any::<proptest::sample::Index>(), flip in 1u8..=255, cut in any::<bool>()) {
        let (mut bytes, ends) = encode_all(&records);
        let pos = at.index(bytes.len());
        if cut {
            bytes.truncate(pos);
        } else {
            bytes[pos] ^= flip;
        }
        let intact = ends.iter().take_while(|&&end| end <= pos).count();
        let mut reader = FrameReader::new(bytes.as_slice());
        let mut decoded = Vec::new();
        while decoded.len() < records.len() + 4 {
            match reader.next_record() {
                Ok(r) => decoded.push(r),
                Err(_) => break,
            }
        }
        prop_assert!(decoded.len() >= intact, "{} records decoded, {} intact before byte {}", decoded.len(), intact, pos);
        prop_assert_eq!(&decoded[..intact], &records[..intact]);
    }

    /// Replies (host → guest) round-trip, and garbage is an error, not a panic.
    #[test]
    fn replies_round_trip_and_garbage_is_an_error(next in any::<u64>(), id in any::<u32>(), garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut frames = encode_reply(&Reply::Ack { next }).unwrap();
        frames.extend(encode_reply(&Reply::ClockProbe { id }).unwrap());
        frames.extend(encode_reply(&Reply::Released).unwrap());
        let mut reader = FrameReader::new(frames.as_slice());
        prop_assert_eq!(reader.next_reply().unwrap(), Reply::Ack { next });
        prop_assert_eq!(reader.next_reply().unwrap(), Reply::ClockProbe { id });
        prop_assert_eq!(reader.next_reply().unwrap(), Reply::Released);
        let mut reader = FrameReader::new(garbage.as_slice());
        let _ = reader.next_reply();
    }
}

/// Checks (or, with `GUESTSCOPE_WRITE_FUZZ_SEEDS=1`, writes) the seed inputs of the
/// `wire_decode` fuzz target: one frame per record kind of [`sample_records`], a
/// stream of all of them, and a reply stream. They must follow the current wire
/// version, or the fuzzer would start from inputs the header check rejects.
#[test]
fn fuzz_seeds_are_current() {
    let mut seeds: Vec<(String, Vec<u8>)> = sample_records()
        .iter()
        .map(|r| {
            let name = format!("seed-{}-{}", r.seq, body_name(&r.body));
            (name, encode_frame(r).unwrap())
        })
        .collect();
    seeds.push(("seed-stream".into(), encode_all(&sample_records()).0));
    let replies = [
        Reply::Ack { next: 6 },
        Reply::ClockProbe { id: 3 },
        Reply::Released,
    ];
    seeds.push((
        "seed-replies".into(),
        replies
            .iter()
            .flat_map(|r| encode_reply(r).unwrap())
            .collect(),
    ));
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wire_decode");
    check_or_write_seeds(&dir, &seeds);
}

fn body_name(body: &Body) -> String {
    format!("{body:?}")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_lowercase()
}

/// Compares each seed with its file in `dir`, or writes them all when
/// `GUESTSCOPE_WRITE_FUZZ_SEEDS` is set.
fn check_or_write_seeds(dir: &std::path::Path, seeds: &[(String, Vec<u8>)]) {
    // Seeds of record kinds or places that no longer exist.
    let leftovers: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("seed-") && !seeds.iter().any(|(n, _)| *n == name)
        })
        .collect();
    if std::env::var_os("GUESTSCOPE_WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        for path in leftovers {
            std::fs::remove_file(path).unwrap();
        }
        return;
    }
    assert!(
        leftovers.is_empty(),
        "{leftovers:?} are no seeds of the current records: rerun this test with GUESTSCOPE_WRITE_FUZZ_SEEDS=1"
    );
    for (name, bytes) in seeds {
        let path = dir.join(name);
        let kept = std::fs::read(&path).unwrap_or_default();
        assert!(
            kept == *bytes,
            "{} is stale: rerun this test with GUESTSCOPE_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}
