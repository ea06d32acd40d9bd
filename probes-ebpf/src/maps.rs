//! The maps shared with the agent. Names are the statics' names, which must equal the
//! constants in `guestscope_common::maps` (the agent looks maps up by those).

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use guestscope_common::{ProbeCounters, ProbeKind, STACK_CACHE_ENTRIES, maps as names};

// Keep the statics' names and the shared constants in step.
const _: () = assert!(const_eq(names::EVENTS, "EVENTS"));
const _: () = assert!(const_eq(names::TRACED_TGIDS, "TRACED_TGIDS"));
const _: () = assert!(const_eq(names::COUNTERS, "COUNTERS"));
const _: () = assert!(const_eq(names::SETTINGS, "SETTINGS"));
const _: () = assert!(const_eq(names::TALLIES, "TALLIES"));

/// Whether two strings are equal, at compile time.
pub(crate) const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Probe events with their kernel stacks ([`guestscope_common::StackedEvent`]) for the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(names::EVENTS_BYTES, 0);

/// Processes under study, one byte per thread-group id
/// (`guestscope_common::maps::TRACED_TGIDS`). Set by the agent (mapped into its memory)
/// and by the fork probe; the agent sizes it for the kernel's `pid_max`.
#[map]
pub static TRACED_TGIDS: Array<u64> = Array::with_max_entries(
    names::traced_words(names::TRACED_TGIDS_DEFAULT),
    BPF_F_MMAPABLE,
);

/// Whether thread group `tgid` is under study: one array lookup, which the verifier
/// inlines, and a byte of the word.
#[inline(always)]
pub fn is_traced(tgid: u32) -> bool {
    let (word, byte) = names::traced_slot(tgid);
    TRACED_TGIDS
        .get(word)
        .is_some_and(|w| names::traced_in(*w, byte))
}

/// Adds thread group `tgid` to the studied ones (nothing past the array). A byte store:
/// other CPUs' fork probes store other bytes of the same word at the same time.
#[inline(always)]
pub fn add_traced(tgid: u32) {
    let (word, byte) = names::traced_slot(tgid);
    if let Some(w) = TRACED_TGIDS.get_ptr_mut(word) {
        // SAFETY: `w` points at an 8-byte slot of an array map, valid for the program's
        // run, and `byte` is below 8.
        unsafe { w.cast::<u8>().add(byte as usize).write_volatile(1) };
    }
}

/// Per-CPU outcome counters, indexed by [`ProbeKind`] id.
#[map]
pub static COUNTERS: PerCpuArray<ProbeCounters> =
    PerCpuArray::with_max_entries(ProbeKind::COUNT as u32, 0);

/// Switches and the attachment generation, set by the agent (`guestscope_common::maps::SETTINGS`).
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(names::SETTINGS_SLOTS, 0);

/// Hits counted under each stack-cache entry's walk, with no record, at
/// `cpu * STACK_CACHE_ENTRIES + entry` (`guestscope_common::maps::TALLIES`): one plain
/// array the agent maps into its memory (`BPF_F_MMAPABLE`) and reads without a system
/// call. The agent sizes it for the possible CPUs when it loads the object.
#[map]
pub static TALLIES: Array<u64> = Array::with_max_entries(STACK_CACHE_ENTRIES, BPF_F_MMAPABLE);

/// The [`TALLIES`] slot of CPU `cpu`'s stack-cache entry `entry`; `None` past the
/// array (a CPU the agent did not size it for).
#[inline(always)]
pub fn tally_slot(cpu: u32, entry: u32) -> Option<*mut u64> {
    TALLIES.get_ptr_mut(names::cache_entry_slot(cpu, entry)?)
}
