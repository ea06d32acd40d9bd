//! The short ring-buffer records of a hit whose stack the probes' stack cache gave
//! ([`CachedEvent`], and [`CachedArgsEvent`] for the probes that carry arguments), and
//! how records name a cache entry ([`CacheSlot`]).

use crate::event::{RawEvent, USER_ARGS};

/// Entries of the probes' stack cache on each CPU (the probes' `STACK_CACHE` map and the
/// agent's table of what each entry holds are this size).
pub const STACK_CACHE_ENTRIES: u32 = 1024;

/// A stack-cache entry of one CPU, as records carry it: entry index plus one, so that
/// zero means none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSlot;

impl CacheSlot {
    /// No entry.
    pub const NONE: u32 = 0;

    /// The tag of entry `index` (below [`STACK_CACHE_ENTRIES`]).
    pub const fn tag(index: u32) -> u32 {
        index + 1
    }

    /// The entry index a tag names; `None` for [`CacheSlot::NONE`] or a tag out of range.
    pub const fn index(tag: u32) -> Option<u32> {
        if tag == Self::NONE || tag > STACK_CACHE_ENTRIES {
            None
        } else {
            Some(tag - 1)
        }
    }
}

/// The ring-buffer record of a hit whose stack came from the probes' stack cache
/// (72 bytes instead of a [`StackedEvent`](crate::StackedEvent)'s 608): the stack is
/// the one the last [`StackedEvent`](crate::StackedEvent) of the same CPU
/// (`event.cpu`) with this `cache_slot` carried. With stacks off
/// (`StackMode::Off`) every hit is one, its `cache_slot`
/// [`CacheSlot::NONE`]: no stack.
///
/// A CPU's records reach the ring buffer in the order its probes ran (one probe at a
/// time on a CPU, each record reserved before the cache entry changes), so the reader
/// has always seen the walk an entry holds before a hit that uses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedEvent {
    /// The hit; its `stack_id` is [`NO_STACK`](crate::event::NO_STACK) (the agent
    /// assigns ids).
    pub event: RawEvent,
    /// The stack-cache entry that answered ([`CacheSlot::tag`]); [`CacheSlot::NONE`]
    /// with stacks off.
    pub cache_slot: u32,
    /// Zero; keeps the record a multiple of 8 bytes.
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<CachedEvent>() == 72);

/// Most [`CachedEvent`]s in one ring-buffer record. A probe stages a CPU's cached hits
/// (in that CPU's scratch) and writes them to the ring buffer together: one reservation
/// and one wakeup check per run instead of per hit, and one record for the agent to
/// take. A record of `k` of them is `k * 72` bytes, which neither a
/// [`StackedEvent`](crate::StackedEvent) nor a [`CachedArgsEvent`] can be.
///
/// The run is written when it is full, before any other record of the same CPU (so a
/// CPU's records stay in the order its probes ran, and a walk that refills a cache
/// entry comes after the hits that used the entry's older walk), and when the agent
/// asks (the `flush_staged` program, run on each CPU while it reads the ring and
/// before it drains it at a workload's end).
pub const STAGED_EVENTS: usize = 32;

const _: () = assert!(STAGED_EVENTS.is_power_of_two());
const _: () = assert!(
    !core::mem::size_of::<crate::StackedEvent>()
        .is_multiple_of(core::mem::size_of::<CachedEvent>())
);
const _: () = assert!(
    !core::mem::size_of::<CachedArgsEvent>().is_multiple_of(core::mem::size_of::<CachedEvent>())
);

/// A [`CachedEvent`] of a probe that carries arguments
/// ([`ProbeKind::carries_args`](crate::ProbeKind::carries_args): the user's kprobes and
/// fentry probes at a function's entry), with arguments 1 to 5 (112 bytes). Its walked
/// counterpart keeps them in the last slots of
/// [`StackedEvent::ips`](crate::StackedEvent::ips), so the cache entry it names holds a
/// walk of at most [`USER_STACK_FRAMES`](crate::event::USER_STACK_FRAMES) frames.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachedArgsEvent {
    /// The hit and the cache entry that answered.
    pub cached: CachedEvent,
    /// Arguments 1 to 5 (`rsi`, `rdx`, `rcx`, `r8`, `r9` at entry).
    pub args: [u64; USER_ARGS],
}

const _: () = assert!(core::mem::size_of::<CachedArgsEvent>() == 112);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StackedEvent;

    #[test]
    fn cache_slot_tags_name_every_entry_and_nothing_else() {
        assert_eq!(CacheSlot::index(CacheSlot::NONE), None);
        for index in [0, 1, STACK_CACHE_ENTRIES - 1] {
            assert_ne!(CacheSlot::tag(index), CacheSlot::NONE);
            assert_eq!(CacheSlot::index(CacheSlot::tag(index)), Some(index));
        }
        assert_eq!(CacheSlot::index(STACK_CACHE_ENTRIES + 1), None);
        assert_eq!(CacheSlot::index(u32::MAX), None);
        // The three records a reader tells apart by length.
        let sizes = [
            size_of::<CachedEvent>(),
            size_of::<CachedArgsEvent>(),
            size_of::<StackedEvent>(),
        ];
        assert!(sizes[0] != sizes[1] && sizes[1] != sizes[2] && sizes[0] != sizes[2]);
    }
}
