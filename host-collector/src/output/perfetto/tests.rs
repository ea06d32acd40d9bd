//! Tests of the trace writer: what it writes decodes with the generated
//! `Trace`, each event once, guest packets on the guest machine and clock,
//! stacks interned and resolvable.

use std::collections::HashMap;

use super::protos::{Trace, trace_packet};
use super::*;

const JSONL: &str = r#"{"run_id":"r","ts_ns":50,"probe":"alloc_fd","cpu":0,"pid":100,"tid":100,"comm":"fopen","workload":"fopen","arg":"0x400","stack_id":1}
not json
{"run_id":"r","ts_ns":60,"probe":"spin_lock","cpu":1,"pid":100,"tid":101,"comm":"fopen","arg":"0xffff","lock":"jiffies_lock","stack_id":-1}
{"run_id":"r","ts_ns":70,"probe":"alloc_fd","cpu":0,"pid":100,"tid":100,"comm":"fopen","workload":"fopen","arg":"0x400","stack_id":1}
{"run_id":"r","ts_ns":80,"probe":"alloc_fd","cpu":0,"pid":100,"tid":100,"comm":"fopen","workload":"fopen","arg":"0x400","stack_id":2}
"#;

/// The stacks `JSONL` refers to.
fn stacks() -> Stacks {
    let stack = |stack_id: i32, frames: &[&str]| crate::run_files::stacks::StackLine {
        run_id: "r".into(),
        stack_id,
        frames: frames.iter().map(|f| f.to_string()).collect(),
        spin_lock_class: None,
    };
    Stacks::from_lines([
        stack(1, &["alloc_fd+0x1", "do_sys_openat2+0x8d"]),
        stack(2, &["alloc_fd+0x1", "__x64_sys_openat+0x20"]),
    ])
}

fn write() -> Trace {
    let mut w = TraceWriter::new(Vec::new(), vec![(0, 1000), (75, 1080)]);
    w.slice(&Slice {
        track: "boot (host clock)".into(),
        name: "kernel init".into(),
        start_ns: 1,
        end_ns: 2,
    })
    .unwrap();
    w.workload(100, "fopen", 10, 90).unwrap();
    assert_eq!(w.events_from_jsonl(JSONL.as_bytes(), &stacks()).unwrap(), 4);
    w.instant_on(
        "gdbstub",
        1070,
        "cr3",
        &[("cr3".into(), "0x4866000".into())],
    )
    .unwrap();
    assert_eq!(w.stack_counts(), (3, 2));
    let bytes = w.finish().unwrap();
    Trace::decode(bytes.as_slice()).unwrap()
}

fn event(p: &TracePacket) -> Option<&TrackEvent> {
    match &p.data {
        Some(trace_packet::Data::TrackEvent(e)) => Some(e),
        _ => None,
    }
}

fn seq(p: &TracePacket) -> Option<u32> {
    p.optional_trusted_packet_sequence_id
        .as_ref()
        .map(|s| match s {
            trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(id) => *id,
        })
}

#[test]
fn every_event_is_written_once_on_its_thread_track() {
    let trace = write();
    let threads: HashMap<u64, i32> = trace
        .packet
        .iter()
        .filter_map(|p| match &p.data {
            Some(trace_packet::Data::TrackDescriptor(d)) => {
                Some((d.uuid?, d.thread.as_ref()?.tid?))
            }
            _ => None,
        })
        .collect();
    assert_eq!(threads.len(), 2, "two threads of one process");
    let probes: Vec<(&TracePacket, &TrackEvent)> = trace
        .packet
        .iter()
        .filter_map(|p| Some((p, event(p)?)))
        .filter(|(_, e)| e.callstack_field.is_some() || e.debug_annotations.len() >= 2)
        .collect();
    assert_eq!(probes.len(), 4, "each event once");
    for (p, e) in &probes {
        assert!(threads.contains_key(&e.track_uuid.unwrap()));
        assert_eq!(p.machine_id, Some(GUEST_MACHINE));
        assert_eq!(seq(p), Some(GUEST_SEQ));
        // Guest times as stamped: the guest clock is the sequence's default.
        assert!([50, 60, 70, 80].contains(&p.timestamp.unwrap()));
        assert_eq!(p.timestamp_clock_id, None);
    }
    // Host packets: no machine id, host sequence.
    let boot = trace
        .packet
        .iter()
        .find(|p| event(p).is_some_and(|e| e.name_field == name_field("kernel init")))
        .unwrap();
    assert_eq!((boot.machine_id, seq(boot)), (None, Some(HOST_SEQ)));
}

#[test]
fn the_guest_sequence_starts_cleared_with_its_clock_and_snapshots() {
    let trace = write();
    let guest: Vec<&TracePacket> = trace
        .packet
        .iter()
        .filter(|p| seq(p) == Some(GUEST_SEQ))
        .collect();
    assert_eq!(
        guest[0].sequence_flags,
        Some(trace_packet::SequenceFlags::SeqIncrementalStateCleared as u32)
    );
    assert_eq!(
        guest[0]
            .trace_packet_defaults
            .as_ref()
            .unwrap()
            .timestamp_clock_id,
        Some(GUEST_CLOCK)
    );
    let snaps: Vec<Vec<(u32, u64)>> = guest
        .iter()
        .filter_map(|p| match &p.data {
            Some(trace_packet::Data::ClockSnapshot(s)) => Some(
                s.clocks
                    .iter()
                    .map(|c| (c.clock_id.unwrap(), c.timestamp.unwrap()))
                    .collect(),
            ),
            _ => None,
        })
        .collect();
    assert_eq!(
        snaps,
        vec![
            vec![(GUEST_CLOCK, 0), (HOST_CLOCK, 1000)],
            vec![(GUEST_CLOCK, 75), (HOST_CLOCK, 1080)]
        ]
    );
    assert!(guest.iter().all(|p| p.machine_id == Some(GUEST_MACHINE)));
}

#[test]
fn every_callstack_iid_resolves_to_interned_frames() {
    let trace = write();
    let (mut names, mut frames, mut stacks) = (HashMap::new(), HashMap::new(), HashMap::new());
    let mut defined = 0;
    let mut resolved = Vec::new();
    for p in trace.packet.iter().filter(|p| seq(p) == Some(GUEST_SEQ)) {
        if let Some(d) = &p.interned_data {
            for s in &d.function_names {
                assert!(
                    names
                        .insert(s.iid.unwrap(), s.str.clone().unwrap())
                        .is_none()
                );
            }
            for f in &d.frames {
                assert!(
                    frames
                        .insert(f.iid.unwrap(), f.function_name_id.unwrap())
                        .is_none()
                );
            }
            for c in &d.callstacks {
                defined += 1;
                assert!(stacks.insert(c.iid.unwrap(), c.frame_ids.clone()).is_none());
            }
        }
        if let Some(track_event::CallstackField::CallstackIid(iid)) =
            event(p).and_then(|e| e.callstack_field)
        {
            let text: Vec<String> = stacks[&iid]
                .iter()
                .map(|f| String::from_utf8(names[&frames[f]].clone()).unwrap())
                .collect();
            resolved.push(text);
        }
    }
    // Two distinct stacks, three distinct frames, each defined once; the empty
    // stack has no callstack.
    assert_eq!((defined, frames.len(), names.len()), (2, 3, 3));
    assert_eq!(resolved.len(), 3);
    assert_eq!(
        resolved[0],
        ["do_sys_openat2+0x8d", "alloc_fd+0x1"],
        "bottom frame first"
    );
    assert_eq!(resolved[0], resolved[1]);
    assert_eq!(resolved[2], ["__x64_sys_openat+0x20", "alloc_fd+0x1"]);
}

/// Rewrites `trace.perfetto-trace` from a run folder's `summary.json` and
/// `events.jsonl` (boot phases, the gdbstub's holds and snapshots, every event;
/// not the workload slices, whose guest times summary.json does not keep), to
/// measure and check the trace without booting a VM:
///
///     GUESTSCOPE_RUN_DIR=guestscope-out GUESTSCOPE_TRACE_OUT=/tmp/t.perfetto-trace \
///         cargo test --release -p guestscope-collector --lib perfetto -- --ignored
#[test]
#[ignore = "needs a run folder: GUESTSCOPE_RUN_DIR and GUESTSCOPE_TRACE_OUT"]
#[allow(
    clippy::too_many_lines,
    reason = "a measurement run by hand on a run folder, one scenario top to bottom"
)]
fn rewrite_a_runs_trace() {
    use crate::timeline::clock::{ClockMap, Timeline};
    use crate::timeline::holds::Holds;
    let dir = std::path::PathBuf::from(std::env::var("GUESTSCOPE_RUN_DIR").unwrap());
    let out = std::env::var("GUESTSCOPE_TRACE_OUT").unwrap();
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let fit = &s["timeline"]["fit"];
    let run = &s["timeline"]["snapshots"]["run"];
    let holds: Vec<(u64, u64, u64)> = serde_json::from_value(run["holds"].clone()).unwrap();
    let timeline = Timeline {
        map: ClockMap {
            offset_ns: fit["offset_ns"].as_f64().unwrap(),
            drift: fit["drift"].as_f64().unwrap(),
            guest_ref_ns: fit["guest_ref_ns"].as_u64().unwrap(),
            error_bound_ns: 0.0,
            consistent: true,
            samples: 0,
            best_rtt_ns: 0,
            span_ns: 0,
        },
        holds: Holds::with_slack(holds.clone()),
    };
    let events = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let stamps: Vec<u64> = crate::run_files::events::read_events(events.as_bytes())
        .map(|e| e.unwrap().ts_ns)
        .collect();
    let (first, last) = (*stamps.iter().min().unwrap(), *stamps.iter().max().unwrap());
    let points = guest_clock::points(&timeline, first, last);
    let mut w = TraceWriter::new(Vec::new(), points.clone());
    let b = &s["boot"];
    let ns = |v: &serde_json::Value| v.as_f64().map(|v| (v * 1e9) as u64);
    for (name, a, z) in [
        (
            "firmware, kernel load and decompression",
            Some(0),
            ns(&b["kernel_banner_s"]),
        ),
        (
            "kernel init",
            ns(&b["kernel_banner_s"]),
            ns(&b["init_start_s"]),
        ),
        (
            "user space to agent ready",
            ns(&b["init_start_s"]),
            ns(&b["agent_ready_s"]),
        ),
    ] {
        if let (Some(a), Some(z)) = (a, z) {
            w.slice(&Slice {
                track: "boot (host clock)".into(),
                name: name.into(),
                start_ns: a,
                end_ns: z,
            })
            .unwrap();
        }
    }
    for &(a, z, _) in &holds {
        w.slice(&Slice {
            track: "gdbstub (host clock)".into(),
            name: "VM held (guest clock stopped)".into(),
            start_ns: a,
            end_ns: z,
        })
        .unwrap();
    }
    for snap in run["snapshots"].as_array().unwrap() {
        let mut args = vec![("pid".to_string(), snap["pid"].to_string())];
        for r in snap["registers"].as_array().unwrap() {
            args.push((
                r[0].as_str().unwrap().into(),
                format!("{:#x}", r[1].as_u64().unwrap()),
            ));
        }
        w.instant_on(
            "gdbstub (host clock)",
            snap["host_ns"].as_u64().unwrap(),
            &format!("gdbstub snapshot at {}", run["symbol"].as_str().unwrap()),
            &args,
        )
        .unwrap();
    }
    let stacks = Stacks::read(std::io::BufReader::new(
        std::fs::File::open(dir.join("stacks.jsonl")).unwrap(),
    ))
    .unwrap();
    let n = w.events_from_jsonl(events.as_bytes(), &stacks).unwrap();
    let (frames, stacks) = w.stack_counts();
    let packets = w.packets;
    let bytes = w.finish().unwrap();
    std::fs::write(&out, &bytes).unwrap();
    // The largest gap between trace_processor's nearest-neighbour mapping and the fit.
    let worst = stamps
        .iter()
        .map(|&g| {
            let &(pg, ph) = points.iter().rev().find(|&&(pg, _)| pg <= g).unwrap();
            ((ph + (g - pg)) as f64 - timeline.to_host(g)).abs()
        })
        .fold(0.0, f64::max);
    eprintln!(
        "{out}: {} bytes, {packets} packets, {n} events, {frames} frames, {stacks} callstacks, \
         {} clock snapshots, worst mapping gap vs the fit {worst:.0} ns",
        bytes.len(),
        points.len()
    );
}
