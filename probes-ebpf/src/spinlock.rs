//! `_raw_spin_lock` entry: every spin lock a process under study takes.
//!
//! Two programs share one path: `spin_lock_fentry` (BTF trampoline, cheap) and
//! `spin_lock_kprobe`, which the agent attaches only when fentry cannot be used.
//! Either way [`RawEvent::arg`](guestscope_common::RawEvent::arg) is the lock address.

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use guestscope_common::ProbeKind;

use crate::{
    emit::{Payload, emit},
    entry_caller,
};

/// fentry on `_raw_spin_lock(raw_spinlock_t *lock)`.
#[fentry(function = "_raw_spin_lock")]
pub fn spin_lock_fentry(ctx: FEntryContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::SpinLock,
        |ctx| Payload {
            arg: ctx.arg::<u64>(0),
            ip: 0,
            flags: 0,
            args: None,
        },
        entry_caller::at_fentry,
    );
    0
}

/// kprobe on `_raw_spin_lock`: the fallback when fentry is unavailable.
#[kprobe]
pub fn spin_lock_kprobe(ctx: ProbeContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::SpinLock,
        |ctx| Payload {
            arg: ctx.arg::<u64>(0).unwrap_or(0),
            ip: 0,
            flags: 0,
            args: None,
        },
        entry_caller::at_kprobe,
    );
    0
}
