//! The report files of a run: `report.md`, `report.html` (with its figures) and
//! `stacks.folded`, from the summary and the figures' data alone, so a run that just
//! ended and `guestscope report DIR` write the same files.

use std::io;
use std::path::Path;

use guestscope_common::event::ProbeKind;

use super::figure_data::FigureData;
use super::html::Figure;
use super::{atomic, flamegraph, folded, html, markdown, plots, summary};
use crate::experiments;
use crate::session;

/// The stacks of the probes `wanted` picks, as flame-graph paths: with one probe,
/// workload then functions; with several, probe, workload, functions (outermost
/// first, offsets dropped so call sites of one function merge).
fn flame_stacks(data: &FigureData, wanted: impl Fn(&str) -> bool) -> Vec<(Vec<String>, u64)> {
    let stacks: Vec<&folded::FoldedStack> = data.stacks_of(wanted).collect();
    let probes: std::collections::BTreeSet<&str> =
        stacks.iter().map(|s| s.probe.as_str()).collect();
    stacks
        .into_iter()
        .map(|s| {
            let mut path = Vec::with_capacity(s.functions.len() + 2);
            if probes.len() > 1 {
                path.push(s.probe.clone());
            }
            path.push(s.workload.clone());
            path.extend(s.functions.iter().cloned());
            (path, s.count)
        })
        .collect()
}

/// Writes report.md, report.html and stacks.folded into `dir` from the summary and
/// the figures' data, each whole or not at all.
pub fn write(dir: &Path, s: &summary::Summary, data: &FigureData) -> io::Result<()> {
    let md = markdown::render(s);
    atomic::write(&dir.join("report.md"), md.as_bytes())?;
    atomic::write(
        &dir.join("report.html"),
        html::render(&md, &figures(s, data)).as_bytes(),
    )?;
    let mut text = Vec::new();
    folded::write(&data.stacks, &mut text)?;
    atomic::write(&dir.join("stacks.folded"), &text)
}

/// The report's plots, each placed after its section.
pub fn figures(s: &summary::Summary, data: &FigureData) -> Vec<Figure> {
    let mut figs = Vec::new();
    let mut add = |after: &str, svg: Option<String>| {
        if let Some(svg) = svg {
            figs.push(Figure {
                after_heading: after.to_string(),
                svg,
            });
        }
    };
    if let Some(b) = &s.experiments.boot {
        add("Boot time", plots::boot_phases(b));
    }
    let classes = experiments::classify::SPIN_LOCK_RULES.classes();
    if let Some(r) = &s.experiments.random {
        let series: Vec<(String, Vec<f64>)> = r
            .sources
            .iter()
            .map(|x| {
                (
                    format!("{} ({})", x.workload, x.method),
                    x.latencies_us.clone(),
                )
            })
            .collect();
        add(
            "/dev/random",
            plots::log_histogram("Read latency per source", "µs (log scale)", &series),
        );
    }
    add(
        "spin_lock by subsystem",
        plots::spin_lock_classes(&s.experiments.spin_lock, &classes),
    );
    add(
        "spin_lock by subsystem",
        flamegraph::svg(
            "spin_lock's kernel stacks, each workload the same width (hover a box for its events)",
            &flame_stacks(data, |probe| probe == ProbeKind::SpinLock.name()),
            flamegraph::Widths::SameForEachRoot,
        ),
    );
    add(
        "Your probes",
        flamegraph::svg(
            "Your probes: kernel stacks by probe",
            &flame_stacks(data, |probe| {
                ProbeKind::of_event(probe).is_some_and(ProbeKind::is_user)
            }),
            flamegraph::Widths::ByEvents,
        ),
    );
    let bin_ms = session::TIMELINE_BIN_NS as f64 / 1e6;
    for (workload, timeline) in &data.timelines {
        let series: Vec<(String, Vec<(f64, u64)>)> = ["page_fault_user", "page_fault_kernel"]
            .iter()
            .filter_map(|p| {
                let bins = timeline.get(*p)?;
                let last = *bins.keys().last()?;
                Some((
                    p.to_string(),
                    (0..=last)
                        .map(|b| (b as f64 * bin_ms, bins.get(&b).copied().unwrap_or(0)))
                        .collect(),
                ))
            })
            .collect();
        if series
            .iter()
            .map(|(_, p)| p.iter().map(|(_, c)| c).sum::<u64>())
            .sum::<u64>()
            >= 100
        {
            add(
                "Page faults",
                plots::timeline(
                    &format!("Page faults over time: {workload}"),
                    bin_ms,
                    &series,
                ),
            );
        }
    }
    figs
}
