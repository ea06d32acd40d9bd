//! From the boots' outcomes to the figures: loop overheads, the gdb comparison, capacity, memory, boot times.

use super::*;

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
    let base: Vec<f64> = (0..2)
        .filter_map(|i| runs.get(&format!("{workload}-base-{i}"))?.matched_total())
        .map(|m| m as f64)
        .collect();
    let base = stats::median(&base);
    let base = if base.is_finite() { base } else { 0.0 };
    let off = series(runs, &format!("{workload}-off"), reps, loop_ms);
    let all = series(runs, &format!("{workload}-all"), reps, loop_ms);
    let loop_events = series(runs, &format!("{workload}-all"), reps, |r| {
        r.matched_total().map(|m| (m as f64 - base).max(0.0))
    });
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
    let ftrace = with_ftrace.then(|| ftrace_overhead(runs, workload, reps, n, &off));
    // guestscope and its ftrace peer (bpftrace needs the peers boot's root file system).
    let rows = PeerRows {
        workload,
        reps,
        iterations: n,
        off: &off,
        loop_events: &loop_events,
    };
    let peers = with_ftrace.then(|| rows.measure(runs, &PEER_ROWS[..4]));
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
        agent_cpu_marginal_us_per_event: agent_cpu_marginal(runs, workload, reps, &loop_events),
        without_stacks,
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

/// The rows of a peers table: a condition and how it traced.
pub(super) const PEER_ROWS: [(&str, &str); 6] = [
    ("all", "guestscope, every probe, stacks (cached)"),
    ("nostack", "guestscope, every probe, no stacks"),
    ("ftpeer", "ftrace kprobes, comm filter, no stacks"),
    (
        "ftpeerstk",
        "ftrace kprobes, comm filter + options/stacktrace",
    ),
    ("bpfcount", "bpftrace kprobes, comm filter, @ = count()"),
    (
        "bpfstack",
        "bpftrace kprobes, comm filter, @[kstack] = count()",
    ),
];

/// What a peers table is measured against: a loop's untraced runs and the events
/// guestscope's every-probe runs saw, by repetition.
pub(super) struct PeerRows<'a> {
    pub(super) workload: &'a str,
    pub(super) reps: usize,
    pub(super) iterations: f64,
    pub(super) off: &'a [Option<f64>],
    pub(super) loop_events: &'a [Option<f64>],
}

impl PeerRows<'_> {
    /// Each of `rows` against the untraced loop, paired by repetition; per event over
    /// the every-probe run's loop events.
    pub(super) fn measure(
        &self,
        runs: &BTreeMap<String, Ran>,
        rows: &[(&str, &str)],
    ) -> Vec<PeerOverhead> {
        rows.iter()
            .map(|(condition, tracer)| {
                let name = format!("{}-{condition}", self.workload);
                let ms = series(runs, &name, self.reps, loop_ms);
                let hits = present(&series(runs, &name, self.reps, |r| {
                    let peer = &r.tracing.as_ref()?.ftrace_peer;
                    let hits = if peer.is_empty() {
                        r.bpftrace_count? as f64
                    } else {
                        peer.iter().map(|h| h.hits as f64).sum::<f64>()
                    };
                    Some(hits / self.iterations)
                }));
                PeerOverhead {
                    tracer: (*tracer).into(),
                    traced_ms: Spread::of(&present(&ms)),
                    ratio: Spread::of(&stats::paired_ratios(&ms, self.off)),
                    // ms / events → µs: × 1000.
                    us_per_event: Spread::of(&stats::paired_cost_per(
                        &ms,
                        self.off,
                        self.loop_events,
                    ))
                    .map(|s| s.scaled(1e3)),
                    hits_per_iteration: Spread::of(&hits),
                }
            })
            .collect()
    }
}

/// The agent's CPU per event of each run of a condition, µs.
fn agent_cpu_per_event(
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

/// The peers boot's table: every row of [`PEER_ROWS`] on the fopen loop.
pub(super) fn peers_boot(
    o: &BenchOptions,
    rootfs: String,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> PeersBoot {
    note_run_problems("fopen", runs, problems);
    let reps = o.peer_reps;
    let base: Vec<f64> = (0..2)
        .filter_map(|i| runs.get(&format!("fopen-base-{i}"))?.matched_total())
        .map(|m| m as f64)
        .collect();
    let base = Some(stats::median(&base))
        .filter(|b| b.is_finite())
        .unwrap_or(0.0);
    let off = series(runs, "fopen-off", reps, loop_ms);
    let loop_events = series(runs, "fopen-all", reps, |r| {
        r.matched_total().map(|m| (m as f64 - base).max(0.0))
    });
    let n = o.fopen_iterations.max(1) as f64;
    let rows = PeerRows {
        workload: "fopen",
        reps,
        iterations: n,
        off: &off,
        loop_events: &loop_events,
    }
    .measure(runs, &PEER_ROWS);
    PeersBoot {
        rootfs,
        iterations: o.fopen_iterations,
        reps,
        untraced_ms: Spread::of(&present(&off)),
        events_per_iteration: Spread::of(
            &present(&loop_events)
                .iter()
                .map(|e| e / n)
                .collect::<Vec<_>>(),
        ),
        rows,
    }
}

/// One counter of a run's probes, summed over them (0 without a tracing report).
fn counted(r: &Ran, counter: impl Fn(&guestscope_common::ProbeCounters) -> u64) -> u64 {
    r.tracing
        .as_ref()
        .map_or(0, |t| t.counters.iter().map(|(_, c)| counter(c)).sum())
}

/// What the loop's events cost the agent, µs per event: its CPU in the every-probe run
/// less its CPU in the untraced run of the same repetition, over the loop's events.
fn agent_cpu_marginal(
    runs: &BTreeMap<String, Ran>,
    workload: &str,
    reps: usize,
    loop_events: &[Option<f64>],
) -> Option<Spread> {
    let agent_cpu_ms = |condition: &str| {
        series(runs, &format!("{workload}-{condition}"), reps, |r| {
            r.tracing.as_ref().map(|t| t.agent_cpu_ns as f64 / 1e6)
        })
    };
    // ms / events → µs: × 1000.
    Spread::of(&stats::paired_cost_per(
        &agent_cpu_ms("all"),
        &agent_cpu_ms("off"),
        loop_events,
    ))
    .map(|s| s.scaled(1e3))
}

/// A run's loop time, ms (`None` if it failed).
fn loop_ms(r: &Ran) -> Option<f64> {
    r.elapsed_s().map(|s| s * 1e3)
}

/// `workload`'s runs that failed or whose agent reported errors, as problems.
fn note_run_problems(workload: &str, runs: &BTreeMap<String, Ran>, problems: &mut Vec<String>) {
    for (name, ran) in runs
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{workload}-")))
    {
        if !ran.ok() || ran.elapsed_ns.is_none() {
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
    let cached_share = series(runs, &format!("{workload}-all"), reps, |r| {
        let t = r.tracing.as_ref()?;
        let (cached, emitted) = t
            .counters
            .iter()
            .fold((0, 0), |(c, e), (_, k)| (c + k.stack_cached, e + k.emitted));
        (emitted > 0).then(|| cached as f64 / emitted as f64)
    });
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

pub(super) fn gdb_comparison(
    o: &BenchOptions,
    runs: &BTreeMap<String, Ran>,
    traces: &BTreeMap<String, FunctionTrace>,
    problems: &mut Vec<String>,
) -> GdbComparison {
    let n = o.gdb_iterations.max(2);
    let per_iter = |r: &Ran| r.elapsed_s().map(|s| s * 1e3 / n as f64);
    let gs = series(runs, "short-fd", o.gdb_reps, per_iter);
    let gs_all = series(runs, "short-all", o.gdb_reps, per_iter);
    let off = series(runs, "short-off", o.gdb_reps, per_iter);
    let gdb: Vec<Option<f64>> = (0..o.gdb_reps)
        .map(|rep| {
            let name = format!("gdb-{rep}");
            let t = traces.get(&name)?;
            if t.matching != n {
                problems.push(format!(
                    "{name}: the gdb method saw {} of the loop's {n} {GDB_SYMBOL} calls ({})",
                    t.matching, t.ended
                ));
                return None;
            }
            // n hits span n - 1 iterations.
            Some(t.matching_span_s * 1e3 / (n - 1) as f64)
        })
        .collect();
    let per_hit: Vec<Option<f64>> = vec![Some(1.0); o.gdb_reps];
    GdbComparison {
        symbol: GDB_SYMBOL.into(),
        iterations: n,
        reps: o.gdb_reps,
        gdb_ms_per_iteration: Spread::of(&present(&gdb)),
        guestscope_ms_per_iteration: Spread::of(&present(&gs)),
        guestscope_all_ms_per_iteration: Spread::of(&present(&gs_all)),
        guestscope_all_faster: Spread::of(&stats::paired_ratios(&gdb, &gs_all)),
        untraced_ms_per_iteration: Spread::of(&present(&off)),
        guestscope_faster: Spread::of(&stats::paired_ratios(&gdb, &gs)),
        gdb_slowdown: Spread::of(&stats::paired_ratios(&gdb, &off)),
        // Only the repetitions the gdb method completed have a limit.
        share_of_limit: Spread::of(&stats::paired_ratios(
            &off,
            &gs.iter()
                .zip(&gdb)
                .map(|(g, d)| d.and(*g))
                .collect::<Vec<_>>(),
        )),
        gdb_ms_per_hit: Spread::of(&stats::paired_cost_per(&gdb, &off, &per_hit)),
        traces: traces.values().cloned().collect(),
    }
}

pub(super) fn capacity(
    o: &BenchOptions,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> Capacity {
    let host: Vec<f64> = b
        .blasts
        .iter()
        .filter(|x| x.seconds > 0.0)
        .map(|x| x.bytes as f64 / x.seconds / 1e6)
        .collect();
    let guest: Vec<f64> = (0..o.blast_reps)
        .filter_map(|i| runs.get(&format!("blast-{i}")))
        .filter_map(|r| Some(o.blast_bytes as f64 / r.elapsed_s()? / 1e6))
        .collect();
    for x in &b.blasts {
        if x.bytes != o.blast_bytes {
            problems.push(format!(
                "a vsock blast delivered {} of {} bytes",
                x.bytes, o.blast_bytes
            ));
        }
    }
    let mut steps = Vec::new();
    let mut rates: Vec<u64> = o.rates.clone();
    rates.push(0);
    for rate in rates {
        let name = format!("flood-{rate}");
        let Some(ran) = runs.get(&name) else { continue };
        let c = ran.counters(ProbeKind::AllocFd.name());
        let received = ran
            .received
            .get(ProbeKind::AllocFd.name())
            .copied()
            .unwrap_or(0);
        let Some(seconds) = ran.elapsed_s() else {
            problems.push(format!(
                "{name}: exit status {:?}, no loop time",
                ran.status
            ));
            continue;
        };
        let wire_bytes = ran.bytes_at_exit.saturating_sub(ran.bytes_at_start);
        let step = CapacityStep {
            requested_rate: rate,
            matched: c.matched,
            emitted: c.emitted,
            ring_full: c.ring_full,
            received,
            seconds,
            rate: c.matched as f64 / seconds,
            lossless: c.ring_full == 0 && received == c.matched && c.matched > 0,
            accounted: received + c.ring_full == c.matched && c.emitted == received,
            wire_bytes,
            wire_mb_s: wire_bytes as f64 / seconds / 1e6,
            ring_mb_s: c.emitted as f64 * size_of::<StackedEvent>() as f64 / seconds / 1e6,
        };
        if !step.accounted {
            problems.push(format!(
                "{name}: counts do not add up: matched {} != received {} + ring_full {} (emitted {})",
                c.matched, received, c.ring_full, c.emitted
            ));
        }
        steps.push(step);
    }
    let highest = stats::highest_lossless(
        &steps
            .iter()
            .map(|t| (t.rate, t.lossless))
            .collect::<Vec<_>>(),
    );
    let best = highest
        .and_then(|r| steps.iter().find(|s| s.rate == r))
        .cloned();
    let raw = Spread::of(&host);
    let pipeline = pipeline_ceiling(runs, problems);
    Capacity {
        raw: RawThroughput {
            reps: b.blasts.len(),
            bytes: o.blast_bytes,
            host_mb_s: raw.clone(),
            guest_mb_s: Spread::of(&guest),
        },
        max_lossless_rate: best.as_ref().map(|s| s.rate),
        max_lossless_wire_mb_s: best.as_ref().map(|s| s.wire_mb_s),
        max_lossless_ring_mb_s: best.as_ref().map(|s| s.ring_mb_s),
        wire_bytes_per_event: best
            .as_ref()
            .filter(|s| s.received > 0)
            .map(|s| s.wire_bytes as f64 / s.received as f64),
        fraction_of_raw: match (&best, &raw) {
            (Some(s), Some(r)) if r.median > 0.0 => Some(s.wire_mb_s / r.median),
            _ => None,
        },
        accounting_ok: !steps.is_empty() && steps.iter().all(|s| s.accounted),
        steps,
        pipeline_fraction_of_raw: pipeline
            .as_ref()
            .zip(raw.as_ref())
            .and_then(|(p, r)| (r.median > 0.0).then(|| p.wire_mb_s / r.median)),
        pipeline,
    }
}

/// The pipeline's ceiling from the synthetic producer's run: events and stream bytes
/// the collector took, over the agent's time from its first event until the link had
/// taken the last.
fn pipeline_ceiling(
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> Option<PipelineCeiling> {
    let ran = runs.get(plans::SYNTHETIC)?;
    let Some(seconds) = ran.elapsed_s() else {
        problems.push(format!(
            "the synthetic producer: exit status {:?}, no time",
            ran.status
        ));
        return None;
    };
    let received = ran
        .received
        .get(ProbeKind::SpinLock.name())
        .copied()
        .unwrap_or(0);
    if received != plans::SYNTHETIC_EVENTS {
        problems.push(format!(
            "the synthetic producer sent {} events, the collector took {received}",
            plans::SYNTHETIC_EVENTS
        ));
    }
    let wire_bytes = ran.bytes_at_exit.saturating_sub(ran.bytes_at_start);
    Some(PipelineCeiling {
        events: plans::SYNTHETIC_EVENTS,
        received,
        seconds,
        events_per_s: received as f64 / seconds,
        wire_bytes,
        wire_mb_s: wire_bytes as f64 / seconds / 1e6,
        agent_cpu_us_per_event: ran
            .tracing
            .as_ref()
            .filter(|_| received > 0)
            .map(|t| t.agent_cpu_ns as f64 / 1e3 / received as f64),
    })
}

pub(super) fn memory(
    events: u64,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    points: &[(String, u64, u64)],
    collector_peak: Option<u64>,
    reset: bool,
    jsonl_bytes: u64,
) -> Memory {
    let status = b.session.artifact_text("agent_status").unwrap_or_default();
    let loaded = b
        .session
        .artifact_text("agent_status_loaded")
        .unwrap_or_default();
    let pts: Vec<MemoryPoint> = points
        .iter()
        .map(|(name, received, collector)| MemoryPoint {
            events: *received,
            agent_peak_kib: runs
                .get(name)
                .and_then(|r| r.tracing.as_ref())
                .map_or(0, |t| t.agent_peak_rss_kib),
            collector_peak_kib: *collector,
        })
        .collect();
    let slope = match pts.as_slice() {
        [a, .., z] if z.events > a.events => {
            let m = (z.events - a.events) as f64 / 1e6;
            Some((
                (z.agent_peak_kib as f64 - a.agent_peak_kib as f64) / m,
                (z.collector_peak_kib as f64 - a.collector_peak_kib as f64) / m,
            ))
        }
        _ => None,
    };
    Memory {
        events_planned: events,
        events_received: b.session.events_received,
        ring_full: runs
            .values()
            .map(|r| r.counters(ProbeKind::AllocFd.name()).ring_full)
            .sum(),
        points: pts,
        agent_peak_kib: status_kib(&status, "VmHWM"),
        agent_load_peak_kib: status_kib(&loaded, "VmHWM"),
        agent_rss_anon_kib: status_kib(&status, "RssAnon"),
        agent_rss_file_kib: status_kib(&status, "RssFile"),
        collector_peak_kib: collector_peak,
        collector_peak_reset: reset,
        kib_per_million_events: slope,
        events_jsonl_bytes: jsonl_bytes,
        wall_s: b.wall_s,
    }
}

pub(super) fn boot_times(
    boots: &[(String, Option<f64>, Option<f64>)],
    lab_summary: Option<&Path>,
) -> BootTimes {
    let mut samples: Vec<(String, f64)> = boots
        .iter()
        .filter_map(|(n, hello, _)| Some((format!("bench {n}"), (*hello)?)))
        .collect();
    let mut banners: Vec<f64> = boots.iter().filter_map(|(_, _, banner)| *banner).collect();
    if let Some(summary) = lab_summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
    {
        for s in summary["experiments"]["boot"]["samples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(i), Some(t)) = (s["boot"].as_u64(), s["agent_hello_s"].as_f64()) {
                samples.push((format!("lab boot {i}"), t));
            }
            if let Some(t) = s["kernel_banner_s"].as_f64() {
                banners.push(t);
            }
        }
    }
    BootTimes {
        agent_ready_s: Spread::of(&samples.iter().map(|(_, t)| *t).collect::<Vec<_>>()),
        kernel_banner_s: Spread::of(&banners),
        samples,
    }
}

pub(super) fn lab_timing(wall_s: f64, summary: Option<&Path>) -> LabTiming {
    let s = summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    LabTiming {
        wall_s,
        guestscope_lab_s: s.as_ref().and_then(|s| s["run"]["wall_s"].as_f64()),
        complete: s
            .as_ref()
            .and_then(|s| s["run"]["outcome"]["complete"].as_bool()),
    }
}

#[cfg(test)]
mod tests {
    use guestscope_common::{ProbeCounters, plan::WorkloadTracing};

    use super::*;

    /// A run of `matched` events (all counted as spin_lock) in `loop_ms`, the agent
    /// using `agent_ms` of CPU.
    fn ran(matched: u64, loop_ms: u64, agent_ms: u64) -> Ran {
        Ran {
            status: Some(0),
            elapsed_ns: Some(loop_ms * 1_000_000),
            tracing: Some(WorkloadTracing {
                counters: vec![(
                    "spin_lock".into(),
                    ProbeCounters {
                        matched,
                        ..ProbeCounters::default()
                    },
                )],
                agent_cpu_ns: agent_ms * 1_000_000,
                ..WorkloadTracing::default()
            }),
            ..Ran::default()
        }
    }

    #[test]
    fn the_agents_marginal_cost_per_event_leaves_out_what_every_workload_costs_it() {
        let mut runs = BTreeMap::new();
        // Rep 0: 10,000 loop events (10,100 matched, 100 of them process start and exit),
        // 30 ms of agent CPU traced against 5 ms untraced; rep 1: 20,000, 50 ms against 10.
        for (rep, (events, all_ms, off_ms)) in
            [(10_000, 30, 5), (20_000, 50, 10)].iter().enumerate()
        {
            runs.insert(format!("fopen-base-{rep}"), ran(100, 1, 1));
            runs.insert(format!("fopen-off-{rep}"), ran(0, 70, *off_ms));
            runs.insert(format!("fopen-all-{rep}"), ran(events + 100, 150, *all_ms));
        }
        let mut problems = Vec::new();
        let o = loop_overhead("fopen", 2000, 2, false, &runs, &mut problems);
        let gross = o.agent_cpu_us_per_event.unwrap();
        let marginal = o.agent_cpu_marginal_us_per_event.unwrap();
        // Gross: 30 ms / 10,100 and 50 ms / 20,100 matched events.
        assert!((gross.median - (30e3 / 10_100.0 + 50e3 / 20_100.0) / 2.0).abs() < 1e-6);
        // Marginal: (30 − 5) ms / 10,000 = 2.5 µs and (50 − 10) ms / 20,000 = 2.0 µs.
        assert!((marginal.median - 2.25).abs() < 1e-9, "{marginal:?}");
        assert_eq!((marginal.min, marginal.max, marginal.n), (2.0, 2.5, 2));
    }

    #[test]
    fn the_ftrace_peer_is_paired_with_the_untraced_loop_over_guestscopes_events() {
        use guestscope_common::plan::FtraceHits;
        let mut runs = BTreeMap::new();
        for rep in 0..2 {
            runs.insert(format!("fopen-base-{rep}"), ran(0, 1, 1));
            runs.insert(format!("fopen-off-{rep}"), ran(0, 100, 5));
            // guestscope saw 10,000 events in the loop.
            runs.insert(format!("fopen-all-{rep}"), ran(10_000, 160, 30));
            let mut peer = ran(0, 130 + 10 * rep as u64, 5);
            peer.tracing.as_mut().unwrap().ftrace_peer = vec![
                FtraceHits {
                    hits: 9_000,
                    ..FtraceHits::default()
                },
                FtraceHits {
                    hits: 2_000,
                    ..FtraceHits::default()
                },
            ];
            runs.insert(format!("fopen-ftpeer-{rep}"), peer);
        }
        let o = loop_overhead("fopen", 2000, 2, true, &runs, &mut Vec::new());
        let peer = o
            .peers
            .iter()
            .find(|p| p.tracer.starts_with("ftrace kprobes, comm filter, no"))
            .unwrap();
        // 130 and 140 ms against 100: 1.3x and 1.4x; 3 and 4 µs over 10,000 events.
        let ratio = peer.ratio.as_ref().unwrap();
        assert!((ratio.median - 1.35).abs() < 1e-9, "{ratio:?}");
        let per = peer.us_per_event.as_ref().unwrap();
        assert!((per.median - 3.5).abs() < 1e-9, "{per:?}");
        // 11,000 hits over 2000 iterations.
        assert!((peer.hits_per_iteration.as_ref().unwrap().median - 5.5).abs() < 1e-9);
        let ours = &o.peers[0];
        assert!((ours.ratio.as_ref().unwrap().median - 1.6).abs() < 1e-9);
        assert!(ours.hits_per_iteration.is_none());
        // A condition that did not run has no figures.
        assert!(o.peers[3].ratio.is_none());
        // bpftrace's printed count is its hits, in the peers boot's table.
        for rep in 0..2 {
            let mut count = ran(0, 110, 5);
            count.bpftrace_count = Some(12_000);
            runs.insert(format!("fopen-bpfcount-{rep}"), count);
        }
        let rows = PeerRows {
            workload: "fopen",
            reps: 2,
            iterations: 2000.0,
            off: &[Some(100.0), Some(100.0)],
            loop_events: &[Some(10_000.0), Some(10_000.0)],
        }
        .measure(&runs, &PEER_ROWS);
        let bpf = &rows[4];
        assert!(bpf.tracer.starts_with("bpftrace"));
        assert!((bpf.hits_per_iteration.as_ref().unwrap().median - 6.0).abs() < 1e-9);
        assert!((bpf.us_per_event.as_ref().unwrap().median - 1.0).abs() < 1e-9);
    }
}
