//! The bench's instruction-counted peers boot (QEMU's `-icount`): the same loop, run
//! again under each tracer, takes the same number of the guest's instructions, so the
//! figures hold still where the host-timed ones spread.
//!
//! Run on its own, it needs the Debian test guest `cargo xtask test` makes and points
//! it at: `GUESTSCOPE_DEBIAN_IMAGE`, `GUESTSCOPE_DEBIAN_KERNEL` and
//! `GUESTSCOPE_DEBIAN_INITRD` (`bookworm.ext4`, `vmlinuz` and `initrd.img` in
//! `target/guestscope/cache/debian/`), with the variables every VM test needs.

use guestscope::bench::{self, BenchOptions};
use guestscope_tests::{bench_in, guests::debian_guest};

/// Most a loop's repetitions may differ, as a share of their median: the guest's
/// clock counts instructions, not the host's time (the timed peers boot's runs of one
/// condition differ by half or more on these machines). Not zero: the agent's work that
/// lands inside the loop depends on when its link's acknowledgements arrive, which is
/// host time. At 2,000 iterations the staged every-probe loop's runs were up to 3.1%
/// apart (59.2–61.0 million instructions); at 500, 5.2%.
const MOST_SPREAD: f64 = 0.10;

#[test]
fn each_tracer_s_loop_takes_the_same_instructions_every_time() {
    let (image, _, _) = debian_guest();
    let (_dir, o) = bench_in("bench-instructions", "instructions");
    let o = BenchOptions {
        peer_rootfs: Some(image),
        peer_reps: 2,
        fopen_iterations: 2000,
        ..o
    };
    let r = bench::run(&o).unwrap_or_else(|e| panic!("bench: {e}"));
    if r.problems.iter().any(|p| p.contains("only under TCG")) {
        eprintln!("skipped: {:?}", r.problems);
        return;
    }
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert!(r.peers.is_none(), "only the instruction-counted boot ran");
    let p = r
        .peers_instructions
        .as_ref()
        .expect("the instruction-counted boot's figures");
    assert!(p.instruction_clock);
    let untraced = p.untraced_ms.as_ref().expect("the untraced loop");
    assert_eq!(untraced.n, 2);
    let mut spreads = vec![("untraced".to_string(), untraced.clone())];
    for row in &p.rows {
        let traced = row
            .traced_ms
            .clone()
            .unwrap_or_else(|| panic!("{}: not timed", row.tracer));
        assert_eq!(traced.n, 2, "{}", row.tracer);
        // Every tracer adds instructions to the loop it traces.
        assert!(traced.median > untraced.median, "{}", row.tracer);
        spreads.push((row.tracer.clone(), traced));
    }
    for (what, s) in &spreads {
        let spread = (s.max - s.min) / s.median;
        assert!(
            spread <= MOST_SPREAD,
            "{what}: {:.2}–{:.2} million instructions, {:.1}% apart",
            s.min,
            s.max,
            spread * 100.0
        );
    }
    // guestscope's rows say what the events cost its agent, in instructions; the
    // other tracers' rows run with the agent idle and say nothing.
    for row in &p.rows {
        let agent = row.agent_us_per_event.as_ref();
        if row.tracer.starts_with("guestscope") {
            let a = agent.unwrap_or_else(|| panic!("{}: no agent figure", row.tracer));
            assert!(a.n == 2 && a.median > 0.0, "{}: {a:?}", row.tracer);
        } else {
            assert!(agent.is_none(), "{}: {agent:?}", row.tracer);
        }
    }
    // The target row compares guestscope's instructions per event with ftrace's.
    assert!(
        r.targets
            .iter()
            .any(|t| t.what.contains("counted in instructions") && t.met.is_some()),
        "{:?}",
        r.targets.iter().map(|t| &t.what).collect::<Vec<_>>()
    );
}
