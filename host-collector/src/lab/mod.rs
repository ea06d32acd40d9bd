//! One `guestscope lab` run: validate inputs, boot the guest, receive its stream,
//! write the outputs. Every file written is complete and parseable, whatever way
//! the run ends. [`run`] drives it, in the order of its files:
//!
//! - `options.rs`: what the run is asked to do ([`LabOptions`]);
//! - `validate.rs`: every check that can come before a boot ([`Validated`]);
//! - `plan.rs`: the agent's plan (workloads, probes, stops);
//! - `boot.rs`: one boot of the guest, from run directory to shutdown ([`Collected`]);
//! - `holds_thread.rs`: the gdbstub threads that hold the VM while a workload runs;
//! - `boot_time.rs`: the boot-time boots;
//! - `cr3.rs`: the CR3 experiment's two boots;
//! - `after_boots.rs`: those boots after the traced run, a few at a time;
//! - `finish.rs`: the analysis assembled into the summary;
//! - `outputs.rs`: the files written.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guest_kernel::read_expr::ReadExpr;
use guestscope_common::event::ProbeKind;
use guestscope_common::plan::{
    BUILTIN_WORKLOAD_DIR, RunPlan, USER_WORKLOAD_DIR, WorkloadOrigin, WorkloadSpec,
};
use guestscope_common::user_probe::UserProbe;

use crate::experiments;
use crate::experiments::snapshots::{self, SnapshotOptions, SnapshotRun};
use crate::experiments::syscall_cr3::{self, Cr3Options, Cr3Report};
use crate::image;
use crate::inputs::{self, InputError, UserWorkload};
use crate::output::lines::WholeLines;
use crate::output::{atomic, summary};
use crate::qemu::accel::{self, Accel};
use crate::qemu::child::ChildGuard;
use crate::qemu::command::QemuConfig;
use crate::qemu::serial::{self, SerialState};
use crate::qemu::vhost;
use crate::run_end::RunEnd;
use crate::session::Session;
use crate::stream::listener::{ListenError, PortListener};
use crate::stream::receive::{self, ClockExchange, LinkFault, LinkReport, ReceiveOptions};
pub use crate::stream::receive::{Alive, Stop};
use crate::timeline::clock::{self, Timeline};
use crate::timeline::holds::Holds;
use guest_kernel::btf::TaskOffsets;
use qemu_gdb_client::GdbEndpoint;

mod after_boots;
mod boot;
mod boot_time;
mod cr3;
mod dry_run;
mod finish;
mod holds_thread;
mod options;
mod outputs;
pub mod own_questions;
mod plan;
pub mod probe_fetch;
pub mod question_checks;
mod run_info;
mod validate;

pub use self::after_boots::AfterBoots;
use self::after_boots::*;
pub use self::boot::*;
use self::boot_time::*;
use self::cr3::*;
pub use self::dry_run::dry_run;
pub use self::finish::*;
pub(crate) use self::holds_thread::*;
pub use self::options::*;
use self::outputs::*;
pub(crate) use self::plan::*;
use self::run_info::*;
pub use self::validate::*;

/// The guest vsock CID.
pub const GUEST_CID: u32 = 3;
/// The vsock port the agent connects to.
pub const VSOCK_PORT: u32 = 7171;
/// Default [`LabOptions::watchdog`]: thirty missed heartbeats.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(30);
/// Default [`LabOptions::stops_per_site`].
pub const DEFAULT_STOPS_PER_SITE: usize = 5;
/// Default [`LabOptions::workload_timeout`]: a third of the default run timeout, so a
/// hung workload leaves time for the ones after it.
pub const DEFAULT_WORKLOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// The built-in workload the traced run's gdbstub snapshots are taken of (it calls
/// [`experiments::snapshots::SNAPSHOT_SYMBOL`] on every open).
pub const SNAPSHOT_WORKLOAD: &str = "fopen";
/// The gdbstub's Unix socket, in the run's private (0700) directory.
const GDB_SOCKET: &str = "gdb.sock";
/// How long the [`SNAPSHOT_WORKLOAD`] sleeps before its loop when snapshots are taken.
const SNAPSHOT_START_DELAY_MS: u64 = 500;
/// Console lines kept in the outcome of a run that ended early (the panic text, or the
/// last lines before a hang).
const CONSOLE_LINES: usize = 60;

/// The `map_err` for an I/O step of setting up a run: `what` it was doing.
pub(crate) fn io_step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// A run that could not start (nothing was collected).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A file or directory of the run could not be made or written (the run
    /// directory, its initramfs, `events.jsonl`, the serial log), or a program could
    /// not start.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// `vhost-device-vsock` could not start.
    #[error(transparent)]
    Vhost(#[from] vhost::VhostError),
    /// The agent's Unix socket could not be listened on, or no agent came.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The host's own vsock (`attach --cid`) could not be listened on or accepted.
    #[error("{what} on vsock port {port}: {source} (is vhost_vsock loaded?)")]
    HostVsock {
        /// Listening or accepting.
        what: &'static str,
        /// The port.
        port: u32,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A connection from a guest other than the one attached to.
    #[error("refused a connection from CID {got} (expected {expected})")]
    WrongCid {
        /// The CID that connected.
        got: u32,
        /// The CID expected.
        expected: u32,
    },
    /// The guest sent no probe list (its boot ended as `outcome`).
    #[error("the guest sent no probe list ({outcome}; serial log: {})", .serial_log.display())]
    NoProbeList {
        /// How the boot ended.
        outcome: RunEnd,
        /// Its console.
        serial_log: PathBuf,
    },
    /// The guest's probe list, or the run's plan, is not the JSON it should be.
    #[error("{what}: {source}")]
    Json {
        /// What was being read or written.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The outputs could not be written; `events.jsonl` keeps what it says.
    #[error("writing outputs in {}: {source}{kept}", .dir.display())]
    Outputs {
        /// The output directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
        /// What `events.jsonl` keeps (empty if unknown).
        kept: String,
    },
    /// Probes the user named that the guest kernel cannot attach (no workload ran).
    #[error("{}", .0.join("; "))]
    Probes(Vec<String>),
}

/// What a run produced.
#[derive(Debug)]
pub struct LabOutcome {
    /// The summary written to `summary.json`.
    pub summary: summary::Summary,
    /// The output directory.
    pub out_dir: PathBuf,
}

/// The workloads guestscope runs by default: (name, program, args). The
/// random-number readers go first, while the kernel's CRNG may still be
/// initializing, so the run shows how each source behaves before and after.
pub const BUILTIN_WORKLOADS: [(&str, &str, &[&str]); 7] = [
    (
        "getrandom-before",
        "random",
        &["--getrandom-nonblock", "--reads", "20", "--bytes", "32"],
    ),
    (
        "urandom",
        "random",
        &[
            "--device",
            "/dev/urandom",
            "--reads",
            "200",
            "--bytes",
            "512",
        ],
    ),
    (
        "random",
        "random",
        &[
            "--device",
            "/dev/random",
            "--reads",
            "200",
            "--bytes",
            "512",
        ],
    ),
    (
        "getrandom-after",
        "random",
        &["--getrandom-nonblock", "--reads", "20", "--bytes", "32"],
    ),
    ("cpuinfo", "cpuinfo", &[]),
    ("fopen", "fopen", &[]),
    ("malloc", "malloc", &[]),
];

/// Builtin workloads whose output feeds the /dev/random experiment.
const RANDOM_WORKLOADS: [&str; 4] = ["getrandom-before", "urandom", "random", "getrandom-after"];

/// Runs the lab: the traced run, then the boot-time and CR3 boots (if asked), then
/// the analysis and every output. Input problems are returned as [`LabError`] before
/// anything starts; problems during the run end it early but still write every
/// output.
pub fn run(o: &LabOptions) -> Result<LabOutcome, LabError> {
    let v = validate(o)?;
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (o.progress)("tracing the workloads");
    let events_path = o.out_dir.join("events.jsonl");
    let events_file = File::create(&events_path).map_err(io_step("creating events.jsonl"))?;
    let stacks_path = o.out_dir.join("stacks.jsonl");
    let stacks_file = File::create(&stacks_path).map_err(io_step("creating stacks.jsonl"))?;
    let traced_plan = plan(o, &v);
    let files = StreamFiles {
        events: Box::new(WholeLines::new(events_file)),
        stacks: Some(Box::new(WholeLines::new(stacks_file))),
    };
    let mut c = boot_and_collect(
        o,
        &v,
        &traced_plan,
        files,
        &o.out_dir.join("serial.log"),
        &Mode::Full,
    )?;
    own_questions::cache_probe_list(o, &c.session);
    let refused = own_questions::refused_user_probes(&c.session);
    if !refused.is_empty() {
        return Err(LabError::Probes(refused));
    }
    // The boot-time boots come after the traced run, so a probe the kernel refuses
    // is reported after one boot, not six.
    let after = after_boots(o, &v, &c)?;
    if c.outcome.how != RunEnd::Interrupted
        && let Some(stop) = Stop::interrupted()
    {
        // The traced run had ended; what came after it (the CR3 boots) was cut short.
        let before = std::mem::replace(&mut c.outcome.how, stop.how);
        c.outcome.detail = Some(format!(
            "{} after the traced run had ended ({before})",
            stop.detail
        ));
    }
    (o.progress)("analyzing");
    let run = run_info(o, &v, &c, started_unix_s, started.elapsed().as_secs_f64());
    let summary =
        finish(&o.out_dir, &mut c, run, after).map_err(|e| outputs_error(&o.out_dir, &e))?;
    Ok(LabOutcome {
        summary,
        out_dir: o.out_dir.clone(),
    })
}
