//! The path every event probe takes, from pid filter to ring-buffer record.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_get_stack, bpf_ktime_get_ns},
};
use guestscope_common::{
    CacheSlot, CachedArgsEvent, CachedEvent, MAX_STACK_FRAMES, ProbeCounters, ProbeKind, RawEvent,
    StackedEvent,
    event::{NO_STACK, USER_ARGS, USER_STACK_FRAMES},
    maps::{
        CHECK_STACK_CACHE, NO_STACK_CACHE, NO_STACK_WALK, SETTINGS_FLAGS, SETTINGS_GENERATION,
        STAGE_CACHED, TALLY_CACHED, TRUST_CALLER, WAKEUP_FRACTION,
    },
};

use crate::{
    entry_caller::AtEntry,
    maps::{COUNTERS, EVENTS, SETTINGS, is_traced, tally_slot},
    scratch::{Claim, NotClaimed},
    stack_cache::{self, Search, StackKey},
    staging, task_name,
};

/// Bytes of [`StackedEvent::ips`]: the constant size the verifier wants for `bpf_get_stack`.
const STACK_BUF_BYTES: u32 = (size_of::<u64>() * MAX_STACK_FRAMES) as u32;
/// The stack walk's bytes for an event that carries arguments in the last slots.
const USER_STACK_BUF_BYTES: u32 = (size_of::<u64>() * USER_STACK_FRAMES) as u32;

/// The probe-specific part of an event.
pub struct Payload {
    /// [`RawEvent::arg`].
    pub arg: u64,
    /// [`RawEvent::ip`].
    pub ip: u64,
    /// [`RawEvent::flags`].
    pub flags: u32,
    /// Arguments 1 to 5, for the kinds that carry them
    /// ([`ProbeKind::carries_args`]): written past a shorter stack walk.
    pub args: Option<[u64; USER_ARGS]>,
}

/// The thread-group id of the current task if it is under study.
#[inline(always)]
pub fn traced_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    is_traced(tgid).then_some(tgid)
}

/// Adds one to a field of this CPU's [`guestscope_common::ProbeCounters`] slot, given
/// as a raw pointer (a nested probe on this CPU may bump the same slot, so no Rust
/// reference to it is held).
macro_rules! bump {
    ($counters:ident . $field:ident) => {
        // SAFETY: the pointer came from a per-CPU array lookup and is valid for this
        // program's run; programs run with migration disabled, so only this CPU writes it.
        unsafe { (*$counters).$field += 1 }
    };
}

/// Records one hit of probe `kind` if the current process is under study.
///
/// `payload` runs only for hits that pass the filter and claim this CPU's scratch
/// ([`Claim`]), so the common case (some other process) costs one array lookup. The kernel stack comes from the
/// stack cache when the hit's call chain was walked before and its stack still holds
/// that walk ([`stack_cache`]): the record is then a short [`CachedEvent`] naming the
/// cache entry, staged with the CPU's other cached hits and written with them
/// ([`staging`], when the agent turned it on), or a [`CachedArgsEvent`] with the
/// arguments, for the kinds that carry them.
/// Otherwise the stack is walked by `bpf_get_stack` straight into a reserved
/// [`StackedEvent`]: no stack map, so no hash-bucket collisions.
///
/// `at_entry` says where on the stack the hit is, for probes at a function's entry:
/// [`StackedEvent::entry`] (where the walk may miss the caller) and the stack pointer on
/// entry, which keys the stack cache ([`AtEntry::UNKNOWN`] elsewhere). It is asked only
/// when stacks are on: with them off ([`NO_STACK_WALK`]) a hit reads nothing of its
/// stack, and its record is as short as a cached hit's, naming no cache entry
/// ([`CacheSlot::NONE`]), and staged with the others when staging is on.
#[inline(always)]
pub fn emit<C: EbpfContext>(
    ctx: &C,
    kind: ProbeKind,
    payload: impl FnOnce(&C) -> Payload,
    at_entry: impl FnOnce(&C) -> AtEntry,
) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_traced(tgid) {
        return;
    }
    let Some(counters) = COUNTERS.get_ptr_mut(kind as u32) else {
        return;
    };
    let claim = match Claim::take() {
        Ok(claim) => claim,
        Err(NotClaimed::Nested) => {
            bump!(counters.nested);
            return;
        }
        Err(NotClaimed::NoSlot) => return,
    };
    let search = claim.search();
    bump!(counters.matched);
    let Payload {
        arg,
        ip,
        flags,
        args,
    } = payload(ctx);
    let with_args = args.is_some();
    let settings = SETTINGS.get(SETTINGS_FLAGS).copied().unwrap_or(0);
    let (stacks, entry) = if settings & NO_STACK_WALK != 0 {
        (Stacks::off(settings, !with_args), AtEntry::UNKNOWN)
    } else {
        let entry = at_entry(ctx);
        let entry = AtEntry {
            caller: entry.caller,
            anchor: stack_cache::scalar(search, entry.anchor),
        };
        // A hit with arguments is never only tallied: its arguments need a record.
        (
            Stacks::choose(search, settings, kind, &entry, !with_args),
            entry,
        )
    };
    if stacks.source == Source::Tallied {
        let index = stacks.index;
        bump!(counters.stack_cached);
        if let Some(tally) = tally_slot(claim.cpu(), index) {
            // SAFETY: this CPU's slot of an array map, valid for the program's run; only
            // this CPU's probes write it, and the claim keeps the others out.
            unsafe { *tally += 1 };
            bump!(counters.tallied);
        }
        return;
    }
    // Taken once the cache has answered (a tallied hit needs no time, and a value kept
    // live through the cache's loops is one more thing the verifier follows there),
    // before the stack walk, which is the slow part (microseconds under TCG).
    // SAFETY: a helper call without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let pending = claim.pending();
    let staged = matches!(stacks.source, Source::Staged | Source::OffStaged);
    // SAFETY: `pending` points into this CPU's scratch (a per-CPU map value), valid for
    // the program's run; the claim keeps other guestscope probes on this CPU out; so
    // does the stage's next record (in the same scratch).
    // Field by field, and the task's name straight into its place: a whole-struct write
    // (or a zeroed name on the stack, copied in) compiles to byte loops the verifier
    // checks byte by byte on every path. A staged hit is written straight into its
    // place in the stage, not copied there from `pending`.
    unsafe {
        let event = if staged {
            staging::next_event(claim.staged())
        } else {
            &raw mut (*pending).event
        };
        (*event).ts_ns = ts_ns;
        (*event).arg = arg;
        (*event).ip = ip;
        (*event).kind = kind as u32;
        (*event).cpu = claim.cpu();
        (*event).pid = tgid;
        (*event).tid = pid_tgid as u32;
        (*event).stack_id = NO_STACK;
        (*event).flags = flags;
        task_name::write_task_name((&raw mut (*event).comm).cast::<u64>());
        if let Some(args) = args {
            let to = (&raw mut (*pending).args).cast::<u64>();
            for (i, a) in args.into_iter().enumerate() {
                to.add(i).write_volatile(a);
            }
        }
    }
    if staged {
        if stacks.source == Source::Staged {
            bump!(counters.stack_cached);
        }
        // SAFETY: this CPU's claimed scratch, its next record written above. Counted as
        // emitted (or lost) when the stage is written.
        unsafe {
            if staging::stage(claim.staged(), stacks.slot(), kind) {
                staging::flush(claim.staged(), claim.ring_bytes());
            }
        }
        return;
    }
    // A record written straight to the ring goes after the ones this CPU staged.
    // SAFETY: this CPU's claimed scratch.
    unsafe { staging::flush(claim.staged(), claim.ring_bytes()) };
    if matches!(stacks.source, Source::Cached | Source::Off) {
        let slot = stacks.slot();
        if stacks.source == Source::Cached {
            bump!(counters.stack_cached);
        }
        let submitted = if with_args {
            EVENTS.reserve::<CachedArgsEvent>(0).map(|mut record| {
                let r = record.as_mut_ptr();
                // SAFETY: `r` points at a reserved, writable ring-buffer slot of a
                // `CachedArgsEvent`, ours until submit; `pending` as above.
                unsafe {
                    fill_cached(&raw mut (*r).cached, pending, slot);
                    copy_words(
                        (&raw mut (*r).args).cast::<u64>(),
                        (&raw const (*pending).args).cast::<u64>(),
                        USER_ARGS,
                    );
                }
                record.submit(wakeup_flag(claim.ring_bytes()));
            })
        } else {
            EVENTS.reserve::<CachedEvent>(0).map(|mut record| {
                // SAFETY: a reserved, writable ring-buffer slot of a `CachedEvent`,
                // ours until submit; `pending` as above.
                unsafe { fill_cached(record.as_mut_ptr(), pending, slot) };
                record.submit(wakeup_flag(claim.ring_bytes()));
            })
        };
        match submitted {
            Some(()) => bump!(counters.emitted),
            None => bump!(counters.ring_full),
        }
        return;
    }
    let Some(mut record) = EVENTS.reserve::<StackedEvent>(0) else {
        bump!(counters.ring_full);
        return;
    };
    // The record (608 bytes) is larger than the eBPF stack (512): fill it in place.
    let record_ptr = record.as_mut_ptr();
    // SAFETY: `record_ptr` points at a reserved, writable ring-buffer slot of
    // size_of::<StackedEvent>() bytes, which stays ours until submit; every field is
    // written here before the record is submitted (`ips` by the walk; without one `ips`
    // keeps older bytes of the ring, which the reader ignores since `stack_bytes` is
    // negative).
    unsafe {
        copy_words(
            (&raw mut (*record_ptr).event).cast::<u64>(),
            (&raw const (*pending).event).cast::<u64>(),
            EVENT_WORDS,
        );
        (&raw mut (*record_ptr).entry.frame).write_volatile(entry.caller.frame);
        (&raw mut (*record_ptr).entry.caller).write_volatile(entry.caller.caller);
        let walk_bytes = if with_args {
            copy_words(
                (&raw mut (*record_ptr).ips)
                    .cast::<u64>()
                    .add(USER_STACK_FRAMES),
                (&raw const (*pending).args).cast::<u64>(),
                USER_ARGS,
            );
            USER_STACK_BUF_BYTES
        } else {
            STACK_BUF_BYTES
        };
        let (bytes, cache_slot) =
            stacks.walk(ctx, search, &entry, record_ptr, walk_bytes, counters);
        (*record_ptr).stack_bytes = bytes;
        (*record_ptr).cache_slot = cache_slot;
        (*record_ptr).replaced_tally = take_tally(claim.cpu(), cache_slot);
    }
    record.submit(wakeup_flag(claim.ring_bytes()));
    bump!(counters.emitted);
}

/// A [`RawEvent`] in 8-byte words.
const EVENT_WORDS: usize = size_of::<RawEvent>() / size_of::<u64>();

/// Copies `words` 8-byte words (a constant at every call, so the loop unrolls). A plain
/// assignment of a struct compiles to a call of `memmove`, a byte loop the verifier
/// follows byte by byte on every path through the program.
///
/// # Safety
/// `dst` must be writable and `src` readable for `words` words, both 8-byte aligned.
#[inline(always)]
unsafe fn copy_words(dst: *mut u64, src: *const u64, words: usize) {
    for i in 0..words {
        // SAFETY: the caller vouches for both; `i` stays below `words`.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
}

/// Fills a reserved [`CachedEvent`] with the pending event and cache entry `slot` (a
/// [`CacheSlot::tag`], or [`CacheSlot::NONE`] for a hit whose stack was not asked for).
///
/// # Safety
/// `cached` must point at a writable [`CachedEvent`] and `pending` at this CPU's
/// [`Pending`], both 8-byte aligned.
#[inline(always)]
unsafe fn fill_cached(cached: *mut CachedEvent, pending: *const Pending, slot: u32) {
    // SAFETY: the caller vouches for both pointers.
    unsafe {
        copy_words(
            (&raw mut (*cached).event).cast::<u64>(),
            (&raw const (*pending).event).cast::<u64>(),
            EVENT_WORDS,
        );
        (*cached).cache_slot = slot;
        (*cached)._pad = 0;
    }
}

/// The event being recorded on this CPU, while its stack is got.
///
/// It waits in this CPU's [`crate::scratch`], a map value, rather than in the program's
/// registers and stack: the verifier does not follow a map value's contents, while each
/// field kept live through the stack cache's loops multiplies the states it explores
/// there (with the event on the stack, `alloc_fd` took 1.3 s to load under TCG, 0.4 s
/// with it here).
#[repr(C)]
pub struct Pending {
    /// The event, `stack_id` [`NO_STACK`].
    event: RawEvent,
    /// Arguments 1 to 5, for the kinds that carry them.
    args: [u64; USER_ARGS],
}

/// Where one hit's stack comes from ([`Stacks::source`]).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Source {
    /// No walk at all (`NO_STACK_WALK`): a [`CachedEvent`] naming no cache entry.
    Off,
    /// As [`Source::Off`], the record staged with others of this CPU (`STAGE_CACHED`).
    OffStaged,
    /// From cache entry [`Stacks::index`]: the hit's record is a [`CachedEvent`].
    Cached,
    /// As [`Source::Cached`], the record staged with others of this CPU
    /// ([`staging`]; `STAGE_CACHED`).
    Staged,
    /// From cache entry [`Stacks::index`], and only counted there ([`TALLY_CACHED`]):
    /// no record.
    Tallied,
    /// A walk, not kept (the hit has no key, or is on an interrupt stack).
    Walk,
    /// A walk, kept in the cache under the key and stack top that
    /// [`stack_cache::hold_key`] left in this CPU's search.
    WalkKeep,
    /// A walk, compared with cache entry [`Stacks::index`], which answered (check mode).
    WalkCheck,
}

/// Where one hit's stack comes from, as the settings and the stack cache say.
///
/// Two plain numbers, both set on every path: a value that is defined on some paths
/// only (an `Option`'s payload when it is `None`, an enum variant's fields) may be
/// spilled to the stack on one path and read back on another where it was never
/// written. Newer verifiers let a privileged program read such a slot; Linux 6.1.172
/// (Debian's 6.1.0-48) does not, and refused the `alloc_fd` programs and
/// `spin_lock`'s fentry ("invalid read from stack"). The key and the stack top a
/// walk is kept under wait in the search (a map value) instead.
#[derive(Clone, Copy)]
struct Stacks {
    source: Source,
    /// The cache entry, for [`Source::Cached`], [`Source::Tallied`] and
    /// [`Source::WalkCheck`]; 0 otherwise.
    index: u32,
}

impl Stacks {
    /// A source without a cache entry.
    #[inline(always)]
    fn of(source: Source) -> Stacks {
        Stacks { source, index: 0 }
    }

    /// With stacks off (`NO_STACK_WALK` in `flags`): staged when the agent turned
    /// staging on and the hit carries no arguments (`stage_ok`).
    #[inline(always)]
    fn off(flags: u32, stage_ok: bool) -> Stacks {
        if stage_ok && flags & STAGE_CACHED != 0 {
            Stacks::of(Source::OffStaged)
        } else {
            Stacks::of(Source::Off)
        }
    }

    /// The [`CacheSlot`] tag a short record names: the cache entry's, or
    /// [`CacheSlot::NONE`] with stacks off.
    #[inline(always)]
    fn slot(self) -> u32 {
        if matches!(self.source, Source::Off | Source::OffStaged) {
            CacheSlot::NONE
        } else {
            CacheSlot::tag(self.index)
        }
    }

    /// Decides, for a hit of `kind` at `entry` with stacks on, from the settings'
    /// `flags` and a cache lookup; a hit that may not be only tallied (`tally_ok`
    /// false: it carries arguments) gets a record of its own even in the tallied mode,
    /// and is never staged.
    #[inline(always)]
    fn choose(
        search: *mut Search,
        flags: u32,
        kind: ProbeKind,
        entry: &AtEntry,
        tally_ok: bool,
    ) -> Stacks {
        if flags & NO_STACK_CACHE != 0 {
            return Stacks::of(Source::Walk);
        }
        // A key, and the top of the task's stack the hit is on (hits on an interrupt
        // stack are walked every time).
        let generation = SETTINGS.get(SETTINGS_GENERATION).copied().unwrap_or(0);
        let trust_caller = flags & TRUST_CALLER != 0;
        let entered = if trust_caller {
            stack_cache::entry_id()
        } else {
            0
        };
        let Some(key) = StackKey::new(
            kind,
            &entry.caller,
            entry.anchor,
            generation,
            entered,
            trust_caller,
        ) else {
            return Stacks::of(Source::Walk);
        };
        let Some(top) = stack_cache::task_stack_top(search, entry.anchor) else {
            return Stacks::of(Source::Walk);
        };
        let Some(index) = stack_cache::lookup(search, &key, entry.anchor, top, trust_caller) else {
            stack_cache::hold_key(search, &key, top);
            return Stacks::of(Source::WalkKeep);
        };
        let source = if tally_ok && flags & TALLY_CACHED != 0 {
            Source::Tallied
        } else if flags & CHECK_STACK_CACHE != 0 {
            Source::WalkCheck
        } else if tally_ok && flags & STAGE_CACHED != 0 {
            Source::Staged
        } else {
            Source::Cached
        };
        Stacks { source, index }
    }

    /// Walks the stack into `record`'s frames (the sources without a walk never get
    /// here) and returns its `stack_bytes` (negative: no stack) and
    /// the cache entry it was kept in ([`CacheSlot::NONE`] if none).
    ///
    /// # Safety
    /// `record` must point at a writable record; `counters` at this CPU's counters.
    #[inline(always)]
    unsafe fn walk<C: EbpfContext>(
        self,
        ctx: &C,
        search: *mut Search,
        entry: &AtEntry,
        record: *mut StackedEvent,
        walk_bytes: u32,
        counters: *mut ProbeCounters,
    ) -> (i32, u32) {
        if matches!(
            self.source,
            Source::Off | Source::OffStaged | Source::Cached | Source::Staged | Source::Tallied
        ) {
            // No walk: no frame is meaningful (the agent reads none).
            return (NO_STACK, CacheSlot::NONE);
        }
        // SAFETY: the caller vouches for `record`.
        let ips = unsafe { &raw mut (*record).ips };
        // Flags 0: the kernel stack, no frame skipped.
        // SAFETY: the helper writes at most `walk_bytes` bytes into the record's frames.
        let written =
            unsafe { bpf_get_stack(ctx.as_ptr(), ips.cast::<c_void>(), walk_bytes, 0) } as i32;
        if written < 0 {
            bump!(counters.stack_failed);
        }
        let mut slot = CacheSlot::NONE;
        if self.source == Source::WalkCheck {
            bump!(counters.stack_cached);
            // SAFETY: `ips` holds the walk just made.
            if !unsafe { stack_cache::same_walk(self.index, ips, written) } {
                bump!(counters.stack_cache_wrong);
            }
        } else if self.source == Source::WalkKeep {
            // SAFETY: `ips` holds the walk just made; the key is the one `choose` held.
            unsafe { stack_cache::remember(search, entry.anchor, ips, written) };
            slot = stack_cache::kept(search);
        }
        (written, slot)
    }
}

/// The count of cache entry `slot` ([`CacheSlot::tag`]) for the walk it held, reset for
/// the walk just kept there; 0 for [`CacheSlot::NONE`].
#[inline(always)]
fn take_tally(cpu: u32, slot: u32) -> u64 {
    let Some(index) = CacheSlot::index(slot) else {
        return 0;
    };
    match tally_slot(cpu, index) {
        // SAFETY: this CPU's slot of the array (see `emit`).
        Some(tally) => unsafe { core::mem::replace(&mut *tally, 0) },
        None => 0,
    }
}

/// Whether to wake the agent for the record being submitted: only once the ring
/// (`ring_bytes` long) holds a [`WAKEUP_FRACTION`] of its size (the agent drains it on
/// a timer otherwise).
#[inline(always)]
pub(crate) fn wakeup_flag(ring_bytes: u64) -> u64 {
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if waiting >= ring_bytes / WAKEUP_FRACTION {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
