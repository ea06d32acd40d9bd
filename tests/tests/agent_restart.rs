//! An agent killed mid-run comes back: the guest's init restarts it, the new agent
//! resumes after the workloads already started, and the collector keeps the events
//! from before and after, reporting the gap.

use guestscope::lab::LabOptions;
use guestscope_tests::{BUSYBOX, run_lab, stack_has, workload_binary};

#[test]
fn a_killed_agent_is_restarted_and_the_run_continues() {
    let fopen = workload_binary("fopen");
    let p = fopen.display();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!("{p} --iterations 40"),
            // A second's wait lets the host acknowledge fopen's events first.
            format!("kill={BUSYBOX} sh -c 'sleep 1; killall -9 guestscope-agent'"),
            format!("{p} --iterations 60"),
        ],
        probes: vec!["alloc_fd".into()],
        // Killing the agent (root's process) takes root.
        workloads_as_root: true,
        ..LabOptions::default()
    };
    let r = run_lab("agent-restart", opts);
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "{}",
        s["run"]["outcome"]
    );
    let restarts = s["stream"]["agent_restarts"].as_array().unwrap();
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    let restart = &restarts[0];
    assert_eq!(restart["interrupted_workload"], "kill", "{restart}");
    let gap = restart["gap_s"].as_f64().expect("the gap's length");
    assert!(gap > 0.0 && gap < 30.0, "gap {gap} s");
    assert_eq!(restart["events_before"]["alloc_fd"], 40, "{restart}");
    let outages = s["stream"]["link"]["outages"].as_array().unwrap();
    let new_pid = outages
        .iter()
        .find_map(|o| o["restarted_agent"].as_u64())
        .expect("an outage names the new agent");
    assert!(new_pid > 1, "new agent pid {new_pid}");
    // Both halves' events, each workload's own.
    for (name, iterations) in [("fopen", 40), ("fopen#2", 60)] {
        let w = r.workload(name);
        assert_eq!(w["status"], 0, "{name}: {w}");
        let alloc: Vec<_> = r.events_of(name, "alloc_fd").collect();
        assert_eq!(
            alloc.len(),
            iterations,
            "{name}: one alloc_fd per iteration"
        );
        assert!(alloc.iter().all(|e| stack_has(e, "alloc_fd")), "{name}");
    }
    // The new agent's counters account for its own events.
    let probe = s["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alloc_fd")
        .expect("alloc_fd in the probes");
    assert_eq!(probe["unaccounted"], 0, "{probe}");
    assert!(
        r.report
            .contains("The agent died and the guest restarted it"),
        "the report does not say so"
    );
}
