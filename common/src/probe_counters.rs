//! What each probe counts of its own hits, per CPU, so every event that was not
//! delivered is accounted for.

/// Per-CPU, per-probe counters kept by the probes themselves, so every event
/// that was not delivered is accounted for (aya's RingBuf reports no losses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub struct ProbeCounters {
    /// Hits by a process under study (passed the pid filter).
    pub matched: u64,
    /// Of those, records written to the ring buffer.
    pub emitted: u64,
    /// Records lost because the ring buffer was full (`reserve` failed).
    pub ring_full: u64,
    /// Records emitted without a stack because the stack walk (`bpf_get_stack`) failed.
    pub stack_failed: u64,
    /// Hits skipped because another guestscope probe was running on this CPU
    /// (the probe would otherwise observe itself).
    pub nested: u64,
    /// Records whose stack came from the probes' stack cache (its call chain was walked
    /// before and its stack still held every frame of that walk) instead of a walk.
    /// (Absent from the files of runs made before the cache: 0.)
    #[cfg_attr(feature = "std", serde(default))]
    pub stack_cached: u64,
    /// In the check mode (`maps::CHECK_STACK_CACHE`), cached stacks that differed from
    /// the walk made anyway (every one a wrong stack the cache would have given).
    #[cfg_attr(feature = "std", serde(default))]
    pub stack_cache_wrong: u64,
    /// Hits the stack cache answered that were counted per stack in the kernel, with no
    /// record ([`crate::plan::StackMode::Tallied`]); not part of `emitted`. (Absent from
    /// the files of runs made before tallies: 0.)
    #[cfg_attr(feature = "std", serde(default))]
    pub tallied: u64,
}

impl ProbeCounters {
    /// Adds another CPU's counters to these.
    pub fn add(&mut self, other: &ProbeCounters) {
        self.matched += other.matched;
        self.emitted += other.emitted;
        self.ring_full += other.ring_full;
        self.stack_failed += other.stack_failed;
        self.nested += other.nested;
        self.stack_cached += other.stack_cached;
        self.stack_cache_wrong += other.stack_cache_wrong;
        self.tallied += other.tallied;
    }
}

#[cfg(feature = "user")]
// SAFETY: ProbeCounters is repr(C) with only u64 fields.
unsafe impl aya::Pod for ProbeCounters {}
