//! The path every event probe takes, from pid filter to ring-buffer record.

use aya_ebpf::{
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
    },
    programs::tracing::StackIdContext,
};
use guestscope_common::{ProbeKind, RawEvent};

use crate::maps::{BUSY, COUNTERS, EVENTS, STACKS, TRACED_PIDS};

/// The probe-specific part of an event.
pub struct Payload {
    /// [`RawEvent::arg`].
    pub arg: u64,
    /// [`RawEvent::ip`].
    pub ip: u64,
    /// [`RawEvent::flags`].
    pub flags: u32,
}

/// The thread-group id of the current task if it is under study.
#[inline(always)]
pub fn traced_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    TRACED_PIDS.get_ptr(&tgid).map(|_| tgid)
}

/// This CPU's "a guestscope probe is running" flag, held while the guard lives.
///
/// `_raw_spin_lock` is taken inside `bpf_get_stackid` (the stack map's free list) and
/// elsewhere in the helpers; without the flag the spin-lock probe would record the
/// probes themselves, and its own stack walk would disturb the outer one.
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
/// case (some other process) costs one hash lookup.
#[inline(always)]
pub fn emit<C: StackIdContext>(ctx: &C, kind: ProbeKind, payload: impl FnOnce(&C) -> Payload) {
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
    let Payload { arg, ip, flags } = payload(ctx);
    let stack_id = match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(errno) => {
            bump!(counters.stack_failed);
            errno
        }
    };
    let Some(mut entry) = EVENTS.reserve::<RawEvent>(0) else {
        bump!(counters.ring_full);
        return;
    };
    entry.write(RawEvent {
        ts_ns,
        arg,
        ip,
        kind: kind as u32,
        // SAFETY: a helper call without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        pid: tgid,
        tid: pid_tgid as u32,
        stack_id,
        flags,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    entry.submit(0);
    bump!(counters.emitted);
}
