//! `guestscope-agent`: the guest side of guestscope.
//!
//! It loads the eBPF probes, runs the plan's workloads one after another with their
//! pids in the kernel filter, and streams everything (probe status, kallsyms, events,
//! stacks, workload results, guest facts, totals) to the host as framed records.
//!
//! Modules, one concern each:
//! - [`cli`]: command-line options.
//! - [`plan`]: reading and checking the run plan.
//! - [`transport`]: the stream's destination (vsock to the host, or a file).
//! - [`packet_size`]: writes small enough that every vsock packet is one buffer.
//! - [`link`]: the connection to the host that survives drops: spool, acks, resends.
//! - [`stream`]: record framing and sequence numbers.
//! - [`probes`]: loading the eBPF object, attaching its programs.
//! - [`probe_links`]: each built-in program loaded once, attached and detached.
//! - [`probe_error`]: why a probe could not be loaded or attached, as a bounded note.
//! - [`memory_use`]: the agent's own memory once its probes are loaded.
//! - [`tracer`]: the pid filter and the ring-buffer → records pump.
//! - [`ringbuf`]: decoding ring-buffer records.
//! - [`staging`]: writing out the cached hits the probes staged on each CPU.
//! - [`batch`]: grouping events into `Events` records.
//! - [`stacks`]: an id per distinct kernel stack, each stack sent once, before its first use.
//! - [`counters`]: summing the probes' per-CPU counters.
//! - [`mapped_array`]: an eBPF array mapped into the agent's memory.
//! - [`traced_set`]: the pid filter, one byte per process, set and cleared in place.
//! - [`tally_map`]: the probes' tallies mapped into the agent's memory.
//! - [`program_stats`]: the kernel's run counts and times of the eBPF programs.
//! - [`spawn`]: starting a workload held at a gate until it is traced.
//! - [`workloads`]: running one workload under the probes.
//! - [`tracing_mode`]: a workload's own tracing (other probes, none, an ftrace kprobe)
//!   and its report.
//! - [`ftrace`]: ftrace kprobe events through tracefs.
//! - [`artifacts`]: files captured in the guest (kallsyms, dmesg, pci, ...).
//! - [`session`]: one run, in the order the host expects.
//! - [`clock`]: the guest's monotonic clock.
//! - [`failure_run`]: a repeated failure logged once per run of them.
#![deny(missing_docs)]

pub mod artifacts;
pub mod batch;
pub mod btf_scan;
pub mod cli;
pub mod clock;
pub mod comm_offset;
pub mod counters;
pub mod deadline;
pub mod failure_run;
pub mod ftrace;
pub mod gather;
pub mod link;
pub mod mapped_array;
pub mod memory_use;
pub mod packet_size;
pub mod plan;
pub mod probe_error;
pub mod probe_links;
pub mod probes;
pub mod program_stats;
pub mod resume;
pub mod ringbuf;
pub mod session;
pub mod spawn;
#[cfg(test)]
mod stack_reads;
pub mod stacks;
pub mod staging;
pub mod stream;
pub mod synthetic;
pub mod tallies;
pub mod tally_map;
pub mod traced_set;
pub mod tracer;
pub mod tracing_mode;
pub mod transport;
pub mod user_probes;
pub mod workloads;

use std::{io::Write as _, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Parser as _;
use guestscope_common::plan::HOST_CID;
use tracing_subscriber::EnvFilter;

use crate::{
    cli::Args,
    link::{Link, LinkConfig, VsockConnector},
    stream::Stream,
};

/// A connection whose oldest unacknowledged record waits this long is taken for dead.
/// The collector acknowledges at least every 100 ms while records wait, so this is a
/// dead connection (vhost-device-vsock does not always pass the host's close on).
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait, after the final record, for the host to acknowledge everything.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {
            println!("guestscope-agent: done");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("guestscope-agent: error: {}", probes::chain(e.as_ref()));
            println!("guestscope-agent: failed");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let agent_start_ns = clock::monotonic_ns();
    let plan = plan::load(&args.plan)?;
    tracing::info!(
        workloads = plan.workloads.len(),
        "plan loaded from {}",
        args.plan.display()
    );
    let (summary, bytes) = match &args.output {
        Some(path) => {
            let mut stream = Stream::new(transport::create_file(path)?);
            let summary = session::run(&plan, &mut stream, agent_start_ns, None)?;
            let bytes = stream.bytes();
            stream.into_inner().flush().context("flushing the stream")?;
            (summary, bytes)
        }
        None => {
            let port = plan.vsock_port;
            let conn = transport::connect_vsock(HOST_CID, port, transport::CONNECT_TIMEOUT)?;
            tracing::info!("connected to vsock CID {HOST_CID} port {port}");
            let config = LinkConfig {
                agent_pid: std::process::id(),
                agent_start_ns,
                spool_bytes: plan.spool_bytes.unwrap_or(link::DEFAULT_SPOOL_BYTES),
                ack_timeout: ACK_TIMEOUT,
                secret: plan.secret.clone().unwrap_or_default(),
            };
            let conn = packet_size::SmallWrites(gather::GatherStream(conn));
            let link = Link::new(
                VsockConnector {
                    cid: HOST_CID,
                    port,
                },
                conn,
                config,
            )
            .context("setting up the connection to the host")?;
            let mut stream = Stream::new(link);
            let summary = session::run(
                &plan,
                &mut stream,
                agent_start_ns,
                Some(std::path::Path::new(resume::STATE_DIR)),
            )?;
            let bytes = stream.bytes();
            let mut link = stream.into_inner();
            link.finish(FINISH_TIMEOUT)?;
            let s = link.stats();
            tracing::info!(
                reconnects = s.reconnects,
                resent = s.records_resent,
                spool_dropped = s.spool_dropped_records,
                spool_peak_bytes = s.spool_peak_bytes,
                "every record acknowledged by the host"
            );
            (summary, bytes)
        }
    };
    tracing::info!(
        probes_attached = summary.attached,
        workloads = summary.workloads,
        failed_workloads = summary.failed_workloads,
        events = summary.events,
        records = summary.records,
        bytes,
        "run complete"
    );
    Ok(())
}

/// Logs go to stderr (the serial console); `GUESTSCOPE_LOG` sets the filter
/// (default `info`).
fn init_logging() {
    let filter =
        EnvFilter::try_from_env("GUESTSCOPE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}
