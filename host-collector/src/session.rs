//! One run's collected state: applies each record of the guest stream, writes
//! `events.jsonl` as events arrive, and keeps the aggregates the report needs.
//!
//! Memory stays bounded by what the report shows (counts per workload, probe and
//! stack), not by the number of events: events go to disk as they arrive.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Write;

use guestscope_common::event::{ProbeKind, RawEvent, USER_ARGS};
use guestscope_common::wire::{
    Body, Hello, ProbeAttach, ProgramRun, Record, Totals, WorkloadExited, WorkloadStarted,
};
use serde::{Deserialize, Serialize};

use self::seq::{SeqTracker, SeqVerdict};
use guest_kernel::kallsyms::Kallsyms;

/// A workload as seen by the collector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadRun {
    /// Start record.
    pub started: WorkloadStarted,
    /// Exit record, once received.
    pub exited: Option<WorkloadExited>,
    /// Events per probe name (tallied hits included).
    pub events: BTreeMap<String, u64>,
    /// Of those, hits the probes only counted per stack (no record of their own).
    #[serde(default)]
    pub tallied: BTreeMap<String, u64>,
    /// Those hits per (probe name, stack id).
    #[serde(skip)]
    pub tallied_stacks: BTreeMap<(String, i32), u64>,
    /// What the kernel timed of each eBPF program during the workload (empty unless
    /// the run asked for program statistics).
    #[serde(default)]
    pub program_runs: Vec<ProgramRun>,
    /// Distinct pids whose events were attributed to this workload.
    pub pids: BTreeSet<u32>,
    /// Event count per (probe name, stack id): a built-in probe's name, or a user
    /// probe's `kprobe:FUNCTION`.
    #[serde(skip)]
    pub stack_counts: StackCounts,
    /// spin_lock hits per named lock (global lock symbols such as `jiffies_lock`).
    pub named_locks: BTreeMap<String, u64>,
    /// spin_lock hits on named locks, per stack id.
    #[serde(skip)]
    pub named_locks_by_stack: HashMap<i32, BTreeMap<String, u64>>,
    /// Events per probe per [`TIMELINE_BIN_NS`] bin since the workload started.
    #[serde(skip)]
    pub timeline: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Page faults by what the access was
    /// ([`guest_kernel::page_fault::access`]).
    #[serde(skip)]
    pub fault_accesses: BTreeMap<&'static str, u64>,
    /// Guest monotonic ns of the first and last event.
    pub first_event_ns: Option<u64>,
    /// See `first_event_ns`.
    pub last_event_ns: Option<u64>,
}

/// An artifact (file captured in the guest) as assembled from chunks.
#[derive(Clone, Debug, Default)]
pub struct Artifact {
    /// Bytes received so far.
    pub data: Vec<u8>,
    /// Whether the last chunk arrived.
    pub complete: bool,
    /// Chunks that did not continue at the expected offset.
    pub misplaced_chunks: u64,
}

/// Events per (probe name, stack id). A built-in probe's name is borrowed, so
/// counting one of its events allocates nothing.
pub type StackCounts = HashMap<(Cow<'static, str>, i32), u64>;

/// Collected state of one stream.
pub struct Session<W: Write> {
    events_out: W,
    /// The `events.jsonl` line being written, kept for the next: each line reaches
    /// `events_out` in one write, serialized into memory the collector already has.
    line: Vec<u8>,
    /// The agent's hello, once received.
    pub hello: Option<Hello>,
    /// Probe attach outcomes, in the order received.
    pub probes: Vec<ProbeAttach>,
    /// Workloads in start order.
    pub workloads: Vec<WorkloadRun>,
    /// Artifacts by name.
    pub artifacts: BTreeMap<String, Artifact>,
    /// The guest's symbol table, once its artifact is complete.
    pub kallsyms: Option<Kallsyms>,
    /// Why kallsyms could not be used, if so.
    pub kallsyms_error: Option<String>,
    /// Sequence-number accounting.
    pub seq: SeqTracker,
    /// The agent's final totals, if the stream finished cleanly.
    pub totals: Option<Totals>,
    /// Records applied (duplicates excluded).
    pub records: u64,
    /// Events received.
    pub events_received: u64,
    /// Events received per probe name (what the probes' `emitted` counters should match).
    pub events_by_probe: BTreeMap<String, u64>,
    /// Hits the probes only counted per stack ([`guestscope_common::wire::Body::Tallies`]),
    /// not among the events received.
    pub events_tallied: u64,
    /// Those hits per probe name.
    pub tallied_by_probe: BTreeMap<String, u64>,
    /// Events whose pid belongs to no workload and that arrived while none ran.
    pub events_unattributed: u64,
    /// Events whose stack record never arrived (symbolized as empty).
    pub events_stack_unknown: u64,
    /// Diagnostic messages from the agent: (level, message).
    pub agent_logs: Vec<(String, String)>,
    /// Guest clock of the latest record that carried one (a heartbeat, an event, a
    /// workload's start or exit), ns: when the agent was last heard from.
    pub last_guest_ns: Option<u64>,
    /// Agents that took over the run after the previous one died, in order.
    pub restarts: Vec<AgentRestart>,
    /// The values each user probe saw, by probe name (`kprobe:FUNCTION`), kept while
    /// few: `[0]` its `arg` (first argument, return value), then arguments 1 to 5 for
    /// the kinds that [carry them](ProbeKind::carries_args).
    pub user_probe_values: BTreeMap<String, Vec<ArgValues>>,
    /// Arguments 1 to 5 of events not arrived yet, by (thread, time): the agent sends
    /// them just before their events.
    pending_args: HashMap<(u32, u64), [u64; USER_ARGS]>,
    /// The guest kernel's line tables, when a vmlinux with DWARF was given: stack
    /// frames then carry file:line.
    pub lines: Option<guest_kernel::dwarf_lines::DwarfLines>,
    /// The guest's BTF, parsed the first time [`Session::btf`] finds it complete.
    btf: std::sync::OnceLock<Result<std::sync::Arc<guest_kernel::btf::Btf>, String>>,
    /// The user's tracepoints (`CATEGORY:NAME`) by slot (their events' `flags`), from
    /// the agent.
    pub tracepoint_names: BTreeMap<u32, String>,
    /// Added to the stack ids of the current agent: each agent numbers its stacks from
    /// 0, so a restarted agent's ids are moved past the ones already seen.
    stack_id_base: u32,
    stacks_raw: HashMap<u32, Vec<u64>>,
    stacks_sym: HashMap<u32, Vec<String>>,
    /// The run's id, on every line of `events.jsonl` and `stacks.jsonl`.
    run_id: String,
    /// Where each stack is written the first time an event has it (`stacks.jsonl`
    /// while the run goes on, so a killed collector leaves the events' stacks too).
    stacks_out: Option<Box<dyn Write + Send>>,
    /// The stacks written to `stacks_out`.
    stacks_written: HashSet<u32>,
    pid_workload: HashMap<u32, usize>,
    active: Option<usize>,
}

/// Distinct values of one user probe's argument (or return value), counted while there
/// are at most [`ArgValues::KEPT`]; past that only the total is known.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArgValues {
    /// Hits per value, while few.
    pub counts: BTreeMap<u64, u64>,
    /// Whether more than [`ArgValues::KEPT`] distinct values were seen.
    pub many: bool,
}

impl ArgValues {
    /// Distinct values kept.
    pub const KEPT: usize = 8;

    /// Counts one hit with `value`.
    pub fn add(&mut self, value: u64) {
        if self.many {
            return;
        }
        if self.counts.len() == Self::KEPT && !self.counts.contains_key(&value) {
            self.many = true;
            self.counts.clear();
            return;
        }
        *self.counts.entry(value).or_default() += 1;
    }
}

/// A restarted agent taking over a run: what the session held when it did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentRestart {
    /// Records applied before the new agent's first one.
    pub records_before: u64,
    /// Events received before, per probe (the dead agent's).
    pub events_before: BTreeMap<String, u64>,
    /// Hits tallied before, per probe (the dead agent's).
    #[serde(default)]
    pub tallied_before: BTreeMap<String, u64>,
    /// The workload that was running when the agent died (its exit was never seen).
    pub interrupted_workload: Option<String>,
    /// Guest clock when the dead agent was last heard from (a heartbeat, an event, a
    /// workload's start or exit), ns.
    pub last_seen_ns: Option<u64>,
    /// Guest clock when the new agent started, ns (from its hello).
    pub new_agent_start_ns: Option<u64>,
    /// The untraced gap on the guest clock, s: from when the dead agent was last heard
    /// from to the new agent's start (known once its hello is in).
    pub gap_s: Option<f64>,
}

/// The name events of a probe kind this collector does not know are counted under.
pub const UNKNOWN_PROBE: &str = "unknown";

/// Width of a timeline bin, ns.
pub const TIMELINE_BIN_NS: u64 = 10_000_000;

impl<W: Write> Session<W> {
    /// A new session, a new run: one JSON line per event goes to `events_out`, under a
    /// fresh run id.
    pub fn new(events_out: W) -> Session<W> {
        Session {
            run_id: crate::run_files::run_id::new_run_id(std::time::SystemTime::now()),
            stacks_out: None,
            stacks_written: HashSet::new(),
            events_out,
            line: Vec::with_capacity(512),
            hello: None,
            probes: Vec::new(),
            workloads: Vec::new(),
            artifacts: BTreeMap::new(),
            kallsyms: None,
            kallsyms_error: None,
            seq: SeqTracker::default(),
            totals: None,
            records: 0,
            restarts: Vec::new(),
            user_probe_values: BTreeMap::new(),
            pending_args: HashMap::new(),
            lines: None,
            btf: std::sync::OnceLock::new(),
            tracepoint_names: BTreeMap::new(),
            stack_id_base: 0,
            events_received: 0,
            events_by_probe: BTreeMap::new(),
            events_tallied: 0,
            tallied_by_probe: BTreeMap::new(),
            events_unattributed: 0,
            events_stack_unknown: 0,
            agent_logs: Vec::new(),
            last_guest_ns: None,
            stacks_raw: HashMap::new(),
            stacks_sym: HashMap::new(),
            pid_workload: HashMap::new(),
            active: None,
        }
    }

    /// Whether the final record has arrived.
    pub fn finished(&self) -> bool {
        self.totals.is_some()
    }

    /// Applies one record. I/O errors writing `events.jsonl` are returned.
    pub fn apply(&mut self, record: Record) -> std::io::Result<()> {
        // A connection's first record and clock echoes are not part of the sequence
        // (the receiver takes them; a replayed file may hold some).
        if let Body::Connect(_) | Body::ClockEcho(_) = record.body {
            return Ok(());
        }
        if let SeqVerdict::Duplicate = self.seq.observe(record.seq) {
            return Ok(());
        }
        self.records += 1;
        match record.body {
            Body::Hello(h) => match self.restarts.last_mut() {
                // The run's first agent said hello; a restarted one only starts its part.
                Some(r) if self.hello.is_some() => {
                    r.new_agent_start_ns = Some(h.agent_start_ns);
                    r.gap_s = r
                        .last_seen_ns
                        .map(|last| h.agent_start_ns.saturating_sub(last) as f64 / 1e9);
                }
                _ => self.hello = Some(h),
            },
            Body::ProbeAttach(p) => self.probes.push(p),
            Body::Artifact {
                name,
                offset,
                data,
                last,
            } => self.artifact_chunk(name, offset, data, last),
            Body::WorkloadStarted(s) => {
                self.heard_at(s.start_ns);
                let idx = self.workloads.len();
                self.pid_workload.insert(s.pid, idx);
                self.active = Some(idx);
                self.workloads.push(WorkloadRun {
                    started: s,
                    exited: None,
                    events: BTreeMap::new(),
                    tallied: BTreeMap::new(),
                    tallied_stacks: BTreeMap::new(),
                    program_runs: Vec::new(),
                    pids: BTreeSet::new(),
                    stack_counts: HashMap::new(),
                    named_locks: BTreeMap::new(),
                    named_locks_by_stack: HashMap::new(),
                    timeline: BTreeMap::new(),
                    fault_accesses: BTreeMap::new(),
                    first_event_ns: None,
                    last_event_ns: None,
                });
            }
            Body::WorkloadExited(x) => {
                self.heard_at(x.end_ns);
                if let Some(&idx) = self.pid_workload.get(&x.pid) {
                    self.workloads[idx].exited = Some(x);
                    if self.active == Some(idx) {
                        self.active = None;
                    }
                }
            }
            Body::Stack { id, ips } => {
                let id = id + self.stack_id_base;
                self.stacks_sym.remove(&id);
                self.stacks_raw.insert(id, ips);
            }
            Body::Args(args) => {
                for a in args {
                    self.pending_args.insert((a.tid, a.ts_ns), a.args);
                }
            }
            Body::Events(events) => {
                for e in &events {
                    if e.stack_id >= 0 && self.stack_id_base > 0 {
                        let moved = RawEvent {
                            stack_id: e.stack_id + self.stack_id_base as i32,
                            ..*e
                        };
                        self.event(&moved)?;
                    } else {
                        self.event(e)?;
                    }
                }
            }
            Body::Tallies(t) => self.tallies(t)?,
            Body::ProgramRuns(r) => {
                if let Some(i) = self.workload_of(r.pid) {
                    self.workloads[i].program_runs = r.programs;
                }
            }
            Body::Log { level, message } => self.agent_logs.push((level, message)),
            Body::Heartbeat { monotonic_ns } => self.heard_at(monotonic_ns),
            Body::Connect(_) | Body::ClockEcho(_) => {}
            Body::Finished(t) => {
                self.totals = Some(t);
                self.flush()?;
            }
        }
        Ok(())
    }

    /// The workload a record of process `pid` belongs to: the workload that process
    /// started or was followed into, else the one running now.
    pub(super) fn workload_of(&self, pid: u32) -> Option<usize> {
        self.pid_workload.get(&pid).copied().or(self.active)
    }

    /// A new agent took over the run (the guest restarted one that died): its records
    /// are numbered from `first_seq`, its stacks from 0, and it sends its probes and
    /// artifacts again.
    pub fn agent_restarted(&mut self, first_seq: u64) {
        let interrupted_workload = self
            .active
            .filter(|&i| self.workloads[i].exited.is_none())
            .map(|i| self.workloads[i].started.name.clone());
        self.restarts.push(AgentRestart {
            records_before: self.records,
            events_before: self.events_by_probe.clone(),
            tallied_before: self.tallied_by_probe.clone(),
            interrupted_workload,
            last_seen_ns: self.last_guest_ns,
            new_agent_start_ns: None,
            gap_s: None,
        });
        self.active = None;
        self.seq.next = first_seq;
        self.stack_id_base = self
            .stacks_raw
            .keys()
            .max()
            .map_or(self.stack_id_base, |max| max + 1);
        self.probes.clear();
    }

    /// Events received from the current agent (since the last restart), all probes:
    /// what its `events_sent` accounts for.
    pub fn events_from_current_agent(&self) -> u64 {
        let before: u64 = self
            .restarts
            .last()
            .map_or(0, |r| r.events_before.values().sum());
        self.events_received - before
    }

    /// Events of `probe` received from the current agent (since the last restart):
    /// what its counters account for.
    pub fn events_of_current_agent(&self, probe: &str) -> u64 {
        let all = self.events_by_probe.get(probe).copied().unwrap_or(0);
        let before = self
            .restarts
            .last()
            .and_then(|r| r.events_before.get(probe).copied())
            .unwrap_or(0);
        all - before
    }

    fn artifact_chunk(&mut self, name: String, offset: u64, data: Vec<u8>, last: bool) {
        let a = self.artifacts.entry(name.clone()).or_default();
        if offset == 0 && a.complete {
            // Sent again by a restarted agent: the new copy replaces the old.
            *a = Artifact::default();
        }
        if offset != a.data.len() as u64 {
            a.misplaced_chunks += 1;
        }
        a.data.extend_from_slice(&data);
        a.complete |= last;
        if last && name == "kallsyms" {
            match Kallsyms::parse(&String::from_utf8_lossy(&a.data)) {
                Ok(k) => {
                    self.kallsyms = Some(k);
                    self.stacks_sym.clear();
                }
                Err(e) => self.kallsyms_error = Some(e.to_string()),
            }
        }
        if last && name == guestscope_common::probe_list::TRACEPOINT_IDS {
            match serde_json::from_slice(&a.data) {
                Ok(ids) => self.tracepoint_names = ids,
                Err(e) => tracing::warn!("the agent's tracepoint ids do not parse: {e}"),
            }
        }
    }

    /// The text of a complete artifact.
    pub fn artifact_text(&self, name: &str) -> Option<String> {
        self.artifacts
            .get(name)
            .map(|a| String::from_utf8_lossy(&a.data).into_owned())
    }

    /// The run's id (`20261204T133106Z-0a1b2c3d`), as `events.jsonl` has it.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The guest's raw BTF, once the agent has sent it whole.
    pub fn btf_blob(&self) -> Option<&[u8]> {
        self.artifacts
            .get("btf")
            .filter(|a| a.complete && !a.data.is_empty())
            .map(|a| a.data.as_slice())
    }

    /// The guest's BTF (megabytes), parsed once for everyone who needs it (the stops,
    /// the probe list's fentry names, the user probes' argument names), or why it does
    /// not parse; `None` until the agent has sent it whole.
    pub fn btf(&self) -> Option<Result<std::sync::Arc<guest_kernel::btf::Btf>, String>> {
        let blob = self.btf_blob()?;
        Some(
            self.btf
                .get_or_init(|| {
                    guest_kernel::btf::Btf::parse(blob)
                        .map(std::sync::Arc::new)
                        .map_err(|e| e.to_string())
                })
                .clone(),
        )
    }

    /// Notes that the agent was heard from at guest time `ns`.
    pub(crate) fn heard_at(&mut self, ns: u64) {
        self.last_guest_ns = Some(self.last_guest_ns.map_or(ns, |last| last.max(ns)));
    }

    /// Flushes `events.jsonl` (and `stacks.jsonl`).
    pub fn flush(&mut self) -> std::io::Result<()> {
        if let Some(out) = &mut self.stacks_out {
            out.flush()?;
        }
        self.events_out.flush()
    }
}

/// A user probe's name for one event: `kprobe:FUNCTION`, the function found from the
/// address the probe reported (`bpf_get_func_ip`), or the address when the guest's
/// symbols are not known.
pub fn user_probe_name(kind: ProbeKind, ip: u64, kallsyms: Option<&Kallsyms>) -> String {
    match kallsyms.and_then(|k| k.resolve(ip)) {
        // A kprobe inside a function (`kprobe:FUNC+OFFSET`) is named as the user wrote it.
        Some(at) if kind == ProbeKind::Kprobe && at.offset != 0 => {
            format!("{}:{}+{}", kind.name(), at.symbol.name, at.offset)
        }
        Some(at) => format!("{}:{}", kind.name(), at.symbol.name),
        None => format!("{}:{ip:#x}", kind.name()),
    }
}

mod event;
pub mod seq;
mod stacks;
mod tallies;

#[cfg(test)]
mod tests;
