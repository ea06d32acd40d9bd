//! `--program-stats`: the kernel times every run of the eBPF programs, and the summary and
//! the report give each program's runs and time inside it per workload. The runs count
//! every hit of the probe, whichever process made it, so they are at least the
//! workload's own events of that probe.

use guestscope::lab::LabOptions;
use guestscope_tests::{run_lab, workload_binary};
use serde_json::Value;

const OPENS: u64 = 200;

#[test]
fn each_program_reports_its_runs_and_time_per_workload() {
    let fopen = workload_binary("fopen");
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} --iterations {OPENS}", fopen.display())],
        program_stats: true,
        ..LabOptions::default()
    };
    let r = run_lab("program-stats", opts);
    let dir = r.dir.display();
    let w = r.workload("fopen");
    let programs = w["programs"]
        .as_array()
        .unwrap_or_else(|| panic!("{dir}: no programs in {w}"));
    let program = |name: &str| -> &Value {
        programs
            .iter()
            .find(|p| p["program"] == name)
            .unwrap_or_else(|| panic!("{dir}: {name} not among {programs:?}"))
    };
    for (name, probe) in [
        ("alloc_fd_fentry", "alloc_fd"),
        ("spin_lock_fentry", "spin_lock"),
    ] {
        let p = program(name);
        let runs = p["runs"].as_u64().unwrap();
        let events = w["events"][probe].as_u64().unwrap();
        assert!(
            runs >= events && events > 0,
            "{dir}: {name} ran {runs} times for the workload's {events} {probe} events"
        );
        let (run_ns, per_run) = (
            p["run_ns"].as_u64().unwrap(),
            p["ns_per_run"].as_f64().unwrap(),
        );
        assert!(run_ns > 0, "{dir}: {p}");
        assert!(
            (per_run - run_ns as f64 / runs as f64).abs() < 1.0,
            "{dir}: {p}"
        );
    }
    // fopen's opens go through alloc_fd once each (other processes add their own).
    assert!(
        program("alloc_fd_fentry")["runs"].as_u64().unwrap() >= OPENS,
        "{dir}"
    );
    assert!(
        r.report.contains("eBPF programs' own time")
            && r.report.contains("| fopen | `alloc_fd_fentry` |"),
        "{dir}: the report has the programs' table"
    );
}
