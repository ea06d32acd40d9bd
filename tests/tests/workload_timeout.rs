//! A workload that never ends is ended at `--workload-timeout`, reported as timed out,
//! and the workloads after it still run; the run does not wait for its own timeout.

use std::time::Duration;

use guestscope::lab::LabOptions;
use guestscope_common::plan::TIMEOUT_GRACE_MS;
use guestscope_tests::{BUSYBOX, run_lab};

#[test]
fn a_hung_workload_is_ended_alone_and_the_next_one_runs() {
    let limit = Duration::from_secs(4);
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!("stuck={BUSYBOX} sleep 600"),
            format!("after={BUSYBOX} echo ran after"),
        ],
        probes: vec!["alloc_fd".into()],
        workload_timeout: Some(limit),
        ..LabOptions::default()
    };
    let r = run_lab("workload-timeout", opts);
    let outcome = &r.summary["run"]["outcome"];
    assert_eq!(outcome["complete"], true, "{outcome}");
    assert_eq!(r.summary["run"]["workload_timeout_s"], 4.0);

    let stuck = r.workload("stuck");
    assert_eq!(stuck["timed_out"], true, "{stuck}");
    // sleep dies of the SIGTERM (128 + 15), well before SIGKILL would be sent.
    assert_eq!(stuck["status"], 143, "{stuck}");
    let ms = stuck["duration_ms"].as_f64().unwrap();
    let limit_ms = limit.as_millis() as f64;
    assert!(
        ms >= limit_ms && ms < limit_ms + TIMEOUT_GRACE_MS as f64,
        "ended after {ms:.0} ms for a {limit_ms:.0} ms limit"
    );

    let after = r.workload("after");
    assert_eq!(after["timed_out"], false, "{after}");
    assert_eq!(after["status"], 0, "{after}");
    assert!(after["output"].as_str().unwrap().contains("ran after"));

    assert!(
        r.report
            .contains("**Timed out:** `stuck` ran past the per-workload limit (4 s"),
        "report.md does not name the timed-out workload"
    );
    assert!(r.report.contains("| stuck |") && r.report.contains("143, timed out"));
}
