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
    EntryCaller, MAX_STACK_FRAMES, ProbeKind, RawEvent, StackedEvent,
    event::{NO_STACK, USER_ARGS, USER_STACK_FRAMES},
    maps::{NO_STACK_WALK, WAKEUP_FRACTION},
};

use crate::maps::{BUSY, COUNTERS, EVENTS, SETTINGS, TRACED_PIDS};

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
    /// [`StackedEvent::entry`]: for probes at a function's entry, where the walk may
    /// miss the caller.
    pub entry: EntryCaller,
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
/// case (some other process) costs one hash lookup. The kernel stack is walked by
/// `bpf_get_stack` straight into the reserved ring-buffer record: no stack map, so no
/// hash-bucket collisions and no shared state between events.
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
        entry: entry_caller,
    } = payload(ctx);
    let Some(mut entry) = EVENTS.reserve::<StackedEvent>(0) else {
        bump!(counters.ring_full);
        return;
    };
    // The record (600 bytes) is larger than the eBPF stack (512): fill it in place.
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points at a reserved, writable ring-buffer slot of
    // size_of::<StackedEvent>() bytes, which stays ours until submit; every field is
    // written here before the record is submitted (`ips` by the helper, which zeroes
    // what it does not fill; without a walk `ips` keeps older bytes of the ring, which
    // the reader ignores since `stack_bytes` is negative).
    let written = unsafe {
        (*record).event = RawEvent {
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
        (*record)._pad = 0;
        (*record).entry = entry_caller;
        let walk_bytes = match args {
            Some(args) => {
                (&raw mut (*record).ips)
                    .cast::<u64>()
                    .add(USER_STACK_FRAMES)
                    .cast::<[u64; USER_ARGS]>()
                    .write(args);
                USER_STACK_BUF_BYTES
            }
            None => STACK_BUF_BYTES,
        };
        if SETTINGS.get(0).is_some_and(|s| s & NO_STACK_WALK != 0) {
            // No walk: no frame is meaningful (the agent reads none).
            (*record).stack_bytes = NO_STACK;
            0
        } else {
            // Flags 0: the kernel stack, no frame skipped.
            let written = bpf_get_stack(
                ctx.as_ptr(),
                (&raw mut (*record).ips).cast::<c_void>(),
                walk_bytes,
                0,
            );
            (*record).stack_bytes = written as i32;
            written
        }
    };
    if written < 0 {
        bump!(counters.stack_failed);
    }
    entry.submit(wakeup_flag());
    bump!(counters.emitted);
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
