//! From the boots' outcomes to the figures: loop overheads, capacity, memory, boot times
//! (the gdb comparison is [`super::gdb_comparison`]'s).

use super::guest::Blast;
use super::*;
use guestscope_common::event::RAW_EVENT_BYTES;

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
    let tallied = with_ftrace.then(|| tallied::overhead(runs, workload, reps, &off, &loop_events));
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
    let peers = with_ftrace.then(|| rows.measure(runs, &PEER_ROWS[..6]));
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

/// The raw blasts' MB/s: by the host's clock, by the guest's write loop, and by
/// repetition for pairing (`None` for a blast that did not deliver all its bytes,
/// which is a problem).
fn blasts(
    o: &BenchOptions,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> (Vec<f64>, Vec<f64>, Vec<Option<f64>>) {
    let mb_s = |x: &Blast| (x.seconds > 0.0).then(|| x.bytes as f64 / x.seconds / 1e6);
    let host: Vec<f64> = b.blasts.iter().filter_map(mb_s).collect();
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
    let by_rep = (0..o.blast_reps)
        .map(|i| {
            let x = b.blasts.get(i)?;
            mb_s(x).filter(|_| x.bytes == o.blast_bytes)
        })
        .collect();
    (host, guest, by_rep)
}

pub(super) fn capacity(
    o: &BenchOptions,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> Capacity {
    let (host, guest, raw_by_rep) = blasts(o, b, runs, problems);
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
            ring_mb_s: ring_record_bytes(&c) as f64 / seconds / 1e6,
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
    let pipeline = pipeline_ceiling(o, runs, &raw_by_rep, problems);
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
            .and_then(|p| p.fraction_of_raw.as_ref())
            .map(|f| f.median),
        pipeline,
    }
}

/// The pipeline's ceiling from the synthetic producer's runs: events and stream bytes
/// the collector took, over the agent's time from its first event until the link had
/// taken the last; each run against `raw_by_rep`, the host's MB/s of the blast before
/// it.
fn pipeline_ceiling(
    o: &BenchOptions,
    runs: &BTreeMap<String, Ran>,
    raw_by_rep: &[Option<f64>],
    problems: &mut Vec<String>,
) -> Option<PipelineCeiling> {
    let events = plans::synthetic_events(o.blast_bytes);
    let mut measured = Vec::new();
    for (i, raw) in raw_by_rep.iter().enumerate() {
        let name = format!("{}-{i}", plans::SYNTHETIC);
        let Some(ran) = runs.get(&name) else { continue };
        let Some(seconds) = ran.elapsed_s() else {
            problems.push(format!("{name}: exit status {:?}, no time", ran.status));
            continue;
        };
        let received = ran
            .received
            .get(ProbeKind::SpinLock.name())
            .copied()
            .unwrap_or(0);
        if received != events {
            problems.push(format!(
                "{name}: the synthetic producer sent {events} events, the collector took {received}"
            ));
        }
        let wire_bytes = ran.bytes_at_exit.saturating_sub(ran.bytes_at_start);
        let wire_mb_s = wire_bytes as f64 / seconds / 1e6;
        let events_per_s = received as f64 / seconds;
        let raw = raw.filter(|r| *r > 0.0);
        measured.push(PipelineRun {
            received,
            seconds,
            events_per_s,
            wire_bytes,
            wire_mb_s,
            fraction_of_raw: raw.map(|r| events_per_s * RAW_EVENT_BYTES as f64 / 1e6 / r),
            stream_fraction_of_raw: raw.map(|r| wire_mb_s / r),
            agent_cpu_us_per_event: ran
                .tracing
                .as_ref()
                .filter(|_| received > 0)
                .map(|t| t.agent_cpu_ns as f64 / 1e3 / received as f64),
            collector_cpu_us_per_event: ran
                .collector_cpu_ns
                .filter(|_| received > 0)
                .map(|ns| ns as f64 / 1e3 / received as f64),
            agent_minor_faults: ran.tracing.as_ref().map(|t| t.agent_minor_faults),
            agent_voluntary_switches: ran.tracing.as_ref().map(|t| t.agent_voluntary_switches),
            agent_involuntary_switches: ran.tracing.as_ref().map(|t| t.agent_involuntary_switches),
        });
    }
    if measured.is_empty() {
        return None;
    }
    let of = |f: fn(&PipelineRun) -> Option<f64>| {
        Spread::of(&measured.iter().filter_map(f).collect::<Vec<_>>())
    };
    Some(PipelineCeiling {
        events,
        events_per_s: of(|r| Some(r.events_per_s)),
        wire_mb_s: of(|r| Some(r.wire_mb_s)),
        fraction_of_raw: of(|r| r.fraction_of_raw),
        stream_fraction_of_raw: of(|r| r.stream_fraction_of_raw),
        agent_cpu_us_per_event: of(|r| r.agent_cpu_us_per_event),
        collector_cpu_us_per_event: of(|r| r.collector_cpu_us_per_event),
        agent_activity: AgentActivity {
            faults: of(|r| per_k_events(r.agent_minor_faults, r.received)),
            waits: of(|r| per_k_events(r.agent_voluntary_switches, r.received)),
            preemptions: of(|r| per_k_events(r.agent_involuntary_switches, r.received)),
        },
        runs: measured,
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

/// Bytes of the ring-buffer records a probe without arguments wrote, from its
/// counters: a [`CachedEvent`] for each record whose stack the stack cache gave, a
/// [`StackedEvent`] for each walked one. Exact when no hit was lost to a full ring; a
/// lost hit may have been cached or not, and each is taken off the cached ones (the
/// walked records' share, and the bytes, err high).
fn ring_record_bytes(c: &ProbeCounters) -> u64 {
    let cached = c
        .stack_cached
        .saturating_sub(c.tallied)
        .saturating_sub(c.ring_full)
        .min(c.emitted);
    cached * size_of::<CachedEvent>() as u64
        + (c.emitted - cached) * size_of::<StackedEvent>() as u64
}

#[cfg(test)]
mod tests;
