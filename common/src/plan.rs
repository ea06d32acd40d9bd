//! The run plan: what the host collector asks the agent to do (host → guest).
//!
//! The collector writes it as JSON into the guest at [`PLAN_PATH`]; the agent
//! reads it at start.

use serde::{Deserialize, Serialize};

/// Where the plan is placed in the guest.
pub const PLAN_PATH: &str = "/etc/guestscope/plan.json";
/// Where guestscope's own workloads live in the guest.
pub const BUILTIN_WORKLOAD_DIR: &str = "/usr/lib/guestscope/workloads";
/// Where user-supplied `--workload` binaries are placed in the guest.
pub const USER_WORKLOAD_DIR: &str = "/usr/lib/guestscope/user";
/// The vsock CID of the host, as seen from the guest.
pub const HOST_CID: u32 = 2;

/// Everything the agent needs for one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// vsock port on the host (CID [`HOST_CID`]) the agent connects to.
    pub vsock_port: u32,
    /// Built-in probes to attach, by [`crate::ProbeKind::name`]; empty means all.
    pub probes: Vec<String>,
    /// Probes the user named, as `--probe` gave them ([`crate::user_probe::UserProbe`]
    /// syntax: `kprobe:vfs_read`, `kretprobe:filemap_*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub user_probes: Vec<String>,
    /// Send what the kernel lets `--probe` attach to, as artifact
    /// [`crate::probe_list::ARTIFACT`] (JSON [`crate::probe_list::ProbeList`]), for
    /// `guestscope probes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub send_probe_list: bool,
    /// Kernel functions the host will stop at (`--snapshot-at`): the agent checks they
    /// exist and, if one does not, refuses the run like a `--probe` it cannot attach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_functions: Vec<String>,
    /// Workloads to run one after another, each traced with its children.
    pub workloads: Vec<WorkloadSpec>,
    /// Milliseconds to keep tracing the idle agent-less guest before the first
    /// workload (0 = none); not used by the default lab.
    pub settle_ms: u64,
    /// Size of the `EVENTS` ring buffer in bytes, set when the probes are loaded (a power
    /// of two, at least one page); `None` keeps [`crate::maps::EVENTS_BYTES`]. A small
    /// ring makes overflows (counted as `ring_full`) easy to provoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_bytes: Option<u32>,
    /// Bound of the agent's spool of records the collector has not acknowledged, bytes
    /// (what survives a dropped link); `None`: the agent's default (64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// The run's secret: the agent presents it on every connection, and the collector
    /// refuses connections without it. The plan file is readable by root only in the
    /// guest. `None`: the collector accepts any agent (a plan written by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// How the probes get each event's stack for the whole run (workloads with a
    /// [`Tracing`] of their own set theirs for their run).
    #[serde(default)]
    pub stacks: StackMode,
    /// The agent loads no eBPF probe and sends its hello as soon as it is connected;
    /// workloads run untraced. For boots that only time the boot or only use the
    /// gdbstub (the lab's boot-time and CR3 boots): the probes' verification takes
    /// seconds under TCG and would serve nothing there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_probes: bool,
    /// The kernel times every run of every eBPF program (`BPF_ENABLE_STATS`), and the
    /// agent reports each program's runs and time per workload
    /// ([`crate::wire::Body::ProgramRuns`]). Off by default: the timing itself costs
    /// two clock reads per run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub program_stats: bool,
}

impl RunPlan {
    /// A plan that runs `workloads` with every probe, the default ring and spool, and
    /// no secret (the collector sets one per boot).
    pub fn new(vsock_port: u32, workloads: Vec<WorkloadSpec>) -> RunPlan {
        RunPlan {
            vsock_port,
            probes: Vec::new(),
            user_probes: Vec::new(),
            send_probe_list: false,
            stop_functions: Vec::new(),
            workloads,
            settle_ms: 0,
            events_bytes: None,
            spool_bytes: None,
            secret: None,
            stacks: StackMode::default(),
            without_probes: false,
            program_stats: false,
        }
    }
}

/// A fresh secret for a run: 32 random bytes from the operating system, in hex.
pub fn new_secret() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `given` equals `expected`, in time that does not depend on where they differ.
pub fn secret_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_hex_and_compared_whole() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(secret_matches(&a, &a.clone()));
        assert!(!secret_matches(&a, &b));
        assert!(!secret_matches("", &a));
        assert!(!secret_matches(&a[..63], &a));
    }
}

/// Smallest `EVENTS` ring the agent accepts ([`RunPlan::events_bytes`]): one page.
pub const MIN_EVENTS_BYTES: u32 = 4096;

/// Whether `bytes` is a usable `EVENTS` ring size: a power of two of at least
/// [`MIN_EVENTS_BYTES`] (the kernel wants a power-of-two multiple of the page size).
pub fn valid_events_bytes(bytes: u32) -> bool {
    bytes >= MIN_EVENTS_BYTES && bytes.is_power_of_two()
}

/// One program to run and trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Name shown in the report (unique within a plan).
    pub name: String,
    /// Absolute path of the executable inside the guest.
    pub path: String,
    /// Arguments (not including argv\[0\]).
    pub args: Vec<String>,
    /// Whether this is a guestscope workload or one the user supplied.
    pub origin: WorkloadOrigin,
    /// How it is traced: under the plan's probes unless it says otherwise (plans written
    /// before this field existed parse as [`Tracing::Plan`]).
    #[serde(default, skip_serializing_if = "Tracing::is_plan")]
    pub tracing: Tracing,
    /// Keep the link to the host silent while the workload runs: its events wait in the
    /// ring buffer and are sent when it exits. For workloads the host holds through
    /// QEMU's gdbstub: a VM stop with vsock traffic in flight can leave the vhost-user
    /// vsock device wedged (measured: the link died in 1 to 3 of 6 runs with 8 holds).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet_link: bool,
    /// Run as root. By default a workload runs as the unprivileged
    /// [`UNPRIVILEGED_ID`] (user and group, no supplementary groups): it cannot read
    /// the plan (and its secret) nor change the guest under the agent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub as_root: bool,
    /// Longest run, ms: past it the agent ends the workload (SIGTERM to its process
    /// group, SIGKILL [`TIMEOUT_GRACE_MS`] later), reports it as timed out and goes on
    /// with the next one. `None`: no bound but the run's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Milliseconds between announcing the workload (its pid) and letting it exec: time
    /// for the host to put its breakpoints in before the program runs (`--snapshot-at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_before_exec_ms: Option<u64>,
    /// Working directory in the guest (a host program's: the host's current directory,
    /// which the guest sees at the same path); `None`: the agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// Time a workload past its [`WorkloadSpec::timeout_ms`] gets between SIGTERM and
/// SIGKILL, ms (as `timeout --kill-after` gives).
pub const TIMEOUT_GRACE_MS: u64 = 2000;

/// The user and group id workloads run as unless they ask for root: `nobody` on
/// Debian and BusyBox systems; no passwd entry is needed.
pub const UNPRIVILEGED_ID: u32 = 65534;

/// How one workload is traced. Every variant but [`Tracing::Plan`] changes what is
/// attached for the workload's run only (the plan's probes are attached again after it)
/// and makes the agent report, as artifact `tracing-<workload>`, what was attached and
/// what the probes counted during the run ([`WorkloadTracing`]): the measurements of
/// `guestscope bench`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tracing {
    /// The plan's probes ([`RunPlan::probes`]), attached for the whole run.
    #[default]
    Plan,
    /// Exactly these eBPF probes, by [`crate::ProbeKind::name`]. Empty: no probe at all is
    /// attached (the fork follower neither) — the untraced baseline.
    Probes(Vec<String>),
    /// These probes, with their events' stacks got as the [`StackMode`] says: what the
    /// stack walk and the stack cache cost and save, by difference with
    /// [`Tracing::Probes`] (which is [`StackMode::Cached`]).
    ProbesWith(Vec<String>, StackMode),
    /// No built-in probe; these user probes (`--probe` syntax: `kprobe:alloc_fd`)
    /// attached for the workload's run only (with the fork follower): what a user probe
    /// costs against a built-in one on the same function.
    UserProbes(Vec<String>),
    /// No eBPF probe; instead an ftrace kprobe event on this kernel function, created
    /// through tracefs `kprobe_events` and enabled while the workload runs (the method
    /// trace-cmd uses). Its hit count comes from `kprobe_profile`.
    FtraceKprobe(String),
    /// No eBPF probe; the ftrace peer of guestscope's probes: a kprobe event on each of
    /// these kernel functions, each filtered to tasks named `comm` (an event filter, as
    /// `trace-cmd record -f` sets), with a kernel stack recorded per hit when
    /// `stacktrace` (tracefs `options/stacktrace`). The same events as the eBPF probes on
    /// those functions, traced the way ftrace users trace them.
    FtracePeer {
        /// Kernel functions, plain symbol names.
        functions: Vec<String>,
        /// The task name hits are kept for (at most 15 bytes, as the kernel keeps it).
        comm: String,
        /// Whether each hit records its kernel stack.
        stacktrace: bool,
    },
    /// No probe and no process: the agent itself makes this many events, with a few
    /// distinct kernel-like stacks, and sends them through the same batches, stack
    /// table, stream and link as probe events, as fast as the link takes them. The
    /// pipeline's own ceiling (agent → vsock → collector → disk) with eBPF and the
    /// workload out of it (`guestscope bench`'s stream capacity).
    Synthetic(u64),
}

/// How the probes get each event's kernel stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum StackMode {
    /// From the probes' stack cache when the event's call chain was walked before and
    /// its stack still holds every frame of that walk; walked otherwise (the default).
    #[default]
    Cached,
    /// Walked for every event; the cache is neither read nor filled.
    WalkEvery,
    /// Walked for every event, and compared with what the cache would have given
    /// (`ProbeCounters::stack_cache_wrong` counts the differences).
    Checked,
    /// No stack at all.
    Off,
    /// As [`StackMode::Cached`], and a hit the cache answers is only counted,
    /// per stack, in the kernel: no record, so no time, thread or lock address of its
    /// own, and nothing for the agent to forward. Every hit is still classified by its
    /// stack; walked hits are recorded as usual.
    Tallied,
    /// As [`StackMode::Cached`], but each hit the cache answers is written to the ring
    /// buffer as a record of its own rather than staged with its CPU's others: what
    /// staging saves, by difference (`guestscope bench`).
    Unstaged,
    /// From the probes' stack cache keyed by the probed function, its caller and how
    /// the task entered the kernel (a system call's number; outside one, the outermost
    /// frame, one read): a hit gets the walk of the first hit with the same key, whose
    /// frames between the caller and the entry may differ from its own (about 2% of the
    /// answers in the lab's workloads, measured by
    /// [`StackMode::CallerChecked`]). Every hit's function, caller and way in are its
    /// own, and the lab classifies a hit by the innermost frame a rule names, which is
    /// the caller for most hits.
    Caller,
    /// As [`StackMode::Caller`], and every hit walked too: the answers that differ
    /// from the walk are counted (`ProbeCounters::stack_cache_wrong`), as in
    /// [`StackMode::Checked`].
    CallerChecked,
    /// As [`StackMode::Caller`], and a hit the cache answers is only counted per stack
    /// in the kernel, as in [`StackMode::Tallied`]: the cheapest mode that still
    /// classifies every hit by its stack (its function, caller and way in its own).
    CallerTallied,
}

impl StackMode {
    /// The switches of [`crate::maps::SETTINGS`] that set this mode. Staging
    /// ([`crate::maps::STAGE_CACHED`]) is on in every mode but [`StackMode::Unstaged`];
    /// the agent leaves it off when it could not load the program that writes the
    /// stages out.
    pub fn settings_flags(self) -> u32 {
        use crate::maps::{
            CHECK_STACK_CACHE, NO_STACK_CACHE, NO_STACK_WALK, STAGE_CACHED, TALLY_CACHED,
            TRUST_CALLER,
        };
        match self {
            StackMode::Cached => STAGE_CACHED,
            StackMode::WalkEvery => NO_STACK_CACHE | STAGE_CACHED,
            StackMode::Checked => CHECK_STACK_CACHE | STAGE_CACHED,
            StackMode::Off => NO_STACK_WALK | STAGE_CACHED,
            StackMode::Tallied => TALLY_CACHED | STAGE_CACHED,
            StackMode::Unstaged => 0,
            StackMode::Caller => TRUST_CALLER | STAGE_CACHED,
            StackMode::CallerChecked => TRUST_CALLER | CHECK_STACK_CACHE | STAGE_CACHED,
            StackMode::CallerTallied => TRUST_CALLER | TALLY_CACHED | STAGE_CACHED,
        }
    }

    /// Whether the hits the stack cache answers are only counted per stack in the
    /// kernel ([`StackMode::Tallied`], [`StackMode::CallerTallied`]).
    pub fn tallies(self) -> bool {
        matches!(self, StackMode::Tallied | StackMode::CallerTallied)
    }

    /// Whether a hit's stack may be the first walk of another hit with its function,
    /// caller and way in ([`StackMode::Caller`], [`StackMode::CallerTallied`]; with
    /// [`StackMode::CallerChecked`] every hit keeps its own walk).
    pub fn by_caller(self) -> bool {
        matches!(self, StackMode::Caller | StackMode::CallerTallied)
    }
}

impl Tracing {
    /// Whether this is the default, [`Tracing::Plan`].
    pub fn is_plan(&self) -> bool {
        *self == Tracing::Plan
    }
}

/// Distinct stacks a [`Tracing::Synthetic`] run's events cycle through.
pub const SYNTHETIC_STACKS: usize = 8;

/// Frames per stack of a [`Tracing::Synthetic`] run: about what the lab's spin_lock
/// stacks have.
pub const SYNTHETIC_FRAMES: usize = 12;

/// One in this many of a [`Tracing::Synthetic`] run's events carries its walked stack;
/// the others name the stack-cache entry that holds it, as the probes' records do when
/// their cache answers (97% of the fopen loop's hits in the bench's stack-cache boot).
pub const SYNTHETIC_WALK_EVERY: u64 = 32;

/// Artifact name prefix of the agent's per-workload tracing report ([`WorkloadTracing`],
/// JSON), followed by the workload's name.
pub const TRACING_ARTIFACT_PREFIX: &str = "tracing-";

/// What was attached while one workload ran, and what the probes counted meanwhile
/// (sent for workloads whose [`Tracing`] is not [`Tracing::Plan`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadTracing {
    /// eBPF probes attached during the run, by name.
    pub probes: Vec<String>,
    /// How the probes got each event's stack.
    pub stacks: StackMode,
    /// Whether the fork follower was attached.
    pub fork_follower: bool,
    /// Why the requested set could not be attached, if so.
    pub errors: Vec<String>,
    /// Each probe's counters accumulated during the run (summed over CPUs), by name.
    pub counters: Vec<(String, crate::ProbeCounters)>,
    /// Ring-buffer records the agent read during the run (including its drain).
    pub events_read: u64,
    /// Events the agent sent during the run.
    pub events_sent: u64,
    /// The ftrace kprobe, for [`Tracing::FtraceKprobe`].
    pub ftrace: Option<FtraceHits>,
    /// The ftrace kprobes, for [`Tracing::FtracePeer`], in its functions' order.
    #[serde(default)]
    pub ftrace_peer: Vec<FtraceHits>,
    /// The agent's peak resident set so far (`VmHWM`), KiB; 0 when unknown.
    pub agent_peak_rss_kib: u64,
    /// CPU time the agent used from the workload's start to the end of its drain
    /// (user + system), ns: its share of the tracing cost.
    pub agent_cpu_ns: u64,
    /// Time the agent spent draining the ring buffer after the workload exited, ns.
    pub drain_ns: u64,
    /// Page faults the agent took over the same span (minor: no disk read); what its
    /// allocator's mapping and unmapping of memory costs shows here.
    #[serde(default)]
    pub agent_minor_faults: u64,
    /// Times the agent gave up the CPU over the same span to wait (for events, for
    /// the link): its wakeups.
    #[serde(default)]
    pub agent_voluntary_switches: u64,
    /// Times the agent was preempted over the same span.
    #[serde(default)]
    pub agent_involuntary_switches: u64,
}

/// An ftrace kprobe event's counts while a workload ran.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FtraceHits {
    /// The event (`group/name`).
    pub event: String,
    /// Kernel function probed.
    pub function: String,
    /// Hits (`kprobe_profile`), every process included (a filter drops hits after
    /// they are counted).
    pub hits: u64,
    /// Missed hits (`kprobe_profile`: the kprobe could not run, e.g. nested).
    pub misses: u64,
}

/// Where a workload came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadOrigin {
    /// One of guestscope's own workloads.
    Builtin,
    /// A static binary the user gave with `--workload`.
    User,
}
