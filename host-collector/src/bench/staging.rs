//! What staging the cached hits buys (the probes write up to
//! `guestscope_common::STAGED_EVENTS` of a CPU's cached hits as one ring-buffer
//! record): the loop with every probe and each cached hit a record of its own
//! (`StackMode::Unstaged`) against the loop with every probe staged, paired by
//! repetition (the two run one after the other in each).

use super::*;

/// The `unstaged` condition's figures for `workload`, against the every-probe runs'
/// loop times `all` over their loop events.
pub(super) fn gain(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    all: &[Option<f64>],
    loop_events: &[Option<f64>],
) -> StagingGain {
    let unstaged = series(runs, &format!("{workload}-unstaged"), reps, loop_ms);
    StagingGain {
        unstaged_ms: Spread::of(&present(&unstaged)),
        ratio: Spread::of(&stats::paired_ratios(&unstaged, all)),
        // ms / events → µs: × 1000.
        saved_us_per_event: Spread::of(&stats::paired_cost_per(&unstaged, all, loop_events))
            .map(|s| s.scaled(1e3)),
        agent_cpu_saved_us_per_event: Spread::of(&stats::paired_cost_per(
            &agent_cpu_ms(runs, workload, "unstaged", reps),
            &agent_cpu_ms(runs, workload, "all", reps),
            loop_events,
        ))
        .map(|s| s.scaled(1e3)),
    }
}
