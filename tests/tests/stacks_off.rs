//! `--stacks off`: the probes read nothing of a hit's stack and every hit is recorded
//! without one, in the short record a cached hit gets. Every hit must still reach
//! the host with its probe's fields (fopen's 200 opens still make 200 alloc_fd
//! events), nothing unaccounted for, no stack counted as missing or failed, and the
//! report must say why the claims that stacks decide are not tested.

use guestscope_common::plan::StackMode;
use guestscope_tests::{assert_every_hit_accounted, run_fopen};

const OPENS: u64 = 200;

#[test]
fn with_stacks_off_every_hit_is_recorded_without_a_stack() {
    let r = run_fopen("stacks_off", OPENS, StackMode::Off);
    let dir = r.dir.display();
    assert_eq!(r.summary["run"]["stacks"], "Off", "{dir}");
    assert_every_hit_accounted(&r);
    let w = r.workload("fopen");
    let alloc_hits = w["events"]["alloc_fd"].as_u64().unwrap();
    let spin_hits = w["events"]["spin_lock"].as_u64().unwrap();
    assert!(alloc_hits >= OPENS, "{dir}: one alloc_fd per open: {w}");
    assert!(spin_hits > alloc_hits, "{dir}: {w}");
    // Each hit a line of its own, none with a stack, each with its probe's fields.
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    let spin: Vec<_> = r.events_of("fopen", "spin_lock").collect();
    assert_eq!(
        (alloc.len() as u64, spin.len() as u64),
        (alloc_hits, spin_hits),
        "{dir}"
    );
    for e in alloc.iter().chain(&spin) {
        assert_eq!(e["stack_id"], -1, "{dir}: {e}");
        assert!(e["ts_ns"].as_u64().is_some_and(|t| t > 0), "{dir}: {e}");
    }
    assert!(
        spin.iter()
            .all(|e| e["arg"].as_str().is_some_and(|a| a != "0x0")),
        "{dir}: every spin_lock line has its lock's address"
    );
    // No stack read, so none failed or went missing.
    assert_eq!(r.summary["losses"]["stack_failed"], 0, "{dir}");
    assert_eq!(r.summary["stream"]["events_stack_unknown"], 0, "{dir}");
    let exp = r.spin_lock_experiment("fopen");
    assert_eq!(exp["no_stack"], exp["hits"], "{dir}: {exp}");
    let fs_claim = r.summary["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["section"] == "5 (file system)")
        .unwrap_or_else(|| panic!("{dir}: no file-system claim"));
    assert_eq!(fs_claim["verdict"], "not-tested", "{dir}");
    assert!(
        fs_claim["evidence"]
            .as_str()
            .unwrap()
            .contains("`--stacks off`"),
        "{dir}: {fs_claim}"
    );
    assert!(
        r.report
            .contains("recorded without reading their stacks (`--stacks off`)"),
        "{dir}: the report says stacks were off"
    );
    assert!(
        r.report
            .lines()
            .any(|l| l.starts_with("| alloc_fd |") && l.contains("| off (`--stacks off`) |")),
        "{dir}: the probe table's cache column says stacks were off"
    );
}
