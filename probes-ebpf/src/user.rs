//! Probes the user names (`--probe fentry:FUNC`, `kprobe:FUNC[+OFFSET]`,
//! `kretprobe:FUNC`, `tracepoint:CATEGORY:NAME`): one program of each kind, attached
//! by the agent to every function or tracepoint asked for. The function is told apart
//! per event by `bpf_get_func_ip` (Linux 5.15+), the tracepoint by its slot, so a
//! hundred kprobes cost one program, not a hundred. fentry binds a program to one
//! function when it is loaded, so the agent loads `user_fentry` once per function;
//! each load is the same code, and the trampoline makes each hit cheaper than a kprobe's.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_get_func_arg, bpf_get_func_ip},
    macros::{fentry, kprobe, kretprobe, tracepoint},
    programs::{FEntryContext, ProbeContext, RetProbeContext, TracePointContext},
};
use guestscope_common::ProbeKind;

use crate::{
    emit::{Payload, emit},
    entry_caller::{self, AtEntry},
};

/// Entry of any function, or a place inside one (`kprobe:FUNC+OFFSET`): `arg` is
/// `rdi` and `args` `rsi` … `r9` (at entry the arguments), `ip` the probed address.
#[kprobe]
pub fn user_kprobe(ctx: ProbeContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::Kprobe,
        |ctx| Payload {
            arg: ctx.arg::<u64>(0).unwrap_or(0),
            ip: probed_address(ctx),
            flags: 0,
            // rsi, rdx, rcx, r8, r9.
            args: Some([1, 2, 3, 4, 5].map(|n| ctx.arg::<u64>(n).unwrap_or(0))),
        },
        kprobe_entry,
    );
    0
}

/// The address a kprobe sits on. `bpf_get_func_ip` gives it only at a function's
/// entry (0 elsewhere, Linux 6.0+); inside a function the saved `rip` is one past the
/// probe's int3 (the int3 handler and the optimized jump both set it so).
#[inline(always)]
fn probed_address(ctx: &ProbeContext) -> u64 {
    // SAFETY: a helper reading the probed address from the program's context.
    let entry = unsafe { bpf_get_func_ip(ctx.as_ptr()) };
    if entry != 0 {
        return entry;
    }
    // SAFETY: a kprobe's context is the probed task's `pt_regs`, which the verifier
    // lets the program read directly.
    unsafe { (*ctx.regs).rip }.wrapping_sub(1)
}

/// The function and caller of a kprobe at a function's entry (where
/// `bpf_get_func_ip` gives the function, Linux 6.0+), nothing for one inside a function.
#[inline(always)]
fn kprobe_entry(ctx: &ProbeContext) -> AtEntry {
    // SAFETY: as in `probed_address`.
    if unsafe { bpf_get_func_ip(ctx.as_ptr()) } == 0 {
        return AtEntry::UNKNOWN;
    }
    entry_caller::at_kprobe(ctx)
}

/// fentry on any function (the agent loads it once per function, with that function's
/// BTF id): `arg` and `args` are its arguments, read with `bpf_get_func_arg` so those
/// past the prototype's count give 0 instead of failing the verifier; `ip` the
/// function.
#[fentry]
pub fn user_fentry(ctx: FEntryContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::Fentry,
        |ctx| {
            let mut args = [0u64; 6];
            // SAFETY: helpers reading the traced function's arguments (each into a local the
            // helper leaves untouched past the prototype's count) and address from the
            // trampoline's context.
            let ip = unsafe {
                for (n, arg) in args.iter_mut().enumerate() {
                    bpf_get_func_arg(ctx.as_ptr(), n as u32, arg);
                }
                bpf_get_func_ip(ctx.as_ptr())
            };
            Payload {
                arg: args[0],
                ip,
                flags: 0,
                args: Some([args[1], args[2], args[3], args[4], args[5]]),
            }
        },
        entry_caller::at_fentry,
    );
    0
}

/// Return of any function: `arg` is its return value (`rax`), `ip` the function.
#[kretprobe]
pub fn user_kretprobe(ctx: RetProbeContext) -> u32 {
    emit(
        &ctx,
        ProbeKind::Kretprobe,
        |ctx| Payload {
            arg: ctx.ret::<u64>(),
            // SAFETY: as above; for a kretprobe the kernel reports the probed function.
            ip: unsafe { bpf_get_func_ip(ctx.as_ptr()) },
            flags: 0,
            args: None,
        },
        |_| AtEntry::UNKNOWN,
    );
    0
}

/// Offset of a tracepoint record's first field, past the 8-byte common header (which
/// the kernel overwrites with a `pt_regs` pointer before running a BPF program, so
/// `common_type` cannot tell tracepoints apart).
const FIRST_FIELD: usize = 8;

/// The tracepoint programs: one per slot, each attached by the agent to one of the
/// tracepoints asked for; `flags` is the slot, which the agent maps to its name
/// (`bpf_get_attach_cookie` would do with one program, but aya 0.14 attaches
/// tracepoints without a cookie). `arg` is the first 8 bytes of the event's fields.
macro_rules! user_tracepoints {
    ($($name:ident = $slot:literal),* $(,)?) => {
        $(
            #[doc = concat!("Tracepoint slot ", stringify!($slot), ".")]
            #[tracepoint]
            pub fn $name(ctx: TracePointContext) -> u32 {
                emit(&ctx, ProbeKind::Tracepoint, |ctx| Payload {
                    // SAFETY: a read past a short record's end is caught by the helper
                    // and gives 0.
                    arg: unsafe { ctx.read_at::<u64>(FIRST_FIELD).unwrap_or(0) },
                    ip: 0,
                    flags: $slot,
                    args: None,
                },
                |_| AtEntry::UNKNOWN,
            );
                0
            }
        )*
    };
}

user_tracepoints!(
    user_tracepoint_0 = 0,
    user_tracepoint_1 = 1,
    user_tracepoint_2 = 2,
    user_tracepoint_3 = 3,
    user_tracepoint_4 = 4,
    user_tracepoint_5 = 5,
    user_tracepoint_6 = 6,
    user_tracepoint_7 = 7,
);
