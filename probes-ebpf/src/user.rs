//! Probes the user names (`--probe kprobe:FUNC`, `kretprobe:FUNC`,
//! `tracepoint:CATEGORY:NAME`): one program of each kind, attached by the agent to
//! every function or tracepoint asked for. The function is told apart per event by
//! `bpf_get_func_ip` (Linux 5.15+), the tracepoint by its record's `common_type`, so a
//! hundred of them cost one program, not a hundred.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_ip,
    macros::{kprobe, kretprobe, tracepoint},
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use guestscope_common::ProbeKind;

use crate::emit::{Payload, emit};

/// Entry of any function: `arg` is its first argument (`rdi`), `ip` the function.
#[kprobe]
pub fn user_kprobe(ctx: ProbeContext) -> u32 {
    emit(&ctx, ProbeKind::Kprobe, |ctx| Payload {
        arg: ctx.arg::<u64>(0).unwrap_or(0),
        // SAFETY: a helper reading the probed address from the program's context.
        ip: unsafe { bpf_get_func_ip(ctx.as_ptr()) },
        flags: 0,
    });
    0
}

/// Return of any function: `arg` is its return value (`rax`), `ip` the function.
#[kretprobe]
pub fn user_kretprobe(ctx: RetProbeContext) -> u32 {
    emit(&ctx, ProbeKind::Kretprobe, |ctx| Payload {
        arg: ctx.ret::<u64>(),
        // SAFETY: as above; for a kretprobe the kernel reports the probed function.
        ip: unsafe { bpf_get_func_ip(ctx.as_ptr()) },
        flags: 0,
    });
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
                });
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
