//! The agent's CPU per event in a loop: gross (all its CPU over the events), and
//! marginal (paired against the untraced run: what the events cost it).

use guestscope_common::plan::WorkloadTracing;

use super::*;

/// The agent's CPU per event of each run of a condition, µs.
pub(super) fn agent_cpu_per_event(
    runs: &BTreeMap<String, Ran>,
    condition: &str,
    reps: usize,
) -> Vec<Option<f64>> {
    series(runs, condition, reps, |r| {
        let t = r.tracing.as_ref()?;
        let events = r.matched_total()?;
        (events > 0).then(|| t.agent_cpu_ns as f64 / 1e3 / events as f64)
    })
}

/// The agent's page faults, waits and preemptions per thousand events of each run of
/// a condition ([`AgentActivity`] of each run).
pub(super) fn agent_activity_per_k_events(
    runs: &BTreeMap<String, Ran>,
    condition: &str,
    reps: usize,
) -> AgentActivity {
    let per_k = |count: fn(&WorkloadTracing) -> u64| {
        Spread::of(&present(&series(runs, condition, reps, |r| {
            per_k_events(Some(count(r.tracing.as_ref()?)), r.matched_total()?)
        })))
    };
    AgentActivity {
        faults: per_k(|t| t.agent_minor_faults),
        waits: per_k(|t| t.agent_voluntary_switches),
        preemptions: per_k(|t| t.agent_involuntary_switches),
    }
}

/// `count` per thousand of `events`; `None` without a count or events.
pub(super) fn per_k_events(count: Option<u64>, events: u64) -> Option<f64> {
    count
        .filter(|_| events > 0)
        .map(|n| n as f64 * 1e3 / events as f64)
}

/// What the loop's events cost the agent, µs per event: its CPU in the runs of
/// `condition` less its CPU in the untraced run of the same repetition, over the loop's
/// events.
pub(super) fn agent_cpu_marginal(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    condition: &str,
    reps: usize,
    loop_events: &[Option<f64>],
) -> Option<Spread> {
    // ms / events → µs: × 1000.
    Spread::of(&stats::paired_cost_per(
        &agent_cpu_ms(runs, workload, condition, reps),
        &agent_cpu_ms(runs, workload, "off", reps),
        loop_events,
    ))
    .map(|s| s.scaled(1e3))
}

/// The agent's CPU in each repetition's run of `condition`, ms.
pub(super) fn agent_cpu_ms(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    condition: &str,
    reps: usize,
) -> Vec<Option<f64>> {
    series(runs, &format!("{workload}-{condition}"), reps, |r| {
        r.tracing.as_ref().map(|t| t.agent_cpu_ns as f64 / 1e6)
    })
}
