//! The capacity figures: raw vsock blasts, the stream's steps, the pipeline's own
//! ceiling.

use super::*;
use crate::bench::guest::Blast;

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

pub(in crate::bench) fn capacity(
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
pub(super) fn pipeline_ceiling(
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

/// Bytes of the ring-buffer records a probe without arguments wrote, from its
/// counters: a [`CachedEvent`] for each record whose stack the stack cache gave, a
/// [`StackedEvent`] for each walked one. Exact when no hit was lost to a full ring; a
/// lost hit may have been cached or not, and each is taken off the cached ones (the
/// walked records' share, and the bytes, err high).
pub(super) fn ring_record_bytes(c: &ProbeCounters) -> u64 {
    let cached = c
        .stack_cached
        .saturating_sub(c.tallied)
        .saturating_sub(c.ring_full)
        .min(c.emitted);
    cached * size_of::<CachedEvent>() as u64
        + (c.emitted - cached) * size_of::<StackedEvent>() as u64
}
