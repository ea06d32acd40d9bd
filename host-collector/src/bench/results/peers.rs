//! guestscope, ftrace and bpftrace on the same events in one boot, and where the
//! guest's instructions went.

use super::*;

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
