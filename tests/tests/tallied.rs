//! `--stacks tallied` and `caller-tallied`: a hit the stack cache answers is only
//! counted per stack in the kernel (with `caller-tallied`, the cache answering by the
//! hit's function, caller and way in). Every hit must still reach the host (as an
//! event or a tally, nothing unaccounted for) and be classified by its stack: fopen's
//! 200 opens still make 200 alloc_fd hits, each on a stack through alloc_fd, and
//! `guestscope report DIR` renders the same files again.

use guestscope_common::plan::StackMode;
use guestscope_tests::{RunOutput, assert_every_hit_accounted, run_fopen, stack_has};
use serde_json::Value;

const OPENS: u64 = 200;

#[test]
fn tallied_hits_are_classified_and_accounted_for() {
    tallied_fopen("tallied", StackMode::Tallied);
}

#[test]
fn hits_tallied_by_caller_are_classified_and_accounted_for() {
    let r = tallied_fopen("tallied-by-caller", StackMode::CallerTallied);
    assert!(
        r.report
            .contains("with the walk of the first hit with their function, caller and way into"),
        "{}: the report says the stacks were taken by caller",
        r.dir.display()
    );
}

/// The fopen loop with the cached hits tallied (`mode`), and what must hold of it.
fn tallied_fopen(name: &str, mode: StackMode) -> RunOutput {
    let r = run_fopen(name, OPENS, mode);
    let dir = r.dir.display();
    let tallied = r.summary["stream"]["events_tallied"].as_u64().unwrap();
    assert_every_hit_accounted(&r);
    let spin = r.summary["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "spin_lock")
        .unwrap_or_else(|| panic!("{dir}: no spin_lock probe"));
    let (received, spin_tallied) = (
        spin["received"].as_u64().unwrap(),
        spin["tallied"].as_u64().unwrap(),
    );
    assert!(
        spin_tallied > 2 * received && spin_tallied < tallied,
        "{dir}: most spin_lock hits are tallied, and some alloc_fd ones: {spin}"
    );
    // The workload counts its hits both ways; events.jsonl has the recorded ones only.
    let w = r.workload("fopen");
    let spin_hits = w["events"]["spin_lock"].as_u64().unwrap();
    let lines = r.events_of("fopen", "spin_lock").count() as u64;
    assert_eq!(
        spin_hits,
        lines + w["tallied"]["spin_lock"].as_u64().unwrap(),
        "{dir}"
    );
    spin_lock_hits_are_classified(&r, spin_hits);
    alloc_fd_hits_add_up(&r, w);
    assert!(
        r.report
            .contains("hits only counted per stack in the kernel"),
        "{dir}: the report says what was tallied"
    );
    renders_again_the_same(&r);
    r
}

/// The experiment's hits are the workload's, and the file-system class still shows
/// the locks taken under alloc_fd.
fn spin_lock_hits_are_classified(r: &RunOutput, spin_hits: u64) {
    let dir = r.dir.display();
    let exp = r.spin_lock_experiment("fopen");
    assert_eq!(exp["hits"].as_u64().unwrap(), spin_hits, "{dir}");
    assert_eq!(exp["no_stack"], 0, "{dir}: {exp}");
    let fs = exp["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "file system")
        .unwrap_or_else(|| panic!("{dir}: no file-system class: {exp}"));
    assert!(
        fs["through"]["alloc_fd"]["hits"].as_u64().unwrap() >= OPENS / 2,
        "{dir}: {fs}"
    );
}

/// One alloc_fd hit per open, recorded (each line with its stack) or tallied on a
/// stack through alloc_fd.
fn alloc_fd_hits_add_up(r: &RunOutput, w: &Value) {
    let dir = r.dir.display();
    let alloc_lines: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(
        alloc_lines.iter().all(|e| stack_has(e, "alloc_fd")),
        "{dir}"
    );
    let alloc_tallied = w["tallied"]["alloc_fd"].as_u64().unwrap_or(0);
    let alloc_hits = w["events"]["alloc_fd"].as_u64().unwrap();
    assert!(alloc_tallied > 0 && alloc_hits >= OPENS, "{dir}: {w}");
    assert_eq!(
        alloc_lines.len() as u64 + alloc_tallied,
        alloc_hits,
        "{dir}"
    );
    let stacks: Vec<Value> = std::fs::read_to_string(r.dir.join("stacks.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for t in w["tallied_stacks"].as_array().unwrap() {
        let id = &t["stack_id"];
        let stack = stacks
            .iter()
            .find(|s| &s["stack_id"] == id)
            .unwrap_or_else(|| panic!("{dir}: tallied stack {id} not in stacks.jsonl"));
        if t["probe"] == "alloc_fd" {
            let frames = stack["frames"].as_array().unwrap();
            assert!(
                frames
                    .iter()
                    .any(|f| f.as_str().unwrap().starts_with("alloc_fd+")),
                "{dir}: {stack}"
            );
        }
    }
}

/// `guestscope report DIR` gives the same files: the tallies per stack come from
/// summary.json, the rest from events.jsonl.
fn renders_again_the_same(r: &RunOutput) {
    let dir = r.dir.display();
    let copy = tempfile::tempdir().unwrap();
    for f in ["summary.json", "events.jsonl", "stacks.jsonl"] {
        std::fs::copy(r.dir.join(f), copy.path().join(f)).unwrap();
    }
    let out = std::process::Command::new(guestscope_tests::collector_binary())
        .arg("report")
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["report.md", "stacks.folded"] {
        let (was, again) = (
            std::fs::read(r.dir.join(f)).unwrap(),
            std::fs::read(copy.path().join(f)).unwrap(),
        );
        assert!(was == again, "{dir}: {f} differs when rendered again");
    }
}
