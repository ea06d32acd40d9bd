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

pub use guest_kernel::page_fault::access;

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
