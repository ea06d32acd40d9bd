use guestscope_common::wire::{Body, Record, WorkloadExited, WorkloadStarted};

use super::*;

const KALLSYMS: &str = "ffffffff81000000 T _text\nffffffff81200000 t alloc_fd\nffffffff81300000 T _raw_spin_lock\nffffffff82000000 D jiffies_lock\n";

fn ev(kind: ProbeKind, pid: u32, stack_id: i32, arg: u64) -> RawEvent {
    RawEvent {
        arg,
        stack_id,
        ..RawEvent::new(kind, pid, 10)
    }
    .with_comm("fopen")
}

/// The guest's kallsyms ([`KALLSYMS`]) as the agent sends it.
fn kallsyms() -> Body {
    Body::Artifact {
        name: "kallsyms".into(),
        offset: 0,
        data: KALLSYMS.as_bytes().to_vec(),
        last: true,
    }
}

fn feed(s: &mut Session<Vec<u8>>, bodies: Vec<Body>) {
    for b in bodies {
        let seq = s.seq.next;
        s.apply(Record { seq, body: b }).unwrap();
    }
}

fn started(name: &str, pid: u32) -> Body {
    Body::WorkloadStarted(WorkloadStarted {
        name: name.into(),
        pid,
        argv: vec![name.into()],
        start_ns: 1,
    })
}

#[test]
fn events_are_symbolized_attributed_and_written_as_json_lines() {
    let mut s = Session::new(Vec::new());
    feed(
        &mut s,
        vec![
            kallsyms(),
            started("fopen", 100),
            Body::Stack {
                id: 3,
                ips: vec![0xffffffff81300010, 0xffffffff81200020],
            },
            Body::Events(vec![
                ev(ProbeKind::AllocFd, 100, 3, 1024),
                ev(ProbeKind::SpinLock, 100, 3, 0xffffffff82000000),
            ]),
            Body::WorkloadExited(WorkloadExited {
                name: "fopen".into(),
                pid: 100,
                status: 0,
                end_ns: 20,
                output: String::new(),
                timed_out: false,
            }),
        ],
    );
    let out = String::from_utf8(s.events_out.clone()).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["probe"], "alloc_fd");
    assert_eq!(lines[0]["workload"], "fopen");
    assert_eq!(lines[0]["run_id"], s.run_id());
    assert!(lines[0].get("stack").is_none(), "stacks are by id only");
    assert_eq!(
        s.stack(lines[0]["stack_id"].as_i64().unwrap() as i32)[1],
        "alloc_fd+0x20"
    );
    assert_eq!(lines[1]["lock"], "jiffies_lock");
    let w = &s.workloads[0];
    assert_eq!(w.events["alloc_fd"], 1);
    assert_eq!(w.named_locks["jiffies_lock"], 1);
    assert!(w.exited.is_some());
    let top = s.top_stacks(0, ProbeKind::AllocFd.name(), 5);
    assert_eq!(top[0].0, 1);
    assert_eq!(top[0].2, vec!["_raw_spin_lock+0x10", "alloc_fd+0x20"]);
}

#[test]
fn duplicates_are_dropped_and_gaps_counted() {
    let mut s = Session::new(Vec::new());
    s.apply(Record {
        seq: 0,
        body: started("a", 1),
    })
    .unwrap();
    s.apply(Record {
        seq: 0,
        body: Body::Events(vec![ev(ProbeKind::AllocFd, 1, -1, 0)]),
    })
    .unwrap();
    s.apply(Record {
        seq: 3,
        body: Body::Events(vec![ev(ProbeKind::AllocFd, 1, -1, 0)]),
    })
    .unwrap();
    assert_eq!(s.events_received, 1);
    assert_eq!(
        s.events_by_probe["alloc_fd"], 1,
        "a duplicate's events are not counted"
    );
    assert_eq!(s.seq.duplicates, 1);
    assert_eq!(s.seq.missing, 2);
}

#[test]
fn events_with_no_active_workload_and_unknown_pid_are_unattributed() {
    let mut s = Session::new(Vec::new());
    feed(
        &mut s,
        vec![Body::Events(vec![ev(ProbeKind::SpinLock, 9, -1, 0)])],
    );
    assert_eq!(s.events_unattributed, 1);
}

#[test]
fn a_stack_referenced_before_it_arrived_is_counted() {
    let mut s = Session::new(Vec::new());
    feed(
        &mut s,
        vec![
            started("a", 1),
            Body::Events(vec![ev(ProbeKind::AllocFd, 1, 8, 0)]),
        ],
    );
    assert_eq!(s.events_stack_unknown, 1);
}

#[test]
fn user_probe_events_are_named_by_function_and_offset() {
    let k = Kallsyms::parse(KALLSYMS).unwrap();
    let name = |kind, ip| user_probe_name(kind, ip, Some(&k));
    assert_eq!(
        name(ProbeKind::Kprobe, 0xffffffff81200000),
        "kprobe:alloc_fd"
    );
    assert_eq!(
        name(ProbeKind::Kprobe, 0xffffffff81200004),
        "kprobe:alloc_fd+4"
    );
    assert_eq!(
        name(ProbeKind::Fentry, 0xffffffff81200000),
        "fentry:alloc_fd"
    );
    assert_eq!(
        name(ProbeKind::Kretprobe, 0xffffffff81300000),
        "kretprobe:_raw_spin_lock"
    );
    assert_eq!(
        user_probe_name(ProbeKind::Fentry, 0x1234, None),
        "fentry:0x1234"
    );
}

#[test]
fn a_user_probe_event_gets_the_arguments_sent_before_it() {
    let mut s = Session::new(Vec::new());
    let entry = |ts, tid, arg| RawEvent {
        ip: 0xffffffff81200000,
        tid,
        ts_ns: ts,
        arg,
        ..RawEvent::new(ProbeKind::Fentry, 100, ts)
    };
    feed(
        &mut s,
        vec![
            kallsyms(),
            started("fopen", 100),
            Body::Args(vec![
                guestscope_common::wire::EventArgs {
                    tid: 100,
                    ts_ns: 20,
                    args: [1, 2, 3, 4, 5],
                },
                guestscope_common::wire::EventArgs {
                    tid: 101,
                    ts_ns: 20,
                    args: [1, 9, 3, 4, 5],
                },
            ]),
            // Same time on another thread: each event takes its own arguments.
            Body::Events(vec![entry(20, 100, 7), entry(20, 101, 7)]),
            // A built-in probe carries none.
            Body::Events(vec![ev(ProbeKind::AllocFd, 100, -1, 1024)]),
        ],
    );
    let out = String::from_utf8(s.events_out.clone()).unwrap();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["probe"], "fentry:alloc_fd");
    assert_eq!(
        lines[0]["args"],
        serde_json::json!(["0x7", "0x1", "0x2", "0x3", "0x4", "0x5"])
    );
    assert_eq!(lines[1]["args"][2], "0x9");
    assert!(lines[2].get("args").is_none(), "{}", lines[2]);
    let seen = &s.user_probe_values["fentry:alloc_fd"];
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0].counts[&7], 2);
    assert_eq!(seen[2].counts.len(), 2, "rdx took 2 and 9");
    assert!(s.pending_args.is_empty());
}

#[test]
fn tallies_count_in_their_workload_and_stack_but_write_no_event_line() {
    use guestscope_common::wire::{Tallies, Tally};
    let mut s = Session::new(Vec::new());
    feed(
        &mut s,
        vec![
            kallsyms(),
            started("fopen", 100),
            Body::Stack {
                id: 3,
                ips: vec![0xffffffff81300010, 0xffffffff81200020],
            },
            Body::Events(vec![ev(ProbeKind::SpinLock, 100, 3, 0xffffffff82000000)]),
            Body::Tallies(Tallies {
                pid: 100,
                counts: vec![
                    Tally {
                        kind: ProbeKind::SpinLock as u32,
                        stack_id: 3,
                        hits: 41,
                    },
                    Tally {
                        kind: ProbeKind::SpinLock as u32,
                        stack_id: 9,
                        hits: 2,
                    },
                ],
            }),
        ],
    );
    let lines = String::from_utf8(s.events_out.clone()).unwrap();
    assert_eq!(lines.lines().count(), 1, "a tally is not an event line");
    assert_eq!(s.events_received, 1);
    assert_eq!(s.events_tallied, 43);
    assert_eq!(s.tallied_of_current_agent("spin_lock"), 43);
    assert_eq!(s.events_by_probe["spin_lock"], 1);
    assert_eq!(s.events_stack_unknown, 2, "stack 9 never arrived");
    let w = &s.workloads[0];
    assert_eq!(w.events["spin_lock"], 44);
    assert_eq!(w.tallied["spin_lock"], 43);
    // Only the recorded hit's lock address is known.
    assert_eq!(w.named_locks["jiffies_lock"], 1);
    let top = s.top_stacks(0, ProbeKind::SpinLock.name(), 5);
    assert_eq!(
        top[0].0, 42,
        "the recorded hit and the tallied ones share a stack"
    );
    // An agent that takes over starts its own count.
    let next = s.seq.next;
    s.agent_restarted(next);
    assert_eq!(s.tallied_of_current_agent("spin_lock"), 0);
}

#[test]
fn program_runs_go_to_their_workload_by_pid_and_into_its_summary() {
    use guestscope_common::wire::{ProgramRun, ProgramRuns};
    let run = |program: &str, runs, run_ns| ProgramRun {
        program: program.into(),
        runs,
        run_ns,
    };
    let mut s = Session::new(Vec::new());
    feed(
        &mut s,
        vec![
            kallsyms(),
            started("fopen", 100),
            started("cpuinfo", 200),
            // fopen's, though cpuinfo is the workload running now.
            Body::ProgramRuns(ProgramRuns {
                pid: 100,
                programs: vec![
                    run("alloc_fd", 400, 1_000_000),
                    run("spin_lock_fentry", 3, 0),
                ],
            }),
        ],
    );
    assert_eq!(s.workloads[0].program_runs.len(), 2);
    assert!(s.workloads[1].program_runs.is_empty());
    let (_, workloads, _, _) = crate::output::summary::collect(&mut s);
    let programs = &workloads[0].programs;
    assert_eq!(programs[0].program, "alloc_fd");
    assert_eq!(programs[0].runs, 400);
    assert_eq!(programs[0].ns_per_run, 2_500.0);
    assert_eq!(programs[1].ns_per_run, 0.0);
    assert!(workloads[1].programs.is_empty());
    // Without statistics the summary has no `programs` at all.
    let json = serde_json::to_value(&workloads[1]).unwrap();
    assert!(json.get("programs").is_none(), "{json}");
}
