//! `sched:sched_process_fork`: children of a process under study are studied too.
//!
//! Record layout (`/sys/kernel/tracing/events/sched/sched_process_fork/format`, 6.1):
//! `parent_comm` char[16] at 8, `parent_pid` at 24, `child_comm` char[16] at 28,
//! `child_pid` at 44. The tracepoint runs in the parent, so the parent's thread-group id
//! is the current task's (`parent_pid` is the forking *thread*'s id). New threads also
//! pass here; their ids are harmlessly added too (the agent clears the set after each
//! workload).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{emit::traced_tgid, maps::add_traced};

const CHILD_PID: usize = 44;

/// Adds the new task to `TRACED_TGIDS` when its parent is traced.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_sched_process_fork(&ctx) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Result<(), i32> {
    if traced_tgid().is_none() {
        return Ok(());
    }
    // SAFETY: the offset is inside the tracepoint's record (see the module doc).
    let child: u32 = unsafe { ctx.read_at(CHILD_PID)? };
    // A byte stored in place: no lock taken, so nothing for the spin-lock probe to see.
    add_traced(child);
    Ok(())
}
