//! The loop with every probe and a cheaper stack mode than the default, against the
//! untraced loop of each repetition, and over the same events as the every-probe runs
//! (those the loop makes, whatever records them): the cached hits only counted per
//! stack in the kernel (`--stacks tallied`), or the stacks taken by caller
//! (`--stacks caller`).

use super::*;

/// The `tallied` and the `caller` conditions' figures for `workload`.
pub(super) fn tallied_and_by_caller(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    off: &[Option<f64>],
    loop_events: &[Option<f64>],
) -> (StackModeOverhead, StackModeOverhead) {
    (
        overhead(runs, workload, "tallied", reps, off, loop_events, |c| {
            c.tallied
        }),
        overhead(runs, workload, "caller", reps, off, loop_events, |c| {
            c.stack_cached
        }),
    )
}

/// The figures of condition `condition` (`tallied` or `caller`) for `workload`; `share`
/// is a probe's hits the mode answered from its cache (tallied, or taken by caller).
fn overhead(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    condition: &str,
    reps: usize,
    off: &[Option<f64>],
    loop_events: &[Option<f64>],
    share: fn(&ProbeCounters) -> u64,
) -> StackModeOverhead {
    let name = format!("{workload}-{condition}");
    let ms = series(runs, &name, reps, loop_ms);
    let shares = series(runs, &name, reps, |r| {
        let t = r.tracing.as_ref()?;
        let (answered, matched) = t
            .counters
            .iter()
            .fold((0, 0), |(a, m), (_, c)| (a + share(c), m + c.matched));
        (matched > 0).then(|| answered as f64 / matched as f64)
    });
    let unaccounted = (0..reps)
        .filter_map(|rep| runs.get(&format!("{name}-{rep}")))
        .map(unaccounted)
        .sum();
    StackModeOverhead {
        traced_ms: Spread::of(&present(&ms)),
        ratio: Spread::of(&stats::paired_ratios(&ms, off)),
        // ms / events → µs: × 1000.
        us_per_event: Spread::of(&stats::paired_cost_per(&ms, off, loop_events))
            .map(|s| s.scaled(1e3)),
        share: Spread::of(&present(&shares)),
        agent_cpu_marginal_us_per_event: agent_cpu_marginal(
            runs,
            workload,
            condition,
            reps,
            loop_events,
        ),
        unaccounted,
    }
}

/// A run's hits that were neither received (as events or tallies) nor counted lost in
/// the ring buffer, over the built-in probes.
fn unaccounted(r: &Ran) -> i64 {
    ProbeKind::BUILTIN
        .iter()
        .map(|k| {
            let c = r.counters(k.name());
            let received = r.received.get(k.name()).copied().unwrap_or(0);
            c.matched as i64 - (received + c.ring_full) as i64
        })
        .sum()
}
