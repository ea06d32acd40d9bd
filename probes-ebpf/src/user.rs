//! Probes the user names (`--probe kprobe:FUNC`, `--probe kretprobe:FUNC`): one program
//! of each kind, attached by the agent to every function asked for. The function is
//! told apart per event by `bpf_get_func_ip` (Linux 5.15+), so a hundred functions
//! cost one program, not a hundred.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_ip,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
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
