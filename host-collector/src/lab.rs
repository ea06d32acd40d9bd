//! One `guestscope lab` run: validate inputs, boot the guest, receive its stream,
//! write the outputs. Every file written is complete and parseable, whatever way
//! the run ends.

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
use crate::output::html::Figure;
use crate::output::lines::WholeLines;
use crate::output::{atomic, html, markdown, plots, summary};
use crate::own_questions;
use crate::qemu::accel::{self, Accel};
use crate::qemu::child::ChildGuard;
use crate::qemu::command::QemuConfig;
use crate::qemu::serial::{self, SerialState};
use crate::qemu::vhost;
use crate::run_end::RunEnd;
use crate::session::{self, Session};
use crate::stream::listener::{ListenError, PortListener};
use crate::stream::receive::{self, ClockExchange, LinkFault, LinkReport, ReceiveOptions};
pub use crate::stream::receive::{Alive, Stop};
use crate::timeline::clock::{self, Timeline};
use crate::timeline::holds::Holds;
use guest_kernel::btf::TaskOffsets;
use qemu_gdb_client::GdbEndpoint;

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

/// Options of one lab run (validated by [`run`]).
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Kernel image.
    pub kernel: PathBuf,
    /// Base initramfs with the agent.
    pub initrd: PathBuf,
    /// Output directory.
    pub out_dir: PathBuf,
    /// `--workload` specs (`PATH [ARGS...]`).
    pub workloads: Vec<String>,
    /// Whether to run guestscope's own workloads.
    pub builtin_workloads: bool,
    /// Built-in probe names; empty = all.
    pub probes: Vec<String>,
    /// Probes the user names (`--probe kprobe:FUNC`, `kretprobe:FUNC`, globs).
    pub user_probes: Vec<String>,
    /// Functions to stop at through the gdbstub while each workload runs
    /// (`--snapshot-at`, at most [`experiments::stops::MAX_SITES`]); they replace the
    /// built-in `alloc_fd` snapshots.
    pub stop_at: Vec<String>,
    /// Expressions read at every stop (`--read`, [`guest_kernel::read_expr`]).
    pub reads: Vec<String>,
    /// Stops kept per site and workload (`--snapshots`).
    pub stops_per_site: usize,
    /// Keep the stops of tasks with this `comm` instead of the workload's own
    /// (`--snapshot-comm`).
    pub stop_comm: Option<String>,
    /// Where the kernels' probe lists are cached ([`crate::probe_catalog`]); `None`:
    /// `$XDG_CACHE_HOME/guestscope/probes`.
    pub probe_cache: Option<PathBuf>,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// vCPUs.
    pub cpus: u32,
    /// QEMU binary.
    pub qemu: String,
    /// vhost-device-vsock binary.
    pub vhost_device_vsock: String,
    /// Extra kernel command-line arguments.
    pub append: String,
    /// gdbstub port (None: pick a free one).
    pub gdb_port: Option<u16>,
    /// Longest wait for the agent to connect.
    pub boot_timeout: Duration,
    /// Longest time for the whole run.
    pub run_timeout: Duration,
    /// Force an accelerator instead of detecting.
    pub accel: Option<Accel>,
    /// Extra boots for the boot-time experiment (0 = none).
    pub boots: u32,
    /// Extra QEMU arguments (e.g. a machine profile's devices).
    pub qemu_extra: Vec<String>,
    /// Run the gdbstub CR3 experiment (two extra boots: PTI on and off).
    pub cr3: bool,
    /// Take gdbstub snapshots of the [`SNAPSHOT_WORKLOAD`] in the traced run.
    pub snapshots: bool,
    /// Longest silence of the agent's stream once it is connected (it sends a heartbeat
    /// every second) before the guest is taken for hung and stopped; `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// Bound of the agent's spool of unacknowledged records, bytes (None: its default).
    pub spool_bytes: Option<u64>,
    /// Faults to inject into the agent's connection (tests of the link's recovery).
    pub link_faults: Vec<LinkFault>,
    /// Size of the probes' ring buffer in bytes (None: the built-in size).
    pub events_bytes: Option<u32>,
    /// The user's root file system image (`--rootfs`): the agent runs chrooted in it
    /// (see [`crate::rootfs`]).
    pub rootfs: Option<PathBuf>,
    /// A program of the host and its arguments (`guestscope lab -- CMD ARGS`), run in
    /// the guest from the host's files (see [`crate::host_program`]); empty: none.
    pub command: Vec<String>,
    /// Run the workloads as root (`--workload-user root`) instead of the unprivileged
    /// user [`guestscope_common::plan::UNPRIVILEGED_ID`].
    pub workloads_as_root: bool,
    /// Longest run of one workload (`--workload-timeout`): past it the agent ends that
    /// workload alone (SIGTERM, then SIGKILL) and goes on; `None`: no bound but the run's.
    pub workload_timeout: Option<Duration>,
    /// Called with a short description as each step starts.
    pub progress: fn(&str),
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            out_dir: PathBuf::from("guestscope-out"),
            workloads: Vec::new(),
            builtin_workloads: true,
            probes: Vec::new(),
            user_probes: Vec::new(),
            stop_at: Vec::new(),
            reads: Vec::new(),
            stops_per_site: DEFAULT_STOPS_PER_SITE,
            stop_comm: None,
            probe_cache: None,
            memory_mb: 1024,
            cpus: 1,
            qemu: "qemu-system-x86_64".into(),
            vhost_device_vsock: "vhost-device-vsock".into(),
            append: String::new(),
            gdb_port: None,
            workloads_as_root: false,
            workload_timeout: Some(DEFAULT_WORKLOAD_TIMEOUT),
            boot_timeout: Duration::from_secs(180),
            run_timeout: Duration::from_secs(900),
            accel: None,
            boots: 0,
            qemu_extra: Vec::new(),
            cr3: false,
            snapshots: false,
            watchdog: Some(DEFAULT_WATCHDOG),
            spool_bytes: None,
            link_faults: Vec::new(),
            events_bytes: None,
            rootfs: None,
            command: Vec::new(),
            progress: |_| {},
        }
    }
}

/// A run that could not start (nothing was collected).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Bad input.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Setting up the run failed.
    #[error("{0}")]
    Setup(String),
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

/// Inputs after validation.
pub struct Validated {
    user: Vec<UserWorkload>,
    pub(crate) reads: Vec<ReadExpr>,
    probes: Vec<String>,
    qemu: PathBuf,
    vhost: PathBuf,
    gdb_port: Option<u16>,
    accel: accel::AccelChoice,
    append: String,
    rootfs: Option<crate::rootfs::Prepared>,
    host: Option<crate::host_program::HostProgram>,
}

pub(crate) fn validate(o: &LabOptions) -> Result<Validated, InputError> {
    inputs::check_kernel(&o.kernel)?;
    inputs::check_initrd(&o.initrd)?;
    let user = o
        .workloads
        .iter()
        .map(|spec| inputs::check_workload(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let builtin: Vec<&str> = if o.builtin_workloads {
        BUILTIN_WORKLOADS.iter().map(|(n, _, _)| *n).collect()
    } else {
        Vec::new()
    };
    let user = inputs::name_workloads(user, &builtin)?;
    for p in &o.probes {
        if ProbeKind::from_name(p).is_none() {
            let known: Vec<&str> = ProbeKind::BUILTIN.iter().map(|k| k.name()).collect();
            return Err(InputError::UnknownProbe(p.clone(), known.join(", ")));
        }
    }
    let user_probes = o
        .user_probes
        .iter()
        .map(|p| p.parse::<UserProbe>().map_err(InputError::UserProbe))
        .collect::<Result<Vec<_>, _>>()?;
    // A kernel seen before (`guestscope probes`, or an earlier --probe run) has its
    // probe list cached: a name it does not offer is refused before any boot.
    if let Some(list) = (!user_probes.is_empty())
        .then(|| crate::probe_catalog::cached(o.probe_cache.as_deref(), &o.kernel))
        .flatten()
    {
        let refused: Vec<String> = user_probes
            .iter()
            .filter_map(|p| list.resolve(p).err())
            .collect();
        if !refused.is_empty() {
            return Err(InputError::ProbesRefused(refused.join("; ")));
        }
    }
    let host = match o.command.as_slice() {
        [] => None,
        [program, ..] if o.rootfs.is_some() => {
            return Err(crate::host_program::HostProgramError::WithRootfs(program.clone()).into());
        }
        command => Some(crate::host_program::resolve(
            command,
            None,
            std::env::var_os("PATH").as_deref(),
        )?),
    };
    let reads = own_questions::check_stops(o)?;
    if let Some(bytes) = o.events_bytes {
        inputs::check_events_bytes(bytes)?;
    }
    if let Some(port) = o.gdb_port {
        inputs::check_port_free(port)?;
    }
    let qemu = inputs::find_program(&o.qemu)?;
    let vhost = inputs::find_program(&o.vhost_device_vsock)?;
    inputs::check_out_dir(&o.out_dir)?;
    let rootfs = match &o.rootfs {
        Some(image) => {
            let prepared = crate::rootfs::prepare(image, &o.kernel, &o.initrd)?;
            (o.progress)(&format!("root file system: {}", prepared.description));
            Some(prepared)
        }
        None => None,
    };
    Ok(Validated {
        rootfs,
        host,
        user,
        reads,
        probes: o.probes.clone(),
        qemu,
        vhost,
        gdb_port: o.gdb_port,
        accel: accel::detect(),
        append: format!("console=ttyS0 panic=-1 {}", o.append)
            .trim()
            .to_string(),
    })
}

pub(crate) fn plan(o: &LabOptions, v: &Validated) -> RunPlan {
    let mut workloads = Vec::new();
    if o.builtin_workloads {
        for (name, program, args) in BUILTIN_WORKLOADS {
            let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            if own_questions::builtin_snapshots(o) && name == SNAPSHOT_WORKLOAD {
                // Time for the host to see the pid and set its breakpoint (outside the
                // workload's timed loop).
                args.extend([
                    "--start-delay-ms".to_string(),
                    SNAPSHOT_START_DELAY_MS.to_string(),
                ]);
            }
            workloads.push(WorkloadSpec {
                name: name.into(),
                path: format!("{BUILTIN_WORKLOAD_DIR}/{program}"),
                args,
                origin: WorkloadOrigin::Builtin,
                tracing: Default::default(),
                // The host holds the VM while it runs.
                quiet_link: (own_questions::builtin_snapshots(o) && name == SNAPSHOT_WORKLOAD)
                    || !o.stop_at.is_empty(),
                as_root: o.workloads_as_root,
                timeout_ms: timeout_ms(o),
                hold_before_exec_ms: own_questions::hold_ms(o),
                cwd: None,
            });
        }
    }
    for u in &v.user {
        workloads.push(WorkloadSpec {
            name: u.name.clone(),
            path: format!("{USER_WORKLOAD_DIR}/{}", u.guest_file),
            args: u.args.clone(),
            origin: WorkloadOrigin::User,
            tracing: Default::default(),
            // The host holds the VM at the stops while it runs.
            quiet_link: !o.stop_at.is_empty(),
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: own_questions::hold_ms(o),
            cwd: None,
        });
    }
    if let Some(h) = &v.host {
        let taken = |n: &str| workloads.iter().any(|w| w.name == n);
        let name = (1..)
            .map(|i| match i {
                1 => h.name.clone(),
                i => format!("{}#{i}", h.name),
            })
            .find(|n| !taken(n))
            .expect("a free name");
        workloads.push(WorkloadSpec {
            name,
            path: h.path.display().to_string(),
            args: h.args.clone(),
            origin: WorkloadOrigin::User,
            tracing: Default::default(),
            quiet_link: !o.stop_at.is_empty(),
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: own_questions::hold_ms(o),
            cwd: Some(h.cwd.display().to_string()),
        });
    }
    RunPlan {
        probes: v.probes.clone(),
        user_probes: o.user_probes.clone(),
        // The agent reads the list to attach them anyway; the host caches it.
        send_probe_list: !o.user_probes.is_empty() || !o.stop_at.is_empty(),
        stop_functions: o.stop_at.clone(),
        events_bytes: o.events_bytes,
        spool_bytes: o.spool_bytes,
        ..RunPlan::new(VSOCK_PORT, workloads)
    }
}

/// The plan's per-workload bound, from [`LabOptions::workload_timeout`].
fn timeout_ms(o: &LabOptions) -> Option<u64> {
    o.workload_timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// How much of a run to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Everything the plan says.
    Full,
    /// Boot until the agent's hello, then stop (boot-time measurements).
    BootOnly,
    /// Everything the plan says, with the gdbstub CR3 experiment run against the
    /// first workload while it runs.
    Cr3 {
        /// QEMU `-cpu` model (None: QEMU's default).
        cpu_model: Option<String>,
        /// task_struct offsets from the guest's BTF.
        offsets: TaskOffsets,
    },
}

/// What one boot of the guest produced.
pub struct Collected {
    /// The applied stream.
    pub session: Session<Box<dyn io::Write + Send>>,
    /// Serial-console milestones.
    pub marks: serial::BootMarks,
    /// How it ended.
    pub outcome: summary::Outcome,
    /// Bytes received on the stream.
    pub bytes: u64,
    /// Decode error that ended the stream, if any.
    pub decode_error: Option<String>,
    /// The QEMU command line.
    pub qemu_command: String,
    /// Accelerator used.
    pub accel: Accel,
    /// Host seconds since QEMU's launch when the agent's hello arrived.
    pub hello_host_s: Option<f64>,
    /// The CR3 experiment's outcome, in [`Mode::Cr3`].
    pub cr3: Option<Result<Cr3Report, String>>,
    /// The gdbstub snapshots' outcome (None: not taken).
    pub snapshots: Option<Result<SnapshotRun, String>>,
    /// The agent's connections: outages, refusals.
    pub link: LinkReport,
    /// The clock-sync exchange's round trips.
    pub clock: ClockExchange,
}

/// Boots the guest once with `plan`, collecting its stream until the agent's final
/// record (or its hello, in [`Mode::BootOnly`]). `events` receives `events.jsonl`;
/// the console goes to `serial_log`.
pub fn boot_and_collect(
    o: &LabOptions,
    v: &Validated,
    plan: &RunPlan,
    events: Box<dyn io::Write + Send>,
    serial_log: &Path,
    mode: &Mode,
) -> Result<Collected, LabError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| LabError::Setup(format!("{what}: {e}"));
    // Owner-only: it holds the sockets to the guest (whoever reaches them talks to it).
    let run_dir = tempfile::Builder::new()
        .prefix("guestscope-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| setup("creating a run directory", &e))?;
    // One file per distinct binary: a program run twice is copied once.
    let user: Vec<(String, &Path)> = v
        .user
        .iter()
        .map(|u| (u.guest_file.clone(), u.path.as_path()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let initrd = run_dir.path().join("initrd.cpio");
    let mut rootfs_files = v
        .rootfs
        .as_ref()
        .map(|r| r.layer_files())
        .unwrap_or_default();
    if v.host.is_some() {
        rootfs_files.push(crate::host_program::layer_file());
    }
    // Each boot gets its own secret, in the plan (a root-only file in the guest): only
    // the agent can present it.
    let secret =
        guestscope_common::plan::new_secret().map_err(|e| setup("making the run's secret", &e))?;
    let plan = &RunPlan {
        secret: Some(secret.clone()),
        ..plan.clone()
    };
    image::build_run_initrd_with(&o.initrd, plan, &user, &rootfs_files, &initrd)
        .map_err(|e| setup("writing the run's initramfs", &e))?;

    let (mut vhost_child, backend) = vhost::start(&v.vhost, run_dir.path(), GUEST_CID)
        .map_err(|e| LabError::Setup(e.to_string()))?;
    let uds = match &backend {
        vhost::VsockBackend::VhostUser { uds, .. } => uds.clone(),
        vhost::VsockBackend::Kernel => unreachable!("only the vhost-user backend is started here"),
    };
    let mut listener =
        PortListener::bind(&uds, VSOCK_PORT).map_err(|e| LabError::Setup(e.to_string()))?;

    let gdb = match v.gdb_port {
        Some(port) => GdbEndpoint::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        None => GdbEndpoint::Unix(run_dir.path().join(GDB_SOCKET)),
    };
    let accel = o.accel.unwrap_or(v.accel.accel);
    let qemu_cfg = QemuConfig {
        binary: v.qemu.clone(),
        accel,
        memory_mb: o.memory_mb,
        cpus: o.cpus,
        cpu_model: match mode {
            Mode::Cr3 { cpu_model, .. } => cpu_model.clone(),
            _ => None,
        },
        kernel: o.kernel.clone(),
        initrd: initrd.clone(),
        append: v.append.clone(),
        gdb: Some(gdb.clone()),
        vsock: backend.clone(),
        cid: GUEST_CID,
        extra: o
            .qemu_extra
            .iter()
            .cloned()
            .chain(v.rootfs.iter().flat_map(|r| r.qemu_args()))
            .chain(v.host.iter().flat_map(|_| crate::host_program::qemu_args()))
            .collect(),
    };
    tracing::info!("starting QEMU ({}): {}", accel.as_str(), qemu_cfg.display());
    let serial_state = Arc::new(Mutex::new(SerialState::default()));
    let launched = Instant::now();
    let mut child = qemu_cfg
        .command()
        // Its own process group: a Ctrl-C reaches the collector only, which stops QEMU
        // after taking what the guest sent.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(
            File::create(run_dir.path().join("qemu.stderr"))
                .map_err(|e| setup("qemu stderr", &e))?,
        )
        .spawn()
        .map_err(|e| setup(&format!("starting {}", v.qemu.display()), &e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut qemu = ChildGuard::new("qemu", child);
    let reader = serial::spawn_reader(stdout, serial_state.clone(), launched, serial_log)
        .map_err(|e| setup("writing the serial log", &e))?;

    let mut session = Session::new(events);
    let mut outcome = summary::Outcome::default();
    let mut decode_error = None;
    let mut bytes = 0u64;
    let mut hello_host_s = None;
    let mut link = LinkReport::default();
    let mut clock = ClockExchange::default();
    let mut cr3_thread: Option<std::thread::JoinHandle<Result<Cr3Report, String>>> = None;
    let mut snapshot_thread: Option<Snapshotter> = None;
    let take_snapshots = own_questions::builtin_snapshots(o) && *mode == Mode::Full;
    // The user's stops: one thread per workload, in turn.
    let take_stops = !o.stop_at.is_empty() && *mode == Mode::Full;
    let mut stop_runs: Vec<Result<SnapshotRun, String>> = Vec::new();
    let mut stop_types: Option<Result<Arc<own_questions::GuestTypes>, String>> = None;
    let run_deadline = Instant::now() + o.run_timeout;
    // When the agent's stream last made progress (None until it connects). The gdbstub
    // experiment holds the guest at breakpoints, so it runs without the watchdog.
    let last_progress: std::cell::Cell<Option<Instant>> = std::cell::Cell::new(None);
    let watchdog = if matches!(mode, Mode::Cr3 { .. }) {
        None
    } else {
        o.watchdog
    };

    let qemu_ref = &mut qemu;
    let serial_ref = serial_state.clone();
    let progress = &last_progress;
    let mut alive = move || -> Result<(), Stop> {
        if let Some(stop) = Stop::interrupted() {
            return Err(stop);
        }
        if let Some(f) = serial_ref.lock().expect("serial").marks.fatal.clone() {
            return Err(Stop::new(fatal_how(&f), f));
        }
        if let Ok(Some(status)) = qemu_ref.try_wait() {
            return Err(Stop::new(RunEnd::QemuExited, status.to_string()));
        }
        if Instant::now() > run_deadline {
            return Err(Stop::new(
                RunEnd::RunTimeout,
                format!("the run took longer than {:?}", o.run_timeout),
            ));
        }
        if let (Some(limit), Some(last)) = (watchdog, progress.get())
            && last.elapsed() >= limit
        {
            return Err(Stop::new(
                RunEnd::GuestHung,
                format!(
                    "no record from the agent for {:.0} s (it sends a heartbeat every {} ms): the guest kernel or the agent is stuck",
                    last.elapsed().as_secs_f64(),
                    guestscope_common::wire::HEARTBEAT_MS
                ),
            ));
        }
        Ok(())
    };
    let mut stopped = None;
    let accepted = listener.accept_within(o.boot_timeout, || {
        alive().map_err(|stop| {
            let text = stop.to_string();
            stopped = Some(stop);
            text
        })
    });
    match accepted {
        Ok(stream) => {
            let options = ReceiveOptions {
                stop_at_hello: *mode == Mode::BootOnly,
                faults: o.link_faults.clone(),
                secret: Some(secret.clone()),
                ..ReceiveOptions::default()
            };
            // Set while a gdbstub thread may hold the VM: nothing goes to the guest then.
            let paused = options.replies_paused.clone();
            last_progress.set(Some(Instant::now()));
            let r = receive::receive(
                Box::new(stream),
                &mut listener,
                &mut session,
                &mut alive,
                launched,
                options,
                &mut |session| {
                    last_progress.set(Some(Instant::now()));
                    if let (Mode::Cr3 { offsets, .. }, None) = (mode, &cr3_thread)
                        && let (Some(w), Some(k)) = (session.workloads.last(), &session.kallsyms)
                    {
                        let (pid, k, off) = (w.started.pid, k.clone(), offsets.clone());
                        let addr = gdb.clone();
                        cr3_thread = Some(spawn_holding(&paused, move || {
                            syscall_cr3::run(addr, &k, &off, pid, &Cr3Options::default())
                                .map_err(|e| e.to_string())
                        }));
                    }
                    if take_stops {
                        if let Some(s) = &snapshot_thread {
                            s.note_progress(session);
                        }
                        // The BTF comes before any workload: parse it then, not in a
                        // workload's hold before exec.
                        if stop_types.is_none() {
                            stop_types = own_questions::guest_types(session);
                        }
                        let next = session
                            .workloads
                            .last()
                            .filter(|w| w.exited.is_none())
                            .map(|w| w.started.pid)
                            .filter(|pid| snapshot_thread.as_ref().is_none_or(|s| s.tgid != *pid));
                        if next.is_some() {
                            if let Some(previous) = snapshot_thread.take() {
                                stop_runs.push(previous.join());
                            }
                            snapshot_thread = own_questions::start_stops(
                                session,
                                o,
                                v,
                                gdb.clone(),
                                launched,
                                &paused,
                                stop_types.as_ref(),
                            );
                        }
                        return;
                    }
                    match &snapshot_thread {
                        None if take_snapshots => {
                            snapshot_thread =
                                start_snapshots(session, gdb.clone(), launched, &paused)
                        }
                        Some(s) => s.note_progress(session),
                        None => {}
                    }
                },
            );
            outcome = r.outcome;
            bytes = r.bytes;
            decode_error = r.decode_error;
            hello_host_s = r.hello_host_s;
            link = r.link;
            clock = r.clock;
        }
        Err(ListenError::Abandoned(why)) => match stopped {
            Some(stop) => {
                outcome.how = stop.how;
                outcome.detail = Some(format!("{} (before the agent connected)", stop.detail));
            }
            None => {
                outcome.how = RunEnd::AgentNeverConnected;
                outcome.detail = Some(why);
            }
        },
        Err(e) => {
            outcome.how = RunEnd::AgentNeverConnected;
            outcome.detail = Some(e.to_string());
        }
    }
    drop(alive);
    let cr3 = cr3_thread.map(|t| {
        t.join()
            .unwrap_or_else(|_| Err("the CR3 experiment thread panicked".into()))
    });
    let snapshots = if take_stops {
        if let Some(s) = snapshot_thread {
            stop_runs.push(s.join());
        }
        Some(own_questions::merge_stops(stop_runs))
    } else {
        match snapshot_thread {
            Some(s) => Some(s.join()),
            None if take_snapshots && outcome.complete => {
                Some(Err(snapshots_not_started(&session)))
            }
            None => None,
        }
    };
    // The guest powers itself off after the agent's final record.
    let grace = if outcome.complete && *mode != Mode::BootOnly {
        30
    } else {
        0
    };
    let grace_end = Instant::now() + Duration::from_secs(grace);
    while Instant::now() < grace_end && crate::interrupt::received().is_none() {
        if let Ok(Some(_)) = qemu.wait_timeout(Duration::from_millis(100)) {
            break;
        }
    }
    qemu.kill();
    let _ = reader.join();
    vhost_child.kill();
    let _ = session.flush();
    let serial = serial_state.lock().expect("serial");
    let marks = serial.marks.clone();
    if let Some(f) = &marks.fatal
        && !outcome.complete
        && outcome.how != RunEnd::Interrupted
    {
        // QEMU exiting, or the stream ending, was the panic's consequence.
        outcome.how = fatal_how(f);
        outcome.detail = Some(f.clone());
    }
    if !outcome.complete {
        let lines: Vec<&str> = serial.lines.iter().map(|l| l.text.as_str()).collect();
        outcome.console = console_excerpt(&lines, marks.fatal.as_deref());
    }
    drop(serial);
    Ok(Collected {
        session,
        marks,
        outcome,
        bytes,
        decode_error,
        qemu_command: qemu_cfg.display(),
        accel,
        hello_host_s,
        cr3,
        snapshots,
        link,
        clock,
    })
}

/// Runs `f` on a thread that may hold the VM through the gdbstub: `paused` is set from
/// now until the thread ends, however it ends (nothing is written to the guest
/// meanwhile, see [`ReceiveOptions::replies_paused`]).
pub(crate) fn spawn_holding<T: Send + 'static>(
    paused: &Arc<std::sync::atomic::AtomicBool>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    struct Release(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
    paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let release = Release(paused.clone());
    std::thread::spawn(move || {
        let _release = release;
        f()
    })
}

/// The thread taking the traced run's gdbstub snapshots.
pub(crate) struct Snapshotter {
    /// The process the thread stops.
    pub(crate) tgid: u32,
    /// Set when the process has exited: the breakpoint comes out.
    pub(crate) done: Arc<std::sync::atomic::AtomicBool>,
    /// The thread.
    pub(crate) thread: std::thread::JoinHandle<Result<SnapshotRun, String>>,
}

impl Snapshotter {
    /// Tells the thread when its process has exited.
    pub(crate) fn note_progress<W: io::Write>(&self, session: &Session<W>) {
        if session
            .workloads
            .iter()
            .any(|w| w.started.pid == self.tgid && w.exited.is_some())
        {
            self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits for the thread (the stream has ended: its process is gone).
    pub(crate) fn join(self) -> Result<SnapshotRun, String> {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the snapshot thread panicked".into()))
    }
}

/// Starts the gdbstub snapshots when the [`SNAPSHOT_WORKLOAD`] has just started and
/// the guest's kallsyms and BTF are in.
/// `paused` is set while the thread runs (nothing is written to the guest meanwhile).
fn start_snapshots<W: io::Write>(
    session: &Session<W>,
    gdb: GdbEndpoint,
    launched: Instant,
    paused: &Arc<std::sync::atomic::AtomicBool>,
) -> Option<Snapshotter> {
    let w = session
        .workloads
        .last()
        .filter(|w| w.started.name == SNAPSHOT_WORKLOAD && w.exited.is_none())?;
    let kallsyms = session.kallsyms.clone()?;
    let btf = session
        .artifacts
        .get("btf")
        .filter(|a| a.complete && !a.data.is_empty())?;
    let btf = btf.data.clone();
    let tgid = w.started.pid;
    let addr = gdb;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tracing::debug!(tgid, "starting the gdbstub snapshots");
    let flag = done.clone();
    let thread = spawn_holding(paused, move || {
        let offsets = guest_kernel::btf::task_offsets(&btf)
            .map_err(|e| format!("no task_struct layout from the guest's BTF: {e}"))?;
        snapshots::take(
            addr,
            &kallsyms,
            &offsets,
            tgid,
            launched,
            &flag,
            &SnapshotOptions::default(),
        )
        .map_err(|e| e.to_string())
    });
    Some(Snapshotter { tgid, done, thread })
}

/// Why the snapshots of a finished run were never started.
fn snapshots_not_started<W: io::Write>(session: &Session<W>) -> String {
    if !session
        .workloads
        .iter()
        .any(|w| w.started.name == SNAPSHOT_WORKLOAD)
    {
        format!("no {SNAPSHOT_WORKLOAD} workload in the plan")
    } else if session
        .artifacts
        .get("btf")
        .is_none_or(|a| a.data.is_empty())
    {
        "the guest kernel offers no BTF (/sys/kernel/btf/vmlinux): no task_struct layout to read the pid with".into()
    } else {
        "the guest's kallsyms and BTF had not arrived when the workload started".into()
    }
}

/// The outcome of a run the guest kernel ended with console line `fatal`.
fn fatal_how(fatal: &str) -> RunEnd {
    if fatal.contains("Kernel panic") {
        RunEnd::GuestKernelPanic
    } else {
        RunEnd::GuestKernelFailed
    }
}

/// The console lines that say how a run ended: from a few lines before the fatal line
/// through the panic's end marker (at most [`CONSOLE_LINES`]), or the last lines.
pub fn console_excerpt(lines: &[&str], fatal: Option<&str>) -> Vec<String> {
    let at = fatal.and_then(|f| lines.iter().position(|l| l.trim() == f));
    let range = match at {
        Some(i) => {
            let start = i.saturating_sub(5);
            let end = lines[i..]
                .iter()
                .position(|l| l.contains("---[ end "))
                .map(|k| i + k + 1)
                .unwrap_or(lines.len())
                .min(start + CONSOLE_LINES);
            start..end
        }
        None => lines.len().saturating_sub(CONSOLE_LINES)..lines.len(),
    };
    lines[range].iter().map(|l| l.to_string()).collect()
}

/// Runs the lab: the boot-time boots (if asked), then the full run. Input problems
/// are returned as [`LabError`] before anything starts; problems during the run
/// end it early but still write every output.
pub fn run(o: &LabOptions) -> Result<LabOutcome, LabError> {
    let v = validate(o)?;
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let setup = |what: &str, e: &dyn std::fmt::Display| LabError::Setup(format!("{what}: {e}"));

    (o.progress)("tracing the workloads");
    let events_path = o.out_dir.join("events.jsonl");
    let events_file = File::create(&events_path).map_err(|e| setup("creating events.jsonl", &e))?;
    let traced_plan = plan(o, &v);
    let mut c = boot_and_collect(
        o,
        &v,
        &traced_plan,
        Box::new(WholeLines::new(events_file)),
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
    let mut boots = Vec::new();
    // A traced boot that never reached the agent (a root file system the guest
    // cannot mount, a kernel without vsock) would fail the same way N more times.
    let reached_agent = c.session.hello.is_some();
    if o.boots > 0 && !reached_agent {
        (o.progress)("boot-time boots skipped: the traced boot never reached the agent");
    }
    if o.boots > 0 && reached_agent {
        let boot_plan = RunPlan {
            workloads: Vec::new(),
            user_probes: Vec::new(),
            ..plan(o, &v)
        };
        let logs = o.out_dir.join("boots");
        std::fs::create_dir_all(&logs).map_err(|e| setup("creating boots/", &e))?;
        for i in 0..o.boots {
            if crate::interrupt::received().is_some() {
                break;
            }
            (o.progress)(&format!("boot {}/{}", i + 1, o.boots));
            let c = boot_and_collect(
                o,
                &v,
                &boot_plan,
                Box::new(io::sink()),
                &logs.join(format!("serial-{}.log", i + 1)),
                &Mode::BootOnly,
            )?;
            boots.push(experiments::boot::BootSample::from_run(
                i + 1,
                &c.marks,
                c.session.hello.as_ref(),
                c.hello_host_s,
                &c.outcome,
            ));
        }
    }

    let interrupted = || crate::interrupt::received().is_some();
    let syscall_cr3_runs = if o.cr3 && !interrupted() {
        cr3_boots(o, &v, &c.session)
    } else {
        Vec::new()
    };
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
    let run = summary::RunInfo {
        started_unix_s,
        wall_s: started.elapsed().as_secs_f64(),
        accel: c.accel.as_str().into(),
        accel_reason: if o.accel.is_some() {
            "forced by --accel".into()
        } else {
            v.accel.reason.clone()
        },
        qemu_command: c.qemu_command.clone(),
        kernel: o.kernel.display().to_string(),
        kernel_release: None,
        kernel_cmdline: v.append.clone(),
        cpus: o.cpus,
        memory_mb: o.memory_mb,
        gdb_port: v.gdb_port,
        workload_user: if o.workloads_as_root {
            "root (--workload-user root)".into()
        } else {
            format!("nobody (uid {})", guestscope_common::plan::UNPRIVILEGED_ID)
        },
        workload_timeout_s: o.workload_timeout.map(|t| t.as_secs_f64()),
        host_files_cwd: v.host.as_ref().map(|h| h.cwd.display().to_string()),
        events_ring_bytes: o
            .events_bytes
            .unwrap_or(guestscope_common::maps::EVENTS_BYTES),
        outcome: c.outcome.clone(),
    };
    let summary = finish(&o.out_dir, &mut c, run, boots, syscall_cr3_runs)
        .map_err(|e| outputs_error(&o.out_dir, &e))?;
    Ok(LabOutcome {
        summary,
        out_dir: o.out_dir.clone(),
    })
}

/// The error for outputs that could not be written, saying what `events.jsonl` kept.
pub fn outputs_error(dir: &Path, e: &io::Error) -> LabError {
    let kept =
        std::fs::read(dir.join("events.jsonl")).map(|b| b.iter().filter(|&&c| c == b'\n').count());
    let kept = kept
        .map(|n| format!("; events.jsonl keeps the {n} events written before"))
        .unwrap_or_default();
    LabError::Setup(format!("writing outputs in {}: {e}{kept}", dir.display()))
}

/// Analyzes a collected run, checks the lab's claims and writes every output
/// (`summary.json`, `report.md`, `report.html`, `trace.perfetto-trace`, guest
/// artifacts) to `dir`.
pub fn finish(
    dir: &Path,
    c: &mut Collected,
    mut run: summary::RunInfo,
    boots: Vec<experiments::boot::BootSample>,
    syscall_cr3: Vec<summary::Cr3Run>,
) -> io::Result<summary::Summary> {
    let session = &mut c.session;
    let _ = session.flush();
    run.kernel_release = session.hello.as_ref().map(|h| h.kernel_release.clone());
    let (probes, workloads, losses, mut stream) = summary::collect(session);
    let mut experiments = summary::Experiments {
        boot: experiments::boot::analyze(boots),
        pci: experiments::pci::analyze(
            &session.artifact_text("pci").unwrap_or_default(),
            &session.artifact_text("dmesg").unwrap_or_default(),
        ),
        random: experiments::random::analyze(
            &session
                .workloads
                .iter()
                .filter(|w| RANDOM_WORKLOADS.contains(&w.started.name.as_str()))
                .filter_map(|w| {
                    Some((
                        w.started.name.clone(),
                        w.started.start_ns,
                        w.exited.as_ref()?.output.clone(),
                    ))
                })
                .collect::<Vec<_>>(),
            &session.artifact_text("dmesg").unwrap_or_default(),
            session.artifact_text("entropy_avail").as_deref(),
            c.marks.init_start_kernel_s,
        ),
        syscall_cr3,
        spin_lock: experiments::spinlock::analyze(session),
        page_faults: experiments::faults::analyze(session),
    };
    if let Some(r) = experiments.random.as_mut() {
        experiments::random::annotate_with_stacks(r, session);
    }
    stream.bytes = c.bytes;
    stream.decode_error = c.decode_error.clone();
    stream.link = c.link.clone();
    let mut summary = summary::Summary {
        guestscope_version: env!("CARGO_PKG_VERSION").to_string(),
        run,
        boot: c.marks.clone(),
        stream,
        losses,
        probes,
        user_probes: crate::output::user_probes::collect(session, &workloads),
        workloads,
        experiments,
        kernel: Default::default(),
        skipped: Vec::new(),
        claims: Vec::new(),
        timeline: Default::default(),
        trace: None,
        agent_messages: session
            .agent_logs
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect(),
    };
    let attach: Vec<_> = summary.probes.iter().map(|p| p.attach.clone()).collect();
    let btf = session
        .artifacts
        .get("btf")
        .is_some_and(|a| !a.data.is_empty());
    summary.kernel = experiments::support::kernel_support(&attach, btf, session.kallsyms.as_ref());
    let ran_workloads = summary.workloads.iter().any(|w| w.status.is_some());
    summary.skipped = experiments::support::skipped(&attach, &summary.experiments, ran_workloads);
    summary.claims = experiments::claims::check(&summary);
    let timeline = timeline_of(c, &mut summary.timeline);
    if let (Some(t), Some(sr)) = (&timeline, summary.timeline.snapshots.as_mut())
        && let Some(run) = &sr.run
    {
        match read_event_points(&dir.join("events.jsonl")) {
            Ok(events) => {
                // The built-in snapshots stop where the alloc_fd probe fires; the user's
                // stops where their kprobes do, when they also probe the function.
                let same_call = if run.snapshots.iter().any(|s| !s.site.is_empty()) {
                    ProbeKind::Kprobe.name()
                } else {
                    ProbeKind::AllocFd.name()
                };
                sr.cross_check = Some(snapshots::cross_check(
                    &run.snapshots,
                    &events,
                    t,
                    same_call,
                ))
            }
            Err(e) => sr.error = Some(format!("reading events.jsonl for the cross-check: {e}")),
        }
    }
    let session = &mut c.session;
    // The trace is the largest output: if it cannot be written (a full disk), the
    // summary and the reports still are, and then the error is returned.
    let trace = write_trace(dir, &summary, session, timeline.as_ref());
    if trace.is_err() {
        let _ = std::fs::remove_file(dir.join("trace.perfetto-trace.tmp"));
    }
    let (trace, trace_error) = match trace {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    summary.trace = trace;
    write_outputs(dir, &summary, session)?;
    match trace_error {
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("trace.perfetto-trace: {e}"),
        )),
        None => Ok(summary),
    }
}

/// The two CR3 boots (PTI on, PTI off), each running a system-call-heavy workload
/// under the gdbstub experiment. Needs the guest's BTF from the main run.
fn cr3_boots<W: io::Write>(
    o: &LabOptions,
    v: &Validated,
    main: &Session<W>,
) -> Vec<summary::Cr3Run> {
    let btf = main
        .artifacts
        .get("btf")
        .map(|a| a.data.clone())
        .unwrap_or_default();
    if btf.is_empty() {
        return vec![summary::Cr3Run::skipped(
            "the guest kernel offers no BTF (/sys/kernel/btf/vmlinux): no task_struct layout to read the pid with",
        )];
    }
    let offsets = match guest_kernel::btf::task_offsets(&btf) {
        Ok(off) => off,
        Err(e) => {
            return vec![summary::Cr3Run::skipped(&format!(
                "no task_struct layout from the guest's BTF: {e}"
            ))];
        }
    };
    let plan = RunPlan {
        workloads: vec![WorkloadSpec {
            name: "syscalls".into(),
            path: format!("{BUILTIN_WORKLOAD_DIR}/cpuinfo"),
            args: vec!["--iterations".into(), "3000".into()],
            origin: WorkloadOrigin::Builtin,
            tracing: Default::default(),
            // The CR3 experiment holds the VM at every system call until it finds this
            // workload's.
            quiet_link: true,
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: None,
            cwd: None,
        }],
        ..plan(o, v)
    };
    let mut runs = Vec::new();
    for (label, cpu) in [("PTI on", Some("Haswell-noTSX")), ("PTI off", None)] {
        if crate::interrupt::received().is_some() {
            break;
        }
        (o.progress)(&format!("CR3 at system-call entry: {label}"));
        let log = o.out_dir.join(format!(
            "serial-cr3-{}.log",
            if cpu.is_some() { "pti" } else { "nopti" }
        ));
        let mode = Mode::Cr3 {
            cpu_model: cpu.map(str::to_string),
            offsets: offsets.clone(),
        };
        let run = match boot_and_collect(o, v, &plan, Box::new(io::sink()), &log, &mode) {
            Ok(c) => summary::Cr3Run {
                label: label.into(),
                cpu_model: cpu.unwrap_or("QEMU default (qemu64)").into(),
                meltdown: c
                    .session
                    .artifact_text("meltdown")
                    .map(|m| m.trim().to_string()),
                report: c.cr3.as_ref().and_then(|r| r.as_ref().ok()).cloned(),
                error: match c.cr3 {
                    Some(Err(e)) => Some(e),
                    None => Some(format!("the workload never started ({})", c.outcome.how)),
                    Some(Ok(_)) => None,
                },
            },
            Err(e) => summary::Cr3Run {
                label: label.into(),
                cpu_model: cpu.unwrap_or("default").into(),
                meltdown: None,
                report: None,
                error: Some(e.to_string()),
            },
        };
        runs.push(run);
    }
    runs
}

/// Guest time onto host time for this run: the clock-sync round trips fitted in
/// running time (the gdbstub's holds taken out), or, with no round trip answered, the
/// agent's hello alone. Fills `report` with what was measured.
fn timeline_of(c: &Collected, report: &mut summary::TimelineReport) -> Option<Timeline> {
    report.probes = c.clock.counts.clone();
    report.samples = c.clock.samples.clone();
    let run = c.snapshots.as_ref().and_then(|r| r.as_ref().ok());
    let host_holds = run.map(|r| r.holds.clone()).unwrap_or_default();
    report.snapshots = c.snapshots.as_ref().map(|r| match r {
        Ok(run) => summary::SnapshotsReport {
            run: Some(run.clone()),
            ..Default::default()
        },
        Err(e) => summary::SnapshotsReport {
            error: Some(e.clone()),
            ..Default::default()
        },
    });
    let holds = Holds::with_slack(host_holds);
    report.holds = holds.len();
    report.held_ms = holds.total_ns() as f64 / 1e6;
    if let Some(map) = clock::fit(&c.clock.samples, &holds) {
        report.fit = Some(map);
        if !holds.is_empty() {
            report.error_bound_ignoring_holds_ns =
                clock::fit(&c.clock.samples, &Holds::default()).map(|m| m.error_bound_ns);
        }
        report.method = format!(
            "{} clock-sync round trips over vsock (host probe, guest CLOCK_MONOTONIC echo), one offset-and-drift line \
             through every round trip's window{}",
            map.samples,
            if holds.is_empty() {
                String::new()
            } else {
                format!(
                    ", with the {} gdbstub holds taken out (as the host saw them; the {:.1} ms their single steps took may have \
                     run the guest's clock, so each may have been that much shorter)",
                    holds.len(),
                    holds.slack_total_ns() as f64 / 1e6
                )
            }
        );
        return Some(Timeline { map, holds });
    }
    let (hello, host_s) = (c.session.hello.as_ref()?, c.hello_host_s?);
    report.method = "no clock-sync round trip was answered: one sample, the agent's hello (guest stamp against its arrival), \
                     error within the vsock transit time"
        .into();
    let map = clock::ClockMap {
        offset_ns: host_s * 1e9 - hello.monotonic_ns as f64,
        drift: 0.0,
        guest_ref_ns: hello.monotonic_ns,
        error_bound_ns: f64::NAN,
        consistent: true,
        samples: 0,
        best_rtt_ns: 0,
        span_ns: 0,
    };
    Some(Timeline { map, holds })
}

/// The events of `events.jsonl` as the snapshot cross-check needs them.
fn read_event_points(path: &Path) -> io::Result<Vec<snapshots::EventPoint>> {
    let mut out = Vec::new();
    for l in crate::event_line::read_events(io::BufReader::new(File::open(path)?)) {
        let l = l?;
        // A user probe's events (`kprobe:FUNCTION`) count as their kind.
        let Some(kind) = ProbeKind::of_event(&l.probe) else {
            continue;
        };
        out.push(snapshots::EventPoint {
            ts_ns: l.ts_ns,
            cpu: l.cpu,
            tid: l.tid,
            pid: l.pid,
            probe: kind.name(),
        });
    }
    Ok(out)
}

/// Writes `trace.perfetto-trace`: boot milestones (host clock), workloads and every
/// probe event (guest clock, mapped onto the host axis by `timeline`), and the
/// gdbstub's holds and snapshots (host clock).
fn write_trace<W: io::Write>(
    dir: &Path,
    s: &summary::Summary,
    session: &Session<W>,
    timeline: Option<&Timeline>,
) -> io::Result<Option<summary::TraceInfo>> {
    let Some(timeline) = timeline else {
        return Ok(None);
    };
    let to_trace = |guest_ns: u64| timeline.to_host(guest_ns).max(0.0) as u64;
    let path = dir.join("trace.perfetto-trace");
    let tmp = dir.join("trace.perfetto-trace.tmp");
    let mut w = crate::output::perfetto::TraceWriter::new(io::BufWriter::new(File::create(&tmp)?));
    let b = &s.boot;
    let ns = |v: f64| (v * 1e9) as u64;
    let phases = [
        (
            "firmware, kernel load and decompression",
            Some(0.0),
            b.kernel_banner_s,
        ),
        ("kernel init", b.kernel_banner_s, b.init_start_s),
        ("user space to agent ready", b.init_start_s, b.agent_ready_s),
    ];
    for (name, a, z) in phases {
        if let (Some(a), Some(z)) = (a, z) {
            w.slice(&crate::output::perfetto::Slice {
                track: "boot (host clock)".into(),
                name: name.into(),
                start_ns: ns(a),
                end_ns: ns(z),
            })?;
        }
    }
    for wl in &session.workloads {
        if let Some(x) = &wl.exited {
            w.workload(
                wl.started.pid,
                &wl.started.name,
                to_trace(wl.started.start_ns),
                to_trace(x.end_ns),
            )?;
        }
    }
    let (mut n_snapshots, mut n_holds) = (0, 0);
    if let Some(run) = s.timeline.snapshots.as_ref().and_then(|r| r.run.as_ref()) {
        for &(a, z, _) in &run.holds {
            w.slice(&crate::output::perfetto::Slice {
                track: GDB_TRACK.into(),
                name: "VM held (guest clock stopped)".into(),
                start_ns: a,
                end_ns: z,
            })?;
            n_holds += 1;
        }
        for snap in &run.snapshots {
            let mut args = vec![
                ("pid".to_string(), snap.pid.to_string()),
                ("tgid".to_string(), snap.tgid.to_string()),
                ("comm".to_string(), snap.comm.clone()),
                (
                    "cpu".to_string(),
                    snap.cpu.map_or_else(|| "?".into(), |c| c.to_string()),
                ),
            ];
            args.extend(
                snap.registers
                    .iter()
                    .map(|(r, v)| (r.clone(), format!("{v:#x}"))),
            );
            w.instant_on(
                GDB_TRACK,
                snap.host_ns,
                &format!("gdbstub snapshot at {}", run.symbol),
                &args,
            )?;
            n_snapshots += 1;
        }
    }
    let events = w.events_from_jsonl(
        io::BufReader::new(File::open(dir.join("events.jsonl"))?),
        to_trace,
    )?;
    let packets = w.packets;
    w.finish()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(Some(summary::TraceInfo {
        file: "trace.perfetto-trace".into(),
        packets,
        events,
        snapshots: n_snapshots,
        holds: n_holds,
    }))
}

/// The trace track of the gdbstub's holds and snapshots (host clock).
const GDB_TRACK: &str = "gdbstub (host clock)";

/// The report's plots, each placed after its section.
fn figures<W: io::Write>(s: &summary::Summary, session: &Session<W>) -> Vec<Figure> {
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
    let bin_ms = session::TIMELINE_BIN_NS as f64 / 1e6;
    for w in &session.workloads {
        let series: Vec<(String, Vec<(f64, u64)>)> = ["page_fault_user", "page_fault_kernel"]
            .iter()
            .filter_map(|p| {
                let bins = w.timeline.get(*p)?;
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
                    &format!("Page faults over time: {}", w.started.name),
                    bin_ms,
                    &series,
                ),
            );
        }
    }
    figs
}

fn write_outputs<W: io::Write>(
    dir: &Path,
    s: &summary::Summary,
    session: &Session<W>,
) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(io::Error::other)?;
    atomic::write(&dir.join("summary.json"), &json)?;
    let md = markdown::render(s);
    atomic::write(&dir.join("report.md"), md.as_bytes())?;
    atomic::write(
        &dir.join("report.html"),
        html::render(&md, &figures(s, session)).as_bytes(),
    )?;
    let mut folded = Vec::new();
    crate::output::folded::write(session, &mut folded)?;
    atomic::write(&dir.join("stacks.folded"), &folded)?;
    let guest = dir.join("guest");
    std::fs::create_dir_all(&guest)?;
    for (name, a) in &session.artifacts {
        if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            atomic::write(&guest.join(name), &a.data)?;
        }
    }
    Ok(())
}
