//! The stream's own ceiling, measured as `guestscope bench` measures it: in one boot,
//! raw vsock blasts, each followed by events the agent makes itself (no eBPF, no workload) sent
//! through its stack table, batches, stream and link to the collector, which writes
//! them to disk. Every synthetic event must arrive, and the ceiling must be a rate.

use guestscope::bench::{self, BenchOptions};
use guestscope_tests::bench_in;

#[test]
fn every_synthetic_event_arrives_and_the_ceiling_is_measured_against_raw_vsock() {
    let (dir, o) = bench_in("pipeline-ceiling", "capacity");
    let o = BenchOptions {
        blast_reps: 2,
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
    // One synthetic run per blast, each the events the blast's bytes hold in 64-byte
    // records; packed, the stream carries far fewer bytes than that.
    assert_eq!(p.runs.len(), 2, "{p:?}");
    assert_eq!(p.events, (16 << 20) / 64);
    for run in &p.runs {
        assert_eq!(run.received, p.events, "every synthetic event arrives");
        assert!(run.events_per_s > 0.0 && run.wire_mb_s > 0.0, "{run:?}");
        let per_event = run.wire_bytes as f64 / run.received as f64;
        assert!(
            (4.0..32.0).contains(&per_event),
            "{per_event} stream bytes per event: {run:?}"
        );
        let f = run.fraction_of_raw.expect("paired with its blast");
        let stream = run.stream_fraction_of_raw.expect("paired with its blast");
        assert!(f > 0.0 && f < 4.0, "fraction {f}");
        assert!(
            stream < f,
            "the stream's bytes {stream} under the records' {f}"
        );
        // The collector's CPU over the run: spent, and within the run's wall time
        // per event (it has one thread taking the stream in).
        let collector = run.collector_cpu_us_per_event.expect("the collector's CPU");
        let wall = 1e6 / run.events_per_s;
        assert!(
            collector > 0.0 && collector < 2.0 * wall,
            "collector {collector} µs per event against {wall} µs: {run:?}"
        );
    }
    let f = c.pipeline_fraction_of_raw.expect("a fraction of raw vsock");
    assert_eq!(Some(f), p.fraction_of_raw.as_ref().map(|s| s.median));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/results.json")).unwrap()).unwrap();
    let written = json["capacity"]["pipeline_fraction_of_raw"].as_f64();
    assert!(
        written.is_some_and(|w| (w - f).abs() < 1e-9),
        "results.json carries the figure: {written:?} for {f}"
    );
    eprintln!(
        "pipeline ceiling: {:?} events/s, {:?} MB/s, {:.1}% of raw vsock, agent {:?} µs CPU per event, collector {:?}",
        p.events_per_s,
        p.wire_mb_s,
        f * 100.0,
        p.agent_cpu_us_per_event,
        p.collector_cpu_us_per_event
    );
}
