//! `guestscope report DIR`: renders a run folder's `report.md`, `report.html` and
//! `stacks.folded` again from what the run left there (`summary.json`,
//! `events.jsonl`, `stacks.jsonl`), without booting anything: after an upgrade of
//! guestscope's report, or to look at an old run with today's figures.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use crate::output::figure_data::FigureData;
use crate::output::summary::Summary;
use crate::run_files::stacks::Stacks;

/// Why a folder's report could not be rendered again.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file a run folder holds is missing or unreadable.
    #[error("{}: {source} (is {} a guestscope run folder?)", .path.display(), .dir.display())]
    Missing {
        /// The run folder.
        dir: PathBuf,
        /// The file.
        path: PathBuf,
        /// The error opening it.
        source: io::Error,
    },
    /// `summary.json` does not read as this version's summary.
    #[error("{}: {source} (written by another guestscope version?)", .path.display())]
    Summary {
        /// The file.
        path: PathBuf,
        /// What did not parse.
        source: serde_json::Error,
    },
    /// Reading the events or writing a report failed.
    #[error("{what} in {}: {source}", .dir.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The run folder.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Renders the report files of run folder `dir` again; returns the summary read.
pub fn report_again(dir: &Path) -> Result<Summary, ReportError> {
    let open = |name: &str| {
        let path = dir.join(name);
        File::open(&path)
            .map(BufReader::new)
            .map_err(|source| ReportError::Missing {
                dir: dir.to_path_buf(),
                path,
                source,
            })
    };
    let summary: Summary =
        serde_json::from_reader(open("summary.json")?).map_err(|source| ReportError::Summary {
            path: dir.join("summary.json"),
            source,
        })?;
    let io_error = |what: &'static str| {
        move |source| ReportError::Io {
            what,
            dir: dir.to_path_buf(),
            source,
        }
    };
    let stacks = Stacks::read(open("stacks.jsonl")?).map_err(io_error("reading stacks.jsonl"))?;
    let data = FigureData::of_run_files(open("events.jsonl")?, &stacks, &summary)
        .map_err(io_error("reading events.jsonl"))?;
    crate::output::reports::write(dir, &summary, &data).map_err(io_error("writing the report"))?;
    Ok(summary)
}
