//! Faults injected into real runs (real QEMU, real vsock through vhost-device-vsock): each
//! test provokes one and checks that every event is either received or counted as lost,
//! and that the outputs say how the run ended.

use std::sync::Mutex;

use guestscope::lab::LabOptions;
use guestscope_tests::{run_lab, workload_binary};

/// One guest at a time: the faults depend on timing, and the host has few cores.
static ONE_VM: Mutex<()> = Mutex::new(());

fn one_vm() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ring buffer of four pages (about 28 records) against a workload that floods
/// `_raw_spin_lock` and `alloc_fd`: the ring overflows, and per probe the hits the kernel
/// matched equal the events received plus the ones it counted as lost.
#[test]
fn ring_buffer_overrun_is_counted_exactly() {
    let _vm = one_vm();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} --iterations 20000", workload_binary("flood").display())],
        probes: vec!["spin_lock".into(), "alloc_fd".into()],
        events_bytes: Some(16 * 1024),
        ..LabOptions::default()
    };
    let r = run_lab("ring-overrun", opts);
    let s = &r.summary;
    assert_eq!(s["run"]["outcome"]["complete"], true, "outcome: {}", s["run"]["outcome"]);
    assert_eq!(s["run"]["events_ring_bytes"], 16 * 1024);
    assert_eq!(s["stream"]["seq"]["missing"], 0);
    assert_eq!(s["losses"]["events_missing"], 0);
    let flood = r.workload("flood");
    assert_eq!(flood["status"], 0, "flood output: {}", flood["output"]);

    let mut lost = 0;
    for p in s["probes"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if !["spin_lock", "alloc_fd"].contains(&name) {
            continue;
        }
        let c = &p["counters"];
        let (matched, ring_full) = (c["matched"].as_u64().unwrap(), c["ring_full"].as_u64().unwrap());
        let received = p["received"].as_u64().unwrap();
        let in_file = r.events.iter().filter(|e| e["probe"] == name).count() as u64;
        eprintln!("{name}: matched {matched}, received {received}, ring_full {ring_full}");
        assert_eq!(received, in_file, "{name}: events.jsonl holds every received event");
        assert_eq!(received + ring_full, matched, "{name}: received + ring_full != matched");
        assert_eq!(c["emitted"].as_u64().unwrap(), received, "{name}: emitted != received");
        assert_eq!(p["unaccounted"], 0);
        lost += ring_full;
    }
    assert!(lost > 0, "the 16 KiB ring never overflowed: the test proves nothing");
    assert_eq!(s["losses"]["ring_full"].as_u64().unwrap(), lost);
    // 20000 iterations of dup + close: at least one alloc_fd hit each.
    let alloc = s["probes"].as_array().unwrap().iter().find(|p| p["name"] == "alloc_fd").unwrap();
    assert!(alloc["counters"]["matched"].as_u64().unwrap() >= 20000, "{alloc}");

    let coverage = r.report.split("## Coverage and losses").nth(1).expect("a Coverage and losses section");
    assert!(coverage.contains("ring buffer: 16 KiB"), "{coverage}");
    let row = coverage.lines().find(|l| l.starts_with("| spin_lock |")).expect("a spin_lock row");
    assert!(row.ends_with("| 0 |"), "spin_lock row leaves hits unaccounted: {row}");
}
