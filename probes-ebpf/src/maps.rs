//! The maps shared with the agent. Names are the statics' names, which must equal the
//! constants in `guestscope_common::maps` (the agent looks maps up by those).

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use guestscope_common::{ProbeCounters, ProbeKind, STACK_CACHE_ENTRIES, maps as names};

// Keep the statics' names and the shared constants in step.
const _: () = assert!(const_eq(names::EVENTS, "EVENTS"));
const _: () = assert!(const_eq(names::TRACED_PIDS, "TRACED_PIDS"));
const _: () = assert!(const_eq(names::COUNTERS, "COUNTERS"));
const _: () = assert!(const_eq(names::BUSY, "BUSY"));
const _: () = assert!(const_eq(names::SETTINGS, "SETTINGS"));
const _: () = assert!(const_eq(names::TALLIES, "TALLIES"));

const fn const_eq(a: &str, b: &str) -> bool {
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

/// Processes under study: `tgid -> 1`. Written by the agent and by the fork probe.
#[map]
pub static TRACED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(names::TRACED_PIDS_MAX, 0);

/// Per-CPU outcome counters, indexed by [`ProbeKind`] id.
#[map]
pub static COUNTERS: PerCpuArray<ProbeCounters> =
    PerCpuArray::with_max_entries(ProbeKind::COUNT as u32, 0);

/// Switches and the attachment generation, set by the agent (`guestscope_common::maps::SETTINGS`).
#[map]
pub static SETTINGS: Array<u32> = Array::with_max_entries(names::SETTINGS_SLOTS, 0);

/// Per-CPU flag: non-zero while a guestscope probe runs on this CPU.
#[map]
pub static BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Hits counted under each stack-cache entry's walk, with no record, at
/// `cpu * STACK_CACHE_ENTRIES + entry` (`guestscope_common::maps::TALLIES`): one plain
/// array the agent maps into its memory (`BPF_F_MMAPABLE`) and reads without a system
/// call. The agent sizes it for the possible CPUs when it loads the object.
#[map]
pub static TALLIES: Array<u64> = Array::with_max_entries(STACK_CACHE_ENTRIES, BPF_F_MMAPABLE);

/// The [`TALLIES`] slot of this CPU's stack-cache entry `entry`; `None` past the array
/// (a CPU the agent did not size it for).
#[inline(always)]
pub fn tally_slot(entry: u32) -> Option<*mut u64> {
    // SAFETY: a helper call without arguments.
    let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
    TALLIES.get_ptr_mut(cpu.checked_mul(STACK_CACHE_ENTRIES)?.checked_add(entry)?)
}
