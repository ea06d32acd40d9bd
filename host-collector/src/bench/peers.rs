//! The peers tables: guestscope and other tracers on the same loop's events, each
//! against the untraced loop of its repetition (the overhead boot's ftrace peer, and the
//! peers boot's bpftrace and ftrace).

use super::*;

/// The rows of a peers table: a condition and how it traced.
pub(super) const PEER_ROWS: [(&str, &str); 10] = [
    ("all", "guestscope, every probe, stacks (cached)"),
    (
        "unstaged",
        "guestscope, every probe, stacks (cached), each cached hit a record of its own",
    ),
    (
        "tallied",
        "guestscope, every probe, the cached hits tallied per stack",
    ),
    (
        "caller",
        "guestscope, every probe, stacks by caller and way in",
    ),
    (
        "caller-tallied",
        "guestscope, every probe, stacks by caller and way in, the cached hits tallied per stack",
    ),
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

/// The rows of [`PEER_ROWS`] that the overhead boot runs too (not bpftrace's).
pub(super) fn overhead_rows() -> Vec<(&'static str, &'static str)> {
    PEER_ROWS
        .into_iter()
        .filter(|(c, _)| CONDITIONS.contains(c))
        .collect()
}

/// Whether a row of [`PEER_ROWS`] is guestscope's (its agent's CPU is one of its
/// costs; the other tracers' rows run with the agent idle).
fn traced_by_guestscope(tracer: &str) -> bool {
    tracer.starts_with("guestscope")
}

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
                    let hits = if !peer.is_empty() {
                        peer.iter().map(|h| h.hits as f64).sum::<f64>()
                    } else if let Some(count) = r.bpftrace_count() {
                        count as f64
                    } else {
                        peer_function_hits(r)?
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
                    agent_us_per_event: traced_by_guestscope(tracer)
                        .then(|| {
                            agent_cpu_marginal(
                                runs,
                                self.workload,
                                condition,
                                self.reps,
                                self.loop_events,
                            )
                        })
                        .flatten(),
                }
            })
            .collect()
    }
}

/// The peers boot's table: every row of [`PEER_ROWS`] on the fopen loop (timed by the
/// guest's instructions when `instruction_clock`).
pub(super) fn peers_boot(
    o: &BenchOptions,
    rootfs: String,
    instruction_clock: bool,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> PeersBoot {
    note_run_problems("fopen", runs, problems);
    let reps = o.peer_reps;
    let off = series(runs, "fopen-off", reps, loop_ms);
    let loop_events = loop_events(runs, "fopen", reps, baseline_events(runs, "fopen"));
    let n = o.fopen_iterations.max(1) as f64;
    let rows = PeerRows {
        workload: "fopen",
        reps,
        iterations: n,
        off: &off,
        loop_events: &loop_events,
    }
    .measure(runs, &PEER_ROWS);
    let events_per_iteration = Spread::of(
        &present(&loop_events)
            .iter()
            .map(|e| e / n)
            .collect::<Vec<_>>(),
    );
    let profile_iterations = o.fopen_iterations * profile::ITERATIONS_FACTOR;
    let profiles = profile::guest_profiles(
        runs,
        profile_iterations,
        events_per_iteration
            .as_ref()
            .map(|s| s.median * profile_iterations as f64),
        problems,
    );
    PeersBoot {
        instruction_clock,
        profiles,
        rootfs,
        iterations: o.fopen_iterations,
        reps,
        untraced_ms: Spread::of(&present(&off)),
        events_per_iteration,
        rows,
    }
}
