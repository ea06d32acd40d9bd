//! What `guestscope bench` measured, as written to `results.json`: every figure from
//! this run, with the runs it came from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::stats::Spread;
use crate::experiments::syscall_cr3::FunctionTrace;

/// Everything one bench run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchResults {
    /// guestscope version.
    pub guestscope_version: String,
    /// Day of the run (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Wall time of `guestscope bench` (the warm lab, run before it, excluded).
    pub wall_s: f64,
    /// Host and guest.
    pub machine: MachineInfo,
    /// Probe overhead on the workload loops (fopen, cpuinfo).
    pub overhead: Vec<LoopOverhead>,
    /// guestscope, ftrace and bpftrace on the same events, in a root file system with
    /// bpftrace (the `peers` part, with `--peer-rootfs`).
    pub peers: Option<PeersBoot>,
    /// The peers boot again, the guest's clock counting its instructions (the
    /// `instructions` part; TCG only): its loop times are millions of instructions.
    pub peers_instructions: Option<PeersBoot>,
    /// guestscope against the lab's gdbstub method.
    pub gdb: Option<GdbComparison>,
    /// Stream capacity against raw vsock.
    pub capacity: Option<Capacity>,
    /// Boot to agent-ready (the default bzImage: decompressed by its own stub, KASLR on).
    pub boot: BootTimes,
    /// Boot to agent-ready with the uncompressed kernel (QEMU's PVH entry; no KASLR).
    pub boot_uncompressed: Option<BootTimes>,
    /// The warm `cargo xtask lab`, if it was timed.
    pub lab: Option<LabTiming>,
    /// Agent and collector memory under a long event stream.
    pub memory: Option<Memory>,
    /// The stack cache checked against a walk of every event.
    pub stack_cache: Option<StackCacheCheck>,
    /// Each target of the benchmark issue: met or not, by how much.
    pub targets: Vec<TargetCheck>,
    /// Runs that failed and checks that did not add up.
    pub problems: Vec<String>,
}

/// Where the figures were measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineInfo {
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Why that accelerator.
    pub accel_reason: String,
    /// Host CPUs.
    pub host_cpus: usize,
    /// Host CPU model (`/proc/cpuinfo`).
    pub host_cpu_model: String,
    /// QEMU's version line.
    pub qemu: String,
    /// The guest's firmware: `qboot`, or QEMU's default (SeaBIOS).
    #[serde(default)]
    pub firmware: String,
    /// Guest kernel release.
    pub guest_kernel: String,
    /// Guest vCPUs.
    pub guest_vcpus: u32,
    /// Guest memory, MiB.
    pub guest_memory_mb: u32,
    /// Host `/proc/loadavg` when the bench started.
    pub load_before: String,
    /// Host `/proc/loadavg` when it ended.
    pub load_after: String,
}

/// A workload loop run untraced, with every probe, and (fopen) under an ftrace kprobe.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoopOverhead {
    /// Workload (`fopen`, `cpuinfo`).
    pub workload: String,
    /// Loop iterations per run.
    pub iterations: u64,
    /// Repetitions (each one run of every condition, in rotating order).
    pub reps: usize,
    /// Loop time with no probe attached, ms (the workload's own clock).
    pub untraced_ms: Option<Spread>,
    /// Loop time with every eBPF probe attached, ms.
    pub traced_ms: Option<Spread>,
    /// Traced / untraced, paired by repetition.
    pub ratio: Option<Spread>,
    /// Probe events per loop iteration (the probes' `matched` counters, less a run of
    /// zero iterations: process start and exit).
    pub events_per_iteration: Option<Spread>,
    /// Of those, per probe (medians).
    pub events_per_iteration_by_probe: Vec<(String, f64)>,
    /// Probe hits skipped per iteration because another guestscope probe ran (median).
    pub nested_per_iteration: f64,
    /// Events whose stack walk failed, all repetitions.
    pub stack_failed: u64,
    /// Events lost to a full ring buffer, all repetitions.
    pub ring_full: u64,
    /// Time added per event, µs: (traced − untraced) / loop events, paired.
    pub us_per_event: Option<Spread>,
    /// The same with the agent's drain after the workload exited added to the traced
    /// time: every event processed, wherever the agent did it.
    pub us_per_event_with_drain: Option<Spread>,
    /// The agent's drain after exit, ms.
    pub drain_ms: Option<Spread>,
    /// Agent CPU time per event (workload start to end of drain), µs.
    pub agent_cpu_us_per_event: Option<Spread>,
    /// What the events cost the agent, µs per event: (its CPU in the traced run − in
    /// the untraced run of the same repetition) / loop events, paired; without what
    /// every workload costs it whatever it traces (start, probe switch, report).
    #[serde(default)]
    pub agent_cpu_marginal_us_per_event: Option<Spread>,
    /// The agent's page faults, waits and preemptions per thousand events, every
    /// probe on.
    #[serde(default)]
    pub agent_activity: AgentActivity,
    /// The same loop with every probe, recording no stacks.
    pub without_stacks: Option<NoStackOverhead>,
    /// The same loop with every probe, the cached hits only counted per stack.
    #[serde(default)]
    pub tallied: Option<TalliedOverhead>,
    /// The same loop with every probe, each cached hit a record of its own: what
    /// staging them buys.
    #[serde(default)]
    pub staging: Option<StagingGain>,
    /// The same loop with one probe on alloc_fd, built in and as a user probe.
    pub user_probe: Option<UserProbeOverhead>,
    /// Every run's loop time, ms, by condition and repetition (`all-3`), in run order
    /// within each repetition.
    pub runs_ms: Vec<(String, Option<f64>)>,
    /// The same loop under an ftrace kprobe.
    pub ftrace: Option<FtraceOverhead>,
    /// guestscope and its ftrace peer on the same events (spin_lock and alloc_fd of the
    /// loop's task), each against the untraced loop of its repetition.
    #[serde(default)]
    pub peers: Vec<PeerOverhead>,
}

/// The peers boot: the fopen loop in a root file system with bpftrace, traced by
/// guestscope, ftrace and bpftrace on the same events, in one boot.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeersBoot {
    /// Whether the guest's clock counted its instructions
    /// ([`crate::qemu::command::INSTRUCTION_CLOCK`]): a loop's ms is then a million
    /// instructions, a µs per event a thousand.
    pub instruction_clock: bool,
    /// The root file system, as `lab --rootfs` describes it.
    pub rootfs: String,
    /// Loop iterations per run.
    pub iterations: u64,
    /// Repetitions of each condition.
    pub reps: usize,
    /// The untraced loop, ms.
    pub untraced_ms: Option<Spread>,
    /// Events per iteration guestscope's every-probe runs saw.
    pub events_per_iteration: Option<Spread>,
    /// Each tracer.
    pub rows: Vec<PeerOverhead>,
    /// Where the traced loop's time goes, sampled by perf in the same boot: one
    /// profile per way of tracing it.
    pub profiles: Vec<GuestProfile>,
}

/// The whole guest sampled by perf while guestscope traces a long fopen loop with every
/// probe (see `bench::profile`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct GuestProfile {
    /// How guestscope traced the loop.
    pub condition: String,
    /// Whether this is the loop with no program attached, the baseline of the others.
    pub untraced: bool,
    /// Loop iterations.
    pub iterations: u64,
    /// Samples per second asked of perf (cpu-clock).
    pub hz: u32,
    /// CPU time the recording sampled, ms (perf's event count for cpu-clock).
    pub sampled_ms: Option<f64>,
    /// The loop's own time, ms (its summary line).
    pub loop_ms: Option<f64>,
    /// The loop's events: its iterations times the events per iteration of
    /// guestscope's every-probe runs in the same boot.
    pub events: Option<f64>,
    /// The samples, grouped.
    pub shares: Vec<ProfileShare>,
    /// Of the probes' recorded and tallied hits in the recording, the share whose stack
    /// the stack cache gave, %; `None` for the untraced recording (or without the
    /// agent's counters). Well below the timed runs' share, the cache missed, and the
    /// walks (and the searches that keep them) are in the profile.
    pub stack_cache_percent: Option<f64>,
}

/// One group of a [`GuestProfile`]'s samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProfileShare {
    /// What the guest was doing (rows starting with `·` are parts of the row above).
    pub what: String,
    /// Share of all the samples, %.
    pub percent: f64,
    /// That share of the sampled time per loop event, µs.
    pub us_per_event: Option<f64>,
    /// How much more per loop event than the same row of the untraced loop's profile,
    /// µs (`None` in the untraced profile itself, or without one).
    pub over_untraced_us: Option<f64>,
}

/// One tracer on the loop's events, against the untraced loop, paired by repetition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerOverhead {
    /// The tracer and how it traced (`ftrace kprobes + stacktrace`).
    pub tracer: String,
    /// Loop time, ms.
    pub traced_ms: Option<Spread>,
    /// Traced / untraced, paired.
    pub ratio: Option<Spread>,
    /// Time added per event, µs, paired: over the events guestscope's every-probe run of
    /// the same repetition saw (the same events, whoever traces them).
    pub us_per_event: Option<Spread>,
    /// Hits per iteration of the peers' functions, as each tracer counted them (the
    /// process's start included): for ftrace its kprobes' (`kprobe_profile`: every
    /// task's, before the filter), for bpftrace's count its own (the task from its exec
    /// on, by its name), for guestscope its spin_lock and alloc_fd probes' (the task
    /// from its fork on, by its pid).
    pub hits_per_iteration: Option<Spread>,
    /// guestscope's rows only: what the events cost its agent, µs per event of its CPU
    /// (`getrusage`), paired against the untraced run over the same events (with the
    /// guest's clock counting instructions, a thousand instructions per µs: the
    /// agent's own, user and kernel).
    #[serde(default)]
    pub agent_us_per_event: Option<Spread>,
}

/// A loop with every probe but no stack walks: what the walk costs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NoStackOverhead {
    /// Loop time, ms.
    pub traced_ms: Option<Spread>,
    /// No-stack / untraced, paired.
    pub ratio: Option<Spread>,
    /// Time added per event without the walk, µs, paired.
    pub us_per_event: Option<Spread>,
    /// What the stacks add per event, µs: (with stacks − without) / events, paired.
    /// With the stack cache on, as the lab runs.
    pub walk_us_per_event: Option<Spread>,
    /// Loop time with every event's stack walked (the stack cache off), ms.
    pub walk_every_ms: Option<Spread>,
    /// What walking every event's stack adds per event, µs: (walk every − without
    /// stacks) / events, paired: the stacks' cost without the cache.
    pub walk_every_us_per_event: Option<Spread>,
    /// Share of the every-probe runs' stacks that came from the stack cache.
    pub cached_share: Option<Spread>,
    /// The agent's CPU per event without stacks, µs.
    pub agent_cpu_us_per_event: Option<Spread>,
    /// The agent's CPU per event with every stack walked (every record carries its
    /// frames, which the agent hashes), µs.
    pub agent_cpu_walk_every_us_per_event: Option<Spread>,
}

/// What staging the cached hits buys: every probe with each cached hit a record of its
/// own against every probe staged, paired by repetition.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StagingGain {
    /// Loop time with each cached hit a record of its own, ms.
    pub unstaged_ms: Option<Spread>,
    /// Unstaged / staged loop time, paired.
    pub ratio: Option<Spread>,
    /// What staging saves per event, µs: (unstaged − staged) / loop events, paired.
    pub saved_us_per_event: Option<Spread>,
    /// What staging saves the agent per event, µs of CPU: (unstaged − staged) / loop
    /// events, paired.
    pub agent_cpu_saved_us_per_event: Option<Spread>,
}

/// A loop with every probe, the hits the stack cache answers only counted per
/// stack in the kernel (`--stacks tallied`): every hit still classified by its stack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TalliedOverhead {
    /// Loop time, ms.
    pub traced_ms: Option<Spread>,
    /// Tallied / untraced, paired.
    pub ratio: Option<Spread>,
    /// Time added per event, µs: (tallied − untraced) / the every-probe runs' loop
    /// events, paired.
    pub us_per_event: Option<Spread>,
    /// Share of the hits only counted (no record).
    pub tallied_share: Option<Spread>,
    /// What the events cost the agent, µs per event, paired against the untraced run.
    pub agent_cpu_marginal_us_per_event: Option<Spread>,
    /// Hits neither recorded, tallied nor counted as lost, over all runs (0 when every
    /// hit is accounted for).
    pub unaccounted: i64,
}

/// What a user probe (`--probe kprobe:FUNC`) costs per event against the built-in
/// probe on the same function: both with stacks, each alone, in the same loop.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserProbeOverhead {
    /// The probed function.
    pub function: String,
    /// Loop time with the built-in probe, ms.
    pub builtin_ms: Option<Spread>,
    /// Loop time with the user probe, ms.
    pub user_ms: Option<Spread>,
    /// Events per run of the built-in probe.
    pub builtin_events: Option<Spread>,
    /// Events per run of the user probe.
    pub user_events: Option<Spread>,
    /// Time the built-in probe adds per event, µs, paired with the untraced runs.
    pub builtin_us_per_event: Option<Spread>,
    /// Time the user probe adds per event, µs, paired likewise.
    pub user_us_per_event: Option<Spread>,
    /// The user probe's added time over the built-in's, paired (1: the same cost).
    pub user_vs_builtin: Option<Spread>,
    /// Loop time with the function probed by a user fentry probe, ms.
    pub fentry_ms: Option<Spread>,
    /// Events per run of the fentry probe.
    pub fentry_events: Option<Spread>,
    /// Time the fentry probe adds per event, µs, paired with the untraced runs.
    pub fentry_us_per_event: Option<Spread>,
    /// The fentry probe's added time over the user kprobe's, paired.
    pub fentry_vs_kprobe: Option<Spread>,
}

/// A loop under an ftrace kprobe event (the method trace-cmd uses).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FtraceOverhead {
    /// The probed function.
    pub function: String,
    /// Loop time, ms.
    pub traced_ms: Option<Spread>,
    /// ftrace / untraced, paired.
    pub ratio: Option<Spread>,
    /// Kprobe hits per iteration (`kprobe_profile`, every process).
    pub hits_per_iteration: Option<Spread>,
    /// Time added per hit, µs, paired.
    pub us_per_hit: Option<Spread>,
}

/// The same loop traced by the lab's gdbstub method and by guestscope.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GdbComparison {
    /// The function both trace.
    pub symbol: String,
    /// Loop iterations per run.
    pub iterations: u64,
    /// Repetitions.
    pub reps: usize,
    /// Loop time per iteration under the gdb method, ms (host clock: first to last hit).
    pub gdb_ms_per_iteration: Option<Spread>,
    /// Loop time per iteration under guestscope tracing the same events (the alloc_fd
    /// probe, with its stack), ms.
    pub guestscope_ms_per_iteration: Option<Spread>,
    /// Loop time per iteration under guestscope with every probe, ms.
    pub guestscope_all_ms_per_iteration: Option<Spread>,
    /// gdb / guestscope with every probe, paired.
    pub guestscope_all_faster: Option<Spread>,
    /// Loop time per iteration untraced, ms.
    pub untraced_ms_per_iteration: Option<Spread>,
    /// How many times faster the loop runs under guestscope than under gdb, tracing the
    /// same events, paired.
    pub guestscope_faster: Option<Spread>,
    /// gdb / untraced, paired.
    pub gdb_slowdown: Option<Spread>,
    /// How near guestscope comes to the limit of being faster than the gdb method,
    /// paired: (gdb / guestscope) / (gdb / untraced) = untraced / guestscope, per
    /// iteration of the same loop timed over [`GdbComparison::long_iterations`] (a run
    /// of the short loop lasts ~10 ms under TCG, where a timer tick or an agent wakeup
    /// moves it by tens of percent); the short loop's in
    /// [`GdbComparison::share_of_limit_short`].
    #[serde(default)]
    pub share_of_limit: Option<Spread>,
    /// The same share from the short loop's runs, paired with the gdb runs.
    #[serde(default)]
    pub share_of_limit_short: Option<Spread>,
    /// Iterations of the long loop (the overhead part's fopen runs).
    #[serde(default)]
    pub long_iterations: u64,
    /// The long loop's time per iteration untraced, ms.
    #[serde(default)]
    pub long_untraced_ms_per_iteration: Option<Spread>,
    /// The long loop's time per iteration under the alloc_fd probe, ms.
    #[serde(default)]
    pub long_guestscope_ms_per_iteration: Option<Spread>,
    /// Time added per breakpoint hit by the gdb method, ms, paired.
    pub gdb_ms_per_hit: Option<Spread>,
    /// Each gdb run.
    pub traces: Vec<FunctionTrace>,
}

/// One step of the stream-capacity ladder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CapacityStep {
    /// Rate the workload was paced to, events/s (0: as fast as it could).
    pub requested_rate: u64,
    /// Probe hits (`matched`).
    pub matched: u64,
    /// Records the probe wrote (`emitted`).
    pub emitted: u64,
    /// Lost to a full ring buffer.
    pub ring_full: u64,
    /// Events the collector received for the workload.
    pub received: u64,
    /// The workload's loop time, s.
    pub seconds: f64,
    /// `matched / seconds`.
    pub rate: f64,
    /// Nothing lost.
    pub lossless: bool,
    /// `received + ring_full == matched` and `emitted == received`.
    pub accounted: bool,
    /// Stream bytes between the workload's start and exit records.
    pub wire_bytes: u64,
    /// Stream MB/s over the loop (`wire_bytes / seconds`).
    pub wire_mb_s: f64,
    /// Ring-buffer MB/s the agent read (600-byte records: `StackedEvent`).
    pub ring_mb_s: f64,
}

/// Raw guest → host vsock throughput (no framing, probes or agent).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RawThroughput {
    /// Transfers.
    pub reps: usize,
    /// Bytes per transfer.
    pub bytes: u64,
    /// MB/s as the host received them (first byte to end).
    pub host_mb_s: Option<Spread>,
    /// MB/s of the guest's write loop.
    pub guest_mb_s: Option<Spread>,
}

/// Stream capacity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Capacity {
    /// Raw vsock, same boot.
    pub raw: RawThroughput,
    /// The ladder, in the order run.
    pub steps: Vec<CapacityStep>,
    /// Highest rate with no loss at it and at every lower step, events/s.
    pub max_lossless_rate: Option<f64>,
    /// Stream MB/s at that step.
    pub max_lossless_wire_mb_s: Option<f64>,
    /// Ring-buffer MB/s at that step.
    pub max_lossless_ring_mb_s: Option<f64>,
    /// Stream bytes per event at that step (events, stacks, framing).
    pub wire_bytes_per_event: Option<f64>,
    /// Stream MB/s at that step over raw MB/s.
    pub fraction_of_raw: Option<f64>,
    /// Every step's counts add up.
    pub accounting_ok: bool,
    /// The pipeline's own ceiling (agent → vsock → collector → disk), from events the
    /// agent makes itself: no eBPF, no workload.
    pub pipeline: Option<PipelineCeiling>,
    /// The pipeline's events per second in their 64-byte records (MB/s) over raw vsock
    /// MB/s, same boot: the median of the paired runs' fractions
    /// ([`PipelineCeiling::fraction_of_raw`]).
    pub pipeline_fraction_of_raw: Option<f64>,
}

/// The synthetic producer's runs: what the pipeline carries when nothing else bounds
/// it, each paired with the raw blast just before it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PipelineCeiling {
    /// Events the agent made in each run.
    pub events: u64,
    /// Every run, in order (run `i` after blast `i`).
    pub runs: Vec<PipelineRun>,
    /// Events per second over the runs.
    pub events_per_s: Option<Spread>,
    /// Stream MB/s over the runs.
    pub wire_mb_s: Option<Spread>,
    /// Each run's events per second in their 64-byte records (MB/s) over its blast's
    /// raw MB/s (host clock), paired: how much of what raw vsock carries the pipeline
    /// delivers as events.
    pub fraction_of_raw: Option<Spread>,
    /// Each run's stream MB/s (the events packed, stacks and framing) over its blast's,
    /// paired.
    pub stream_fraction_of_raw: Option<Spread>,
    /// The agent's CPU per event over the runs, µs.
    pub agent_cpu_us_per_event: Option<Spread>,
    /// The collector's CPU per event over the runs, µs (host).
    #[serde(default)]
    pub collector_cpu_us_per_event: Option<Spread>,
    /// The agent's page faults, waits and preemptions per thousand events over the
    /// runs.
    pub agent_activity: AgentActivity,
}

/// What the agent's kernel side did per thousand events over the runs of one
/// condition (its own resource usage, `getrusage`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentActivity {
    /// Minor page faults.
    pub faults: Option<Spread>,
    /// Waits: voluntary context switches (for events, for the link).
    pub waits: Option<Spread>,
    /// Preemptions: involuntary context switches (a kernel worker woken by its
    /// sends, an interrupt's work).
    pub preemptions: Option<Spread>,
}

/// One synthetic run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PipelineRun {
    /// Events the collector took.
    pub received: u64,
    /// From the first event until the link had taken the last, s (agent clock).
    pub seconds: f64,
    /// `received / seconds`.
    pub events_per_s: f64,
    /// Stream bytes between the run's start and exit records.
    pub wire_bytes: u64,
    /// `wire_bytes / seconds`, MB/s.
    pub wire_mb_s: f64,
    /// `events_per_s` in 64-byte records over the raw MB/s of the blast before it, if
    /// that blast delivered.
    pub fraction_of_raw: Option<f64>,
    /// `wire_mb_s` over the raw MB/s of the blast before it.
    pub stream_fraction_of_raw: Option<f64>,
    /// The agent's CPU time per event over the run (its own clock), µs: how much of
    /// the time per event (`1 / events_per_s`) the agent spent.
    pub agent_cpu_us_per_event: Option<f64>,
    /// The collector's CPU time per event over the run (the host process that reads,
    /// decodes, counts and writes the events: from the run's start record to its exit
    /// record), µs.
    #[serde(default)]
    pub collector_cpu_us_per_event: Option<f64>,
    /// The agent's minor page faults over the run.
    pub agent_minor_faults: Option<u64>,
    /// The agent's voluntary context switches (waits) over the run.
    pub agent_voluntary_switches: Option<u64>,
    /// The agent's involuntary context switches (preemptions) over the run.
    pub agent_involuntary_switches: Option<u64>,
}

/// Boot to agent-ready.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootTimes {
    /// Host seconds from QEMU's launch to the agent's hello, every boot of this run.
    pub agent_ready_s: Option<Spread>,
    /// Host seconds to the kernel's first console line.
    pub kernel_banner_s: Option<Spread>,
    /// Each boot: (what, seconds to hello).
    pub samples: Vec<(String, f64)>,
}

/// The warm `cargo xtask lab`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabTiming {
    /// Wall time of the whole command, s.
    pub wall_s: f64,
    /// Of which `guestscope lab` itself (its summary's `run.wall_s`).
    pub guestscope_lab_s: Option<f64>,
    /// Whether the lab run completed.
    pub complete: Option<bool>,
}

/// One reading of the memory run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Events received so far.
    pub events: u64,
    /// Agent peak RSS so far, KiB.
    pub agent_peak_kib: u64,
    /// Collector peak RSS so far (since the memory run began), KiB.
    pub collector_peak_kib: u64,
}

/// Memory under a long event stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Events asked for.
    pub events_planned: u64,
    /// Events received.
    pub events_received: u64,
    /// Events lost (ring full).
    pub ring_full: u64,
    /// Readings after each part.
    pub points: Vec<MemoryPoint>,
    /// Agent `VmHWM` at the end, KiB: the peak since its probes were loaded (the agent
    /// resets it then).
    pub agent_peak_kib: Option<u64>,
    /// Agent `VmHWM` once its probes were loaded, KiB: the peak of loading them.
    #[serde(default)]
    pub agent_load_peak_kib: Option<u64>,
    /// Agent `RssAnon` at the end (its own heap and stacks), KiB.
    pub agent_rss_anon_kib: Option<u64>,
    /// Agent `RssFile` at the end (its binary and the mapped ring buffer), KiB.
    pub agent_rss_file_kib: Option<u64>,
    /// Collector peak RSS over the memory run, KiB.
    pub collector_peak_kib: Option<u64>,
    /// Whether the collector's peak was reset before the run (`clear_refs`); if not,
    /// its figure is the whole process's peak.
    pub collector_peak_reset: bool,
    /// Growth between the readings, KiB per million events (agent, collector).
    pub kib_per_million_events: Option<(f64, f64)>,
    /// Size of the `events.jsonl` written (then deleted), bytes.
    pub events_jsonl_bytes: u64,
    /// Seconds the run took (boot included).
    pub wall_s: f64,
}

impl Memory {
    /// Why the run's memory figures are not "after `events_planned` events": the
    /// events that neither arrived nor were counted lost to a full ring (a probe that
    /// did not attach, a workload that failed). `None` when every event is accounted
    /// for.
    pub fn shortfall(&self) -> Option<String> {
        let accounted = self.events_received + self.ring_full;
        (accounted < self.events_planned).then(|| {
            format!(
                "memory: {} of {} planned events arrived ({} lost to a full ring): its peaks are not after {} events",
                self.events_received, self.events_planned, self.ring_full, self.events_planned
            )
        })
    }
}

/// A target of the benchmark issue against what this run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// The measured figure.
    pub measured: String,
    /// Met, not met, or not measured (`None`).
    pub met: Option<bool>,
    /// By how much, and what bounds it.
    pub note: String,
}

/// The probes' stack cache checked against the walk: every workload of the lab run with
/// every probe, each event's stack walked and compared with what the cache would have
/// given ([`guestscope_common::plan::StackMode::Checked`]); and the fopen loop with the
/// cache off and on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackCacheCheck {
    /// One row per workload run.
    pub runs: Vec<StackCacheRun>,
    /// Events of the checked runs.
    pub checked_events: u64,
    /// Of those, events the cache had an answer for.
    pub cached: u64,
    /// Of those, answers that differed from the walk (each a wrong stack).
    pub wrong: u64,
    /// How far apart the stacks the host received are for the fopen loop with the cache
    /// on and off (total variation distance of the events' shares per probe and stack,
    /// 0 to 1); a cached hit tied to the wrong stack by the agent would move it.
    pub fopen_stack_distance: Option<f64>,
    /// The same distance between the fopen loop with every hit recorded (cache on) and
    /// with the cached hits only counted per stack (`--stacks tallied`): a
    /// tally added to the wrong stack would move it.
    pub fopen_tallied_distance: Option<f64>,
    /// The time inside each eBPF program per run, µs, over the fopen loop's
    /// repetitions, by stack mode (`WalkEvery`, `Cached`, `Tallied`) and program: where
    /// a hit's cost lies (the trampoline or kprobe around a program is outside it).
    pub fopen_program_us: BTreeMap<String, BTreeMap<String, Spread>>,
}

/// One workload's run in [`StackCacheCheck`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackCacheRun {
    /// The workload.
    pub workload: String,
    /// How its stacks were got (`Checked`, `WalkEvery`, `Cached`, `Tallied`).
    pub mode: String,
    /// Hits by the processes under study.
    pub matched: u64,
    /// Records the probes wrote.
    pub emitted: u64,
    /// Hits only counted per stack, with no record (`Tallied` runs only).
    pub tallied: u64,
    /// Hits the host received, as events or tallies.
    pub received: u64,
    /// Of those, stacks the cache answered.
    pub cached: u64,
    /// Of those, answers that differed from the walk (checked runs only).
    pub wrong: u64,
    /// Hits skipped because another guestscope probe was running on the CPU (a page
    /// fault in a probe's own stack reads would be one).
    pub nested: u64,
    /// Runs of each eBPF program during the workload, whichever process hit it.
    pub program_runs: BTreeMap<String, u64>,
    /// Stacks the cache answered, per probe that recorded anything (`kprobe`,
    /// `spin_lock`, …).
    pub cached_by_probe: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_run_short_of_its_events_is_a_problem() {
        let run = |received, ring_full| Memory {
            events_planned: 1000,
            events_received: received,
            ring_full,
            ..Memory::default()
        };
        assert_eq!(
            run(1002, 0).shortfall(),
            None,
            "the workload's own start adds a few"
        );
        assert_eq!(
            run(900, 100).shortfall(),
            None,
            "counted losses are accounted for"
        );
        assert_eq!(
            run(0, 0).shortfall().as_deref(),
            Some(
                "memory: 0 of 1000 planned events arrived (0 lost to a full ring): its peaks are not after 1000 events"
            )
        );
    }
}
