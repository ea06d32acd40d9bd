//! `alloc_fd` entry: a file descriptor is being allocated (open, socket, pipe, dup...).

use aya_ebpf::{macros::kprobe, programs::ProbeContext};
use guestscope_common::ProbeKind;

use crate::{
    emit::{Payload, emit},
    entry_caller,
};

/// kprobe on `alloc_fd(unsigned start, unsigned end, unsigned flags)` (Linux 6.1):
/// `arg` is `end` (the fd limit), `flags` the open flags (`O_CLOEXEC`...).
#[kprobe]
pub fn alloc_fd(ctx: ProbeContext) -> u32 {
    emit(&ctx, ProbeKind::AllocFd, |ctx| Payload {
        arg: ctx.arg::<u32>(1).map_or(0, u64::from),
        ip: 0,
        flags: ctx.arg::<u32>(2).unwrap_or(0),
        args: None,
        entry: entry_caller::at_kprobe(ctx),
    });
    0
}
