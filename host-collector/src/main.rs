//! The `guestscope` binary.

use std::process::ExitCode;

use clap::Parser;
use guestscope::cli::{Cli, Command};
use guestscope::lab;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Lab(args) => match lab::run(&args.into()) {
            Ok(out) => {
                let o = &out.summary.run.outcome;
                let events = out.summary.stream.events_received;
                println!(
                    "guestscope: {} events from {} workloads ({:.1} s, {}); report: {}",
                    events,
                    out.summary.workloads.len(),
                    out.summary.run.wall_s,
                    out.summary.run.accel,
                    out.out_dir.join("report.md").display()
                );
                if o.complete {
                    ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "guestscope: run incomplete: {}{} (everything received was written)",
                        o.how,
                        o.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
                    );
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("guestscope: error: {e}");
                ExitCode::from(2)
            }
        },
    }
}
