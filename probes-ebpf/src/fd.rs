//! `alloc_fd` entry: a file descriptor is being allocated (open, socket, pipe, dup...).

use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use guestscope_common::ProbeKind;

use crate::{
    emit::{Payload, emit},
    entry_caller,
};

/// kprobe on `alloc_fd(unsigned start, unsigned end, unsigned flags)` (Linux 6.1), the
/// fallback of [`alloc_fd_fentry`]:
/// `arg` is `end` (the fd limit), `flags` the open flags (`O_CLOEXEC`...).
#[kprobe]
pub fn alloc_fd(ctx: ProbeContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::AllocFd,
        |ctx| Payload {
            arg: ctx.arg::<u32>(1).map_or(0, u64::from),
            ip: 0,
            flags: ctx.arg::<u32>(2).unwrap_or(0),
            args: None,
        },
        entry_caller::at_kprobe,
    );
    0
}

/// fentry on `alloc_fd` (BTF trampoline: no kprobe dispatch per hit); the agent falls
/// back to [`alloc_fd`] when fentry cannot be used. The same event either way.
#[fentry(function = "alloc_fd")]
pub fn alloc_fd_fentry(ctx: FEntryContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::AllocFd,
        |ctx| Payload {
            arg: u64::from(ctx.arg::<u64>(1) as u32),
            ip: 0,
            flags: ctx.arg::<u64>(2) as u32,
            args: None,
        },
        entry_caller::at_fentry,
    );
    0
}
