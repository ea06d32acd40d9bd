//! What the report's figures need besides `summary.json`: each workload's stacks per
//! probe (the flame graphs, `stacks.folded`) and its events over time (the page-fault
//! time lines). Taken from the session at the end of a run, or rebuilt from the run's
//! files (`events.jsonl`, `stacks.jsonl`) when `guestscope report` renders a run
//! folder again: both give the same figures.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use super::folded::{self, FoldedStack};
use super::summary::Summary;
use crate::run_files::events::read_events;
use crate::run_files::stacks::Stacks;
use crate::session::{Session, TIMELINE_BIN_NS, UNKNOWN_PROBE};

/// Events per probe per [`TIMELINE_BIN_NS`] bin since a workload started.
pub type Bins = BTreeMap<String, BTreeMap<u64, u64>>;

/// The figures' data of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FigureData {
    /// Each (workload, probe, stack) with its events.
    pub stacks: Vec<FoldedStack>,
    /// Each workload's events over time, in the order the workloads ran.
    pub timelines: Vec<(String, Bins)>,
}

impl FigureData {
    /// From the session of a run that just ended.
    pub fn of_session<W: Write>(session: &Session<W>) -> FigureData {
        FigureData {
            stacks: folded::stacks(session, |_| true),
            timelines: session
                .workloads
                .iter()
                .map(|w| (w.started.name.clone(), w.timeline.clone()))
                .collect(),
        }
    }

    /// From a run folder's `events.jsonl` and `stacks.jsonl`, with the workloads'
    /// start times and tallied hits per stack from its summary. Events of no workload, and of an unknown probe
    /// kind, are left out, as the session leaves them out.
    pub fn of_run_files<R: BufRead>(
        events: R,
        stacks: &Stacks,
        summary: &Summary,
    ) -> io::Result<FigureData> {
        let starts: BTreeMap<&str, u64> = summary
            .workloads
            .iter()
            .map(|w| (w.name.as_str(), w.start_ns))
            .collect();
        let mut counts: BTreeMap<(String, String, i32), u64> = BTreeMap::new();
        let mut bins: BTreeMap<String, Bins> = BTreeMap::new();
        for e in read_events(events) {
            let e = e?;
            let Some(workload) = e.workload else {
                continue;
            };
            if e.probe == UNKNOWN_PROBE {
                continue;
            }
            if let Some(&start) = starts.get(workload.as_ref()) {
                let bin = e.ts_ns.saturating_sub(start) / TIMELINE_BIN_NS;
                *bins
                    .entry(workload.to_string())
                    .or_default()
                    .entry(e.probe.to_string())
                    .or_default()
                    .entry(bin)
                    .or_default() += 1;
            }
            *counts
                .entry((workload.into_owned(), e.probe.into_owned(), e.stack_id))
                .or_default() += 1;
        }
        // Hits only counted in the kernel have no line, only a count per stack.
        for w in &summary.workloads {
            for t in &w.tallied_stacks {
                *counts
                    .entry((w.name.clone(), t.probe.clone(), t.stack_id))
                    .or_default() += t.hits;
            }
        }
        let stacks = counts
            .into_iter()
            .map(|((workload, probe, id), count)| FoldedStack {
                workload,
                probe,
                functions: folded::functions_of(stacks.frames(id)),
                count,
            })
            .collect();
        let timelines = summary
            .workloads
            .iter()
            .map(|w| (w.name.clone(), bins.remove(&w.name).unwrap_or_default()))
            .collect();
        Ok(FigureData { stacks, timelines })
    }

    /// The stacks of the probes `wanted` picks.
    pub fn stacks_of(&self, wanted: impl Fn(&str) -> bool) -> impl Iterator<Item = &FoldedStack> {
        self.stacks.iter().filter(move |s| wanted(&s.probe))
    }
}
