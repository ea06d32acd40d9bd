//! The caller of a probed function, read at its entry: the frame-pointer unwinder
//! misses it there (see [`EntryCaller`]), so the probe reads it from the stack itself
//! and the agent puts it back into the walk ([`EntryCaller::recover`]).

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_func_arg_cnt, bpf_get_func_ip},
    },
    programs::{FEntryContext, ProbeContext},
};
use guestscope_common::EntryCaller;

/// What a probe at a function's entry found: the function and its caller, and the
/// stack pointer on entry (where the return address into the caller lies; 0 if
/// unknown), which keys the stack cache ([`crate::stack_cache`]). At an fentry the
/// stack pointer is computed from the program's context, which the verifier treats as
/// a pointer: the caller passes it through [`crate::stack_cache::scalar`] before use.
#[derive(Clone, Copy)]
pub struct AtEntry {
    /// The function's frame and its caller.
    pub caller: EntryCaller,
    /// The stack pointer on the function's entry.
    pub anchor: u64,
}

impl AtEntry {
    /// Nothing known (tracepoints, return probes, places inside a function).
    pub const UNKNOWN: AtEntry = AtEntry {
        caller: EntryCaller::UNKNOWN,
        anchor: 0,
    };
}

/// Largest distance from a function's start to the return address of its fentry call
/// (`call __fentry__` is 5 bytes, after a 4-byte `endbr64` with IBT).
const FENTRY_CALL_END_MAX: u64 = 16;

/// Most argument registers an fentry trampoline saves (six, and two more for an
/// argument passed by value in two registers; Linux 6.1 saves at most 6).
const MAX_SAVED_REGS: u64 = 12;

/// At a kprobe on a function's first instruction: the saved `rip` is the frame the walk
/// starts with, and the stack pointer points at the return address into the caller.
///
/// Only for probes at a function's entry: inside a function the stack pointer points at
/// whatever the function pushed.
#[inline(always)]
pub fn at_kprobe(ctx: &ProbeContext) -> AtEntry {
    // SAFETY: a kprobe's context is the probed task's `pt_regs`, which the verifier lets
    // the program read directly.
    let (rip, rsp) = unsafe { ((*ctx.regs).rip, (*ctx.regs).rsp) };
    // SAFETY: a helper reading 8 bytes of the kernel stack; a bad address gives an error.
    let caller = unsafe { bpf_probe_read_kernel(rsp as *const u64) }.unwrap_or(0);
    AtEntry {
        caller: EntryCaller { frame: rip, caller },
        anchor: rsp,
    }
}

/// At an fentry: the trampoline's frame holds, above its saved `rbp`, the return
/// address into the function (just past its `call __fentry__`) and above that the
/// return address into the caller. The program's context points at the saved argument
/// registers, which end right below the trampoline's `rbp` (Linux 6.1 to 6.12's x86-64
/// trampoline layout), or one slot lower when the trampoline also keeps a return value
/// (an fexit on the same function). Each layout is checked against the function's
/// address before its caller is believed, so an unknown layout gives
/// [`AtEntry::UNKNOWN`].
#[inline(always)]
pub fn at_fentry(ctx: &FEntryContext) -> AtEntry {
    // SAFETY: helpers reading the trampoline's saved register count and the traced
    // function's address from the program's context.
    let (regs, function) = unsafe {
        (
            bpf_get_func_arg_cnt(ctx.as_ptr()) as u64,
            bpf_get_func_ip(ctx.as_ptr()),
        )
    };
    if regs > MAX_SAVED_REGS || function == 0 {
        return AtEntry::UNKNOWN;
    }
    let args = ctx.as_ptr() as u64;
    for return_value_slot in [0, 8] {
        let rbp = args + regs * 8 + return_value_slot;
        // SAFETY: a helper reading 16 bytes of the trampoline's stack frame (one call:
        // each costs tens of nanoseconds under TCG); a bad address gives an error.
        let above = unsafe { bpf_probe_read_kernel((rbp + 8) as *const [u64; 2]) };
        let Ok([into_function, caller]) = above else {
            return AtEntry::UNKNOWN;
        };
        if into_function > function && into_function - function <= FENTRY_CALL_END_MAX {
            return AtEntry {
                caller: EntryCaller {
                    frame: into_function,
                    caller,
                },
                anchor: rbp + 16,
            };
        }
    }
    AtEntry::UNKNOWN
}
