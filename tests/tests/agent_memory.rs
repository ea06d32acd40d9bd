//! The agent's memory as `guestscope bench` measures it, on a short run: two workloads
//! that trace alloc_fd alone, the plan's probes restored between them. Switching
//! probes must not load (verify) a program again, the agent's peak must be reset once
//! its probes are loaded, and every event must arrive.

use guestscope::bench::{self, BenchOptions};
use guestscope_tests::bench_in;

#[test]
fn probes_switch_without_loading_again_and_the_peak_after_loading_is_the_runs() {
    let (dir, o) = bench_in("agent-memory", "memory");
    let o = BenchOptions {
        memory_events: 200_000,
        ..o
    };
    let r = bench::run(&o).unwrap_or_else(|e| panic!("bench: {e}"));
    let m = r
        .memory
        .as_ref()
        .unwrap_or_else(|| panic!("no memory figures: {:?}", r.problems));
    assert_eq!(m.events_received, m.events_planned + 2, "{m:?}");
    let (run, loading) = (
        m.agent_peak_kib.expect("the end status"),
        m.agent_load_peak_kib.expect("the status once loaded"),
    );
    assert!(
        run < loading,
        "the run's peak {run} KiB is not below the loading peak {loading} KiB"
    );
    let log = std::fs::read_to_string(dir.join("work/serial-memory.log")).unwrap();
    let loads = log
        .matches("program verified and loaded program=\"spin_lock_fentry\"")
        .count();
    assert_eq!(
        loads, 1,
        "spin_lock's program is verified once, however often it is detached and attached:\n{log}"
    );
    assert_eq!(
        log.matches("INFO kernel BTF parsed").count(),
        1,
        "the agent parses the kernel's BTF once, at start:\n{log}"
    );
}
