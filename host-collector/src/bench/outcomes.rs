//! What a boot's stream told of its workloads: each one's outcome ([`Ran`]), the
//! stream bytes and the collector's CPU time at its start and exit ([`StreamMarks`]),
//! and the boot's own problems.

use super::*;
use crate::session::StackCounts;
/// One workload's outcome, as the stream told it.
#[derive(Clone, Debug, Default)]
pub(super) struct Ran {
    pub(super) status: Option<i32>,
    /// The loop's time from the workload's own summary line, ns.
    pub(super) elapsed_ns: Option<u64>,
    /// The agent's tracing report.
    pub(super) tracing: Option<WorkloadTracing>,
    /// Events received per probe.
    pub(super) received: BTreeMap<String, u64>,
    /// Events received per probe and stack id (ids name the same stack for the whole
    /// boot).
    pub(super) stack_counts: StackCounts,
    /// Stream bytes read when its start and exit records arrived.
    pub(super) bytes_at_start: u64,
    pub(super) bytes_at_exit: u64,
    /// The collector's CPU time from its start record to its exit record, ns: what
    /// taking in its events cost the host.
    pub(super) collector_cpu_ns: Option<u64>,
    /// What it wrote (stdout and stderr, as the agent kept it).
    pub(super) output: String,
    /// What the kernel timed of each eBPF program during the run (plans with
    /// `program_stats` only).
    pub(super) programs: Vec<guestscope_common::wire::ProgramRun>,
}

impl Ran {
    pub(super) fn ok(&self) -> bool {
        self.status == Some(0)
    }
    pub(super) fn elapsed_s(&self) -> Option<f64> {
        self.elapsed_ns
            .filter(|_| self.ok())
            .map(|ns| ns as f64 / 1e9)
    }
    pub(super) fn counters(&self, probe: &str) -> guestscope_common::ProbeCounters {
        self.tracing
            .as_ref()
            .and_then(|t| t.counters.iter().find(|(n, _)| n == probe).map(|(_, c)| *c))
            .unwrap_or_default()
    }
    /// The count a bpftrace workload printed (`@n: N`), if any.
    pub(super) fn bpftrace_count(&self) -> Option<u64> {
        bpftrace_count(&self.output)
    }
    /// Of the probes' recorded and tallied hits, the share whose stack the stack cache
    /// gave (0 to 1); `None` without the agent's counters or with no hit.
    pub(super) fn stack_cache_share(&self) -> Option<f64> {
        let (cached, hits) = self
            .tracing
            .as_ref()?
            .counters
            .iter()
            .fold((0, 0), |(c, h), (_, k)| {
                (c + k.stack_cached, h + k.emitted + k.tallied)
            });
        (hits > 0).then(|| cached as f64 / hits as f64)
    }
    pub(super) fn matched_total(&self) -> Option<u64> {
        self.tracing
            .as_ref()
            .map(|t| t.counters.iter().map(|(_, c)| c.matched).sum())
    }
}

/// The value of `"elapsed_ns"` in a workload's JSON summary line.
pub fn elapsed_ns(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        v.get("workload")?;
        v.get("elapsed_ns")?.as_u64()
    })
}

/// The largest count bpftrace printed for map `@n` (`@n: 12345`) in a workload's output.
pub fn bpftrace_count(output: &str) -> Option<u64> {
    output
        .lines()
        .filter_map(|line| line.trim().strip_prefix("@n: ")?.trim().parse().ok())
        .max()
}

/// Per-workload outcomes of a boot (by workload name).
pub(super) fn outcomes(b: &Booted, marks: &StreamMarks) -> BTreeMap<String, Ran> {
    let s = &b.session;
    s.workloads
        .iter()
        .map(|w| {
            let name = w.started.name.clone();
            let tracing = s
                .artifact_text(&format!("{TRACING_ARTIFACT_PREFIX}{name}"))
                .and_then(|t| serde_json::from_str(&t).ok());
            let m = marks.marks.get(&name).copied().unwrap_or_default();
            let collector_cpu_ns = m
                .exit_cpu_ns
                .and_then(|exit| exit.checked_sub(m.start_cpu_ns?));
            let ran = Ran {
                status: w.exited.as_ref().map(|x| x.status),
                elapsed_ns: w.exited.as_ref().and_then(|x| elapsed_ns(&x.output)),
                tracing,
                received: w.events.clone(),
                stack_counts: w.stack_counts.clone(),
                bytes_at_start: m.start_bytes,
                bytes_at_exit: m.exit_bytes,
                collector_cpu_ns,
                output: w
                    .exited
                    .as_ref()
                    .map(|x| x.output.clone())
                    .unwrap_or_default(),
                programs: w.program_runs.clone(),
            };
            (name, ran)
        })
        .collect()
}

/// Where the stream stood when one workload's start and exit records arrived.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WorkloadMarks {
    /// Stream bytes read at its start record.
    pub(super) start_bytes: u64,
    /// Stream bytes read at its exit record (0 before it).
    pub(super) exit_bytes: u64,
    /// The collector process's CPU time (every thread: reading, decoding, writing) at
    /// its start record, ns.
    pub(super) start_cpu_ns: Option<u64>,
    /// The same at its exit record.
    pub(super) exit_cpu_ns: Option<u64>,
}

/// Records, on every record, the stream bytes and the collector's CPU time at each
/// workload's start and exit.
#[derive(Default)]
pub(super) struct StreamMarks {
    /// Each workload's marks, by name.
    pub(super) marks: HashMap<String, WorkloadMarks>,
    pub(super) started: usize,
    pub(super) exited: usize,
}

/// The CPU time this process has used, ns (None if the clock cannot be read).
fn process_cpu_ns() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()?;
    Some(u64::try_from(t.tv_sec()).ok()? * 1_000_000_000 + u64::try_from(t.tv_nsec()).ok()?)
}

impl StreamMarks {
    /// Returns (newly started workload, newly exited workload) names.
    pub(super) fn observe(
        &mut self,
        s: &Collecting,
        bytes: u64,
    ) -> (Option<String>, Option<String>) {
        let mut new = (None, None);
        if s.workloads.len() > self.started {
            self.started = s.workloads.len();
            let name = s.workloads[self.started - 1].started.name.clone();
            self.marks.insert(
                name.clone(),
                WorkloadMarks {
                    start_bytes: bytes,
                    start_cpu_ns: process_cpu_ns(),
                    ..WorkloadMarks::default()
                },
            );
            new.0 = Some(name);
        }
        let exited = s.workloads.iter().filter(|w| w.exited.is_some()).count();
        if exited > self.exited {
            self.exited = exited;
            if let Some(w) = s.workloads.iter().rev().find(|w| w.exited.is_some()) {
                let m = self.marks.entry(w.started.name.clone()).or_default();
                m.exit_bytes = bytes;
                m.exit_cpu_ns = process_cpu_ns();
                new.1 = Some(w.started.name.clone());
            }
        }
        new
    }
}

pub(super) fn note_outcome(what: &str, b: &Booted, problems: &mut Vec<String>) {
    if !b.outcome.complete {
        problems.push(format!(
            "{what} boot incomplete: {}{}",
            b.outcome.how,
            b.outcome
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
    }
    let seq = &b.session.seq;
    if seq.missing > 0 || seq.duplicates > 0 {
        problems.push(format!(
            "{what} boot: {} stream records missing, {} duplicated",
            seq.missing, seq.duplicates
        ));
    }
}
