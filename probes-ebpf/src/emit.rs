//! The path every event probe takes, from pid filter to ring-buffer record.

use core::{ffi::c_void, mem::size_of};

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_get_stack,
        bpf_ktime_get_ns,
    },
};
use guestscope_common::{
    MAX_STACK_FRAMES, ProbeCounters, ProbeKind, RawEvent, StackedEvent,
    event::{NO_STACK, USER_ARGS, USER_STACK_FRAMES},
    maps::{
        CHECK_STACK_CACHE, NO_STACK_CACHE, NO_STACK_WALK, SETTINGS_FLAGS, SETTINGS_GENERATION,
        WAKEUP_FRACTION,
    },
};

use crate::{
    entry_caller::AtEntry,
    maps::{BUSY, COUNTERS, EVENTS, SETTINGS, TRACED_PIDS},
    stack_cache::{self, StackKey},
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
    /// For probes at a function's entry: [`StackedEvent::entry`] (where the walk may
    /// miss the caller) and the stack pointer on entry, which keys the stack cache.
    pub entry: AtEntry,
}

/// The thread-group id of the current task if it is under study.
#[inline(always)]
pub fn traced_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    TRACED_PIDS.get_ptr(&tgid).map(|_| tgid)
}

/// This CPU's "a guestscope probe is running" flag, held while the guard lives.
///
/// `_raw_spin_lock` is taken inside helpers and map updates (the hash map's free list,
/// in the fork probe); without the flag the spin-lock probe would record the probes
/// themselves, and a nested stack walk would compete with the outer one for the
/// kernel's per-CPU callchain buffer.
pub struct Busy(*mut u32);

/// Why [`Busy::enter`] did not return a guard.
pub enum NotEntered {
    /// Another guestscope probe is running on this CPU.
    Nested,
    /// The per-CPU slot could not be looked up (never expected).
    NoSlot,
}

impl Busy {
    /// Sets this CPU's flag, unless it is already set.
    #[inline(always)]
    pub fn enter() -> Result<Busy, NotEntered> {
        let flag = BUSY.get_ptr_mut(0).ok_or(NotEntered::NoSlot)?;
        // SAFETY: `flag` points at this CPU's slot of a per-CPU array; programs run with
        // migration disabled, so no other CPU touches it while we hold it.
        unsafe {
            if *flag != 0 {
                return Err(NotEntered::Nested);
            }
            *flag = 1;
        }
        Ok(Busy(flag))
    }
}

impl Drop for Busy {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: see `enter`; the pointer stays valid for the program's run.
        unsafe { *self.0 = 0 }
    }
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
/// `payload` runs only for hits that pass the filter and the busy guard, so the common
/// case (some other process) costs one hash lookup. The kernel stack comes from the
/// stack cache when the hit's call chain was walked before and its stack still holds
/// that walk ([`stack_cache`]), else it is walked by `bpf_get_stack` straight into the
/// reserved ring-buffer record: no stack map, so no hash-bucket collisions.
#[inline(always)]
pub fn emit<C: EbpfContext>(ctx: &C, kind: ProbeKind, payload: impl FnOnce(&C) -> Payload) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if TRACED_PIDS.get_ptr(&tgid).is_none() {
        return;
    }
    let Some(counters) = COUNTERS.get_ptr_mut(kind as u32) else {
        return;
    };
    let _busy = match Busy::enter() {
        Ok(guard) => guard,
        Err(NotEntered::Nested) => {
            bump!(counters.nested);
            return;
        }
        Err(NotEntered::NoSlot) => return,
    };
    bump!(counters.matched);
    // Taken before the stack walk, which is the slow part (microseconds under TCG).
    // SAFETY: a helper call without arguments.
    let ts_ns = unsafe { bpf_ktime_get_ns() };
    let Payload {
        arg,
        ip,
        flags,
        args,
        entry,
    } = payload(ctx);
    let Some(mut record) = EVENTS.reserve::<StackedEvent>(0) else {
        bump!(counters.ring_full);
        return;
    };
    // The record (600 bytes) is larger than the eBPF stack (512): fill it in place.
    let event = record.as_mut_ptr();
    // SAFETY: `event` points at a reserved, writable ring-buffer slot of
    // size_of::<StackedEvent>() bytes, which stays ours until submit; every field is
    // written here before the record is submitted (`ips` by the walk or the cache; without
    // either `ips` keeps older bytes of the ring, which the reader ignores since
    // `stack_bytes` is negative).
    unsafe {
        (*event).event = RawEvent {
            ts_ns,
            arg,
            ip,
            kind: kind as u32,
            cpu: bpf_get_smp_processor_id(),
            pid: tgid,
            tid: pid_tgid as u32,
            stack_id: NO_STACK,
            flags,
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        };
        (*event)._pad = 0;
        (*event).entry = entry.caller;
        let walk_bytes = match args {
            Some(args) => {
                (&raw mut (*event).ips)
                    .cast::<u64>()
                    .add(USER_STACK_FRAMES)
                    .cast::<[u64; USER_ARGS]>()
                    .write(args);
                USER_STACK_BUF_BYTES
            }
            None => STACK_BUF_BYTES,
        };
        // Only a whole-size walk is cached (an event with arguments keeps them where a
        // longer walk would go).
        let cacheable = args.is_none();
        (*event).stack_bytes = stack(ctx, kind, &entry, cacheable, event, walk_bytes, counters);
    }
    record.submit(wakeup_flag());
    bump!(counters.emitted);
}

/// Fills `event`'s frames from the stack cache or a walk, as the settings say, and
/// returns its `stack_bytes` (negative: no stack).
///
/// # Safety
/// `event` must point at a writable record; `counters` at this CPU's counters.
#[inline(always)]
unsafe fn stack<C: EbpfContext>(
    ctx: &C,
    kind: ProbeKind,
    entry: &AtEntry,
    cacheable: bool,
    event: *mut StackedEvent,
    walk_bytes: u32,
    counters: *mut ProbeCounters,
) -> i32 {
    let flags = SETTINGS.get(SETTINGS_FLAGS).copied().unwrap_or(0);
    if flags & NO_STACK_WALK != 0 {
        // No walk: no frame is meaningful (the agent reads none).
        return NO_STACK;
    }
    // A key, and the top of the task's stack the hit is on (hits on an interrupt stack
    // are walked every time).
    let key = if cacheable && flags & NO_STACK_CACHE == 0 {
        let generation = SETTINGS.get(SETTINGS_GENERATION).copied().unwrap_or(0);
        StackKey::new(kind, &entry.caller, entry.anchor, generation)
            .and_then(|k| Some((k, stack_cache::task_stack_top(entry.anchor)?)))
    } else {
        None
    };
    let cached = key
        .as_ref()
        .and_then(|(k, top)| stack_cache::lookup(k, entry.anchor, *top));
    // SAFETY: the caller vouches for `event`.
    let ips = unsafe { &raw mut (*event).ips };
    if let Some(cached) = cached {
        bump!(counters.stack_cached);
        if flags & CHECK_STACK_CACHE == 0 {
            // SAFETY: `cached` came from `lookup`; `ips` is the record's frames.
            return unsafe { stack_cache::copy_out(cached, ips) };
        }
    }
    // Flags 0: the kernel stack, no frame skipped.
    // SAFETY: the helper writes at most `walk_bytes` bytes into the record's frames.
    let written =
        unsafe { bpf_get_stack(ctx.as_ptr(), ips.cast::<c_void>(), walk_bytes, 0) } as i32;
    if written < 0 {
        bump!(counters.stack_failed);
    }
    match (cached, key) {
        // SAFETY: as above.
        (Some(cached), _) => {
            if !unsafe { stack_cache::same_walk(cached, ips, written) } {
                bump!(counters.stack_cache_wrong);
            }
        }
        // SAFETY: `ips` holds the walk just made.
        (None, Some((key, top))) => unsafe {
            stack_cache::remember(&key, entry.anchor, top, ips, written)
        },
        (None, None) => {}
    }
    written
}

/// Whether to wake the agent for the record being submitted: only once the ring holds
/// a [`WAKEUP_FRACTION`] of its size (the agent drains it on a timer otherwise).
#[inline(always)]
fn wakeup_flag() -> u64 {
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    let size = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
    if waiting >= size / WAKEUP_FRACTION {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
