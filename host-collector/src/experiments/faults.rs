//! Experiment: page faults from malloc (seed §5.3): user and kernel faults per
//! workload, and which of them allocated a page table, from the stacks of the
//! `pte_alloc_one` probe when it is attached.

use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::ProbeKind;
use serde::Serialize;

use super::classify::FAULT_RULES;
use crate::session::Session;

/// Fault counts of one workload.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadFaults {
    /// Workload name.
    pub workload: String,
    /// Faults taken in user mode.
    pub user: u64,
    /// Faults taken in kernel mode.
    pub kernel: u64,
    /// Fault path classes (from the fault stacks) with counts.
    pub paths: BTreeMap<String, u64>,
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
        let mut paths = BTreeMap::new();
        let mut representative = Vec::new();
        for kind in [ProbeKind::PageFaultUser, ProbeKind::PageFaultKernel] {
            for (id, count) in session.stacks_of(i, kind) {
                let frames = session.stack(id).to_vec();
                *paths
                    .entry(FAULT_RULES.classify(&frames).class.to_string())
                    .or_default() += count;
                if representative.is_empty() && kind == ProbeKind::PageFaultUser {
                    representative = frames;
                }
            }
        }
        out.push(WorkloadFaults {
            workload: name,
            user,
            kernel,
            paths,
            representative,
        });
    }
    out
}
