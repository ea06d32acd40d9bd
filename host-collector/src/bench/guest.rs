//! One boot of the guest for a benchmark: the lab's pieces (run initramfs, vhost-user
//! vsock, QEMU, serial console, stream receiver), with the hooks the benchmarks need —
//! a callback on every record (to start the gdb method when a workload starts), the
//! stream's byte count at each record, and a listener for the raw vsock blasts.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use guestscope_common::plan::RunPlan;

use crate::image;
use crate::lab::{GUEST_CID, Stop};
use crate::qemu::accel::Accel;
use crate::qemu::child::ChildGuard;
use crate::qemu::command::QemuConfig;
use crate::qemu::serial::{self, BootMarks, SerialState};
use crate::qemu::vhost;
use crate::run_end::Outcome;
use crate::run_end::RunEnd;
use crate::session::Session;
use crate::stream::listener::PortListener;
use crate::stream::receive::{self, Alive, Conn, ReceiveOptions};
use qemu_gdb_client::GdbEndpoint;

/// What every benchmark boot shares.
#[derive(Clone, Debug)]
pub struct Machine {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// `-bios` firmware, when not QEMU's default.
    pub bios: Option<PathBuf>,
    /// `vhost-device-vsock`.
    pub vhost: PathBuf,
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Base initramfs.
    pub initrd: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// vCPUs.
    pub cpus: u32,
    /// Kernel command line.
    pub append: String,
    /// Longest wait for the agent, and for the whole boot.
    pub boot_timeout: Duration,
    /// Longest time one boot may take.
    pub run_timeout: Duration,
    /// Scheduling priority QEMU runs at (`nice`; negative: ahead of the host's other
    /// work, so other processes on the host disturb the timed loops less).
    pub nice: i32,
    /// A root file system the agent and its workloads run in (as `lab --rootfs`).
    pub rootfs: Option<crate::rootfs::Prepared>,
    /// Whether the guest's clock counts its instructions
    /// ([`crate::qemu::command::INSTRUCTION_CLOCK`]; TCG only).
    pub instruction_clock: bool,
}

/// One raw transfer received on the blast port.
#[derive(Clone, Debug, PartialEq)]
pub struct Blast {
    /// Bytes received.
    pub bytes: u64,
    /// Host seconds from the first byte to the end of the stream.
    pub seconds: f64,
}

/// A stream being received: its session, and bytes read so far (for per-step rates).
pub type Collecting = Session<Box<dyn io::Write + Send>>;

/// What one benchmark boot produced.
pub struct Booted {
    /// The applied stream.
    pub session: Collecting,
    /// Console milestones.
    pub marks: BootMarks,
    /// How the stream ended.
    pub outcome: Outcome,
    /// Stream bytes received.
    pub bytes: u64,
    /// Host seconds from QEMU's launch to the agent's hello.
    pub hello_host_s: Option<f64>,
    /// Transfers received on the blast port, in order.
    pub blasts: Vec<Blast>,
    /// Host seconds from QEMU's launch to the end of the stream.
    pub wall_s: f64,
}

/// Sets a command's scheduling priority.
trait Nice {
    fn nice(&mut self, nice: i32) -> &mut Self;
}

impl Nice for std::process::Command {
    fn nice(&mut self, nice: i32) -> &mut Self {
        if nice != 0 {
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // setpriority, which is async-signal-safe; a failure leaves the default priority.
            unsafe {
                self.pre_exec(move || {
                    let _ = libc::setpriority(libc::PRIO_PROCESS, 0, nice);
                    Ok(())
                });
            }
        }
        self
    }
}

/// The agent's connection, counting the bytes read through it (shared with the record
/// callback); acknowledgements go out unchanged.
struct Counting {
    inner: UnixStream,
    count: Arc<AtomicU64>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl io::Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Conn for Counting {
    fn clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        self.inner.clone_conn()
    }
    fn close(&self) {
        self.inner.close();
    }
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        self.inner.set_timeouts(read, write)
    }
}

/// Accepts connections on `listener` until `stop`, reading each to its end and timing it.
fn blast_receiver(
    listener: PortListener,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<Blast>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        while !stop.load(Ordering::Relaxed) {
            let stream = listener.accept_within(Duration::from_millis(500), || Ok(()));
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let (mut bytes, mut first) = (0u64, None);
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(Instant::now);
                        bytes += n as u64;
                    }
                }
            }
            let seconds = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
            got.lock().expect("blasts").push(Blast { bytes, seconds });
        }
    })
}

/// How far a boot goes, and what it listens to besides the stream.
#[derive(Clone, Debug, Default)]
pub struct BootSetup {
    /// QEMU's gdbstub here (a Unix socket in a private directory).
    pub gdb: Option<GdbEndpoint>,
    /// Read and time raw connections to this vsock port.
    pub blast_port: Option<u32>,
    /// Stop at the agent's hello (boot-time samples).
    pub stop_at_hello: bool,
    /// Set while a gdbstub thread may hold the VM: no reply is written to the guest
    /// then ([`ReceiveOptions::replies_paused`]), as in `lab`.
    pub replies_paused: Option<Arc<AtomicBool>>,
}

/// Boots `m` with `plan` and collects its stream. `on_record` runs after every applied
/// record with the session and the stream bytes read so far. `events` receives
/// `events.jsonl`; the console goes to `serial_log`.
pub fn boot(
    m: &Machine,
    plan: &RunPlan,
    events: Box<dyn io::Write + Send>,
    serial_log: &Path,
    setup: BootSetup,
    on_record: &mut dyn FnMut(&Collecting, u64),
) -> Result<Booted, String> {
    let BootSetup {
        gdb,
        blast_port,
        stop_at_hello,
        replies_paused,
    } = setup;
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let run_dir = tempfile::Builder::new()
        .prefix("guestscope-bench-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| err("run directory", &e))?;
    let (plan, secret, initrd) = run_initrd(m, plan, run_dir.path())?;
    let plan = &plan;
    let (mut vhost_child, backend) =
        vhost::start(&m.vhost, run_dir.path(), GUEST_CID).map_err(|e| e.to_string())?;
    let uds = match &backend {
        vhost::VsockBackend::VhostUser { uds, .. } => uds.clone(),
        vhost::VsockBackend::Kernel => {
            return Err("only the vhost-user vsock backend is used here".into());
        }
    };
    let mut listener = PortListener::bind(&uds, plan.vsock_port).map_err(|e| e.to_string())?;
    let blasts = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let blast_thread = match blast_port {
        Some(port) => {
            let l = PortListener::bind(&uds, port).map_err(|e| e.to_string())?;
            Some(blast_receiver(l, stop.clone(), blasts.clone()))
        }
        None => None,
    };
    let cfg = qemu_config(m, initrd, gdb, backend);
    let serial_state = Arc::new(Mutex::new(SerialState::default()));
    let launched = Instant::now();
    let (mut qemu, reader) =
        start_qemu(m, &cfg, run_dir.path(), &serial_state, launched, serial_log)?;

    let mut session: Collecting = Session::new(events);
    let deadline = Instant::now() + m.run_timeout;
    let mut alive = boot_alive(&mut qemu, serial_state.clone(), deadline, m.run_timeout);
    let defaults = ReceiveOptions::default();
    let options = ReceiveOptions {
        stop_at_hello,
        secret: Some(secret.clone()),
        replies_paused: replies_paused.unwrap_or(defaults.replies_paused.clone()),
        ..defaults
    };
    let (mut outcome, bytes, hello_host_s) = receive_stream(
        &mut listener,
        m.boot_timeout,
        &mut session,
        &mut alive,
        launched,
        options,
        on_record,
    );
    let wall_s = launched.elapsed().as_secs_f64();
    drop(alive);
    let grace = if outcome.complete && !stop_at_hello {
        30
    } else {
        0
    };
    let _ = qemu.wait_timeout(Duration::from_secs(grace));
    qemu.kill();
    let _ = reader.join();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = blast_thread {
        let _ = t.join();
    }
    vhost_child.kill();
    let _ = session.flush();
    let marks = serial_state.lock().expect("serial").marks.clone();
    if !outcome.complete
        && let Some(f) = &marks.fatal
    {
        outcome.detail = Some(format!("{}; {f}", outcome.detail.unwrap_or_default()));
    }
    let blasts = blasts.lock().expect("blasts").clone();
    Ok(Booted {
        session,
        marks,
        outcome,
        bytes,
        hello_host_s,
        blasts,
        wall_s,
    })
}

/// The plan with a secret of its own (as in `lab`: only the agent given this plan is
/// heard), the secret, and the run's initramfs written with it into `run_dir`.
fn run_initrd(
    m: &Machine,
    plan: &RunPlan,
    run_dir: &Path,
) -> Result<(RunPlan, String, PathBuf), String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let secret =
        guestscope_common::plan::new_secret().map_err(|e| err("making the run's secret", &e))?;
    let plan = RunPlan {
        secret: Some(secret.clone()),
        ..plan.clone()
    };
    let initrd = run_dir.join("initrd.cpio");
    let layer = m
        .rootfs
        .as_ref()
        .map(|r| r.layer_files())
        .unwrap_or_default();
    image::build_run_initrd_with(&m.initrd, &plan, &[], &layer, &initrd)
        .map_err(|e| err("writing the run's initramfs", &e))?;
    Ok((plan, secret, initrd))
}

/// Asked between reads whether to keep waiting for the guest: not after a signal,
/// QEMU's exit, a fatal kernel message on the console, or `deadline`.
fn boot_alive<'a>(
    qemu: &'a mut ChildGuard,
    serial_state: Arc<Mutex<SerialState>>,
    deadline: Instant,
    run_timeout: Duration,
) -> impl FnMut() -> Result<(), Stop> + 'a {
    move || {
        if let Some(stop) = Stop::interrupted() {
            return Err(stop);
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            return Err(Stop::new(RunEnd::QemuExited, status.to_string()));
        }
        if let Some(f) = serial_state.lock().expect("serial").marks.fatal.clone() {
            return Err(Stop::new(RunEnd::GuestKernelFailed, f));
        }
        if Instant::now() > deadline {
            return Err(Stop::new(
                RunEnd::RunTimeout,
                format!("the boot took longer than {run_timeout:?}"),
            ));
        }
        Ok(())
    }
}

/// QEMU's configuration for `m`, booting `initrd`, with the vsock `backend` and the
/// gdbstub at `gdb` if given.
fn qemu_config(
    m: &Machine,
    initrd: PathBuf,
    gdb: Option<GdbEndpoint>,
    backend: vhost::VsockBackend,
) -> QemuConfig {
    QemuConfig {
        binary: m.qemu.clone(),
        accel: m.accel,
        memory_mb: m.memory_mb,
        cpus: m.cpus,
        cpu_model: None,
        bios: m.bios.clone(),
        kernel: m.kernel.clone(),
        initrd,
        append: m.append.clone(),
        gdb,
        vsock: backend,
        cid: GUEST_CID,
        instruction_clock: m.instruction_clock,
        extra: m
            .rootfs
            .as_ref()
            .map(crate::rootfs::Prepared::qemu_args)
            .unwrap_or_default(),
    }
}

/// Starts QEMU in its own process group at `m.nice`, its stderr to the run directory,
/// and a thread reading its console into `serial_state` and `serial_log`.
fn start_qemu(
    m: &Machine,
    cfg: &QemuConfig,
    run_dir: &Path,
    serial_state: &Arc<Mutex<SerialState>>,
    launched: Instant,
    serial_log: &Path,
) -> Result<(ChildGuard, JoinHandle<()>), String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    let mut child = cfg
        .command()
        // Its own process group, as in `lab`: a Ctrl-C reaches the collector, which stops QEMU.
        .process_group(0)
        .nice(m.nice)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(run_dir.join("qemu.stderr")).map_err(|e| err("qemu stderr", &e))?)
        .spawn()
        .map_err(|e| err(&format!("starting {}", m.qemu.display()), &e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let qemu = ChildGuard::new("qemu", child);
    let reader = serial::spawn_reader(stdout, serial_state.clone(), launched, serial_log)
        .map_err(|e| err("serial log", &e))?;
    Ok((qemu, reader))
}

/// Waits up to `boot_timeout` for the agent's connection and receives its stream,
/// counting the bytes read for `on_record`; returns the outcome, the bytes and the
/// seconds to the agent's hello.
fn receive_stream(
    listener: &mut PortListener,
    boot_timeout: Duration,
    session: &mut Collecting,
    alive: &mut Alive<'_>,
    launched: Instant,
    options: ReceiveOptions,
    on_record: &mut dyn FnMut(&Collecting, u64),
) -> (Outcome, u64, Option<f64>) {
    let mut outcome = Outcome::default();
    let (mut bytes, mut hello_host_s) = (0, None);
    let accepted =
        listener.accept_within(boot_timeout, || alive().map_err(|stop| stop.to_string()));
    match accepted {
        Ok(stream) => {
            let count = Arc::new(AtomicU64::new(0));
            let counting = Counting {
                inner: stream,
                count: count.clone(),
            };
            let r = receive::receive(
                Box::new(counting),
                listener,
                session,
                alive,
                launched,
                options,
                &mut |s| {
                    on_record(s, count.load(Ordering::Relaxed));
                },
            );
            outcome = r.outcome;
            bytes = r.bytes;
            hello_host_s = r.hello_host_s;
        }
        Err(e) => {
            outcome.how = RunEnd::AgentNeverConnected;
            outcome.detail = Some(e.to_string());
        }
    }
    (outcome, bytes, hello_host_s)
}
