//! The loop with every probe and a cheaper stack mode than the default, against the
//! untraced loop of each repetition, and over the same events as the every-probe runs
//! (those the loop makes, whatever records them): the cached hits only counted per
//! stack in the kernel (`--stacks tallied`), the stacks taken by caller
//! (`--stacks caller`), or both (`--stacks caller-tallied`).

use super::*;

/// One loop's figures in the cheaper stack modes.
pub(super) struct CheaperModes {
    /// `--stacks tallied`.
    pub(super) tallied: StackModeOverhead,
    /// `--stacks caller`.
    pub(super) by_caller: StackModeOverhead,
    /// `--stacks caller-tallied`.
    pub(super) caller_tallied: StackModeOverhead,
}

impl CheaperModes {
    /// Each mode's figures, all `None` when the loop did not run them.
    pub(super) fn split(
        modes: Option<CheaperModes>,
    ) -> (
        Option<StackModeOverhead>,
        Option<StackModeOverhead>,
        Option<StackModeOverhead>,
    ) {
        match modes {
            Some(m) => (Some(m.tallied), Some(m.by_caller), Some(m.caller_tallied)),
            None => (None, None, None),
        }
    }
}

/// The `tallied`, `caller` and `caller-tallied` conditions' figures for `workload`.
pub(super) fn cheaper_modes(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    off: &[Option<f64>],
    loop_events: &[Option<f64>],
) -> CheaperModes {
    let mode = |condition: &str, share: fn(&ProbeCounters) -> u64| {
        overhead(runs, workload, condition, reps, off, loop_events, share)
    };
    CheaperModes {
        tallied: mode("tallied", |c| c.tallied),
        by_caller: mode("caller", |c| c.stack_cached),
        caller_tallied: mode("caller-tallied", |c| c.tallied),
    }
}

/// The figures of condition `condition` (one of [`cheaper_modes`]') for `workload`; `share`
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
