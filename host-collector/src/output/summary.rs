//! `summary.json`: every number the report shows, from this run's data.

use std::collections::BTreeMap;

use guestscope_common::event::ProbeCounters;
use guestscope_common::wire::ProbeAttach;
use serde::{Deserialize, Serialize};

use crate::qemu::serial::BootMarks;
use crate::session::seq::SeqTracker;

/// The whole summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// guestscope version that wrote this.
    pub guestscope_version: String,
    /// How the run was set up and how it ended.
    pub run: RunInfo,
    /// Boot milestones (host seconds since QEMU launch).
    pub boot: BootMarks,
    /// Stream accounting.
    pub stream: StreamStats,
    /// Everything that was lost, by cause.
    pub losses: Losses,
    /// Per-probe attach outcome and counters.
    pub probes: Vec<ProbeSummary>,
    /// Per-workload results.
    pub workloads: Vec<WorkloadSummary>,
    /// The functions the user's probes (`--probe`) hit.
    pub user_probes: Vec<UserProbeSummary>,
    /// The lab's experiments.
    pub experiments: Experiments,
    /// What the guest kernel offered (BTF, fentry, kprobes, tracepoints, symbols).
    pub kernel: crate::experiments::support::KernelSupport,
    /// Experiments that did not run, and why.
    pub skipped: Vec<crate::experiments::support::Skipped>,
    /// Guest and host on one time line: the clock-sync exchange, the gdbstub's holds and
    /// snapshots, and their cross-check against the eBPF events.
    pub timeline: TimelineReport,
    /// The Perfetto trace, if written.
    pub trace: Option<TraceInfo>,
    /// The lab's claims, checked against this run.
    pub claims: Vec<crate::experiments::claims::Claim>,
    /// Warnings and errors the agent reported.
    pub agent_messages: Vec<String>,
}

/// The Perfetto trace written for the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TraceInfo {
    /// File name in the output directory.
    pub file: String,
    /// Packets written.
    pub packets: u64,
    /// Probe events in it.
    pub events: u64,
    /// gdbstub snapshots in it (instants with their registers).
    pub snapshots: usize,
    /// gdbstub holds in it (slices).
    pub holds: usize,
}

/// How guest time was put on the host's axis, and the gdbstub snapshots on it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TimelineReport {
    /// The clock-sync exchange: probes sent, answered, given up.
    pub probes: crate::stream::clock_probe::ProbeCounts,
    /// The fit (guest → host running time), when any round trip was answered.
    pub fit: Option<crate::timeline::clock::ClockMap>,
    /// Every answered round trip (host ns since QEMU's launch, guest ns).
    pub samples: Vec<crate::timeline::clock::Sample>,
    /// The fit's error bound had the holds been ignored (one straight line through
    /// every sample), ns: how far the guest clock fell behind while held.
    pub error_bound_ignoring_holds_ns: Option<f64>,
    /// Times the gdbstub held the VM during the traced run.
    pub holds: usize,
    /// Their total, ms.
    pub held_ms: f64,
    /// How guest times were mapped, in words.
    pub method: String,
    /// The gdbstub snapshots of the traced run.
    pub snapshots: Option<SnapshotsReport>,
}

/// The gdbstub snapshots of the traced run and their cross-check.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SnapshotsReport {
    /// The run, if it worked.
    pub run: Option<crate::experiments::snapshots::SnapshotRun>,
    /// Why it did not.
    pub error: Option<String>,
    /// Each snapshot against the nearest eBPF event on its CPU.
    pub cross_check: Option<crate::experiments::snapshots::CrossCheck>,
}

pub use crate::experiments::{Cr3Run, Experiments};

/// Run setup and outcome.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunInfo {
    /// Unix time the run started.
    pub started_unix_s: u64,
    /// Host wall time of the run, s.
    pub wall_s: f64,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Why that accelerator.
    pub accel_reason: String,
    /// The QEMU command line.
    pub qemu_command: String,
    /// The traced boot's kernel image.
    pub kernel: String,
    /// The boot-time boots' image when it is not `kernel` (the bzImage of the
    /// uncompressed `kernel`).
    pub boot_time_kernel: Option<String>,
    /// Guest kernel release (from the agent).
    pub kernel_release: Option<String>,
    /// The traced boot's kernel command line (the boot-time boots' has no
    /// `cryptomgr.notests=1`: see `qemu::kernel_cmdline`).
    pub kernel_cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// gdbstub port on 127.0.0.1, when asked for (`--gdb-port`); `None`: a Unix socket
    /// in the run's private directory.
    pub gdb_port: Option<u16>,
    /// Who the workloads ran as in the guest (`nobody (uid 65534)` or `root`);
    /// empty when not known (attach: the guest's plan decides).
    pub workload_user: String,
    /// The per-workload time limit, seconds (`--workload-timeout`); `None`: none, or
    /// not known (attach: the guest's plan decides).
    pub workload_timeout_s: Option<f64>,
    /// When a host program ran (`-- CMD`): the host directory it started in. The guest
    /// then saw the host's files read-only (virtio-9p), its writes going to a tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_files_cwd: Option<String>,
    /// Size of the probes' `EVENTS` ring buffer, bytes (0 when unknown).
    pub events_ring_bytes: u32,
    /// How the probes got each event's stack (`--stacks`); `None` when not known
    /// (attach: the guest's plan decides; a summary written before it was kept).
    pub stacks: Option<guestscope_common::plan::StackMode>,
    /// How the run ended.
    pub outcome: Outcome,
}

impl RunInfo {
    /// Whether the probes recorded no stacks (`--stacks off`): nothing was classified
    /// by stack.
    pub fn stacks_off(&self) -> bool {
        self.stacks == Some(guestscope_common::plan::StackMode::Off)
    }

    /// Whether a hit's stack could be its caller's first walk (`--stacks caller` or
    /// `caller-tallied`): its frames past the caller not read.
    pub fn stacks_by_caller(&self) -> bool {
        self.stacks
            .is_some_and(guestscope_common::plan::StackMode::by_caller)
    }
}

pub use crate::run_end::Outcome;

/// Stream accounting.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StreamStats {
    /// Records applied.
    pub records: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Sequence-number accounting.
    pub seq: SeqTracker,
    /// The decode error that ended the stream, if any.
    pub decode_error: Option<String>,
    /// Events received.
    pub events_received: u64,
    /// Hits the probes only counted per stack, with no event record
    /// ([`guestscope_common::plan::StackMode::Tallied`]); counted in the workloads'
    /// events and the experiments, absent from `events.jsonl`.
    #[serde(default)]
    pub events_tallied: u64,
    /// Events attributed to no workload.
    pub events_unattributed: u64,
    /// Events whose stack never arrived.
    pub events_stack_unknown: u64,
    /// Events per second over the time workloads ran (guest clock).
    pub events_per_s: Option<f64>,
    /// The agent's connections: outages and how they were recovered, refusals.
    pub link: crate::stream::receive::LinkReport,
    /// Agents that took over after the previous one died (the guest restarts it).
    pub agent_restarts: Vec<crate::session::AgentRestart>,
}

/// Losses, by cause. Per probe, `matched = received + tallied + ring_full + spool_dropped`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Losses {
    /// Events lost because the ring buffer was full.
    pub ring_full: u64,
    /// Events that carry no stack because the walk failed.
    pub stack_failed: u64,
    /// Hits skipped because a probe was already running on the CPU.
    pub nested: u64,
    /// Records missing from the stream (sequence gaps).
    pub records_missing: u64,
    /// `Events` records the agent dropped because its spool was full while the link
    /// was down (each is a sequence gap).
    pub spool_dropped_records: u64,
    /// Events in them.
    pub spool_dropped_events: u64,
    /// Events the agent says it sent.
    pub events_sent: Option<u64>,
    /// Events sent but neither received nor counted as dropped by the agent
    /// (`events_sent - spool_dropped_events - events_received`).
    pub events_missing: Option<u64>,
}

/// One probe.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// Probe name.
    pub name: String,
    /// Attach outcome.
    pub attach: ProbeAttach,
    /// Counters summed over CPUs (absent if the run did not finish).
    pub counters: Option<ProbeCounters>,
    /// Events of this probe the collector received.
    pub received: u64,
    /// Hits of this probe the probes only counted per stack (no event record).
    #[serde(default)]
    pub tallied: u64,
    /// Events of this probe the agent dropped (spool full while the link was down).
    pub spool_dropped: u64,
    /// `matched - (received + tallied + ring_full + spool_dropped)`: hits neither received nor
    /// counted as lost (0 when every hit is accounted for; absent without counters).
    /// After an agent restart, `received` here is the current agent's events only: the
    /// counters died with the agent before it.
    pub unaccounted: Option<i64>,
}

/// One stack and how often it was seen.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackCount {
    /// Events with this stack.
    pub count: u64,
    /// Stack-map id (negative: no stack).
    pub stack_id: i32,
    /// Symbolized frames, innermost first.
    pub frames: Vec<String>,
}

/// One workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadSummary {
    /// Name.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Command line.
    pub argv: Vec<String>,
    /// Exit status (None if the guest never reported it).
    pub status: Option<i32>,
    /// Whether the agent ended it for running past its time limit.
    pub timed_out: bool,
    /// Run time on the guest clock, ms.
    pub duration_ms: Option<f64>,
    /// When it started, guest CLOCK_MONOTONIC ns (events' `ts_ns` count from the same
    /// zero).
    #[serde(default)]
    pub start_ns: u64,
    /// Events per probe (tallied hits included).
    pub events: BTreeMap<String, u64>,
    /// Of those, hits only counted per stack in the kernel (`--stacks tallied`): no
    /// line in `events.jsonl`.
    #[serde(default)]
    pub tallied: BTreeMap<String, u64>,
    /// Those hits per probe and stack (`stack_id` as in `stacks.jsonl`): with
    /// `events.jsonl`, every hit's stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tallied_stacks: Vec<TalliedStack>,
    /// What the kernel timed of each eBPF program during the workload
    /// (`--program-stats`; absent without).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<ProgramTime>,
    /// Pids whose events were attributed to this workload.
    pub pids: Vec<u32>,
    /// spin_lock hits on named global locks.
    pub named_locks: BTreeMap<String, u64>,
    /// Most frequent stacks per probe.
    pub top_stacks: BTreeMap<String, Vec<StackCount>>,
    /// The workload's own output, stdout and stderr together, whole as the agent kept
    /// it (at most 64 KiB; past that, a closing line says how many bytes it dropped).
    /// The report shows its first [`crate::output::markdown::OUTPUT_LINES`] lines.
    pub output: String,
}

/// Hits of one probe with one stack that were only counted in the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TalliedStack {
    /// Probe name.
    pub probe: String,
    /// Stack id (`stacks.jsonl`), or the negative code of why there is none.
    pub stack_id: i32,
    /// Hits.
    pub hits: u64,
}

/// One eBPF program's runs over a workload, as the kernel's statistics count them:
/// every run, whichever process hit the probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProgramTime {
    /// The program's name in the eBPF object (`spin_lock_fentry`).
    pub program: String,
    /// Runs.
    pub runs: u64,
    /// Time inside the program over those runs, ns.
    pub run_ns: u64,
    /// `run_ns / runs`: the program's own time per run (its trampoline or kprobe is
    /// outside it).
    pub ns_per_run: f64,
}

/// Stacks kept per probe per workload.
pub const TOP_STACKS: usize = 5;

mod collect;
pub use self::collect::collect;

/// One probed function (`kprobe:vfs_read`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserProbeSummary {
    /// `kprobe:FUNCTION` or `kretprobe:FUNCTION`.
    pub name: String,
    /// Hits in all workloads.
    pub hits: u64,
    /// Hits per workload (workloads without hits left out).
    pub by_workload: BTreeMap<String, u64>,
    /// What `arg` is, from the guest's BTF: the first parameter as C declares it
    /// (`struct file *file`), `returns int` for a kretprobe; empty when not known.
    pub arg: String,
    /// First argument (kprobe) or return value (kretprobe), in hex, with its hits;
    /// `None` when more than a few distinct values were seen.
    pub values: Option<BTreeMap<String, u64>>,
    /// The arguments after the first (fentry and kprobe): as many as the BTF
    /// prototype has, else the five registers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_args: Vec<ArgSummary>,
    /// The most frequent kernel stack of the function's hits, innermost first, and
    /// the hits that had it.
    pub top_stack: Vec<String>,
    /// Hits with [`UserProbeSummary::top_stack`].
    pub top_stack_hits: u64,
}

/// One argument of a probed function and the values it had.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArgSummary {
    /// As C declares it (`size_t count`), or the register it was read from (`rsi`).
    pub name: String,
    /// Its values in hex with their hits; `None` when more than a few distinct.
    pub values: Option<BTreeMap<String, u64>>,
}
