//! The loops' overheads: each probe set against the untraced loop, ftrace and the
//! lab's gdbstub method.

use super::*;

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
    pub tallied: Option<StackModeOverhead>,
    /// The same loop with every probe, the stacks taken by caller (`--stacks caller`).
    #[serde(default)]
    pub by_caller: Option<StackModeOverhead>,
    /// The same loop with every probe, the stacks taken by caller and the cached hits
    /// only counted per stack (`--stacks caller-tallied`).
    #[serde(default)]
    pub caller_tallied: Option<StackModeOverhead>,
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

/// A loop with every probe and a cheaper stack mode: the hits the stack cache answers
/// only counted per stack in the kernel (`--stacks tallied`), or the stacks taken by
/// caller (`--stacks caller`); every hit still classified by its stack.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StackModeOverhead {
    /// Loop time, ms.
    pub traced_ms: Option<Spread>,
    /// Traced / untraced, paired.
    pub ratio: Option<Spread>,
    /// Time added per event, µs: (traced − untraced) / the every-probe runs' loop
    /// events, paired.
    pub us_per_event: Option<Spread>,
    /// Share of the hits the mode answered from its cache: only counted (no record)
    /// when tallied, taken by caller when by caller.
    pub share: Option<Spread>,
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
