//! From the boots' outcomes to the figures: loop overheads, capacity, memory, boot times
//! (the gdb comparison is [`super::gdb_comparison`]'s).

use super::*;
use guestscope_common::event::RAW_EVENT_BYTES;

mod capacity;
mod memory;
mod times;

pub(super) use self::capacity::*;
pub(super) use self::memory::*;
pub(super) use self::times::*;

pub(super) fn series(
    runs: &BTreeMap<String, Ran>,
    prefix: &str,
    reps: usize,
    f: impl Fn(&Ran) -> Option<f64>,
) -> Vec<Option<f64>> {
    (0..reps)
        .map(|rep| runs.get(&format!("{prefix}-{rep}")).and_then(&f))
        .collect()
}

pub(super) fn present(v: &[Option<f64>]) -> Vec<f64> {
    v.iter().flatten().copied().collect()
}

pub(super) fn loop_overhead(
    workload: &str,
    iterations: u64,
    reps: usize,
    with_ftrace: bool,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> LoopOverhead {
    note_run_problems(workload, runs, problems);
    let base = baseline_events(runs, workload);
    let off = series(runs, &format!("{workload}-off"), reps, loop_ms);
    let all = series(runs, &format!("{workload}-all"), reps, loop_ms);
    let loop_events = loop_events(runs, workload, reps, base);
    let drain = series(runs, &format!("{workload}-all"), reps, |r| {
        r.tracing.as_ref().map(|t| t.drain_ns as f64 / 1e6)
    });
    let all_drained: Vec<Option<f64>> = all
        .iter()
        .zip(&drain)
        .map(|(a, d)| Some((*a)? + (*d)?))
        .collect();
    let agent_cpu = agent_cpu_per_event(runs, &format!("{workload}-all"), reps);
    let n = iterations.max(1) as f64;
    let mut by_probe = Vec::new();
    for kind in ProbeKind::BUILTIN {
        let per: Vec<f64> = (0..reps)
            .filter_map(|rep| runs.get(&format!("{workload}-all-{rep}")))
            .map(|r| r.counters(kind.name()).matched as f64 / n)
            .collect();
        by_probe.push((kind.name().to_string(), stats::median(&per)));
    }
    let all_runs = || (0..reps).filter_map(|rep| runs.get(&format!("{workload}-all-{rep}")));
    let nested: Vec<f64> = all_runs()
        .filter_map(|r| r.tracing.as_ref())
        .map(|t| t.counters.iter().map(|(_, c)| c.nested).sum::<u64>() as f64 / n)
        .collect();
    let without_stacks = with_ftrace
        .then(|| without_stacks_overhead(runs, workload, reps, base, &off, &all, &loop_events));
    let user_probe = with_ftrace.then(|| user_probe_overhead(runs, workload, reps, &off));
    let (tallied, by_caller, caller_tallied) = stack_modes::CheaperModes::split(
        with_ftrace.then(|| stack_modes::cheaper_modes(runs, workload, reps, &off, &loop_events)),
    );
    let staging = with_ftrace.then(|| staging::gain(runs, workload, reps, &all, &loop_events));
    let ftrace = with_ftrace.then(|| ftrace_overhead(runs, workload, reps, n, &off));
    // guestscope and its ftrace peer (bpftrace needs the peers boot's root file system).
    let rows = PeerRows {
        workload,
        reps,
        iterations: n,
        off: &off,
        loop_events: &loop_events,
    };
    let peers = with_ftrace.then(|| rows.measure(runs, &overhead_rows()));
    LoopOverhead {
        workload: workload.into(),
        iterations,
        reps,
        untraced_ms: Spread::of(&present(&off)),
        traced_ms: Spread::of(&present(&all)),
        ratio: Spread::of(&stats::paired_ratios(&all, &off)),
        events_per_iteration: Spread::of(
            &present(&loop_events)
                .iter()
                .map(|e| e / n)
                .collect::<Vec<_>>(),
        ),
        events_per_iteration_by_probe: by_probe,
        nested_per_iteration: stats::median(&nested),
        stack_failed: all_runs().map(|r| counted(r, |c| c.stack_failed)).sum(),
        ring_full: all_runs().map(|r| counted(r, |c| c.ring_full)).sum(),
        // ms / events → µs: × 1000.
        us_per_event: Spread::of(&stats::paired_cost_per(&all, &off, &loop_events))
            .map(|s| s.scaled(1e3)),
        us_per_event_with_drain: Spread::of(&stats::paired_cost_per(
            &all_drained,
            &off,
            &loop_events,
        ))
        .map(|s| s.scaled(1e3)),
        drain_ms: Spread::of(&present(&drain)),
        agent_cpu_us_per_event: Spread::of(&present(&agent_cpu)),
        agent_activity: agent_activity_per_k_events(runs, &format!("{workload}-all"), reps),
        agent_cpu_marginal_us_per_event: agent_cpu_marginal(
            runs,
            workload,
            "all",
            reps,
            &loop_events,
        ),
        without_stacks,
        tallied,
        by_caller,
        caller_tallied,
        staging,
        user_probe,
        runs_ms: (0..reps)
            .flat_map(|rep| {
                let n = if with_ftrace { CONDITIONS.len() } else { 2 };
                stats::rotation(n, rep)
                    .into_iter()
                    .map(move |c| format!("{}-{rep}", CONDITIONS[c]))
            })
            .map(|c| {
                let ms = runs.get(&format!("{workload}-{c}")).and_then(loop_ms);
                (c, ms)
            })
            .collect(),
        ftrace,
        peers: peers.unwrap_or_default(),
    }
}

/// The hits guestscope's spin_lock and alloc_fd probes matched in a run, the peers'
/// functions ([`PEER_FUNCTIONS`]), its process's start included as a peer's count
/// includes it (`None` for a run without those probes).
pub(super) fn peer_function_hits(r: &Ran) -> Option<f64> {
    let names = [ProbeKind::SpinLock.name(), ProbeKind::AllocFd.name()];
    let t = r.tracing.as_ref()?;
    t.probes
        .iter()
        .any(|name| names.contains(&name.as_str()))
        .then(|| {
            t.counters
                .iter()
                .filter(|(name, _)| names.contains(&name.as_str()))
                .map(|(_, c)| c.matched as f64)
                .sum()
        })
}

/// Events of a loop's process start and exit: the median of its baseline runs (0
/// without any).
pub(super) fn baseline_events(runs: &BTreeMap<String, Ran>, workload: &str) -> f64 {
    let base: Vec<f64> = (0..2)
        .filter_map(|i| runs.get(&format!("{workload}-base-{i}"))?.matched_total())
        .map(|m| m as f64)
        .collect();
    Some(stats::median(&base))
        .filter(|b| b.is_finite())
        .unwrap_or(0.0)
}

/// The events each every-probe run of a loop saw in the loop itself: its matched
/// events less `base`, the process's start and exit.
pub(super) fn loop_events(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    base: f64,
) -> Vec<Option<f64>> {
    series(runs, &format!("{workload}-all"), reps, |r| {
        r.matched_total().map(|m| (m as f64 - base).max(0.0))
    })
}

/// One counter of a run's probes, summed over them (0 without a tracing report).
fn counted(r: &Ran, counter: impl Fn(&guestscope_common::ProbeCounters) -> u64) -> u64 {
    r.tracing
        .as_ref()
        .map_or(0, |t| t.counters.iter().map(|(_, c)| counter(c)).sum())
}

/// A run's loop time, ms (`None` if it failed).
pub(super) fn loop_ms(r: &Ran) -> Option<f64> {
    r.elapsed_s().map(|s| s * 1e3)
}

/// `workload`'s runs that failed or whose agent reported errors, as problems.
pub(super) fn note_run_problems(
    workload: &str,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) {
    for (name, ran) in runs
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{workload}-")))
    {
        // perf's report prints no loop time (it runs none).
        if !ran.ok() || (ran.elapsed_ns.is_none() && !profile::is_report(name)) {
            problems.push(format!(
                "{name}: exit status {:?}, no loop time",
                ran.status
            ));
        }
        if let Some(t) = &ran.tracing {
            for e in &t.errors {
                problems.push(format!("{name}: {e}"));
            }
        }
    }
}

/// Every probe without kernel stacks against every probe with them and untraced.
fn without_stacks_overhead(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    base: f64,
    off: &[Option<f64>],
    all: &[Option<f64>],
    loop_events: &[Option<f64>],
) -> NoStackOverhead {
    let ns = series(runs, &format!("{workload}-nostack"), reps, loop_ms);
    let ns_events = series(runs, &format!("{workload}-nostack"), reps, |r| {
        r.matched_total().map(|m| (m as f64 - base).max(0.0))
    });
    let walk_every = series(runs, &format!("{workload}-walkall"), reps, loop_ms);
    let cached_share = series(
        runs,
        &format!("{workload}-all"),
        reps,
        Ran::stack_cache_share,
    );
    NoStackOverhead {
        traced_ms: Spread::of(&present(&ns)),
        ratio: Spread::of(&stats::paired_ratios(&ns, off)),
        us_per_event: Spread::of(&stats::paired_cost_per(&ns, off, &ns_events))
            .map(|s| s.scaled(1e3)),
        walk_us_per_event: Spread::of(&stats::paired_cost_per(all, &ns, loop_events))
            .map(|s| s.scaled(1e3)),
        walk_every_ms: Spread::of(&present(&walk_every)),
        walk_every_us_per_event: Spread::of(&stats::paired_cost_per(&walk_every, &ns, loop_events))
            .map(|s| s.scaled(1e3)),
        cached_share: Spread::of(&present(&cached_share)),
        agent_cpu_us_per_event: Spread::of(&present(&agent_cpu_per_event(
            runs,
            &format!("{workload}-nostack"),
            reps,
        ))),
        agent_cpu_walk_every_us_per_event: Spread::of(&present(&agent_cpu_per_event(
            runs,
            &format!("{workload}-walkall"),
            reps,
        ))),
    }
}

/// A user kprobe and a user fentry on [`GDB_SYMBOL`] against the built-in probe.
fn user_probe_overhead(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    off: &[Option<f64>],
) -> UserProbeOverhead {
    let fd = series(runs, &format!("{workload}-fd"), reps, loop_ms);
    let ufd = series(runs, &format!("{workload}-ufd"), reps, loop_ms);
    let events = |cond: &str, probe: &str| {
        series(runs, &format!("{workload}-{cond}"), reps, |r| {
            r.tracing.as_ref()?;
            Some(r.counters(probe).matched as f64)
        })
    };
    let fd_events = events("fd", ProbeKind::AllocFd.name());
    let ufd_events = events("ufd", ProbeKind::Kprobe.name());
    let ffd = series(runs, &format!("{workload}-ffd"), reps, loop_ms);
    let ffd_events = events("ffd", ProbeKind::Fentry.name());
    UserProbeOverhead {
        function: GDB_SYMBOL.into(),
        builtin_ms: Spread::of(&present(&fd)),
        user_ms: Spread::of(&present(&ufd)),
        builtin_events: Spread::of(&present(&fd_events)),
        user_events: Spread::of(&present(&ufd_events)),
        builtin_us_per_event: Spread::of(&stats::paired_cost_per(&fd, off, &fd_events))
            .map(|s| s.scaled(1e3)),
        user_us_per_event: Spread::of(&stats::paired_cost_per(&ufd, off, &ufd_events))
            .map(|s| s.scaled(1e3)),
        user_vs_builtin: Spread::of(&stats::paired_ratios(
            &stats::paired_differences(&ufd, off),
            &stats::paired_differences(&fd, off),
        )),
        fentry_ms: Spread::of(&present(&ffd)),
        fentry_events: Spread::of(&present(&ffd_events)),
        fentry_us_per_event: Spread::of(&stats::paired_cost_per(&ffd, off, &ffd_events))
            .map(|s| s.scaled(1e3)),
        fentry_vs_kprobe: Spread::of(&stats::paired_ratios(
            &stats::paired_differences(&ffd, off),
            &stats::paired_differences(&ufd, off),
        )),
    }
}

/// An ftrace kprobe on [`GDB_SYMBOL`] against the untraced loop.
fn ftrace_overhead(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    n: f64,
    off: &[Option<f64>],
) -> FtraceOverhead {
    let ft = series(runs, &format!("{workload}-ftrace"), reps, loop_ms);
    let hits = series(runs, &format!("{workload}-ftrace"), reps, |r| {
        r.tracing.as_ref()?.ftrace.as_ref().map(|f| f.hits as f64)
    });
    FtraceOverhead {
        function: GDB_SYMBOL.into(),
        traced_ms: Spread::of(&present(&ft)),
        ratio: Spread::of(&stats::paired_ratios(&ft, off)),
        hits_per_iteration: Spread::of(&present(&hits).iter().map(|h| h / n).collect::<Vec<_>>()),
        us_per_hit: Spread::of(&stats::paired_cost_per(&ft, off, &hits)).map(|s| s.scaled(1e3)),
    }
}

#[cfg(test)]
mod tests;
