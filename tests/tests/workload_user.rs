//! Workloads run unprivileged: as uid and gid 65534 they cannot read the run's plan,
//! which holds the secret the agent presents to the collector.

use guestscope::lab::LabOptions;
use guestscope_common::plan::{PLAN_PATH, UNPRIVILEGED_ID};
use guestscope_tests::{BUSYBOX, run_lab};

#[test]
fn a_workload_runs_as_nobody_and_cannot_read_the_plan() {
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!("whoami={BUSYBOX} id"),
            format!("read-plan={BUSYBOX} cat {PLAN_PATH}"),
        ],
        probes: vec!["alloc_fd".into()],
        ..LabOptions::default()
    };
    let r = run_lab("workload-user", opts);
    let id = r.workload("whoami");
    assert_eq!(id["status"], 0, "{id}");
    let out = id["output"].as_str().unwrap();
    assert!(
        out.contains(&format!("uid={UNPRIVILEGED_ID}"))
            && out.contains(&format!("gid={UNPRIVILEGED_ID}")),
        "id printed: {out}"
    );
    assert!(!out.contains("groups=0"), "still in root's group: {out}");
    let read = r.workload("read-plan");
    let out = read["output"].as_str().unwrap();
    assert_ne!(read["status"], 0, "the plan was readable: {out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!out.contains("secret"), "the secret leaked: {out}");
    assert!(
        r.report
            .contains(&format!("Workloads ran as nobody (uid {UNPRIVILEGED_ID})")),
        "the report does not say who the workloads ran as"
    );
}
