//! The guest → host stream: versioned frames, each carrying one [`Record`].
//!
//! A frame is a 12-byte header followed by the payload:
//!
//! | bytes | field                                  |
//! |-------|----------------------------------------|
//! | 0..4  | magic `GSCP`                           |
//! | 4..6  | wire version, little endian            |
//! | 6..8  | reserved, zero                         |
//! | 8..12 | payload length, little endian          |
//!
//! The payload is a [`Record`] encoded with postcard (serde's compact format:
//! LEB128 integers, zigzag for signed ones). Every
//! record carries a sequence number, starting at 0 and increasing by one, so the
//! collector can detect a gap or a duplicate.
//!
//! Every connection starts with a [`Body::Connect`] record, outside the sequence: after
//! a dropped link the agent reconnects and resends every record the collector has not
//! acknowledged. The collector acknowledges on the same connection with [`Reply`] frames
//! (same header), so the agent can forget what is stored; it drops duplicates by `seq`.
//!
//! Only this run's agent may feed the collector: every [`Connect`] carries the run's
//! secret, which the collector put in the guest's root-only plan file; a connection
//! without it is refused and counted.
//!
//! The collector also measures the guest's clock against its own: it sends a
//! [`Reply::ClockProbe`], and the agent answers at once with a [`Body::ClockEcho`]
//! carrying its CLOCK_MONOTONIC (outside the sequence, like `Connect`). Many such round
//! trips map guest time onto host time (the host's `timeline`).
//!
//! Versions: 1, the first; 2 added [`Body::Heartbeat`]; 3 added [`Body::Connect`],
//! [`Reply`] frames and the link counters of [`Totals`]; 4 added [`Connect::secret`];
//! 5 added [`Reply::ClockProbe`] and [`Body::ClockEcho`] (a reader of an older version
//! would not know them, so the version says so); 6 encodes with postcard instead of
//! bincode 2 (unmaintained); 7 added [`WorkloadExited::timed_out`]; 8 added the `Args`
//! record (a user probe's argument registers); 9 added [`Totals::callers_recovered`];
//! 10 carries each event in its fixed 64-byte layout ([`RawEvent::to_le_bytes`])
//! instead of one variable-length integer per field; 11 added the stack cache's
//! counters to [`ProbeCounters`] (`stack_cached`, `stack_cache_wrong`); 12 added
//! [`Body::Tallies`] (hits counted in the kernel per stack) and
//! [`ProbeCounters::tallied`]; 14 added [`Reply::Released`]; 15 packs an `Events`
//! record's events, each as what changed since the one before it ([`packed`]: about
//! 6 to 15 bytes an event instead of 64).

use serde::{Deserialize, Serialize};

use crate::event::{ProbeCounters, RawEvent};

pub use frame::{
    DecodeError, EncodeError, FrameReader, decode_frame, decode_payload, encode_frame,
    encode_frame_into, encode_packed_frame_into, encode_reply, encode_stack_frame_into,
    parse_header, write_frame,
};

/// First four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"GSCP";
/// The wire version this build writes and reads.
pub const WIRE_VERSION: u16 = 15;
/// The agent sends a [`Body::Heartbeat`] when it has sent nothing for this long, so a
/// silent stream means a stuck guest, not an idle workload.
pub const HEARTBEAT_MS: u64 = 1000;

/// The collector acknowledges the agent's records at least every this many records
/// (or sooner, by bytes or time): the agent keeps about this many sent frames' buffers
/// for the frames after them.
pub const ACK_EVERY_RECORDS: u64 = 64;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 12;
/// Largest payload accepted (a bigger length is treated as corruption).
pub const MAX_PAYLOAD: u32 = 32 * 1024 * 1024;

/// One unit of the stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the stream: 0 for the first record, then +1 each record.
    pub seq: u64,
    /// What the record says.
    pub body: Body,
}

/// The content of a [`Record`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// First record of a stream: who is talking.
    Hello(Hello),
    /// Outcome of attaching one probe.
    ProbeAttach(ProbeAttach),
    /// A file or command output captured in the guest (kallsyms, dmesg, ...),
    /// possibly in several chunks; `last` marks the final chunk.
    Artifact {
        /// Artifact name, e.g. `kallsyms`.
        name: String,
        /// Byte offset of this chunk.
        offset: u64,
        /// Chunk bytes: on the wire a length and the bytes, as postcard writes any
        /// sequence of `u8`, but encoded and decoded as one slice (a sequence is one
        /// serializer call per byte: about nine instructions a byte, most of the agent's
        /// instructions before its first workload).
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// True on the final chunk.
        last: bool,
    },
    /// A workload was started (its pid is in the kernel filter before it runs).
    WorkloadStarted(WorkloadStarted),
    /// A workload ended.
    WorkloadExited(WorkloadExited),
    /// A batch of probe events, in ring-buffer order (on the stream: [`packed`]).
    Events(#[serde(with = "packed::serde_events")] Vec<RawEvent>),
    /// A kernel stack, sent once per stack id, before or after events that use it.
    Stack {
        /// The id events refer to in [`RawEvent::stack_id`] (assigned by the agent,
        /// one per distinct stack).
        id: u32,
        /// Return addresses, innermost first.
        ips: Vec<u64>,
    },
    /// A diagnostic message from the agent.
    Log {
        /// `error`, `warn` or `info`.
        level: String,
        /// The message.
        message: String,
    },
    /// Last record of a stream: per-probe totals.
    Finished(Totals),
    /// Proof of life, sent after [`HEARTBEAT_MS`] without any other record (the
    /// collector's watchdog takes a silent stream for a hung guest).
    Heartbeat {
        /// Guest CLOCK_MONOTONIC when it was sent, ns.
        monotonic_ns: u64,
    },
    /// First record of every connection, not part of the sequence: its [`Record::seq`]
    /// is the sequence number of the first record the connection carries (resent ones
    /// included).
    Connect(Connect),
    /// The answer to a [`Reply::ClockProbe`], written as soon as the probe was read. Not
    /// part of the sequence: its [`Record::seq`] is the next record's, and it is not
    /// resent after a lost link (a lost echo is a lost sample, nothing more).
    ClockEcho(ClockEcho),
    /// The arguments past the first of events whose kind
    /// [carries them](crate::ProbeKind::carries_args), sent just before the `Events`
    /// record that holds those events.
    Args(Vec<EventArgs>),
    /// Hits counted in the kernel per stack instead of recorded one by one
    /// ([`crate::plan::StackMode::Tallied`]), sent when their workload ends, before its
    /// [`Body::WorkloadExited`].
    Tallies(Tallies),
    /// What the kernel timed of each eBPF program during one workload
    /// ([`crate::plan::RunPlan::program_stats`]), sent when it ends, before its
    /// [`Body::WorkloadExited`].
    ProgramRuns(ProgramRuns),
}

/// One workload's runs of the loaded eBPF programs, as the kernel's statistics count
/// them: every run, whichever process hit the probe (the filter is inside the program).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRuns {
    /// The workload's pid ([`WorkloadStarted::pid`]).
    pub pid: u32,
    /// One entry per program that ran.
    pub programs: Vec<ProgramRun>,
}

/// Runs of one eBPF program over a workload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramRun {
    /// The program's name in the eBPF object (`spin_lock_fentry`, `alloc_fd`, ...).
    pub program: String,
    /// Runs.
    pub runs: u64,
    /// Time inside the program over those runs, ns (the attach point's own cost, a
    /// trampoline or a kprobe, is outside it).
    pub run_ns: u64,
}

impl ProgramRun {
    /// Time inside the program per run, ns; `None` without runs.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.runs > 0).then(|| self.run_ns as f64 / self.runs as f64)
    }
}

/// One workload's hits that the probes counted per stack, with no record of their own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tallies {
    /// The workload's pid ([`WorkloadStarted::pid`]).
    pub pid: u32,
    /// Hits per probe and stack.
    pub counts: Vec<Tally>,
}

/// Hits of one probe with one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The probe ([`crate::ProbeKind`] id).
    pub kind: u32,
    /// The stack, as events name it ([`RawEvent::stack_id`]: an id of a
    /// [`Body::Stack`], or the negative code of why there is none).
    pub stack_id: i32,
    /// Hits.
    pub hits: u64,
}

/// Arguments 1 to 5 of one event, which (thread, time) names: a thread's probes do not
/// nest, so no two of its events share a timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventArgs {
    /// [`RawEvent::tid`] of the event.
    pub tid: u32,
    /// [`RawEvent::ts_ns`] of the event.
    pub ts_ns: u64,
    /// `rsi`, `rdx`, `rcx`, `r8`, `r9` at the probe (fentry: the arguments the
    /// prototype has, 0 past them).
    pub args: [u64; crate::event::USER_ARGS],
}

/// The guest's clock at the moment it answered a clock probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEcho {
    /// The probe's [`Reply::ClockProbe::id`].
    pub id: u32,
    /// Guest CLOCK_MONOTONIC (the clock of every event's timestamp) when the probe was
    /// read, ns.
    pub guest_ns: u64,
}

/// Who is connecting, and why again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connect {
    /// The agent's pid; with `agent_start_ns`, tells a reconnecting agent from another.
    pub agent_pid: u32,
    /// Guest CLOCK_MONOTONIC when the agent started, ns.
    pub agent_start_ns: u64,
    /// 1 for the first connection, then +1 for each reconnection.
    pub connection: u32,
    /// Why the previous connection ended, for a reconnection.
    pub after: Option<LinkLoss>,
    /// The run's secret, from the plan ([`crate::plan::RunPlan::secret`]); empty when
    /// the plan has none.
    pub secret: String,
}

/// The agent's view of a lost link, sent when it has reconnected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLoss {
    /// Guest CLOCK_MONOTONIC when the agent found the link broken, ns.
    pub lost_ns: u64,
    /// Guest CLOCK_MONOTONIC when the new connection was made, ns.
    pub restored_ns: u64,
    /// Connection attempts it took.
    pub attempts: u32,
    /// What broke it (the write or read error, or no acknowledgement in time).
    pub why: String,
    /// Records the collector had acknowledged by then (`seq` below this are stored).
    pub acked: u64,
}

/// What the collector sends back to the agent (host → guest), framed like [`Record`]s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Every record with `seq < next` is stored (or known lost): the agent may forget it.
    Ack {
        /// The next sequence number the collector expects.
        next: u64,
    },
    /// Answer at once with a [`Body::ClockEcho`] of this `id` (one round trip of the
    /// clock-sync exchange: the host stamps the probe's send and the echo's arrival).
    ClockProbe {
        /// Matches the echo to the probe.
        id: u32,
    },
    /// The host holds the VM no longer: its gdbstub stops of the running workload are
    /// over (all taken, or given up). A workload running with a quiet link may stream
    /// its events again instead of leaving them in the ring buffer until it exits.
    Released,
}

/// Agent identity and guest facts, sent first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest.
    pub kernel_release: String,
    /// Number of online CPUs in the guest.
    pub cpus: u32,
    /// Guest CLOCK_MONOTONIC when the agent started, ns.
    pub agent_start_ns: u64,
    /// Guest CLOCK_MONOTONIC when this record was written, ns.
    pub monotonic_ns: u64,
    /// The agent's own pid (never traced).
    pub agent_pid: u32,
}

/// How a probe was attached, or why it was not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeAttach {
    /// Probe name ([`crate::ProbeKind::name`]).
    pub probe: String,
    /// Kernel symbol or tracepoint it was attached to.
    pub target: String,
    /// `fentry`, `kprobe` or `tracepoint`; empty when not attached.
    pub method: String,
    /// Why it is not attached (or why a fallback was used); empty on success.
    pub note: String,
    /// Whether the probe is attached.
    pub attached: bool,
}

/// A workload that was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStarted {
    /// Name from the plan.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Full command line.
    pub argv: Vec<String>,
    /// Guest CLOCK_MONOTONIC at start, ns.
    pub start_ns: u64,
}

/// A workload that ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadExited {
    /// Name from the plan.
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Exit code, or `128 + signal` when killed by a signal; -1 if it never ran.
    pub status: i32,
    /// Guest CLOCK_MONOTONIC at exit, ns.
    pub end_ns: u64,
    /// What the workload wrote to stdout and stderr (truncated to 64 KiB).
    pub output: String,
    /// Whether the agent ended it for running past its
    /// [`crate::plan::WorkloadSpec::timeout_ms`].
    pub timed_out: bool,
}

/// Totals for the whole run, sent last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Per-probe counters summed over CPUs, by probe name.
    pub probes: Vec<(String, ProbeCounters)>,
    /// Events the agent read from the ring buffer.
    pub events_read: u64,
    /// Events the agent sent in [`Body::Events`] records.
    pub events_sent: u64,
    /// Events read whose record was malformed (wrong size) and skipped.
    pub events_malformed: u64,
    /// Unique stacks sent.
    pub stacks_sent: u64,
    /// Events whose stack walk lacked the probed function's immediate caller (the
    /// frame-pointer unwinder at a function's entry), which the agent put back from
    /// the return address the probe read.
    pub callers_recovered: u64,
    /// Events whose stack walk succeeded but which reached the host without a stack: no
    /// frame, a length that is not whole frames, or too many distinct stacks for the
    /// agent's table. They carry a negative `stack_id` (failed walks are counted by the
    /// probes, as `stack_failed`).
    pub stacks_missing: u64,
    /// Connections made after the first, up to this record (the link was lost and
    /// restored).
    pub reconnects: u64,
    /// `Events` records dropped because the spool of unacknowledged records was full
    /// (the link was down too long): each leaves a gap in the sequence.
    pub spool_dropped_records: u64,
    /// Events in those records.
    pub spool_dropped_events: u64,
    /// The same events by probe name (probes with none left out).
    pub spool_dropped_by_probe: Vec<(String, u64)>,
    /// Largest size of the spool, bytes.
    pub spool_peak_bytes: u64,
}

mod events;
mod frame;
pub mod packed;
mod stack_record;
#[cfg(test)]
mod tests;
