//! The stream's own ceiling, measured as `guestscope bench` measures it: in one boot,
//! a raw vsock blast, then events the agent makes itself (no eBPF, no workload) sent
//! through its stack table, batches, stream and link to the collector, which writes
//! them to disk. Every synthetic event must arrive, and the ceiling must be a rate.

use guestscope::bench::{self, BenchOptions};
use guestscope_tests::bench_in;

#[test]
fn every_synthetic_event_arrives_and_the_ceiling_is_measured_against_raw_vsock() {
    let (dir, o) = bench_in("pipeline-ceiling", "capacity");
    let o = BenchOptions {
        blast_reps: 1,
        blast_bytes: 16 << 20,
        rates: vec![2_000],
        step_seconds: 0.5,
        ..o
    };
    let r = bench::run(&o).unwrap_or_else(|e| panic!("bench: {e}"));
    let c = r.capacity.as_ref().expect("the capacity part ran");
    let p = c
        .pipeline
        .as_ref()
        .unwrap_or_else(|| panic!("no ceiling: {:?}", r.problems));
    assert_eq!(p.received, p.events, "every synthetic event arrives");
    assert!(p.events_per_s > 0.0 && p.wire_mb_s > 0.0, "{p:?}");
    assert!(
        p.wire_bytes > p.events,
        "a few bytes per event at least: {p:?}"
    );
    let f = c.pipeline_fraction_of_raw.expect("a fraction of raw vsock");
    assert!(f > 0.0 && f < 2.0, "fraction {f}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/results.json")).unwrap()).unwrap();
    let written = json["capacity"]["pipeline_fraction_of_raw"].as_f64();
    assert!(
        written.is_some_and(|w| (w - f).abs() < 1e-9),
        "results.json carries the figure: {written:?} for {f}"
    );
    eprintln!(
        "pipeline ceiling: {:.0} events/s, {:.2} MB/s, {:.1}% of raw vsock, agent {:?} µs CPU per event",
        p.events_per_s,
        p.wire_mb_s,
        f * 100.0,
        p.agent_cpu_us_per_event
    );
}
