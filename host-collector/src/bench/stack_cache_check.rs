//! The stack-cache boot's figures: every cached stack checked against a walk of the
//! same event, and the stacks the host received with the cache on and off, and with
//! the cached hits tallied instead of recorded.

use super::*;

/// The stack-cache boot's runs as a [`StackCacheCheck`]; a run without a tracing report
/// is a problem.
pub(super) fn stack_cache(
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> StackCacheCheck {
    let mut check = StackCacheCheck::default();
    for (name, ran) in runs {
        let Some(t) = &ran.tracing else {
            problems.push(format!("{name}: no tracing report from the agent"));
            continue;
        };
        let sum = t.counters.iter().fold(
            guestscope_common::ProbeCounters::default(),
            |mut a, (_, c)| {
                a.add(c);
                a
            },
        );
        if t.stacks == StackMode::Checked {
            check.checked_events += sum.emitted;
            check.cached += sum.stack_cached;
            check.wrong += sum.stack_cache_wrong;
        }
        check.runs.push(StackCacheRun {
            workload: name.clone(),
            mode: format!("{:?}", t.stacks),
            matched: sum.matched,
            emitted: sum.emitted,
            tallied: sum.tallied,
            received: ran.received.values().sum(),
            cached: sum.stack_cached,
            wrong: sum.stack_cache_wrong,
            nested: sum.nested,
        });
    }
    let fopen = |mode: StackMode| {
        runs.iter()
            .find(|(name, ran)| {
                name.starts_with("fopen-") && ran.tracing.as_ref().is_some_and(|t| t.stacks == mode)
            })
            .map(|(_, ran)| &ran.stack_counts)
    };
    check.fopen_stack_distance = match (fopen(StackMode::Cached), fopen(StackMode::WalkEvery)) {
        (Some(on), Some(off)) => super::stats::stack_distance(on, off),
        _ => None,
    };
    check.fopen_tallied_distance = match (fopen(StackMode::Cached), fopen(StackMode::Tallied)) {
        (Some(recorded), Some(tallied)) => super::stats::stack_distance(recorded, tallied),
        _ => None,
    };
    check
}
