//! Page faults, from the `exceptions:page_fault_user` and `exceptions:page_fault_kernel`
//! tracepoints (`exc_page_fault` itself is `noinstr` and cannot be probed).
//!
//! Both share this record layout (`/sys/kernel/tracing/events/exceptions/*/format`):
//! `address` u64 at 8, `ip` u64 at 16, `error_code` u64 at 24.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use guestscope_common::ProbeKind;

use crate::{
    emit::{Payload, emit},
    entry_caller::AtEntry,
};

const ADDRESS: usize = 8;
const IP: usize = 16;
const ERROR_CODE: usize = 24;

/// Reads the fault's address, instruction pointer and error code.
#[inline(always)]
fn fault_payload(ctx: &TracePointContext) -> Payload {
    // SAFETY: the offsets are inside the tracepoint's record (see the module doc).
    let (arg, ip, code) = unsafe {
        (
            ctx.read_at::<u64>(ADDRESS).unwrap_or(0),
            ctx.read_at::<u64>(IP).unwrap_or(0),
            ctx.read_at::<u64>(ERROR_CODE).unwrap_or(0),
        )
    };
    Payload {
        arg,
        ip,
        flags: code as u32,
        args: None,
    }
}

/// A fault taken while the CPU ran user code.
#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user(ctx: TracePointContext) -> u32 {
    emit(&ctx, ProbeKind::PageFaultUser, fault_payload, |_| {
        AtEntry::UNKNOWN
    });
    0
}

/// A fault taken while the CPU ran kernel code (e.g. `copy_to_user` touching a fresh page).
#[tracepoint(category = "exceptions", name = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: TracePointContext) -> u32 {
    emit(&ctx, ProbeKind::PageFaultKernel, fault_payload, |_| {
        AtEntry::UNKNOWN
    });
    0
}
