//! One boot of the guest: run dir, secret, vhost, listener, QEMU, serial, the stream received until the run ends, and shutdown.

use super::*;
use crate::stream::receive::{LabSession, Received};

mod gdb_work;
mod link_nudge;
mod silence;

use gdb_work::GdbWork;

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
    /// The host's wall clock at the zero of the run's host times (QEMU's launch), ns
    /// since the Unix epoch.
    pub host_epoch_unix_ns: i64,
}

/// Where a boot's events and stacks go while they arrive.
pub struct StreamFiles {
    /// `events.jsonl`.
    pub events: Box<dyn io::Write + Send>,
    /// `stacks.jsonl` (None: the stacks stay in memory until the end).
    pub stacks: Option<Box<dyn io::Write + Send>>,
}

impl StreamFiles {
    /// For a boot whose events nobody keeps (the boot-time and CR3 boots).
    pub fn discard() -> StreamFiles {
        StreamFiles {
            events: Box::new(io::sink()),
            stacks: None,
        }
    }
}

/// The QEMU command line of one boot: the run's initramfs `initrd`, the gdbstub at
/// `gdb`, the guest's vsock through `vsock`.
pub fn qemu_config(
    o: &LabOptions,
    v: &Validated,
    mode: &Mode,
    initrd: &Path,
    gdb: GdbEndpoint,
    vsock: vhost::VsockBackend,
) -> QemuConfig {
    QemuConfig {
        binary: v.qemu.clone(),
        accel: o.accel.unwrap_or(v.accel.accel),
        memory_mb: o.memory_mb,
        cpus: o.cpus,
        cpu_model: match mode {
            Mode::Cr3 { cpu_model, .. } => cpu_model.clone(),
            _ => None,
        },
        // The boot-time boots keep QEMU's default firmware: they measure what the
        // lab measured.
        bios: match mode {
            Mode::BootOnly => None,
            _ => v.qboot.clone(),
        },
        kernel: match (mode, &o.fast_kernel) {
            (Mode::BootOnly, _) | (_, None) => o.kernel.clone(),
            (_, Some(fast)) => fast.clone(),
        },
        initrd: initrd.to_path_buf(),
        append: crate::qemu::kernel_cmdline::for_boot(*mode == Mode::BootOnly, &v.append),
        gdb: Some(gdb),
        vsock,
        cid: GUEST_CID,
        instruction_clock: false,
        extra: o
            .qemu_extra
            .iter()
            .cloned()
            .chain(v.rootfs.iter().flat_map(|r| r.qemu_args()))
            .chain(v.host.iter().flat_map(|_| crate::host_program::qemu_args()))
            .collect(),
    }
}

/// Boots the guest once with `plan`, collecting its stream until the agent's final
/// record (or its hello, in [`Mode::BootOnly`]). `files` receive `events.jsonl`
/// and `stacks.jsonl` as the events arrive; the console goes to `serial_log`.
pub fn boot_and_collect(
    o: &LabOptions,
    v: &Validated,
    plan: &RunPlan,
    files: StreamFiles,
    serial_log: &Path,
    mode: &Mode,
) -> Result<Collected, LabError> {
    // Owner-only: it holds the sockets to the guest (whoever reaches them talks to it).
    let run_dir = tempfile::Builder::new()
        .prefix("guestscope-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(io_step("creating a run directory"))?;
    let (secret, initrd) = run_initrd(o, v, plan, run_dir.path())?;

    let (mut vhost_child, backend) = vhost::start(&v.vhost, run_dir.path(), GUEST_CID)?;
    let uds = match &backend {
        vhost::VsockBackend::VhostUser { uds, .. } => uds.clone(),
        vhost::VsockBackend::Kernel => unreachable!("only the vhost-user backend is started here"),
    };
    let mut listener = PortListener::bind(&uds, VSOCK_PORT)?;

    let gdb = match v.gdb_port {
        Some(port) => GdbEndpoint::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        None => GdbEndpoint::Unix(run_dir.path().join(GDB_SOCKET)),
    };
    let qemu_cfg = qemu_config(o, v, mode, &initrd, gdb.clone(), backend.clone());
    let accel = qemu_cfg.accel;
    tracing::info!("starting QEMU ({}): {}", accel.as_str(), qemu_cfg.display());
    let serial_state = Arc::new(Mutex::new(SerialState::default()));
    let launched = Instant::now();
    let launched_unix_ns = crate::run_files::host_time::unix_now_ns();
    let (mut qemu, reader) = start_qemu(
        v,
        &qemu_cfg,
        run_dir.path(),
        &serial_state,
        launched,
        serial_log,
    )?;

    let mut session = open_session(files, v, mode);
    // Set while a gdbstub thread may hold the VM: nothing goes to the guest then.
    let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut nudge = link_nudge::LinkNudge::new(gdb.clone(), paused.clone());
    let mut work = GdbWork::new(o, v, mode, gdb, launched);
    let run_deadline = Instant::now() + o.run_timeout;
    // When the agent's stream last made progress (None until its first record). The gdbstub
    // experiment holds the guest at breakpoints, so it runs without the watchdog.
    let silence = silence::Silence::new(if matches!(mode, Mode::Cr3 { .. }) {
        None
    } else {
        o.watchdog
    });
    let mut keep_waiting = lab_alive(o, &mut qemu, serial_state.clone(), run_deadline, &silence);
    let mut initrd_on_disk = Some(initrd);
    let console = serial_state.clone();
    let heard = &silence;
    let nudging = &mut nudge;
    let mut alive = move || {
        remove_once_loaded(&console, &mut initrd_on_disk);
        nudging.check(heard.last_heard());
        keep_waiting()
    };
    let options = ReceiveOptions {
        stop_at_hello: *mode == Mode::BootOnly,
        faults: o.link_faults.clone(),
        secret: Some(secret.clone()),
        replies_paused: paused,
        ..ReceiveOptions::default()
    };
    let received = receive_stream(
        o,
        &mut listener,
        &mut session,
        &mut alive,
        options,
        (plan, &silence),
        &mut work,
    );
    let mut outcome = received.outcome;
    drop(alive);
    let mut link = received.link;
    (link.vm_restarts, link.vm_restarts_revived) = (nudge.watch.made, nudge.watch.revived);
    let (cr3, snapshots) = work.finish(outcome.complete, &session);
    // The guest powers itself off after the agent's final record.
    let grace = if outcome.complete && *mode != Mode::BootOnly {
        30
    } else {
        0
    };
    shut_down(
        &mut qemu,
        reader,
        &mut vhost_child,
        Duration::from_secs(grace),
    );
    let _ = session.flush();
    let marks = explain_outcome(&serial_state, &mut outcome);
    Ok(Collected {
        session,
        marks,
        outcome,
        bytes: received.bytes,
        decode_error: received.decode_error,
        qemu_command: qemu_cfg.display(),
        accel,
        hello_host_s: received.hello_host_s,
        cr3,
        snapshots,
        link,
        clock: received.clock,
        host_epoch_unix_ns: launched_unix_ns,
    })
}

/// Removes the run's initramfs (a copy of about 14 MB in the run directory) once the
/// guest's console has printed its first byte: QEMU reads the file into the machine's
/// memory before any vCPU runs, and never again. A run killed later (SIGKILL, which
/// leaves its run directory behind) then leaves only its sockets and small files.
/// Called between reads: once the file is gone, it only checks `initrd`.
fn remove_once_loaded(serial_state: &Mutex<SerialState>, initrd: &mut Option<PathBuf>) {
    let loaded = || {
        serial_state
            .lock()
            .expect("serial")
            .marks
            .first_byte_s
            .is_some()
    };
    if let Some(path) = initrd.take_if(|_| loaded())
        && let Err(e) = std::fs::remove_file(&path)
    {
        tracing::warn!("removing the run's initramfs {}: {e}", path.display());
    }
}

/// Writes the run's initramfs into `run_dir`: the plan with a secret of its own (in a
/// root-only file in the guest: only the agent can present it), the user's programs
/// and the root filesystem's layers. Returns the secret and the initramfs.
fn run_initrd(
    o: &LabOptions,
    v: &Validated,
    plan: &RunPlan,
    run_dir: &Path,
) -> Result<(String, PathBuf), LabError> {
    // One file per distinct binary: a program run twice is copied once.
    let user: Vec<(String, &Path)> = v
        .user
        .iter()
        .map(|u| (u.guest_file.clone(), u.path.as_path()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    let initrd = run_dir.join("initrd.cpio");
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
        guestscope_common::plan::new_secret().map_err(io_step("making the run's secret"))?;
    let plan = &RunPlan {
        secret: Some(secret.clone()),
        ..plan.clone()
    };
    image::build_run_initrd_with(&o.initrd, plan, &user, &rootfs_files, &initrd)
        .map_err(io_step("writing the run's initramfs"))?;
    Ok((secret, initrd))
}

/// Starts QEMU in its own process group (a Ctrl-C reaches the collector only, which
/// stops QEMU after taking what the guest sent), its stderr into `run_dir`, and the
/// thread that reads its console into `serial_state` and `serial_log`.
fn start_qemu(
    v: &Validated,
    qemu_cfg: &QemuConfig,
    run_dir: &Path,
    serial_state: &Arc<Mutex<SerialState>>,
    launched: Instant,
    serial_log: &Path,
) -> Result<(ChildGuard, std::thread::JoinHandle<()>), LabError> {
    let mut child = qemu_cfg
        .command()
        // Its own process group: a Ctrl-C reaches the collector only, which stops QEMU
        // after taking what the guest sent.
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(run_dir.join("qemu.stderr")).map_err(io_step("qemu stderr"))?)
        .spawn()
        .map_err(io_step(format!("starting {}", v.qemu.display())))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let qemu = ChildGuard::new("qemu", child);
    let reader = serial::spawn_reader(stdout, serial_state.clone(), launched, serial_log)
        .map_err(io_step("writing the serial log"))?;
    Ok((qemu, reader))
}

/// The session the stream fills: events (and stacks, if given) written as they
/// arrive; in a full run, stacks with file:line from the guest's `vmlinux`.
fn open_session(files: StreamFiles, v: &Validated, mode: &Mode) -> LabSession {
    let mut session = Session::new(files.events);
    if let Some(stacks) = files.stacks {
        session.write_stacks_to(stacks);
    }
    if *mode == Mode::Full
        && let Some(v) = &v.vmlinux
    {
        match guest_kernel::dwarf_lines::DwarfLines::open(v) {
            Ok(lines) => session.lines = Some(lines),
            Err(e) => tracing::warn!("no file:line in stacks: {e}"),
        }
    }
    session
}

/// Asked between reads whether to keep waiting for the guest: not after a signal, a
/// fatal console line, QEMU's exit, `run_deadline`, or a stream silent past what
/// `silence` allows.
fn lab_alive<'a>(
    o: &'a LabOptions,
    qemu: &'a mut ChildGuard,
    serial_state: Arc<Mutex<SerialState>>,
    run_deadline: Instant,
    silence: &'a silence::Silence,
) -> impl FnMut() -> Result<(), Stop> + 'a {
    move || {
        if let Some(stop) = Stop::interrupted() {
            return Err(stop);
        }
        if let Some(f) = serial_state.lock().expect("serial").marks.fatal.clone() {
            return Err(Stop::new(fatal_how(&f), f));
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(Stop::new(RunEnd::QemuExited, status.to_string()));
        }
        if Instant::now() > run_deadline {
            return Err(Stop::new(
                RunEnd::RunTimeout,
                format!("the run took longer than {:?}", o.run_timeout),
            ));
        }
        if let Some(silent) = silence.overdue() {
            return Err(Stop::new(
                RunEnd::GuestHung,
                format!(
                    "no record from the agent for {:.0} s (it sends a heartbeat every {} ms): the guest kernel or the agent is stuck",
                    silent.as_secs_f64(),
                    guestscope_common::wire::HEARTBEAT_MS
                ),
            ));
        }
        Ok(())
    }
}

/// Waits for the agent's connection and receives its stream into `session`, telling
/// `silence` of each record (and whether the `plan` has a quiet workload running) and
/// handing each record to the gdbstub `work`. A run that ends before the agent
/// connects says why, with nothing received.
fn receive_stream(
    o: &LabOptions,
    listener: &mut PortListener,
    session: &mut LabSession,
    alive: &mut Alive<'_>,
    options: ReceiveOptions,
    (plan, silence): (&RunPlan, &silence::Silence),
    work: &mut GdbWork<'_>,
) -> Received {
    let mut stopped = None;
    let accepted = listener.accept_within(o.boot_timeout, || {
        alive().map_err(|stop| {
            let text = stop.to_string();
            stopped = Some(stop);
            text
        })
    });
    let mut outcome = summary::Outcome::default();
    match accepted {
        Ok(stream) => {
            // Set while a gdbstub thread may hold the VM: nothing goes to the guest then.
            let paused = options.replies_paused.clone();
            // The watchdog starts at the agent's first record, its hello: until then it
            // loads its probes and sends nothing (the first Connect's own wait bounds
            // that, see `receive`).
            let mut live = crate::progress::LiveLine::new(o.live && *work.mode == Mode::Full);
            let launched = work.launched;
            let r = receive::receive(
                Box::new(stream),
                listener,
                session,
                alive,
                launched,
                options,
                &mut |session| {
                    silence.heard(silence::quiet_running(plan, session));
                    live.update(&crate::progress::Counts::of(session));
                    work.on_record(session, &paused);
                },
            );
            live.finish();
            return r;
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
    Received {
        outcome,
        bytes: 0,
        decode_error: None,
        hello_host_s: None,
        link: LinkReport::default(),
        clock: ClockExchange::default(),
    }
}

/// Gives QEMU up to `grace` to power the guest off (less after a signal), then stops
/// it, waits for the console reader and stops vhost.
fn shut_down(
    qemu: &mut ChildGuard,
    reader: std::thread::JoinHandle<()>,
    vhost_child: &mut ChildGuard,
    grace: Duration,
) {
    let grace_end = Instant::now() + grace;
    while Instant::now() < grace_end && crate::interrupt::received().is_none() {
        if let Ok(Some(_)) = qemu.wait_timeout(Duration::from_millis(100)) {
            break;
        }
    }
    qemu.kill();
    let _ = reader.join();
    vhost_child.kill();
}

/// The console's milestones. A run the guest kernel ended takes its outcome from the
/// fatal line (QEMU exiting, or the stream ending, was its consequence); an unfinished
/// run keeps the console lines that say how it ended.
fn explain_outcome(
    serial_state: &Mutex<SerialState>,
    outcome: &mut summary::Outcome,
) -> serial::BootMarks {
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
    marks
}

/// The outcome of a run the guest kernel ended with console line `fatal`.
pub(super) fn fatal_how(fatal: &str) -> RunEnd {
    if fatal.contains("Kernel panic") {
        RunEnd::GuestKernelPanic
    } else {
        RunEnd::GuestKernelFailed
    }
}

/// The console lines that say how a run ended: from a few lines before the fatal line
/// through the panic's end marker (at most `CONSOLE_LINES`), or the last lines.
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
