//! The pipeline end to end, on one shared boot of the built-in guest: probes in
//! the guest kernel → ring buffer → agent → vsock → collector → outputs.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use guestscope::lab::LabOptions;
use guestscope_tests::{RunOutput, run_lab, stack_has, workload_binary};

/// The user workload: our fopen program under another name, given with
/// `--workload`, so it goes through the same path as any user's binary.
const USER_WORKLOAD: &str = "user-fopen";
const USER_ITERATIONS: u64 = 60;

fn run() -> &'static RunOutput {
    static RUN: OnceLock<RunOutput> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = guestscope_tests::target_dir().join("guestscope/test-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let user = dir.join(USER_WORKLOAD);
        std::fs::copy(workload_binary("fopen"), &user).unwrap();
        let opts = LabOptions {
            workloads: vec![format!("{} --iterations {USER_ITERATIONS}", user.display())],
            ..LabOptions::default()
        };
        run_lab("pipeline", opts)
    })
}

#[test]
fn the_run_completes_with_nothing_lost() {
    let r = run();
    let s = &r.summary;
    assert_eq!(s["run"]["outcome"]["complete"], true, "outcome: {}", s["run"]["outcome"]);
    assert_eq!(s["stream"]["seq"]["missing"], 0);
    assert_eq!(s["losses"]["events_missing"], 0);
    assert_eq!(s["losses"]["ring_full"], 0);
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(received as usize, r.events.len(), "events.jsonl has every received event");
    assert!(r.report.contains("## Workloads"));
}

#[test]
fn fopen_alloc_fd_events_carry_its_pid_and_an_alloc_fd_stack() {
    let r = run();
    let pid = r.workload("fopen")["pid"].as_u64().unwrap();
    let events: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(events.len() >= 50, "only {} alloc_fd events for fopen", events.len());
    for e in &events {
        assert_eq!(e["pid"].as_u64(), Some(pid));
    }
    let with_stack = events.iter().filter(|e| stack_has(e, "alloc_fd")).count();
    assert!(
        with_stack * 10 >= events.len() * 9,
        "{with_stack} of {} alloc_fd stacks contain alloc_fd; first: {}",
        events.len(),
        events[0]["stack"]
    );
}

#[test]
fn spin_lock_is_seen_through_alloc_fd() {
    let r = run();
    let through = r.events_of("fopen", "spin_lock").filter(|e| stack_has(e, "alloc_fd")).count();
    assert!(through > 0, "no spin_lock event of fopen has alloc_fd in its stack");
    let first = r.events_of("fopen", "spin_lock").find(|e| stack_has(e, "alloc_fd")).unwrap();
    assert!(stack_has(first, "_raw_spin_lock"), "stack starts at the lock: {}", first["stack"]);
}

#[test]
fn page_faults_are_attributed_to_malloc() {
    let r = run();
    let pid = r.workload("malloc")["pid"].as_u64().unwrap();
    let faults: Vec<_> = r.events_of("malloc", "page_fault_user").collect();
    // 16 MiB touched page by page, 4 times: thousands of faults.
    assert!(faults.len() >= 1000, "only {} user page faults for malloc", faults.len());
    assert!(faults.iter().all(|e| e["pid"].as_u64() == Some(pid)));
}

#[test]
fn no_event_comes_from_a_process_outside_the_filter() {
    let r = run();
    let workload_pids: BTreeSet<u64> =
        r.summary["workloads"].as_array().unwrap().iter().map(|w| w["pid"].as_u64().unwrap()).collect();
    let outside: Vec<_> = r.events.iter().filter(|e| !workload_pids.contains(&e["pid"].as_u64().unwrap())).collect();
    assert!(outside.is_empty(), "{} events from other pids, e.g. {}", outside.len(), outside[0]);
    assert_eq!(r.summary["stream"]["events_unattributed"], 0);
}

#[test]
fn a_user_workload_shows_up_with_its_own_events() {
    let r = run();
    let w = r.workload(USER_WORKLOAD);
    assert_eq!(w["status"], 0, "user workload output: {}", w["output"]);
    let pid = w["pid"].as_u64().unwrap();
    let n = r.events_of(USER_WORKLOAD, "alloc_fd").filter(|e| e["pid"].as_u64() == Some(pid)).count() as u64;
    assert!(n >= USER_ITERATIONS, "{n} alloc_fd events for {USER_ITERATIONS} iterations");
    assert!(r.report.contains(&format!("### {USER_WORKLOAD}")));
}
