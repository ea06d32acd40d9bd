//! A cached hit's check: the lookup of its key and the comparison of the return
//! addresses an entry remembers with the ones in the hit's stack (see the parent
//! module's text, "Validation" and "Reads").

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, generated::bpf_probe_read_kernel as read_kernel_raw,
};
use guestscope_common::MAX_STACK_FRAMES;

use super::{
    CachedStack, MAX_READS, NO_SYSCALL, STACK_CACHE, Search, StackKey, WAYS, WINDOW_BYTES,
    WINDOW_SLOTS, frames_of,
};
use crate::map_value::{load, store};

/// The index of the entry holding the walk of `key`'s chain if every slot it
/// remembers holds the same return address again at `anchor`, on the task's stack
/// that ends at `top` ([`super::task_stack_top`]); `None` otherwise. With
/// `trust_caller` (`TRUST_CALLER`, whose key holds the way in) the key decides, and for
/// a hit outside a system call the outermost frame too: one read.
#[inline(always)]
pub fn lookup(
    search: *mut Search,
    key: &StackKey,
    anchor: u64,
    top: u64,
    trust_caller: bool,
) -> Option<u32> {
    let set = key.set();
    let first = STACK_CACHE.get_ptr_mut(set)?;
    // The way that answered last is asked first: a key that lives in the second way
    // (its set's first holds another key), or a chain kept in both ways with two
    // layouts of its frames, is then found in one lookup and one check, where asking
    // way 0 first took two lookups, and for the second, two checks' reads.
    // SAFETY: `first` points at this CPU's slot of a per-CPU array (see `holds`).
    let recent = unsafe { load!((*first).recent) };
    for i in 0..WAYS {
        let way = (recent + i) & (WAYS - 1);
        // Looked up again for the first way too, though `first` may be that entry: with
        // `first` reused there the ways compile to different code, each verified on its
        // own (spin_lock's program: 53 k instructions verified instead of 30 k).
        let entry = STACK_CACHE.get_ptr(set + way)?;
        if holds(search, entry, key, anchor, top, trust_caller) {
            if way != recent {
                // SAFETY: as above.
                unsafe { store!((*first).recent, way) };
            }
            return Some(set + way);
        }
    }
    None
}

/// Whether `entry` is `key`'s and every return address it remembers (with
/// `trust_caller`, none in a system call, the outermost one outside) is in the current
/// stack (above `anchor`, below `top`) where it was.
#[inline(always)]
fn holds(
    search: *mut Search,
    entry: *const CachedStack,
    key: &StackKey,
    anchor: u64,
    top: u64,
    trust_caller: bool,
) -> bool {
    // SAFETY: `entry` and `search` point at this CPU's slots of per-CPU arrays, valid
    // for the program's run; programs run with migration disabled, and the claim on the
    // scratch keeps other guestscope probes on this CPU out while this one runs. Bounds
    // are read with `load!` at every use: a register holding them would be narrowed by
    // each comparison, and the verifier would follow every narrowing.
    unsafe {
        let cached = &*entry;
        if cached.bytes == 0 || cached.key != *key {
            return false;
        }
        if trust_caller {
            // A system call's number names its way in; every other entry (a fault, an
            // interrupt) saves no number, and its outermost frame tells them apart.
            return key.entry != NO_SYSCALL || outermost_holds(cached, top);
        }
        let span = load!(cached.span);
        // Nothing past the stack's top is read (a chain of the same key may have
        // reached further from a deeper anchor).
        if span as u64 > WINDOW_BYTES || anchor + span as u64 > top {
            return false;
        }
        // The slots counted from the anchor, in at most MAX_READS reads (a helper call
        // per slot costs about what the bytes between two slots do; one read of the
        // whole span copies the large frames' locals too). The last read is made and
        // compared first: a chain kept in both ways with two layouts of its outer
        // frames (the key cannot tell them apart) fails there in the way that is not
        // its layout, before the other reads are made.
        let words = (&raw mut (*search).words).cast::<u64>();
        let count = load!(cached.read_count) as usize;
        if count > 0 {
            if !read_planned(cached, words, anchor, (count - 1) & (MAX_READS - 1)) {
                return false;
            }
            let last_read = |c: &CachedStack| load!(c.last_read_from) as usize;
            if !frames_hold(search, cached, last_read, |c| load!(c.check_end) as usize) {
                return false;
            }
        }
        for r in 0..MAX_READS - 1 {
            if r + 1 >= load!(cached.read_count) as usize {
                break;
            }
            if !read_planned(cached, words, anchor, r) {
                return false;
            }
        }
        if !outermost_holds(cached, top) {
            return false;
        }
        // The frames the other reads hold: from the first compared to the last read's
        // first.
        let last_read = |c: &CachedStack| load!(c.last_read_from) as usize;
        if !frames_hold(search, cached, |c| load!(c.check_from) as usize, last_read) {
            return false;
        }
    }
    true
}

/// Whether the outermost frame's return address (into the code the task entered the
/// kernel by: a system call, a fault, an interrupt) is where `cached` found it, right
/// below the entry's saved registers at a fixed distance from the stack's `top`; the
/// other frames lie at fixed distances from the anchor (a system call's random stack
/// offset lies between).
#[inline(always)]
fn outermost_holds(cached: &CachedStack, top: u64) -> bool {
    // SAFETY: `cached` is this CPU's entry (see `holds`); the index is masked to the
    // arrays; the helper reads kernel memory and fails rather than faults.
    unsafe {
        let last = load!(cached.check_end) as usize & (MAX_STACK_FRAMES - 1);
        if last <= load!(cached.first) as usize {
            return true;
        }
        let at = top - u64::from(cached.slots[last]) * 8;
        bpf_probe_read_kernel(at as *const u64) == Ok(cached.ips[last])
    }
}

/// Makes read `r` of `cached`'s plan: its slots above `anchor` into the search's
/// window at their own places; whether the read worked.
///
/// # Safety
/// `cached` and `words` as in [`holds`] (`words`: the search's window).
#[inline(always)]
unsafe fn read_planned(cached: &CachedStack, words: *mut u64, anchor: u64, r: usize) -> bool {
    // SAFETY: see `holds`; the indexes are masked to the arrays' sizes.
    unsafe {
        let start = load!(cached.read_start[r]) as usize & (WINDOW_SLOTS - 1);
        let len = u32::from(load!(cached.read_len[r])) * 8;
        if len == 0 || len > WINDOW_BYTES as u32 {
            return false;
        }
        let from = anchor + start as u64 * 8;
        read_kernel_raw(words.add(start).cast(), len, from as *const c_void) == 0
    }
}

/// Whether every frame of `cached` from `from(cached)` up to `end(cached)` (frames
/// counted from the anchor, their slots read) holds the return address the walk found
/// there. The bounds are read from the entry at every step (see [`holds`]).
///
/// Unrolled, not a `bpf_loop`: this runs on every cached hit, and a callback per frame
/// (two map lookups each) cost the tallied spin-lock hit a third more.
///
/// # Safety
/// As [`holds`].
#[inline(always)]
unsafe fn frames_hold(
    search: *const Search,
    cached: &CachedStack,
    from: impl Fn(&CachedStack) -> usize,
    end: impl Fn(&CachedStack) -> usize,
) -> bool {
    let mut j = from(cached);
    for _ in 0..MAX_STACK_FRAMES {
        if j >= end(cached) {
            break;
        }
        // SAFETY: the caller's promise.
        if !unsafe { same_frame(search, cached, j) } {
            return false;
        }
        j += 1;
    }
    true
}

/// Whether frame `j` of `cached` (one counted from the anchor, its slot read) holds
/// the return address the walk found there.
///
/// # Safety
/// As [`holds`].
#[inline(always)]
unsafe fn same_frame(search: *const Search, cached: &CachedStack, j: usize) -> bool {
    let j = j & (MAX_STACK_FRAMES - 1);
    let slot = cached.slots[j] as usize & (WINDOW_SLOTS - 1);
    // SAFETY: see `holds`.
    unsafe { (*search).words[slot] == cached.ips[j] }
}

/// Whether a walk equals a cached one (the check mode), from the probed function's
/// frame on. The frames below it are the probe's own (an fentry's BPF program and
/// trampoline): their first is where in the program the walk was called from, which
/// is one place for the walk an entry is made from and another for the check's walk.
///
/// `index` is the entry that answered ([`lookup`]); false if there is none.
///
/// # Safety
/// `ips` must point at an array of [`MAX_STACK_FRAMES`] frames.
#[inline(always)]
pub unsafe fn same_walk(index: u32, ips: *const [u64; MAX_STACK_FRAMES], bytes: i32) -> bool {
    let Some(cached) = STACK_CACHE.get_ptr(index) else {
        return false;
    };
    // SAFETY: `cached` is this CPU's slot of a per-CPU array, valid for the program's
    // run; the caller vouches for `ips`.
    unsafe {
        if bytes < 0 || (*cached).bytes != bytes as u32 {
            return false;
        }
        for j in 0..MAX_STACK_FRAMES {
            // Read again for every frame (see `lookup`).
            let frames = frames_of(load!((*cached).bytes));
            let first = load!((*cached).first) as usize;
            if j >= first && j < frames && (*ips)[j] != (*cached).ips[j] {
                return false;
            }
        }
        true
    }
}
