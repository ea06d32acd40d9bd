//! The summary's per-probe, per-workload, loss and stream parts, counted from a
//! session.

use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::ProbeCounters;

use super::{
    Losses, ProbeSummary, ProgramTime, StackCount, StreamStats, TOP_STACKS, TalliedStack,
    WorkloadSummary,
};
use crate::session::Session;

/// Builds the per-probe and per-workload parts from a session.
pub fn collect<W: Write>(
    session: &mut Session<W>,
) -> (Vec<ProbeSummary>, Vec<WorkloadSummary>, Losses, StreamStats) {
    let counters: BTreeMap<String, ProbeCounters> = session
        .totals
        .as_ref()
        .map(|t| t.probes.iter().cloned().collect())
        .unwrap_or_default();
    let probes = probe_summaries(session, &counters);
    let workloads = (0..session.workloads.len())
        .map(|i| workload_summary(session, i))
        .collect();
    let losses = losses(session, &counters);
    (probes, workloads, losses, stream_stats(session))
}

/// Each probe's attach outcome, counters and what the collector received of it.
fn probe_summaries<W: Write>(
    session: &Session<W>,
    counters: &BTreeMap<String, ProbeCounters>,
) -> Vec<ProbeSummary> {
    session
        .probes
        .iter()
        .map(|a| {
            let c = counters.get(&a.probe).copied();
            let received = session.events_by_probe.get(&a.probe).copied().unwrap_or(0);
            let spool_dropped = session
                .totals
                .as_ref()
                .and_then(|t| {
                    t.spool_dropped_by_probe
                        .iter()
                        .find(|(p, _)| *p == a.probe)
                        .map(|(_, n)| *n)
                })
                .unwrap_or(0);
            ProbeSummary {
                name: a.probe.clone(),
                attach: a.clone(),
                counters: c,
                received,
                tallied: session.tallied_by_probe.get(&a.probe).copied().unwrap_or(0),
                spool_dropped,
                unaccounted: c.map(|c| {
                    let received = session.events_of_current_agent(&a.probe)
                        + session.tallied_of_current_agent(&a.probe);
                    c.matched as i64 - (received + c.ring_full + spool_dropped) as i64
                }),
            }
        })
        .collect()
}

/// Workload `i`'s summary: its run, events per probe, named locks, top stacks and
/// output.
fn workload_summary<W: Write>(session: &mut Session<W>, i: usize) -> WorkloadSummary {
    let mut top_stacks = BTreeMap::new();
    let mut names: Vec<String> = session.workloads[i]
        .stack_counts
        .keys()
        .map(|(probe, _)| probe.to_string())
        .collect();
    names.sort();
    names.dedup();
    for name in names {
        let top = session.top_stacks(i, &name, TOP_STACKS);
        if !top.is_empty() {
            top_stacks.insert(
                name,
                top.into_iter()
                    .map(|(count, stack_id, frames)| StackCount {
                        count,
                        stack_id,
                        frames,
                    })
                    .collect(),
            );
        }
    }
    let w = &session.workloads[i];
    let duration_ms = w
        .exited
        .as_ref()
        .map(|x| x.end_ns.saturating_sub(w.started.start_ns) as f64 / 1e6);
    WorkloadSummary {
        name: w.started.name.clone(),
        pid: w.started.pid,
        argv: w.started.argv.clone(),
        status: w.exited.as_ref().map(|x| x.status),
        timed_out: w.exited.as_ref().is_some_and(|x| x.timed_out),
        duration_ms,
        start_ns: w.started.start_ns,
        events: w.events.clone(),
        tallied: w.tallied.clone(),
        tallied_stacks: w
            .tallied_stacks
            .iter()
            .map(|((probe, stack_id), &hits)| TalliedStack {
                probe: probe.clone(),
                stack_id: *stack_id,
                hits,
            })
            .collect(),
        programs: w
            .program_runs
            .iter()
            .map(|r| ProgramTime {
                program: r.program.clone(),
                runs: r.runs,
                run_ns: r.run_ns,
                ns_per_run: r.ns_per_run().unwrap_or(0.0),
            })
            .collect(),
        pids: w.pids.iter().copied().collect(),
        named_locks: w.named_locks.clone(),
        top_stacks,
        output: w
            .exited
            .as_ref()
            .map(|x| x.output.clone())
            .unwrap_or_default(),
    }
}

/// Everything lost, by cause: the probes' counters, the sequence gaps, the agent's
/// spool and what it sent but never arrived.
fn losses<W: Write>(session: &Session<W>, counters: &BTreeMap<String, ProbeCounters>) -> Losses {
    let mut losses = Losses {
        records_missing: session.seq.missing,
        ..Losses::default()
    };
    for c in counters.values() {
        losses.ring_full += c.ring_full;
        losses.stack_failed += c.stack_failed;
        losses.nested += c.nested;
    }
    if let Some(t) = &session.totals {
        losses.events_sent = Some(t.events_sent);
        losses.spool_dropped_records = t.spool_dropped_records;
        losses.spool_dropped_events = t.spool_dropped_events;
        losses.events_missing = Some(
            t.events_sent
                .saturating_sub(t.spool_dropped_events)
                .saturating_sub(session.events_from_current_agent()),
        );
    }
    losses
}

/// The stream's accounting from the session (the receiver adds bytes, the decode
/// error and the link).
fn stream_stats<W: Write>(session: &Session<W>) -> StreamStats {
    let busy_ns: u64 = session
        .workloads
        .iter()
        .filter_map(|w| {
            w.exited
                .as_ref()
                .map(|x| x.end_ns.saturating_sub(w.started.start_ns))
        })
        .sum();
    let attributed = session.events_received - session.events_unattributed;
    StreamStats {
        records: session.records,
        bytes: 0,
        seq: session.seq.clone(),
        decode_error: None,
        events_received: session.events_received,
        events_tallied: session.events_tallied,
        events_unattributed: session.events_unattributed,
        events_stack_unknown: session.events_stack_unknown,
        events_per_s: (busy_ns > 0).then(|| attributed as f64 / (busy_ns as f64 / 1e9)),
        link: Default::default(),
        agent_restarts: session.restarts.clone(),
    }
}
