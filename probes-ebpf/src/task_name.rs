//! The current task's name (`task_struct.comm`), written into a record.
//!
//! `bpf_get_current_comm` copies the name with `strscpy`; under TCG that helper was
//! about half a microsecond of every recorded hit (the guest's perf, traced against
//! untraced loop). Where the agent found where `comm` sits in the kernel's
//! `task_struct` (its BTF), it sets [`TASK_COMM_OFFSET`] before loading, and the probes
//! read the 16 bytes straight from the task: `bpf_get_current_task_btf` and two loads
//! the verifier checks against the kernel's BTF. The global is read-only data, frozen
//! before the programs load, so the verifier knows its value: it follows only the path
//! that value takes, and on a kernel where the agent left it unknown the helper is all
//! it sees.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_task_btf, generated::bpf_get_current_comm as get_comm_raw,
};
use guestscope_common::{
    event::COMM_BYTES,
    maps::{self as names, COMM_OFFSET_UNKNOWN},
};

use crate::maps::const_eq;

// The static's name and the shared constant the agent sets it by, in step.
const _: () = assert!(const_eq(names::TASK_COMM_OFFSET, "TASK_COMM_OFFSET"));

/// Byte offset of `comm` in the kernel's `task_struct`, or [`COMM_OFFSET_UNKNOWN`]; set
/// by the agent before loading (see the module's documentation). Not zero by default, so
/// that it lands in `.rodata` (which the loader freezes), not `.bss`.
#[unsafe(no_mangle)]
static TASK_COMM_OFFSET: u32 = COMM_OFFSET_UNKNOWN;

/// Writes the current task's name into the two words at `to` (zeros if it cannot be
/// read).
///
/// # Safety
/// `to` must be valid for writing [`COMM_BYTES`] bytes, 8-byte aligned.
#[inline(always)]
pub unsafe fn write_task_name(to: *mut u64) {
    // SAFETY: a read of a static; volatile, so the compiler keeps the load the verifier
    // resolves from the frozen map instead of folding in the default.
    let offset = unsafe { core::ptr::read_volatile(&TASK_COMM_OFFSET) };
    if offset != COMM_OFFSET_UNKNOWN {
        // SAFETY: the current task is never null; the agent set `offset` to where the
        // kernel's BTF puts `comm` (16 bytes, word-aligned), and the verifier checks both
        // loads against that BTF (a load it cannot prove inside `comm` is refused at
        // load, not run).
        unsafe {
            let from = bpf_get_current_task_btf()
                .cast::<u8>()
                .add(offset as usize)
                .cast::<u64>();
            to.write_volatile(from.read_volatile());
            to.add(1).write_volatile(from.add(1).read_volatile());
        }
        return;
    }
    // SAFETY: `to` is valid for `COMM_BYTES` bytes (the caller's promise).
    if unsafe { get_comm_raw(to.cast::<c_void>(), COMM_BYTES as u32) } != 0 {
        // The name as two words, not a 16-byte fill.
        // SAFETY: as above.
        unsafe {
            to.write_volatile(0);
            to.add(1).write_volatile(0);
        }
    }
}
