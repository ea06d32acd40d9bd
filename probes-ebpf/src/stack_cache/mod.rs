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
//! **By caller.** With `TRUST_CALLER` (`--stacks caller`) the key also holds how the
//! task entered the kernel ([`entry_id`]), and a hit whose key an entry holds gets
//! that entry's walk with no read of its stack in a system call, and after one read
//! (the outermost frame's slot) outside one: its function, caller and way in are its
//! own, the frames between are the first such hit's. Keyed by the caller alone, a
//! page fault's walk taken in a system call's copy to user memory served the faults
//! from user space: 54% of the lab's answers differed from the walk; with the
//! outermost frame's slot compared (one read) 6%; with the way in in the key (one
//! load through the task's registers) 2 to 3%; with both outside system calls 1.9%. With the check mode too, every hit is
//! walked and the answers that differ are counted.
//!
//! **Reads.** A check reads the remembered slots counted from the anchor in at most
//! [`MAX_READS`] copies, planned when the walk is kept: slots within
//! [`remember::MERGE_GAP_SLOTS`] of each other share a copy, and a large frame's
//! locals between two far-apart slots are not copied at all.
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
//!
//! [`check`] holds a cached hit's side (the lookup and the comparison), [`remember`]
//! the walked hit's (finding the frames' slots and planning the reads); this module
//! the cache itself and what both share.

use core::mem::size_of;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::map,
    maps::PerCpuArray,
};
use guestscope_common::{EntryCaller, MAX_STACK_FRAMES, ProbeKind, STACK_CACHE_ENTRIES};

use crate::map_value::{load, store};

mod check;
mod remember;

pub use check::{lookup, same_walk};
pub use remember::remember;

/// Entries per CPU (each [`CachedStack`] is 720 bytes: 720 KiB per CPU); the agent
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
/// Most separate reads a cached hit's check makes ([`CachedStack::read_start`]). A
/// power of two: a read's index is masked to the arrays by `MAX_READS - 1`.
const MAX_READS: usize = 4;
const _: () = assert!(MAX_READS.is_power_of_two());

/// The bit of [`StackKey`]'s kind that marks a key made by caller (`TRUST_CALLER`).
const BY_CALLER_KEY: u32 = 1 << 31;

/// What names one call chain (see the module's text).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StackKey {
    frame: u64,
    caller: u64,
    /// How the task entered the kernel ([`entry_id`]) when the cache answers by caller
    /// (`TRUST_CALLER`); 0 otherwise.
    entry: u64,
    kind: u32,
    generation: u32,
}

impl StackKey {
    /// The key of a hit of `kind` at a function's entry, with the stack pointer on
    /// entry `anchor`; with `by_caller` (`TRUST_CALLER`), also the task's way into the
    /// kernel `entered` ([`entry_id`]), and marked as such, so that an entry kept in
    /// another mode (which a check would vouch for) never answers for it. `None` when
    /// the probe does not know where it is (tracepoints, return probes, places inside a
    /// function).
    #[inline(always)]
    pub fn new(
        kind: ProbeKind,
        entry: &EntryCaller,
        anchor: u64,
        generation: u32,
        entered: u64,
        by_caller: bool,
    ) -> Option<Self> {
        if anchor == 0 || entry.frame == 0 || entry.caller == 0 {
            return None;
        }
        Some(StackKey {
            frame: entry.frame,
            caller: entry.caller,
            entry: entered,
            kind: kind as u32 | if by_caller { BY_CALLER_KEY } else { 0 },
            generation,
        })
    }

    /// The first of the [`WAYS`] cache entries this key may live in.
    #[inline(always)]
    fn set(&self) -> u32 {
        let mut h = self.frame.rotate_left(17) ^ self.caller ^ self.entry.rotate_left(41);
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

const _: () = assert!(size_of::<CachedStack>() == 720);

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

/// The cache: [`ENTRIES`] per CPU, indexed by `StackKey::set`.
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
    /// The walk being kept, copied here so [`remember`]'s search finds it without a pointer.
    ips: [u64; MAX_STACK_FRAMES],
    /// Where [`remember`]'s search found each frame (see [`CachedStack::slots`]).
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
    /// Where [`scalar`] passes a value through.
    value: u64,
    /// The entry the last [`remember`] kept its walk in ([`guestscope_common::CacheSlot::tag`]),
    /// or `CacheSlot::NONE`. Kept here, not returned: a value carried out of the search
    /// would be one more thing the verifier follows through all its steps.
    kept: u32,
    /// The entry [`remember`] is filling ([`guestscope_common::CacheSlot::tag`]).
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

/// [`entry_id`] of a task that entered the kernel other than by a system call: the
/// entry code sets `orig_ax` to -1 for every fault and interrupt (an error code is
/// passed on as an argument).
const NO_SYSCALL: u64 = u64::MAX;

/// Word of `orig_ax` in an x86-64 `struct pt_regs` (after r15 … di: 15 words).
const ORIG_AX_WORD: usize = 15;

/// How the current task entered the kernel: `orig_ax` of the registers its entry saved
/// at the top of its stack, a system call's number or [`NO_SYSCALL`] (a fault, an
/// interrupt), which tells apart chains that share a function and its caller but not
/// their way in (a page fault from user space, and one in a system call's copy to user
/// memory). A load through the task's `pt_regs` as the kernel's BTF types them: no
/// copy helper, unlike a read of the stack.
#[inline(always)]
pub fn entry_id() -> u64 {
    // SAFETY: helpers without memory arguments; the verifier types their result as
    // the current task's `struct pt_regs` (never null) and checks the load against
    // that type; a fault in it reads 0 instead.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
        regs.add(ORIG_AX_WORD).read_volatile()
    }
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

/// Where the last [`remember`] on this CPU kept its walk
/// ([`guestscope_common::CacheSlot::tag`]), or `CacheSlot::NONE`.
#[inline(always)]
pub fn kept(search: *const Search) -> u32 {
    // SAFETY: this CPU's claimed scratch (see `holds`).
    unsafe { load!((*search).kept) }
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
