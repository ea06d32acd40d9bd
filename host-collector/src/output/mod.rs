//! What a run writes to its output directory.
//!
//! - [`summary`]: `summary.json`, every number the report shows.
//! - [`markdown`]: `report.md`, rendered from the summary only.
//! - [`html`]: `report.html`, self-contained, with the plots inlined.
//! - [`plots`]: SVG plots (plotters).
//! - [`reports`]: report.md, report.html and stacks.folded, from the summary and the
//!   figures' data.
//! - [`perfetto`]: `trace.perfetto-trace`, guest events and host milestones on one time axis.
//! - [`folded`]: `stacks.folded`, the kernel stacks for flame-graph tools.
//! - [`flamegraph`]: flame graphs of those stacks for `report.html`.
//! - [`figure_data`]: what the figures need besides the summary, from the session or
//!   from a run folder's files.
//! - [`user_probes`]: the summary of the probes the user named (`--probe`).
//! - [`atomic`]: write-then-rename, so no reader ever sees half a file.
//! - [`lines`]: `events.jsonl` in whole lines, even when the disk fills up.

pub mod atomic;
pub mod figure_data;
pub mod flamegraph;
pub mod folded;
pub mod html;
pub mod lines;
pub mod markdown;
pub mod perfetto;
pub mod plots;
pub mod reports;
pub mod summary;
pub mod user_probes;
