//! Names and sizes of the eBPF maps, shared by the probes and the agent.

/// Ring buffer of [`crate::event::StackedEvent`] records.
pub const EVENTS: &str = "EVENTS";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 8 * 1024 * 1024;
/// Hash map `tgid (u32) -> u8`: the processes under study. Children of a
/// process in the map are added by the fork probe.
pub const TRACED_PIDS: &str = "TRACED_PIDS";
/// Capacity of [`TRACED_PIDS`].
pub const TRACED_PIDS_MAX: u32 = 4096;
/// Per-CPU array of [`crate::ProbeCounters`] indexed by [`crate::ProbeKind`] id.
pub const COUNTERS: &str = "COUNTERS";
/// Per-CPU array `u32` with one slot: non-zero while a guestscope probe runs
/// on this CPU (guards against probes observing each other).
pub const BUSY: &str = "BUSY";
