//! The stack cache checked against a walk of every event.

use super::*;

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
    /// Answers by caller (`CallerChecked`: the lab's workloads again, the cache keyed by
    /// function and caller answering with no further read, every hit walked too).
    #[serde(default)]
    pub caller_answers: u64,
    /// Of those, answers that differed from the walk: hits whose frames past their
    /// caller were not those of their caller's first walk.
    #[serde(default)]
    pub caller_differed: u64,
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
    /// How its stacks were got (`Checked`, `CallerChecked`, `WalkEvery`, `Cached`,
    /// `Tallied`).
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
