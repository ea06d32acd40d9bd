//! Names and sizes of the eBPF maps, shared by the probes and the agent.

/// Ring buffer of [`crate::event::StackedEvent`] records.
pub const EVENTS: &str = "EVENTS";
/// Ring buffer size in bytes (a power of two, a multiple of the page size).
///
/// A walked record is 608 bytes ([`crate::event::StackedEvent`]), a hit answered by
/// the stack cache 72 ([`crate::cached_event::CachedEvent`]): this holds 1 700 to
/// 14 500 of them. Measured on the built-in lab under TCG (one vCPU): a 128 KiB ring
/// overflowed (1 500 to 2 300 `ring_full` of ~47 000 events, before the stack cache),
/// 1 MiB and 2 MiB lost nothing of 170 000 events; with the stack cache, 1 MiB lost
/// nothing of the lab's 206 000 events nor of the bench's 10 M-event flood. The agent
/// maps the ring's data twice (the kernel's wrap-around mapping), so it counts twice in
/// the agent's RSS: an 8 MiB ring was 16 of its 20 MiB after loading, and going from
/// 2 MiB to 1 MiB took the agent's peak from 8.6 to 6.4 MiB.
pub const EVENTS_BYTES: u32 = 1024 * 1024;
/// The probes wake the agent only when the ring holds at least `1 / WAKEUP_FRACTION` of
/// its size; every other record is submitted without a wakeup, and the agent drains the
/// ring on its own timer (it reads the ring at least every 50 ms).
///
/// A wakeup per record costs the traced workload two context switches and a turn of the
/// agent's loop per event. Measured under TCG on the fopen loop (2000 iterations, alloc_fd
/// probe only): 340 ms with a wakeup per record, 73 ms with this threshold, 52 ms untraced.
pub const WAKEUP_FRACTION: u64 = 4;
/// Array `u64`, mappable (`BPF_F_MMAPABLE`): the processes under study, one byte per
/// thread-group id, non-zero when studied ([`traced_slot`]). The agent sets the
/// workload's byte (in its mapping of the array) and clears them all when the workload
/// ends; the fork probe sets the bytes of a studied process's children.
///
/// Every probe hit on every task asks it first, so it is an array, whose lookup the
/// verifier inlines, where the hash map it replaced hashed the key in a function call:
/// under TCG a program that only asked the hash map ran 0.63 µs, an empty one 0.25 to
/// 0.36 µs (the kernel's program statistics, ~400 runs each). Bytes, not bits: eBPF
/// has no atomic `or` before its v3 instruction set, and a byte store needs none (two
/// CPUs forking studied processes set different bytes). It holds every pid up to
/// `pid_max` (the hash map held 4096).
pub const TRACED_TGIDS: &str = "TRACED_TGIDS";
/// The kernel's largest possible pid on x86-64 (`PID_MAX_LIMIT`, 4 Mi).
pub const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
/// The pids [`TRACED_TGIDS`] covers as the object declares it: the kernel's default
/// `pid_max`. The agent sizes it for the running kernel's `pid_max` when it loads the
/// object (a `pid_max` raised later leaves the pids above it out: the agent says so
/// for a workload it cannot add).
pub const TRACED_TGIDS_DEFAULT: u32 = 32 * 1024;

/// Words of [`TRACED_TGIDS`] for pids below `pid_limit`.
pub const fn traced_words(pid_limit: u32) -> u32 {
    pid_limit.div_ceil(8)
}

/// The [`TRACED_TGIDS`] word and byte (0 to 7, in memory order) of `tgid`.
#[inline(always)]
pub const fn traced_slot(tgid: u32) -> (u32, u32) {
    (tgid / 8, tgid % 8)
}

/// Whether byte `byte` (0 to 7, in memory order on little-endian x86-64) of a
/// [`TRACED_TGIDS`] word holding `word` marks its process as studied.
#[inline(always)]
pub const fn traced_in(word: u64, byte: u32) -> bool {
    (word >> (byte * 8)) & 0xff != 0
}
/// Per-CPU array of [`crate::ProbeCounters`] indexed by [`crate::ProbeKind`] id.
pub const COUNTERS: &str = "COUNTERS";

/// The slot of CPU `cpu`'s stack-cache entry `index` in [`TALLIES`], which has a row
/// of [`crate::STACK_CACHE_ENTRIES`] per CPU; `None` if it overflows.
#[inline(always)]
pub const fn cache_entry_slot(cpu: u32, index: u32) -> Option<u32> {
    match cpu.checked_mul(crate::STACK_CACHE_ENTRIES) {
        Some(row) => row.checked_add(index),
        None => None,
    }
}
/// Array `u32` with [`SETTINGS_SLOTS`] slots that the agent sets for the probes: at
/// [`SETTINGS_FLAGS`] switches ([`NO_STACK_WALK`], [`NO_STACK_CACHE`],
/// [`CHECK_STACK_CACHE`], [`TALLY_CACHED`], [`STAGE_CACHED`]), at [`SETTINGS_GENERATION`] the attachment generation.
pub const SETTINGS: &str = "SETTINGS";
/// Slots of [`SETTINGS`].
pub const SETTINGS_SLOTS: u32 = 2;
/// [`SETTINGS`] slot of the switches.
pub const SETTINGS_FLAGS: u32 = 0;
/// [`SETTINGS`] slot of the attachment generation: the agent bumps it whenever it
/// attaches or detaches a program, which can rebuild a trampoline a stack walk passes
/// through; it is part of the stack cache's key, so no cached walk outlives it.
pub const SETTINGS_GENERATION: u32 = 1;
/// [`SETTINGS`] switch: record events without walking their stack (their `stack_bytes` is
/// [`crate::event::NO_STACK`]), to measure what the walk costs.
pub const NO_STACK_WALK: u32 = 1;
/// [`SETTINGS`] switch: walk every event's stack; the probes' stack cache (a hit whose
/// call chain was walked before takes that walk after checking its stack still holds
/// it) is neither read nor filled. What the cache saves, by difference.
pub const NO_STACK_CACHE: u32 = 2;
/// [`SETTINGS`] switch: walk every event's stack and compare it with the stack cache's
/// answer: `ProbeCounters::stack_cached` counts the cache's answers,
/// `ProbeCounters::stack_cache_wrong` those that differed from the walk.
pub const CHECK_STACK_CACHE: u32 = 4;
/// [`SETTINGS`] switch: a hit the stack cache answers is counted in
/// [`TALLIES`] under its cache entry instead of recorded
/// ([`crate::plan::StackMode::Tallied`]).
pub const TALLY_CACHED: u32 = 8;
/// [`SETTINGS`] switch: a hit the stack cache answers (without arguments) is staged in
/// its CPU's scratch and written with others, up to [`crate::STAGED_EVENTS`] in one
/// record. The agent sets it only once it has loaded [`FLUSH_STAGED`], which writes a
/// CPU's staged hits out when it asks.
pub const STAGE_CACHED: u32 = 16;
/// [`SETTINGS`] switch: the stack cache is keyed by the probe, the probed function's
/// frame, its caller and how the task entered the kernel (`orig_ax` of its saved
/// registers: a system call's number, or -1 for a fault or an interrupt, whose
/// outermost frame is compared then), and a hit whose key an entry holds gets that
/// entry's walk: the frames between the caller and the entry are not compared
/// ([`crate::plan::StackMode::Caller`]). With [`CHECK_STACK_CACHE`], every hit is
/// walked too and the answers that differ from the walk are counted.
pub const TRUST_CALLER: u32 = 32;
/// The raw-tracepoint program that writes the running CPU's staged hits to the ring
/// buffer (returns 0), unless a probe holds that CPU's scratch (returns
/// [`FLUSH_BUSY`]); never attached, the agent runs it on each CPU (`BPF_PROG_TEST_RUN`).
pub const FLUSH_STAGED: &str = "flush_staged";
/// What [`FLUSH_STAGED`] returns when a probe held the CPU's scratch: try again.
pub const FLUSH_BUSY: u32 = 1;
/// Array `u64` with one slot per CPU and stack-cache entry, at
/// `cpu * `[`crate::STACK_CACHE_ENTRIES`]` + entry`, mappable (`BPF_F_MMAPABLE`): hits
/// counted, with no record, under the walk the entry holds. A walk kept in an entry
/// takes its count into [`crate::StackedEvent::replaced_tally`] and resets it; the agent
/// reads the rest from its mapping of the array when a workload ends. Its size is set
/// at load time for the possible CPUs.
pub const TALLIES: &str = "TALLIES";

/// The probes' read-only global holding the byte offset of `comm` in the kernel's
/// `task_struct`, which the agent sets before it loads the object (from the kernel's
/// BTF). Set, the probes read the task's name straight from the task: two loads the
/// verifier checks against the kernel's BTF, where `bpf_get_current_comm` copies it with
/// `strscpy` (about half a microsecond of a recorded hit under TCG, by the guest's perf
/// against the untraced loop). [`COMM_OFFSET_UNKNOWN`] leaves the name to the helper.
pub const TASK_COMM_OFFSET: &str = "TASK_COMM_OFFSET";
/// [`TASK_COMM_OFFSET`] when the agent did not find the offset (no kernel BTF, a kernel
/// before 5.11 without `bpf_get_current_task_btf`, or an offset the probes cannot load
/// a word at).
pub const COMM_OFFSET_UNKNOWN: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpu_has_its_own_row_of_stack_cache_entries() {
        let entries = crate::STACK_CACHE_ENTRIES;
        assert_eq!(cache_entry_slot(0, 5), Some(5));
        assert_eq!(cache_entry_slot(1, 0), Some(entries));
        assert_eq!(cache_entry_slot(2, entries - 1), Some(3 * entries - 1));
        assert_eq!(cache_entry_slot(u32::MAX, 1), None);
    }
}
