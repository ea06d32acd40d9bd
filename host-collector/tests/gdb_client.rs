//! The gdbstub client against scripted stubs on a loopback socket: a replay of a
//! session recorded from QEMU 7.2 (PTI guest, breakpoint on entry_SYSCALL_64, page
//! walk to `current`), and stubs that misbehave (bad checksums, nacks, silence,
//! hang-ups, error replies, garbage).

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use guest_kernel::btf::TaskOffsets;
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{Access, CurrentReader, KernelLayout, MemoryPath};
use qemu_gdb_client::packet::{self, StopReply, ThreadId};
use qemu_gdb_client::{Client, ClientOptions, GdbError};

const I386_64BIT_XML: &str =
    include_str!("../../gdb-client/tests/fixtures/qemu-7.2-i386-64bit.xml");
const TARGET_XML: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>i386:x86-64</architecture><xi:include href="i386-64bit.xml"/></target>"#;
const QEMU_FEATURES: &str = "PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+";

/// What the stub received.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Got {
    Packet(String),
    Ack,
    Nack,
    Interrupt,
}

/// What the stub does about it.
enum Action {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Write nothing.
    Nothing,
    /// Hang up.
    Close,
}

/// `+` then the framed payload, as QEMU answers in ack mode.
fn ack_reply(payload: &str) -> Action {
    let mut v = b"+".to_vec();
    v.extend(packet::encode(payload.as_bytes()));
    Action::Send(v)
}

/// Answers the handshake like QEMU 7.2 (with `features` as the qSupported reply).
fn handshake(p: &str, features: &str) -> Option<Action> {
    if p.starts_with("qSupported") {
        return Some(ack_reply(features));
    }
    if let Some(rest) = p.strip_prefix("qXfer:features:read:") {
        let (annex, range) = rest.split_once(':').unwrap();
        let (off, len) = range.split_once(',').unwrap();
        let (off, len) = (
            usize::from_str_radix(off, 16).unwrap(),
            usize::from_str_radix(len, 16).unwrap(),
        );
        let file = match annex {
            "target.xml" => TARGET_XML,
            "i386-64bit.xml" => I386_64BIT_XML,
            _ => return Some(ack_reply("E00")),
        };
        let end = (off + len).min(file.len());
        let kind = if end == file.len() { 'l' } else { 'm' };
        return Some(ack_reply(&format!("{kind}{}", &file[off.min(end)..end])));
    }
    match p {
        "?" => Some(ack_reply("T05thread:p01.01;")),
        "qqemu.Supported" => Some(ack_reply("sstepbits;sstep;PhyMemMode")),
        "qqemu.PhyMemMode" => Some(ack_reply("0")),
        "D;1" => Some(ack_reply("OK")),
        _ => None,
    }
}

struct Stub {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Got>>>,
    thread: JoinHandle<()>,
}

impl Stub {
    /// A stub on 127.0.0.1 that answers the handshake and hands the rest to `handler`.
    fn spawn(features: &'static str, handler: impl FnMut(&Got) -> Action + Send + 'static) -> Stub {
        Stub::spawn_with_greeting(features, Vec::new(), handler)
    }

    /// Like [`Stub::spawn`], writing `greeting` as soon as the client connects.
    fn spawn_with_greeting(
        features: &'static str,
        greeting: Vec<u8>,
        mut handler: impl FnMut(&Got) -> Action + Send + 'static,
    ) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = Arc::clone(&log);
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(&greeting).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                // Take one item off the buffer, or read more.
                let item = loop {
                    match buf.first() {
                        Some(b'+') => {
                            buf.remove(0);
                            break Some(Got::Ack);
                        }
                        Some(b'-') => {
                            buf.remove(0);
                            break Some(Got::Nack);
                        }
                        Some(0x03) => {
                            buf.remove(0);
                            break Some(Got::Interrupt);
                        }
                        Some(b'$') => {
                            if let Some(h) = buf.iter().position(|&b| b == b'#')
                                && buf.len() >= h + 3
                            {
                                let frame: Vec<u8> = buf.drain(..h + 3).collect();
                                let body = &frame[1..h];
                                let cs = u8::from_str_radix(
                                    std::str::from_utf8(&frame[h + 1..]).unwrap(),
                                    16,
                                )
                                .unwrap();
                                assert_eq!(cs, packet::checksum(body), "client checksum");
                                let payload = packet::decode_body(body).unwrap();
                                break Some(Got::Packet(String::from_utf8(payload).unwrap()));
                            }
                        }
                        Some(other) => panic!("stray byte {other:#x} from the client"),
                        None => {}
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break None,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let Some(item) = item else { return };
                log2.lock().unwrap().push(item.clone());
                let action = match &item {
                    Got::Packet(p) => handshake(p, features).unwrap_or_else(|| handler(&item)),
                    _ => handler(&item),
                };
                match action {
                    Action::Send(bytes) => {
                        if s.write_all(&bytes).is_err() {
                            return;
                        }
                    }
                    Action::Nothing => {}
                    Action::Close => return,
                }
            }
        });
        Stub { addr, log, thread }
    }

    fn packets(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|g| match g {
                Got::Packet(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn finish(self) -> Vec<Got> {
        self.thread.join().unwrap();
        Arc::try_unwrap(self.log).unwrap().into_inner().unwrap()
    }
}

fn quick() -> ClientOptions {
    ClientOptions {
        reply_timeout: Duration::from_millis(500),
        ..ClientOptions::default()
    }
}

fn acks_only(got: &Got) -> Action {
    match got {
        Got::Ack => Action::Nothing,
        other => panic!("unexpected {other:?}"),
    }
}

// ---- the recorded QEMU session, replayed ---------------------------------------

/// (client packet payload, raw bytes QEMU sent back) pairs from a recorded session.
fn recorded_exchanges(jsonl: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in jsonl.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let data = v["data"].as_str().unwrap();
        if v["dir"] == ">" {
            let data = data.trim_start_matches('+');
            if data.is_empty() {
                continue;
            }
            let mut d = packet::Decoder::new(1 << 16);
            d.feed(data.as_bytes());
            let Some(packet::Frame::Packet(p)) = d.next_frame().unwrap() else {
                panic!("bad client frame {data}")
            };
            out.push((String::from_utf8(p).unwrap(), Vec::new()));
        } else {
            out.last_mut()
                .expect("stub spoke first")
                .1
                .extend_from_slice(data.as_bytes());
        }
    }
    out
}

/// task_struct offsets of the recorded guest (Debian 6.1.0-56-amd64, from its BTF).
fn debian_6_1_offsets() -> TaskOffsets {
    TaskOffsets {
        pid: 0x970,
        tgid: 0x974,
        comm: 0xba0,
        comm_len: 16,
        pcpu_hot_current_task: None,
    }
}

#[test]
fn replays_a_recorded_qemu_pti_session() {
    let mut script = recorded_exchanges(include_str!(
        "../../gdb-client/tests/fixtures/qemu-7.2-pti-session.jsonl"
    ));
    // Not in the recording: what detach sends after it.
    for (p, r) in [
        ("z1,ffffffffa3c00080,1", "+$OK#9a"),
        ("Qqemu.PhyMemMode:0", "+$OK#9a"),
        ("D;1", "+$OK#9a"),
    ] {
        script.push((p.to_string(), r.as_bytes().to_vec()));
    }
    let expected: Vec<String> = script.iter().map(|(p, _)| p.clone()).collect();
    let mut next = script.into_iter();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // A strict replayer: every client packet must be the recorded one, in order.
    let replayer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut d = packet::Decoder::new(1 << 16);
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match d.next_frame().unwrap() {
                Some(packet::Frame::Packet(p)) => {
                    let p = String::from_utf8(p).unwrap();
                    let (want, reply) = next
                        .next()
                        .unwrap_or_else(|| panic!("unscripted packet {p}"));
                    assert_eq!(p, want, "packet #{}", seen.len());
                    seen.push(p);
                    s.write_all(&reply).unwrap();
                }
                Some(packet::Frame::Ack) => {}
                Some(other) => panic!("unexpected {other:?}"),
                None => match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => d.feed(&chunk[..n]),
                },
            }
        }
    });

    let mut c = Client::connect(addr, ClientOptions::default()).unwrap();
    assert_eq!(
        c.last_stop().and_then(StopReply::thread),
        Some(ThreadId {
            pid: Some(1),
            tid: 1
        })
    );
    assert!(!c.no_ack_mode(), "QEMU 7.2 does not offer QStartNoAckMode");
    assert!(c.supports_phys_mem_mode());
    assert_eq!(
        c.threads().unwrap(),
        vec![ThreadId {
            pid: Some(1),
            tid: 1
        }]
    );
    let regs = c.read_registers().unwrap();
    assert_eq!(regs.len(), 608);
    assert_eq!(regs.get("cr3"), Some(0x1ff0_5000));
    assert_eq!(c.read_register("cr3").unwrap(), 0x1ff0_5000);
    let kgs = c.read_register("k_gs_base").unwrap();
    let gs = c.read_register("gs_base").unwrap();
    let base = guest_kernel::kernel::per_cpu_base(gs, kgs).unwrap();
    assert_eq!(base, 0xffff_8e95_5f20_0000);
    // User page tables of a PTI guest: the per-cpu area is not mapped.
    match c.read_memory(base + 0x1fb80, 8) {
        Err(GdbError::Memory { addr, code, .. }) => {
            assert_eq!((addr, code.as_str()), (0xffff_8e95_5f21_fb80, "14"))
        }
        other => panic!("{other:?}"),
    }
    c.insert_hw_breakpoint(0xffff_ffff_a3c0_0080).unwrap();
    let stop = c.cont(Duration::from_secs(5)).unwrap();
    assert_eq!(stop.signal(), Some(5));
    assert_eq!(c.read_register("rip").unwrap(), 0xffff_ffff_a3c0_0080);
    assert!(matches!(
        c.read_memory(base + 0x1fb80, 8),
        Err(GdbError::Memory { .. })
    ));
    let kallsyms = Kallsyms::parse(include_str!("fixtures/gdb/qemu-7.2-pti-kallsyms.txt")).unwrap();
    let mut reader =
        CurrentReader::new(KernelLayout::new(&kallsyms, debian_6_1_offsets()).unwrap());
    let ids = reader.current_ids(&mut c, base, Access::Auto).unwrap();
    assert_eq!(
        (ids.pid, ids.tgid, ids.path),
        (94, 94, MemoryPath::PageWalk)
    );
    assert_eq!(ids.task, 0xffff_8e95_4279_4c80);
    c.step().unwrap();
    let cur = reader.current(&mut c).unwrap();
    assert_eq!(
        (cur.ids.pid, cur.comm.as_str(), cur.per_cpu_base),
        (94, "init", base)
    );
    // The VM was held from the connection to the resume, and from the breakpoint stop,
    // through the single step (counted as stepping), to the detach.
    let holds = c.detach_with_holds().unwrap();
    assert_eq!(holds.len(), 2, "{holds:?}");
    assert_eq!(holds[0].stepping, Duration::ZERO);
    assert!(
        holds[1].stepping > Duration::ZERO && holds[1].stepping <= holds[1].to - holds[1].from,
        "{holds:?}"
    );
    assert!(holds.iter().all(|h| h.from <= h.to));
    assert!(
        holds.windows(2).all(|w| w[0].to <= w[1].from),
        "holds overlap: {holds:?}"
    );
    let seen = replayer.join().unwrap();
    assert_eq!(seen, expected);
}

// ---- scripted misbehaviour -------------------------------------------------------

#[test]
fn refuses_non_loopback_addresses_without_connecting() {
    let err =
        Client::connect("192.0.2.1:1234".parse::<SocketAddr>().unwrap(), quick()).unwrap_err();
    assert!(matches!(err, GdbError::NotLoopback(_)), "{err}");
}

#[test]
fn connection_refused_is_an_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)), quick()).unwrap_err();
    assert!(matches!(err, GdbError::Connect { .. }), "{err}");
}

#[test]
fn unsolicited_stop_on_connect_is_not_taken_for_the_reply() {
    // The stub writes a stop before anything is asked, as QEMU does when a client
    // connects to a running VM; the handshake's first reply must still be qSupported's.
    let greeting = packet::encode(b"T02thread:p01.01;");
    let stub = Stub::spawn_with_greeting(QEMU_FEATURES, greeting, |got| match got {
        Got::Packet(p) if p == "qfThreadInfo" => ack_reply("mp01.01,p01.02"),
        Got::Packet(p) if p == "qsThreadInfo" => ack_reply("l"),
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    assert_eq!(
        c.last_stop().and_then(StopReply::signal),
        Some(5),
        "the '?' reply came after the unsolicited T02"
    );
    assert!(c.features().iter().any(|f| f == "multiprocess+"));
    assert_eq!(c.threads().unwrap().len(), 2);
    drop(c); // detaches
    let got = stub.finish();
    assert!(got.contains(&Got::Packet("D;1".into())));
}

#[test]
fn no_ack_mode_is_used_when_offered() {
    let stub = Stub::spawn(
        "PacketSize=1000;qXfer:features:read+;multiprocess+;QStartNoAckMode+",
        move |got| match got {
            Got::Packet(p) if p == "QStartNoAckMode" => ack_reply("OK"),
            Got::Packet(p) if p == "p1d" => Action::Send(packet::encode(b"0050f01f00000000")),
            Got::Ack => Action::Nothing,
            other => panic!("{other:?}"),
        },
    );
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    assert!(c.no_ack_mode());
    assert_eq!(c.read_register("cr3").unwrap(), 0x1ff0_5000);
    c.detach().unwrap();
    let got = stub.finish();
    let switch = got
        .iter()
        .position(|g| *g == Got::Packet("QStartNoAckMode".into()))
        .unwrap();
    // One ack for the OK reply, then none.
    assert_eq!(got[switch + 1], Got::Ack);
    assert!(!got[switch + 2..].contains(&Got::Ack), "{got:?}");
}

#[test]
fn bad_checksums_are_nacked_and_nacks_retransmitted() {
    let mut sent_bad = false;
    let mut nacked = false;
    let stub = Stub::spawn(QEMU_FEATURES, move |got| match got {
        Got::Packet(p) if p == "p1d" && !sent_bad => {
            sent_bad = true;
            Action::Send(b"+$0050f01f00000000#00".to_vec())
        }
        Got::Packet(p) if p == "p1d" => ack_reply("0050f01f00000000"),
        Got::Packet(p) if p == "p1e" && !nacked => {
            nacked = true;
            Action::Send(b"-".to_vec())
        }
        Got::Packet(p) if p == "p1e" => ack_reply("f006150000000000"),
        Got::Nack => Action::Nothing,
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    // The corrupted reply is refused with '-'; the stub here does not resend on its
    // own (QEMU does not either), so the client's wait ends in a timeout...
    assert!(matches!(
        c.read_register("cr3"),
        Err(GdbError::Timeout { .. })
    ));
    // ... and a nack of our packet makes the client resend it.
    assert_eq!(c.read_register("cr4").unwrap(), 0x1506f0);
    assert_eq!(stub.packets().iter().filter(|p| *p == "p1e").count(), 2);
    drop(c);
    let got = stub.finish();
    assert!(
        got.contains(&Got::Nack),
        "the client nacked the bad checksum"
    );
}

#[test]
fn error_empty_and_garbage_replies_become_errors() {
    let stub = Stub::spawn(QEMU_FEATURES, |got| match got {
        Got::Packet(p) if p.starts_with("Hg") => ack_reply("E22"),
        Got::Packet(p) if p == "p1d" => ack_reply(""), // no 'p': fall back to 'g'
        Got::Packet(p) if p == "g" => ack_reply(&"00".repeat(608)),
        Got::Packet(p) if p.starts_with("m1000,") => ack_reply("zz"),
        Got::Packet(p) if p.starts_with("m2000,") => ack_reply("E14"),
        Got::Packet(p) if p.starts_with("Z1") => ack_reply(""),
        Got::Packet(p) if p.starts_with("Qqemu.PhyMemMode") => ack_reply("E01"),
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    assert!(
        matches!(c.select_thread(ThreadId { pid: Some(1), tid: 2 }), Err(GdbError::Refused { ref code, .. }) if code == "22")
    );
    assert_eq!(c.read_register("cr3").unwrap(), 0, "read through 'g'");
    assert!(matches!(
        c.read_register("nope"),
        Err(GdbError::UnknownRegister(_))
    ));
    assert!(matches!(
        c.read_memory(0x1000, 4),
        Err(GdbError::Malformed(_))
    ));
    assert!(matches!(
        c.read_memory(0x2000, 4),
        Err(GdbError::Memory { addr: 0x2000, .. })
    ));
    assert!(matches!(
        c.insert_hw_breakpoint(0xffff_ffff_8100_0000),
        Err(GdbError::Unsupported { .. })
    ));
    assert!(matches!(
        c.set_phys_mem_mode(true),
        Err(GdbError::Refused { .. })
    ));
    drop(c);
    stub.finish();
}

#[test]
fn a_silent_stub_times_out_and_a_hang_up_is_closed() {
    let stub = Stub::spawn(QEMU_FEATURES, |got| match got {
        Got::Packet(p) if p == "p10" => Action::Nothing,
        Got::Packet(p) if p == "p1d" => Action::Close,
        Got::Packet(p) if p.starts_with('D') => ack_reply("OK"),
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    let t0 = std::time::Instant::now();
    assert!(matches!(
        c.read_register("rip"),
        Err(GdbError::Timeout { .. })
    ));
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        c.read_register("cr3"),
        Err(GdbError::Closed | GdbError::Io(_))
    ));
    drop(c); // must not hang or panic on a dead socket
    stub.finish();
}

#[test]
fn stub_that_hangs_up_during_the_handshake() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut b = [0u8; 256];
        let _ = s.read(&mut b);
        let _ = s.write_all(b"+$PacketSize=10");
    });
    let err = Client::connect(addr, quick()).unwrap_err();
    assert!(matches!(err, GdbError::Closed), "{err}");
    t.join().unwrap();
}

#[test]
fn continue_wait_and_interrupt() {
    let stub = Stub::spawn(QEMU_FEATURES, |got| match got {
        Got::Packet(p) if p == "c" => ack_reply_no_stop(),
        Got::Interrupt => Action::Send(packet::encode(b"T02thread:p01.01;")),
        Got::Packet(p) if p == "s" => ack_reply("T05thread:p01.01;"),
        Got::Packet(p) if p == "Hgp1.2" => ack_reply("OK"),
        Got::Packet(p) if p == "vCont?" => ack_reply("vCont;c;C;s;S"),
        Got::Packet(p) if p == "vCont;s:p1.2" => ack_reply("T05thread:p01.02;"),
        Got::Packet(p) if p == "vCont;s:p1.3" => ack_reply("T05thread:p01.02;"),
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    c.resume().unwrap();
    assert!(c.is_running());
    assert!(
        matches!(
            c.read_register("cr3"),
            Err(GdbError::UnexpectedReply { .. })
        ),
        "no reads while running"
    );
    assert!(matches!(c.step(), Err(GdbError::UnexpectedReply { .. })));
    assert_eq!(c.wait_stop(Duration::from_millis(100)).unwrap(), None);
    let stop = c.interrupt().unwrap();
    assert_eq!(stop.signal(), Some(2));
    assert!(!c.is_running());
    // cont() interrupts by itself when no stop comes.
    assert_eq!(
        c.cont(Duration::from_millis(100)).unwrap().signal(),
        Some(2)
    );
    assert_eq!(c.step().unwrap().signal(), Some(5));
    // Stepping one vCPU: vCont;s:thread, checked against the stop's thread.
    let stop = c
        .step_thread(ThreadId {
            pid: Some(1),
            tid: 2,
        })
        .unwrap();
    assert_eq!(
        stop.thread(),
        Some(ThreadId {
            pid: Some(1),
            tid: 2
        })
    );
    assert!(matches!(
        c.step_thread(ThreadId {
            pid: Some(1),
            tid: 3
        }),
        Err(GdbError::UnexpectedReply { .. })
    ));
    // The stop named thread 2, which QEMU makes current: no Hg needed for it.
    c.select_thread(ThreadId {
        pid: Some(1),
        tid: 2,
    })
    .unwrap();
    c.select_thread(ThreadId {
        pid: Some(1),
        tid: 2,
    })
    .unwrap();
    let rts = c.round_trips();
    c.detach().unwrap();
    assert!(rts >= 6);
    let packets = stub.packets();
    assert_eq!(packets.iter().filter(|p| p.starts_with("Hg")).count(), 0);
    assert_eq!(
        packets.iter().filter(|p| *p == "vCont?").count(),
        1,
        "asked once"
    );
    stub.finish();
}

/// QEMU acks `c` and says nothing until the target stops.
fn ack_reply_no_stop() -> Action {
    Action::Send(b"+".to_vec())
}

#[test]
fn target_exit_while_running_is_an_error_value() {
    let stub = Stub::spawn(QEMU_FEATURES, |got| match got {
        Got::Packet(p) if p == "c" => ack_reply("W00"),
        other => acks_only(other),
    });
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    assert!(matches!(
        c.cont(Duration::from_secs(1)),
        Err(GdbError::TargetGone(StopReply::Exited { code: 0 }))
    ));
    drop(c);
    stub.finish();
}

#[test]
fn reads_are_split_to_the_packet_size() {
    let stub = Stub::spawn(
        "PacketSize=100;qXfer:features:read+;multiprocess+",
        |got| match got {
            Got::Packet(p) if p.starts_with('m') => {
                let (_, len) = p[1..].split_once(',').unwrap();
                let len = usize::from_str_radix(len, 16).unwrap();
                ack_reply(&"ab".repeat(len))
            }
            other => acks_only(other),
        },
    );
    let mut c = Client::connect(stub.addr, quick()).unwrap();
    let bytes = c.read_memory(0x1000, 300).unwrap();
    assert_eq!(bytes, vec![0xab; 300]);
    let reads: Vec<String> = stub
        .packets()
        .into_iter()
        .filter(|p| p.starts_with('m'))
        .collect();
    assert_eq!(reads, vec!["m1000,7c", "m107c,7c", "m10f8,34"]);
    drop(c);
    stub.finish();
}
