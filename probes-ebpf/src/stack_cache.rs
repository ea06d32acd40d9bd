//! A per-CPU cache of kernel stacks: a hit whose call chain was walked before gets its
//! frames from the cache after a few 8-byte reads of its own stack, instead of a walk
//! (`bpf_get_stack` with the ORC unwinder costs about 12 µs per event under TCG).
//!
//! **Key.** The probe, its generation (bumped by the agent whenever it attaches or
//! detaches, since that can rebuild a trampoline the walk passes through), the probed
//! function's own frame and its caller. The function's stack pointer on entry (the
//! *anchor*, where the return address into the caller lies) is not part of it: a
//! system call starts its stack at a random offset (`RANDOMIZE_KSTACK_OFFSET`, 64
//! places), which would make one chain 64 keys.
//!
//! **Validation.** When a hit with a key is walked, the cache keeps the walk and, for
//! every frame above the probed function's, the stack slot that holds the frame's
//! return address: counted from the anchor, or for the outermost frame (the return
//! into the entry code, right below the saved user registers) from the stack's top,
//! since a system call's random offset lies between the two. A later hit with the same key is served from
//! the cache only if each of those slots holds the same return address again (the
//! caller's, at the anchor itself, is in the key: the probe read it there). The
//! unwinder finds each frame from the one below it (its address and where its frame
//! starts), so the same return addresses in the same slots make the same walk; a chain
//! that differs anywhere differs in a slot (or moves the slots) and is walked afresh.
//! What can fool it: a function that sizes its frame at run time (few kernel functions
//! do) whose stale slot still holds an old return address; the check mode
//! (`guestscope_common::maps::CHECK_STACK_CACHE`) walks every event anyway and counts
//! every cached stack that differs from the walk (`stack_cache_wrong`), and the tests
//! run it on the lab's workloads.
//!
//! **Reads.** A check reads the remembered slots counted from the anchor in at most
//! [`MAX_READS`] copies, planned when the walk is kept: slots within
//! [`MERGE_GAP_SLOTS`] of each other share a copy, and a large frame's locals between
//! two far-apart slots are not copied at all.
//!
//! **Which stacks.** Only a task's own stack is cached: its top is known exactly, so no
//! read goes past it. A hit on an interrupt stack (a softirq's timer, say) is walked
//! every time; guessing that stack's top from alignment made reads fault past its end.
//!
//! Frames at or below the probed function's (an fentry walk's BPF program and
//! trampoline) are not on the stack above the anchor; they depend only on the program
//! and the function, which the key names.
//!
//! Per-CPU and direct-mapped: no lock is taken (a map update would take
//! `_raw_spin_lock`, which the spin-lock probe traces), and two keys that share a slot
//! replace each other.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_loop, bpf_probe_read_kernel as read_kernel_raw},
    },
    macros::map,
    maps::PerCpuArray,
};
use guestscope_common::{CacheSlot, EntryCaller, MAX_STACK_FRAMES, ProbeKind, STACK_CACHE_ENTRIES};

use crate::map_value::{load, store};

/// Entries per CPU (each [`CachedStack`] is 712 bytes: 712 KiB per CPU); the agent
/// keeps what each entry holds in a table of the same size.
const ENTRIES: u32 = STACK_CACHE_ENTRIES;
/// Entries a key may live in: two, so one function called on two paths that alternate
/// (a lock taken by `fput` on close and on exit) keeps both walks. A power of two.
const WAYS: u32 = 2;
const _: () = assert!(WAYS.is_power_of_two());
/// Bytes of stack above the anchor searched for the frames' return addresses when an
/// entry is made; a chain that reaches further is walked on every hit.
const WINDOW_BYTES: u64 = 4096;
/// [`WINDOW_BYTES`] in 8-byte slots.
const WINDOW_SLOTS: usize = WINDOW_BYTES as usize / 8;
/// Size and alignment of an x86-64 task's kernel stack (`THREAD_SIZE` without KASAN).
const THREAD_SIZE: u64 = 16 * 1024;
/// What the kernel writes at the lowest address of every task's stack
/// (`STACK_END_MAGIC`, checked for overflows): how a task's stack is told from an
/// interrupt stack, which is not aligned to [`THREAD_SIZE`].
const STACK_END_MAGIC: u64 = 0x57AC_6E9D;
/// Stack regions per CPU remembered as not a task's (the interrupt stack spans two).
const OTHER_REGIONS: usize = 4;
/// How deep in a walk the probed function's frame may be (past an fentry's BPF
/// program and trampoline frames); the same bound as the agent's caller recovery.
const FRAME_SEARCH: usize = 6;
/// Most separate reads a cached hit's check makes ([`CachedStack::read_start`]).
const MAX_READS: usize = 4;
/// Slots between two remembered slots below which one read spans both. A helper
/// call's fixed cost (the call, the address check, the page-fault guard: 70
/// instructions on Debian's 6.1, counted exactly by `cargo xtask bench --exact-counts`)
/// is about what copying ten slots costs (7 instructions per slot in
/// `copy_from_kernel_nofault`); counted in instructions on the fopen loop (medians of
/// three, one boot each), a recorded hit took 1,906 with 4 reads and this gap, 1,928
/// with a gap of 8, 1,986 with 8 reads and a gap of 4, 2,001 with 2 reads and a gap
/// of 24, and 2,003–2,022 with one read of the whole span.
const MERGE_GAP_SLOTS: u32 = 16;

/// What names one call chain (see the module's text).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StackKey {
    frame: u64,
    caller: u64,
    kind: u32,
    generation: u32,
}

impl StackKey {
    /// The key of a hit of `kind` at a function's entry, with the stack pointer on
    /// entry `anchor`; `None` when the probe does not know where it is (tracepoints,
    /// return probes, places inside a function).
    #[inline(always)]
    pub fn new(kind: ProbeKind, entry: &EntryCaller, anchor: u64, generation: u32) -> Option<Self> {
        if anchor == 0 || entry.frame == 0 || entry.caller == 0 {
            return None;
        }
        Some(StackKey {
            frame: entry.frame,
            caller: entry.caller,
            kind: kind as u32,
            generation,
        })
    }

    /// The first of the [`WAYS`] cache entries this key may live in.
    #[inline(always)]
    fn set(&self) -> u32 {
        let mut h = self.frame.rotate_left(17) ^ self.caller;
        h ^= u64::from(self.kind) << 32 ^ u64::from(self.generation);
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as u32 % (ENTRIES / WAYS) * WAYS
    }
}

/// One remembered walk.
#[repr(C)]
pub struct CachedStack {
    key: StackKey,
    /// What `bpf_get_stack` returned (bytes of `ips`); 0: the entry is empty.
    bytes: u32,
    /// Index in `ips` of the probed function's own frame.
    first: u32,
    /// The walk.
    ips: [u64; MAX_STACK_FRAMES],
    /// For each frame past `first`, the slot above the anchor holding its return
    /// address (for the outermost frame: the slot below the stack's top).
    slots: [u16; MAX_STACK_FRAMES],
    /// Bytes above the anchor that hold every slot counted from it.
    span: u32,
    /// The reads that bring every slot counted from the anchor into the search's
    /// window: each from slot `read_start[i]`, `read_len[i]` slots long; slots far
    /// apart are read apart, and the stack between them is not copied.
    read_start: [u16; MAX_READS],
    /// See `read_start`.
    read_len: [u16; MAX_READS],
    /// Reads in `read_start`.
    read_count: u32,
    /// In a set's first entry: the way that answered last (the other is replaced
    /// first).
    recent: u32,
    /// One past the last frame counted from the anchor, which is the outermost frame's
    /// index: a check compares frames `check_from .. check_end` from the anchor, and
    /// frame `check_end` from the stack's top.
    check_end: u32,
    /// The first frame the last read holds (`check_from` when there is no read): a
    /// check makes that read first and compares its frames before it makes the others.
    last_read_from: u32,
    /// The first frame a check compares: `first + 2` when the frame past the probed
    /// function's is the caller in the key, whose return address the probe read at
    /// the anchor itself to make the key; `first + 1` otherwise.
    check_from: u32,
}

const _: () = assert!(size_of::<CachedStack>() == 712);

/// Frames of a walk of `bytes` bytes, at most [`MAX_STACK_FRAMES`] (a bound the
/// verifier sees, so the loops over frames stay within the arrays).
#[inline(always)]
fn frames_of(bytes: u32) -> usize {
    let frames = bytes as usize / size_of::<u64>();
    if frames > MAX_STACK_FRAMES {
        MAX_STACK_FRAMES
    } else {
        frames
    }
}

/// The cache: [`ENTRIES`] per CPU, indexed by [`StackKey::slot`].
#[map]
static STACK_CACHE: PerCpuArray<CachedStack> = PerCpuArray::with_max_entries(ENTRIES, 0);

/// This CPU's search for a walk's frames in its stack ([`remember`]), and what its
/// lookups keep between hits; it lives in the CPU's [`crate::scratch`].
///
/// The search's state lives here, in a map value, and is read again at every step:
/// the verifier does not follow a map value's contents, so every way into the loop
/// looks the same to it. Kept in registers, each value they could hold (which frame
/// is next, where the probed function's frame was, how far the window reaches) would
/// be a state of its own, verified through all the window's slots: more than the
/// verifier's million instructions, and seconds of loading under TCG.
#[repr(C)]
pub struct Search {
    /// The stack above the anchor. Twice the window: a check's read starts anywhere in
    /// the window and is up to a window long, and the verifier bounds the two apart.
    words: [u64; 2 * WINDOW_SLOTS],
    /// The walk being kept, copied here so [`search_step`] finds it without a pointer.
    ips: [u64; MAX_STACK_FRAMES],
    /// Where [`search_step`] found each frame (see [`CachedStack::slots`]).
    slots: [u16; MAX_STACK_FRAMES],
    /// The next frame to find.
    next: u32,
    /// Frames in the walk.
    frames: u32,
    /// Bytes of `words` read.
    len: u32,
    /// Bytes from the anchor to the stack's top.
    to_top: u32,
    /// Index of the probed function's frame in the walk.
    first: u32,
    /// The first frame a check of the walk compares ([`CachedStack::check_from`]).
    check_from: u32,
    /// Where [`scalar`] passes a value through.
    value: u64,
    /// The entry the last [`remember`] kept its walk in ([`CacheSlot::tag`]), or
    /// [`CacheSlot::NONE`]. Kept here, not returned: a value carried out of the search
    /// would be one more thing the verifier follows through all its steps.
    kept: u32,
    /// The entry [`remember`] is filling ([`CacheSlot::tag`]).
    candidate: u32,
    /// The key [`remember`] keeps the walk under ([`hold_key`]).
    held_key: StackKey,
    /// The top of the task's stack the held key's hit is on.
    held_top: u64,
    /// The [`THREAD_SIZE`] region of the last stack found to be a task's.
    task_region: u64,
    /// Regions found not to be a task's stack (an interrupt stack), never cached.
    other_regions: [u64; OTHER_REGIONS],
    /// The entry of `other_regions` to replace next.
    other_next: u32,
}

/// `value` (an address computed from the program's context, which the verifier treats
/// as a pointer and lets no mask or shift touch) as a plain number, by a round trip
/// through this CPU's `search`, a map value.
#[inline(always)]
pub fn scalar(search: *mut Search, value: u64) -> u64 {
    // SAFETY: `search` points into this CPU's claimed scratch (see `holds`).
    unsafe {
        store!((*search).value, value);
        load!((*search).value)
    }
}

/// The top of the task's stack `anchor` lies in; `None` when `anchor` is on another
/// stack (an interrupt or exception stack), whose hits are walked and not cached.
///
/// A task's stack is [`THREAD_SIZE`] long, aligned to it, and starts with
/// [`STACK_END_MAGIC`]; an interrupt stack is only page-aligned, so a top guessed from
/// alignment could lie past its end, where a read faults (each fault a kernel page
/// fault that the probe in it skips). The answer for a region never changes while it
/// is a stack (interrupt stacks are made once, at boot), so each CPU remembers its last
/// task region and its other regions, and reads a region's first word once.
#[inline(always)]
pub fn task_stack_top(search: *mut Search, anchor: u64) -> Option<u64> {
    let region = anchor & !(THREAD_SIZE - 1);
    // SAFETY: `search` points at this CPU's slot of a per-CPU array (see `holds`).
    unsafe {
        if load!((*search).task_region) == region {
            return Some(region + THREAD_SIZE);
        }
        for i in 0..OTHER_REGIONS {
            if load!((*search).other_regions[i]) == region {
                return None;
            }
        }
        if bpf_probe_read_kernel(region as *const u64) == Ok(STACK_END_MAGIC) {
            store!((*search).task_region, region);
            return Some(region + THREAD_SIZE);
        }
        let next = load!((*search).other_next) as usize % OTHER_REGIONS;
        store!((*search).other_regions[next], region);
        store!(
            (*search).other_next,
            (next as u32 + 1) % OTHER_REGIONS as u32
        );
    }
    None
}

/// The index of the entry holding the walk of `key`'s chain if every slot it
/// remembers holds the same return address again at `anchor`, on the task's stack
/// that ends at `top` ([`task_stack_top`]); `None` otherwise.
#[inline(always)]
pub fn lookup(search: *mut Search, key: &StackKey, anchor: u64, top: u64) -> Option<u32> {
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
        if holds(search, entry, key, anchor, top) {
            if way != recent {
                // SAFETY: as above.
                unsafe { store!((*first).recent, way) };
            }
            return Some(set + way);
        }
    }
    None
}

/// Whether `entry` is `key`'s and every return address it remembers is in the
/// current stack (above `anchor`, below `top`) where it was.
#[inline(always)]
fn holds(
    search: *mut Search,
    entry: *const CachedStack,
    key: &StackKey,
    anchor: u64,
    top: u64,
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
            // Unrolled, not a `bpf_loop`: this runs on every cached hit, and a
            // callback per frame (two map lookups each) cost the tallied spin-lock hit
            // a third more.
            for k in 0..MAX_STACK_FRAMES {
                let j = load!(cached.last_read_from) as usize + k;
                if j >= load!(cached.check_end) as usize {
                    break;
                }
                if !same_frame(search, cached, j) {
                    return false;
                }
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
        // The outermost frame's return address lies right below the entry's saved
        // registers, at a fixed distance from the stack's top; the others at a fixed
        // distance from the anchor (a system call's random stack offset lies between).
        let last = load!(cached.check_end) as usize & (MAX_STACK_FRAMES - 1);
        if last > load!(cached.first) as usize {
            let at = top - u64::from(cached.slots[last]) * 8;
            if bpf_probe_read_kernel(at as *const u64) != Ok(cached.ips[last]) {
                return false;
            }
        }
        // The frames the other reads hold: from the first compared to the last read's
        // first.
        for k in 0..MAX_STACK_FRAMES {
            let j = load!(cached.check_from) as usize + k;
            if j >= load!(cached.last_read_from) as usize {
                break;
            }
            if !same_frame(search, cached, j) {
                return false;
            }
        }
    }
    true
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

/// Where the last [`remember`] on this CPU kept its walk ([`CacheSlot::tag`]), or
/// [`CacheSlot::NONE`].
#[inline(always)]
pub fn kept(search: *const Search) -> u32 {
    // SAFETY: this CPU's claimed scratch (see `holds`).
    unsafe { load!((*search).kept) }
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

/// Holds `key` and `top` (the top of the task's stack the hit is on, from
/// [`task_stack_top`]) in this CPU's search for the [`remember`] of the hit's walk.
/// They wait in the map value rather than in the program's registers and stack: a
/// value kept there only on the paths that walk would be read back on the others too.
#[inline(always)]
pub fn hold_key(search: *mut Search, key: &StackKey, top: u64) {
    // SAFETY: `search` points into this CPU's claimed scratch (see `holds`).
    unsafe {
        store!((*search).held_key, *key);
        store!((*search).held_top, top);
    }
}

/// Remembers the walk `ips` (`bytes` long) of the chain of the key [`hold_key`] held:
/// finds each frame past the probed function's in the stack above `anchor` (below the
/// held stack top), in order, and keeps where. Gives up (nothing is kept) when a frame
/// is not found within [`WINDOW_BYTES`]; [`kept`] says where it was kept.
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
        store!((*search).check_from, from);
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
        let j = load!((*search).check_from) + i;
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
