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
        if t.stacks == StackMode::CallerChecked {
            check.caller_answers += sum.stack_cached;
            check.caller_differed += sum.stack_cache_wrong;
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
            program_runs: ran
                .programs
                .iter()
                .map(|p| (p.program.clone(), p.runs))
                .collect(),
            cached_by_probe: t
                .counters
                .iter()
                .filter(|(_, c)| c.emitted > 0)
                .map(|(name, c)| (name.clone(), c.stack_cached))
                .collect(),
        });
    }
    check.fopen_program_us = fopen_program_us(runs);
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

/// The time inside each program per run, µs, over the fopen runs, by stack mode and
/// program (runs of the fopen loop only; a program that did not run is left out).
fn fopen_program_us(runs: &BTreeMap<String, Ran>) -> BTreeMap<String, BTreeMap<String, Spread>> {
    let mut samples: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    for (name, ran) in runs {
        let Some(t) = ran.tracing.as_ref().filter(|_| name.starts_with("fopen-")) else {
            continue;
        };
        for p in &ran.programs {
            let Some(ns) = p.ns_per_run() else {
                continue;
            };
            samples
                .entry(format!("{:?}", t.stacks))
                .or_default()
                .entry(p.program.clone())
                .or_default()
                .push(ns / 1e3);
        }
    }
    samples
        .into_iter()
        .map(|(mode, programs)| {
            let spreads = programs
                .into_iter()
                .filter_map(|(program, us)| Some((program, Spread::of(&us)?)))
                .collect();
            (mode, spreads)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use guestscope_common::{plan::WorkloadTracing, wire::ProgramRun};

    use super::*;

    fn fopen(mode: StackMode, runs: u64, run_ns: u64) -> Ran {
        Ran {
            status: Some(0),
            tracing: Some(WorkloadTracing {
                stacks: mode,
                ..WorkloadTracing::default()
            }),
            programs: vec![ProgramRun {
                program: "spin_lock_fentry".into(),
                runs,
                run_ns,
            }],
            ..Ran::default()
        }
    }

    #[test]
    fn program_time_per_run_is_a_median_per_mode_over_the_fopen_runs_only() {
        let runs: BTreeMap<String, Ran> = [
            (
                "fopen-tallied-1",
                fopen(StackMode::Tallied, 1000, 2_000_000),
            ),
            (
                "fopen-tallied-2",
                fopen(StackMode::Tallied, 1000, 3_000_000),
            ),
            ("fopen-tallied-3", fopen(StackMode::Tallied, 500, 5_000_000)),
            (
                "fopen-walkall-1",
                fopen(StackMode::WalkEvery, 100, 1_000_000),
            ),
            // Not the fopen loop: left out.
            ("checked-cpuinfo", fopen(StackMode::Tallied, 1, 1_000_000)),
        ]
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
        let us = fopen_program_us(&runs);
        let tallied = &us["Tallied"]["spin_lock_fentry"];
        assert_eq!((tallied.n, tallied.median, tallied.max), (3, 3.0, 10.0));
        assert_eq!(tallied.min, 2.0);
        assert_eq!(us["WalkEvery"]["spin_lock_fentry"].median, 10.0);
        assert_eq!(us.len(), 2);
    }
}
