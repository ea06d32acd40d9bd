//! Experiment: spin_lock in three subsystems (seed §5). Every `_raw_spin_lock`
//! hit of a workload is classified by the subsystem that took the lock, from its
//! kernel stack, with one representative stack per class.

use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::ProbeKind;
use serde::{Deserialize, Serialize};

use super::classify::SPIN_LOCK_RULES;
use crate::session::Session;

/// One class of one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClassCount {
    /// Subsystem.
    pub class: String,
    /// spin_lock hits.
    pub hits: u64,
    /// Distinct stacks.
    pub stacks: u64,
    /// Named global locks taken in this class, with counts.
    pub named_locks: BTreeMap<String, u64>,
    /// The function that decided the class in the representative stack.
    pub decided_by: Option<String>,
    /// The most frequent stack of the class, innermost frame first.
    pub representative: Vec<String>,
    /// How many hits had that exact stack.
    pub representative_hits: u64,
    /// Hits whose stack passes through each [`LANDMARKS`] function (and each
    /// [`LANDMARK_PATHS`] pair), with the most frequent such stack.
    pub through: BTreeMap<String, Through>,
}

/// Hits of a class whose stacks pass through one function.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Through {
    /// Hits.
    pub hits: u64,
    /// The most frequent stack among them.
    pub stack: Vec<String>,
}

/// Functions whose presence on a lock's stack the lab's claims are about.
pub const LANDMARKS: [&str; 7] = [
    "alloc_fd",
    "tick_do_update_jiffies64",
    "__schedule",
    "exc_page_fault",
    "pte_alloc_one",
    "__pte_alloc",
    "try_to_generate_entropy",
];

/// Pairs of functions on one stack, the first outside the second, counted in
/// [`ClassCount::through`] under the key `"OUTER>INNER"`: a context switch inside a
/// page fault is `exc_page_fault>__schedule`.
pub const LANDMARK_PATHS: [(&str, &str); 1] = [("exc_page_fault", "__schedule")];

/// The experiment's result for one workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadSpinLocks {
    /// Workload name.
    pub workload: String,
    /// Total spin_lock hits.
    pub hits: u64,
    /// Hits with no stack.
    pub no_stack: u64,
    /// Per class, in rule-table order (classes with no hits omitted).
    pub classes: Vec<ClassCount>,
}

/// Classifies every workload's spin_lock stacks.
pub fn analyze<W: Write>(session: &mut Session<W>) -> Vec<WorkloadSpinLocks> {
    let mut out = Vec::new();
    for i in 0..session.workloads.len() {
        let mut by_class: BTreeMap<&'static str, ClassCount> = BTreeMap::new();
        let mut hits = 0;
        let mut no_stack = 0;
        for (stack_id, count) in session.stacks_of(i, ProbeKind::SpinLock) {
            hits += count;
            let frames = session.stack(stack_id).to_vec();
            if frames.is_empty() {
                no_stack += count;
                continue;
            }
            let c = SPIN_LOCK_RULES.classify(&frames);
            let entry = by_class.entry(c.class).or_insert_with(|| ClassCount {
                class: c.class.to_string(),
                hits: 0,
                stacks: 0,
                named_locks: BTreeMap::new(),
                decided_by: c.decided_by.clone(),
                representative: frames.clone(),
                representative_hits: count,
                through: BTreeMap::new(),
            });
            let at = |l: &str| {
                frames
                    .iter()
                    .position(|f| guest_kernel::kallsyms::frame_function(f) == l)
            };
            let on_path = LANDMARK_PATHS.iter().filter_map(|(outer, inner)| {
                // Frames are innermost first: the outer function comes later.
                let (o, i) = (at(outer)?, at(inner)?);
                (o > i).then(|| format!("{outer}>{inner}"))
            });
            let landmarks = LANDMARKS
                .iter()
                .filter(|l| at(l).is_some())
                .map(|l| l.to_string());
            for key in landmarks.chain(on_path) {
                let t = entry.through.entry(key).or_insert_with(|| Through {
                    hits: 0,
                    stack: frames.clone(),
                });
                t.hits += count;
            }
            entry.hits += count;
            entry.stacks += 1;
            if let Some(locks) = session.workloads[i].named_locks_by_stack.get(&stack_id) {
                for (l, n) in locks {
                    *entry.named_locks.entry(l.clone()).or_default() += n;
                }
            }
        }
        let classes = SPIN_LOCK_RULES
            .classes()
            .into_iter()
            .filter_map(|c| by_class.remove(c))
            .collect();
        out.push(WorkloadSpinLocks {
            workload: session.workloads[i].started.name.clone(),
            hits,
            no_stack,
            classes,
        });
    }
    out
}
