//! The bench's peers boot on the Debian test guest: guestscope, ftrace and Debian's
//! bpftrace trace the same fopen loop in one boot, and each sees the loop's events.

use guestscope::bench::{self, BenchOptions};
use guestscope_tests::{bench_in, guests::debian_guest};

#[test]
fn guestscope_ftrace_and_bpftrace_trace_the_same_loop_in_one_boot() {
    let (image, _, _) = debian_guest();
    let (_dir, o) = bench_in("bench-peers", "peers");
    let o = BenchOptions {
        peer_rootfs: Some(image),
        peer_reps: 1,
        fopen_iterations: 500,
        ..o
    };
    let r = bench::run(&o).unwrap_or_else(|e| panic!("bench: {e}"));
    let p = r
        .peers
        .as_ref()
        .unwrap_or_else(|| panic!("no peers figures: {:?}", r.problems));
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    let events = p
        .events_per_iteration
        .as_ref()
        .expect("guestscope's events")
        .median;
    // spin_lock about five times and alloc_fd once per fopen/fclose.
    assert!(
        (5.0..8.0).contains(&events),
        "{events} events per iteration"
    );
    // guestscope six ways (cached stacks, each cached hit a record of its own, tallied
    // stacks, stacks by caller, both, no stacks), ftrace two ways and bpftrace two ways.
    let tracers = |prefix: &str| {
        p.rows
            .iter()
            .filter(|r| r.tracer.starts_with(prefix))
            .count()
    };
    assert_eq!(
        (
            tracers("guestscope"),
            tracers("ftrace"),
            tracers("bpftrace")
        ),
        (6, 2, 2),
        "{:?}",
        p.rows.iter().map(|r| &r.tracer).collect::<Vec<_>>()
    );
    // Every tracer's run completed and was timed (how fast is the bench's to say, not a
    // test's: one cold run is no measurement).
    for row in &p.rows {
        let ratio = row
            .ratio
            .as_ref()
            .unwrap_or_else(|| panic!("{row:?}"))
            .median;
        assert!(ratio.is_finite() && ratio > 0.0, "{}: {ratio}", row.tracer);
    }
    let hits = |prefix: &str| {
        let row = p
            .rows
            .iter()
            .find(|r| r.tracer.starts_with(prefix))
            .unwrap();
        row.hits_per_iteration.as_ref().map(|h| h.median)
    };
    // bpftrace counts the task's hits of spin_lock and alloc_fd by its name, so from its
    // exec on; guestscope counts them by its pid, from its fork on. bpftrace's count per
    // iteration lies between guestscope's loop alone and guestscope's whole process
    // (each in its own run of the loop: 5% either way).
    let ours = hits("guestscope, every probe, stacks").expect("guestscope's hits");
    let bpftrace = hits("bpftrace kprobes, comm filter, @ = count()").expect("bpftrace's count");
    assert!(
        (0.95 * events..=1.05 * ours).contains(&bpftrace),
        "bpftrace counted {bpftrace} per iteration; guestscope {events} in the loop, {ours} in all"
    );
    // ftrace's kprobes count every task's hits, the loop's among them.
    let ftrace = hits("ftrace kprobes, comm filter, no stacks").expect("ftrace's hits");
    assert!(ftrace >= 0.95 * ours, "ftrace {ftrace}, guestscope {ours}");
}
