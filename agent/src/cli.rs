//! Command-line options.

use std::path::PathBuf;

use clap::Parser;
use guestscope_common::plan::PLAN_PATH;

/// `guestscope-agent`: loads guestscope's probes in the guest, runs the plan's workloads
/// under them and streams everything to the host.
#[derive(Debug, Parser)]
#[command(name = "guestscope-agent", version, about)]
pub struct Args {
    /// The run plan (JSON, `guestscope_common::plan::RunPlan`).
    #[arg(long, value_name = "FILE", default_value = PLAN_PATH)]
    pub plan: PathBuf,

    /// Write the stream to this file instead of connecting to the host over vsock.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}
