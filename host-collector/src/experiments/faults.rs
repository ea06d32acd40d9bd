//! Experiment: page faults from malloc (seed §5.3): user and kernel faults per
//! workload, and what each faulting access was, from the x86 error code the
//! `exceptions:page_fault_*` tracepoints carry. (Their stacks end at the fault's
//! entry, before the handler picks a path, so the path itself is not in them; the
//! spin_lock experiment sees page-table allocations inside faults.)

use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::ProbeKind;
use serde::{Deserialize, Serialize};

use crate::session::Session;

/// x86 page-fault error code bits (`arch/x86/include/asm/trap_pf.h`).
const PF_PROT: u32 = 1 << 0;
const PF_WRITE: u32 = 1 << 1;
const PF_USER: u32 = 1 << 2;
const PF_INSTR: u32 = 1 << 4;

/// What a faulting access was, from its x86 error code: a page not yet mapped
/// (first touch of anonymous memory, a file page not in the page tables yet), or a
/// mapped one the access was not allowed on (a write to a copy-on-write page).
pub fn access(code: u32) -> &'static str {
    let kernel = code & PF_USER == 0;
    match (
        code & PF_PROT != 0,
        code & PF_WRITE != 0,
        code & PF_INSTR != 0,
    ) {
        (_, _, true) => "instruction fetch",
        (false, true, _) if kernel => "kernel write to an unmapped user page",
        (false, false, _) if kernel => "kernel read of an unmapped user page",
        (false, true, _) => "write to an unmapped page",
        (false, false, _) => "read of an unmapped page",
        (true, true, _) => "write to a read-only page (copy on write)",
        (true, false, _) => "read of a protected page",
    }
}

/// Fault counts of one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadFaults {
    /// Workload name.
    pub workload: String,
    /// Faults taken in user mode.
    pub user: u64,
    /// Faults taken in kernel mode.
    pub kernel: u64,
    /// Faults by what the access was ([`access`]), with counts.
    pub accesses: BTreeMap<String, u64>,
    /// The most frequent user-fault stack.
    pub representative: Vec<String>,
}

/// Counts each workload's faults.
pub fn analyze<W: Write>(session: &mut Session<W>) -> Vec<WorkloadFaults> {
    let mut out = Vec::new();
    for i in 0..session.workloads.len() {
        let w = &session.workloads[i];
        let user = w
            .events
            .get(ProbeKind::PageFaultUser.name())
            .copied()
            .unwrap_or(0);
        let kernel = w
            .events
            .get(ProbeKind::PageFaultKernel.name())
            .copied()
            .unwrap_or(0);
        let name = w.started.name.clone();
        let accesses = w
            .fault_accesses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let representative = session
            .stacks_of(i, ProbeKind::PageFaultUser)
            .first()
            .map(|(id, _)| session.stack(*id).to_vec())
            .unwrap_or_default();
        out.push(WorkloadFaults {
            workload: name,
            user,
            kernel,
            accesses,
            representative,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_code_says_what_the_access_was() {
        // malloc's first touch of a page: user write, page not present.
        assert_eq!(access(PF_USER | PF_WRITE), "write to an unmapped page");
        assert_eq!(access(PF_USER), "read of an unmapped page");
        // A forked child writing to a shared page.
        assert_eq!(
            access(PF_USER | PF_WRITE | PF_PROT),
            "write to a read-only page (copy on write)"
        );
        assert_eq!(access(PF_USER | PF_INSTR), "instruction fetch");
        // copy_to_user into a fresh buffer.
        assert_eq!(access(PF_WRITE), "kernel write to an unmapped user page");
        assert_eq!(access(PF_USER | PF_PROT), "read of a protected page");
    }
}
