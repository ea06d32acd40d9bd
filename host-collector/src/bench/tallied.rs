//! The loop with every probe and the cached hits only counted per stack in the
//! kernel (`--stacks tallied`), against the untraced loop of each repetition, and over
//! the same events as the every-probe runs (those the loop makes, whatever records
//! them).

use super::*;

/// The `tallied` condition's figures for `workload`.
pub(super) fn overhead(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    off: &[Option<f64>],
    loop_events: &[Option<f64>],
) -> TalliedOverhead {
    let name = format!("{workload}-tallied");
    let ms = series(runs, &name, reps, loop_ms);
    let share = series(runs, &name, reps, |r| {
        let t = r.tracing.as_ref()?;
        let (tallied, matched) = t
            .counters
            .iter()
            .fold((0, 0), |(t, m), (_, c)| (t + c.tallied, m + c.matched));
        (matched > 0).then(|| tallied as f64 / matched as f64)
    });
    let unaccounted = (0..reps)
        .filter_map(|rep| runs.get(&format!("{name}-{rep}")))
        .map(unaccounted)
        .sum();
    TalliedOverhead {
        traced_ms: Spread::of(&present(&ms)),
        ratio: Spread::of(&stats::paired_ratios(&ms, off)),
        // ms / events → µs: × 1000.
        us_per_event: Spread::of(&stats::paired_cost_per(&ms, off, loop_events))
            .map(|s| s.scaled(1e3)),
        tallied_share: Spread::of(&present(&share)),
        agent_cpu_marginal_us_per_event: agent_cpu_marginal(
            runs,
            workload,
            "tallied",
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
