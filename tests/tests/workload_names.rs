//! The same program as several workloads in one run: unnamed repeats are told apart
//! by position (`fopen`, `fopen#2`), a `NAME=` names one, the binary goes into the
//! guest once, and each workload's events are its own.

use guestscope::lab::LabOptions;
use guestscope_tests::{run_lab, stack_has, workload_binary};

#[test]
fn one_program_three_workloads_each_with_its_own_events() {
    let fopen = workload_binary("fopen");
    let p = fopen.display();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!("{p} --iterations 30"),
            format!("{p} --iterations 70"),
            format!("short={p} --iterations 10"),
        ],
        probes: vec!["alloc_fd".into()],
        ..LabOptions::default()
    };
    let r = run_lab("workload-names", opts);
    let names: Vec<&str> = r.summary["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fopen", "fopen#2", "short"], "{}", r.dir.display());
    for (name, iterations) in [("fopen", 30), ("fopen#2", 70), ("short", 10)] {
        assert_eq!(r.workload(name)["status"], 0, "{name}");
        assert_eq!(r.workload(name)["events"]["alloc_fd"], iterations, "{name}");
        let alloc: Vec<_> = r.events_of(name, "alloc_fd").collect();
        assert_eq!(
            alloc.len(),
            iterations,
            "{name}: one alloc_fd per iteration"
        );
        assert!(alloc.iter().all(|e| stack_has(e, "alloc_fd")), "{name}");
    }
}
