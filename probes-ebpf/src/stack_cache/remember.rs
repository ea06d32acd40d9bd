//! Keeping a walk: where each of its frames' return addresses lies in the stack,
//! found once when the walk is made, and the reads a later check makes, planned then.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel as read_kernel_raw};
use guestscope_common::{CacheSlot, MAX_STACK_FRAMES};

use super::{
    CachedStack, FRAME_SEARCH, MAX_READS, STACK_CACHE, Search, WINDOW_BYTES, WINDOW_SLOTS,
    frames_of,
};
use crate::map_value::{load, store};

/// Slots between two remembered slots below which one read spans both. A helper
/// call's fixed cost (the call, the address check, the page-fault guard: 70
/// instructions on Debian's 6.1, counted exactly by `cargo xtask bench --exact-counts`)
/// is about what copying ten slots costs (7 instructions per slot in
/// `copy_from_kernel_nofault`), but a walk planned into more than [`MAX_READS`] reads
/// has its last read stretched over every slot left, so a gap that keeps walks within
/// the reads pays. Counted exactly (the probes' own path on the fopen loop, kernel
/// instructions per event, one boot each, with 4 reads): 1,472 with a gap of 16, 1,411
/// with 18, 1,402 and 1,412 with 20, 1,437 with 22, 1,430 with 24, 1,437 with 32; with
/// 8 reads and a gap of 20, 1,406; with 2, 1,581. (Counted in instructions per
/// recorded event before the checks skipped the caller's slot: 1,906 with 4 reads and a
/// gap of 16, 1,928 with 8, 1,986 with 8 reads and a gap of 4, 2,001 with 2 reads and a
/// gap of 24, 2,003–2,022 with one read of the whole span.)
const MERGE_GAP_SLOTS: u32 = 20;

/// Remembers the walk `ips` (`bytes` long) of the chain of the key [`super::hold_key`] held:
/// finds each frame past the probed function's in the stack above `anchor` (below the
/// held stack top), in order, and keeps where. Gives up (nothing is kept) when a frame
/// is not found within [`super::WINDOW_BYTES`]; [`super::kept`] says where it was kept.
///
/// # Safety
/// `ips` must point at an array of [`MAX_STACK_FRAMES`] frames.
#[inline(always)]
pub unsafe fn remember(
    search: *mut Search,
    anchor: u64,
    ips: *const [u64; MAX_STACK_FRAMES],
    bytes: i32,
) {
    // SAFETY: `search` points into this CPU's claimed scratch (see `holds`).
    let (key, top) = unsafe {
        store!((*search).kept, CacheSlot::NONE);
        (load!((*search).held_key), load!((*search).held_top))
    };
    let key = &key;
    if bytes <= 0 {
        return;
    }
    // The way that did not answer last.
    let set = key.set();
    let Some(first) = STACK_CACHE.get_ptr(set) else {
        return;
    };
    // SAFETY: `first` points at this CPU's slot of a per-CPU array (see `holds`).
    let victim = 1 - (unsafe { load!((*first).recent) } & 1);
    let Some(entry) = STACK_CACHE.get_ptr_mut(set + victim) else {
        return;
    };
    // SAFETY: `entry` and `search` point at this CPU's slots of per-CPU arrays (see
    // `lookup`); the caller vouches for `ips`.
    unsafe {
        store!((*search).candidate, CacheSlot::tag(set + victim));
        store!((*search).frames, frames_of(bytes as u32) as u32);
        store!((*search).first, FRAME_SEARCH as u32);
        for j in 0..FRAME_SEARCH {
            if (j as u32) < load!((*search).frames) && (*ips)[j] == key.frame {
                store!((*search).first, j as u32);
                break;
            }
        }
        if load!((*search).first) as usize >= FRAME_SEARCH {
            return;
        }
        // The window ends at the stack's top: past it lies the guard page.
        let to_top = top - anchor;
        let len = if to_top < WINDOW_BYTES {
            to_top
        } else {
            WINDOW_BYTES
        };
        let words = (&raw mut (*search).words).cast::<c_void>();
        if read_kernel_raw(words, len as u32, anchor as *const c_void) != 0 {
            return;
        }
        store!((*search).len, len as u32);
        store!((*search).to_top, to_top as u32);
        // Mark the entry empty while it is rewritten; the frames up to the probed
        // function's are kept as they are, the others are found in the window.
        (*entry).bytes = 0;
        let walk = (&raw mut (*search).ips).cast::<c_void>();
        if read_kernel_raw(walk, WALK_BYTES, ips.cast::<c_void>()) != 0 {
            return;
        }
        store!((*search).next, load!((*search).first) + 1);
        // One verified step for all the window's slots (a loop here is verified slot
        // by slot: most of the programs' load time under TCG).
        // The callback gets the search through its context (a stack slot holding the
        // map value's address): no map lookup per slot.
        let mut at = SearchAt(search);
        bpf_loop(
            WINDOW_SLOTS as u32,
            search_step as *const () as *mut c_void,
            (&raw mut at).cast::<c_void>(),
            0,
        );
        if load!((*search).next) < load!((*search).frames) {
            return;
        }
        // The outermost frame is kept as slots below the stack's top (see `lookup`);
        // the one before it is the farthest counted from the anchor.
        let last = (load!((*search).frames) as usize).wrapping_sub(1) & (MAX_STACK_FRAMES - 1);
        (*search).slots[last] = (load!((*search).to_top) / 8) as u16 - (*search).slots[last];
        let before = last.wrapping_sub(1) & (MAX_STACK_FRAMES - 1);
        (*entry).span = if before > load!((*search).first) as usize {
            (u32::from((*search).slots[before]) + 1) * 8
        } else {
            0
        };
        // The reads a check of this walk makes, planned straight into the entry: one
        // pass over the frames counted from the anchor.
        // The caller's return address lies at the anchor, and the key holds it as the
        // probe read it there: a hit with the same key has it there too, so a check
        // need not read or compare that frame again.
        let after = load!((*search).first) + 1;
        let at = after as usize & (MAX_STACK_FRAMES - 1);
        let from = if after + 1 < load!((*search).frames)
            && (*search).slots[at] == 0
            && (*search).ips[at] == key.caller
        {
            after + 1
        } else {
            after
        };
        store!((*entry).check_from, from);
        store!((*entry).read_count, 0);
        store!((*entry).last_read_from, from);
        let mut plan = PlanAt { search, entry };
        bpf_loop(
            MAX_STACK_FRAMES as u32,
            range_step as *const () as *mut c_void,
            (&raw mut plan).cast::<c_void>(),
            0,
        );
        (*entry).check_end = last as u32;
        let found = (&raw const (*search).slots).cast::<c_void>();
        let dest = (&raw mut (*entry).slots).cast::<c_void>();
        if read_kernel_raw(dest, SLOTS_BYTES, found) != 0 {
            return;
        }
        let dest = (&raw mut (*entry).ips).cast::<c_void>();
        if read_kernel_raw(dest, WALK_BYTES, walk) != 0 {
            return;
        }
        (*entry).key = *key;
        (*entry).first = load!((*search).first);
        (*entry).bytes = bytes as u32;
        store!((*search).kept, load!((*search).candidate));
    }
}

/// Bytes of a walk's frames.
const WALK_BYTES: u32 = (MAX_STACK_FRAMES * size_of::<u64>()) as u32;
/// Bytes of a walk's slots.
const SLOTS_BYTES: u32 = (MAX_STACK_FRAMES * size_of::<u16>()) as u32;

/// Where [`search_step`] finds this CPU's [`Search`]: its `bpf_loop` context.
#[repr(C)]
struct SearchAt(*mut Search);

/// Where [`range_step`] finds the walk's frames (this CPU's [`Search`]) and the entry
/// whose reads it plans: its `bpf_loop` context.
#[repr(C)]
struct PlanAt {
    search: *mut Search,
    entry: *mut CachedStack,
}

/// One slot of [`remember`]'s search, a `bpf_loop` callback: if the window's word at
/// `slot` is the next frame's return address, notes where and moves to the frame after
/// it. Returns 1 (stop) once every frame is found or the window's read bytes end.
///
/// Everything it uses is in this CPU's [`Search`] (given in `ctx`), read again at each
/// step.
#[inline(never)]
extern "C" fn search_step(slot: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `SearchAt` on `remember`'s stack, which outlives the loop;
    // the pointer in it is this CPU's slot of a per-CPU array (see `holds`); the
    // indexes are masked to the arrays' power-of-two sizes.
    unsafe {
        let search = (*ctx.cast::<SearchAt>()).0;
        let next = load!((*search).next);
        if next >= load!((*search).frames) || slot * 8 >= load!((*search).len) {
            return 1;
        }
        let j = next as usize & (MAX_STACK_FRAMES - 1);
        let at = slot as usize & (WINDOW_SLOTS - 1);
        if (*search).words[at] == (*search).ips[j] {
            (*search).slots[j] = slot as u16;
            store!((*search).next, next + 1);
        }
    }
    0
}

/// One frame of [`remember`]'s plan of reads, a `bpf_loop` callback: frame
/// `check_from + i` (one counted from the anchor; the outermost is read on its own)
/// joins the last read if its slot is within [`MERGE_GAP_SLOTS`] of that read's end,
/// or when [`MAX_READS`] are planned already; it starts a read of its own otherwise.
/// Returns 1 (stop) past the frames counted from the anchor.
#[inline(never)]
extern "C" fn range_step(i: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: as in `search_step` (`ctx` is the `PlanAt` on `remember`'s stack, the
    // entry this CPU's slot of a per-CPU array); the indexes are masked to the arrays'
    // sizes.
    unsafe {
        let PlanAt { search, entry } = *ctx.cast::<PlanAt>();
        let j = load!((*entry).check_from) + i;
        if j + 1 >= load!((*search).frames) {
            return 1;
        }
        let slot = u32::from(load!((*search).slots[j as usize & (MAX_STACK_FRAMES - 1)]));
        let n = load!((*entry).read_count);
        if n > 0 {
            let last = (n - 1) as usize & (MAX_READS - 1);
            let start = u32::from(load!((*entry).read_start[last]));
            let end = start + u32::from(load!((*entry).read_len[last]));
            if slot < end + MERGE_GAP_SLOTS || n as usize >= MAX_READS {
                store!((*entry).read_len[last], (slot + 1 - start) as u16);
                return 0;
            }
        }
        let next = n as usize & (MAX_READS - 1);
        store!((*entry).last_read_from, j);
        store!((*entry).read_start[next], slot as u16);
        store!((*entry).read_len[next], 1);
        store!((*entry).read_count, n + 1);
    }
    0
}
