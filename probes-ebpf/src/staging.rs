//! A CPU's cached hits (with stacks off, all its hits), staged in its scratch and
//! written to the ring buffer up to
//! [`STAGED_EVENTS`] at a time (see `guestscope_common::STAGED_EVENTS`): one
//! reservation, one wakeup check and one record for the agent per run instead of per
//! hit.
//!
//! The staged hits are counted per probe when they are written (`emitted`, or
//! `ring_full` when the ring had no room), so `matched` still adds up once every
//! stage is written: the agent runs [`flush_staged`] on every CPU before it drains the
//! ring at a workload's end.

use core::mem::size_of;

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use guestscope_common::{
    CachedEvent, ProbeKind, RawEvent, STAGED_EVENTS,
    maps::{FLUSH_BUSY, FLUSH_STAGED},
};

use crate::{
    emit::wakeup_flag,
    map_value::{load, store},
    maps::{COUNTERS, EVENTS, const_eq},
    scratch::{Claim, NotClaimed},
};

// The program's name and the shared constant the agent looks it up by, in step.
const _: () = assert!(const_eq(FLUSH_STAGED, "flush_staged"));

/// One CPU's staged hits.
#[repr(C)]
pub struct Staged {
    /// Records in `records`.
    count: u32,
    /// Of them, per probe id.
    kinds: [u32; ProbeKind::COUNT],
    /// The records, in the order the probes ran.
    records: [CachedEvent; STAGED_EVENTS],
}

/// Where the next staged hit's event is written, before [`stage`] adds it.
///
/// # Safety
/// `staged` must point at this CPU's claimed [`Staged`].
#[inline(always)]
pub unsafe fn next_event(staged: *mut Staged) -> *mut RawEvent {
    // SAFETY: the caller vouches for `staged`; the index is masked into the array.
    unsafe {
        let n = load!((*staged).count) as usize;
        &raw mut (*staged).records[n & (STAGED_EVENTS - 1)].event
    }
}

/// Adds the hit of probe `kind` whose event was written at [`next_event`], its stack
/// cache entry `slot` (a `CacheSlot` tag, `CacheSlot::NONE` with stacks off); returns
/// whether the stage is full (then [`flush`] it).
///
/// # Safety
/// `staged` must point at this CPU's claimed [`Staged`], its [`next_event`] written.
#[inline(always)]
pub unsafe fn stage(staged: *mut Staged, slot: u32, kind: ProbeKind) -> bool {
    // SAFETY: the caller vouches for `staged`; the index is masked into the array.
    unsafe {
        let n = load!((*staged).count) as usize;
        let at = &raw mut (*staged).records[n & (STAGED_EVENTS - 1)];
        (*at).cache_slot = slot;
        (*at)._pad = 0;
        let k = kind as usize;
        store!((*staged).kinds[k], load!((*staged).kinds[k]) + 1);
        store!((*staged).count, (n + 1) as u32);
        n + 1 >= STAGED_EVENTS
    }
}

/// Writes the staged hits to the ring buffer (`ring_bytes` long) as one record and
/// counts them per probe, as emitted or lost to a full ring; nothing when none is
/// staged.
///
/// # Safety
/// `staged` must point at this CPU's claimed [`Staged`].
#[inline(always)]
pub unsafe fn flush(staged: *mut Staged, ring_bytes: u64) {
    // SAFETY: the caller vouches for `staged`; `bytes` stays within `records`.
    unsafe {
        let mut n = load!((*staged).count) as usize;
        if n == 0 {
            return;
        }
        if n > STAGED_EVENTS {
            n = STAGED_EVENTS;
        }
        let bytes = n * size_of::<CachedEvent>();
        let records =
            core::slice::from_raw_parts((&raw const (*staged).records).cast::<u8>(), bytes);
        let written = EVENTS
            .output::<[u8]>(records, wakeup_flag(ring_bytes))
            .is_ok();
        for k in 0..ProbeKind::COUNT {
            let staged_k = load!((*staged).kinds[k]);
            if staged_k == 0 {
                continue;
            }
            if let Some(c) = COUNTERS.get_ptr_mut(k as u32) {
                // This CPU's slot, as `emit`'s counters.
                if written {
                    (*c).emitted += u64::from(staged_k);
                } else {
                    (*c).ring_full += u64::from(staged_k);
                }
            }
            store!((*staged).kinds[k], 0);
        }
        store!((*staged).count, 0);
    }
}

/// Writes this CPU's staged hits out; the agent runs it on each CPU
/// (`BPF_PROG_TEST_RUN`), never attached. Returns 0, or [`FLUSH_BUSY`] when a probe
/// holds the CPU's scratch (it was interrupted or preempted there): try again.
#[raw_tracepoint]
pub fn flush_staged(_ctx: RawTracePointContext) -> i32 {
    match Claim::take() {
        Ok(claim) => {
            // SAFETY: the claim makes this CPU's scratch ours.
            unsafe { flush(claim.staged(), claim.ring_bytes()) };
            0
        }
        Err(NotClaimed::Nested) => FLUSH_BUSY as i32,
        Err(NotClaimed::NoSlot) => -1,
    }
}
