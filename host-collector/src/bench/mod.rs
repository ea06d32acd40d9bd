//! `guestscope bench`: how much cheaper guestscope is than the lab's gdb method, and how
//! close it runs to the limits, measured side by side on this machine.
//!
//! Three boots of the guest, each with a plan made of measurement workloads:
//! 1. capacity: raw vsock blasts, then the event stream paced at rising rates until it
//!    loses events (every loss counted by the probes, every count checked);
//! 2. overhead: the fopen and cpuinfo loops with no probe, with every probe, and under an
//!    ftrace kprobe, in rotating order; then the fopen loop under the gdbstub method
//!    (a hardware breakpoint on `alloc_fd` with the pid decided on the host), paired
//!    with guestscope runs of the same loop;
//! 3. memory: a long flood of events, with the agent's and the collector's peak RSS.
//!
//! Speed figures are medians of paired ratios (these machines are noisy). Loop times come
//! from the workloads' own clocks, except under gdb, whose stops also stop the guest's
//! clock: that one is timed on the host.
//!
//! - [`stats`]: medians, spread, pairing, rotation.
//! - [`guest`]: one boot with the hooks the benchmarks need.
//! - [`results`]: what `results.json` holds.
//! - [`report`][]: `results.md`.

pub mod guest;
pub mod report;
pub mod results;
pub mod stats;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guestscope_common::plan::{
    BUILTIN_WORKLOAD_DIR, RunPlan, TRACING_ARTIFACT_PREFIX, Tracing, WorkloadOrigin, WorkloadSpec,
    WorkloadTracing,
};
use guestscope_common::{ProbeKind, StackedEvent};

use crate::experiments::syscall_cr3::{self, Cr3Options, FunctionTrace, StepOver};
use crate::inputs;
use crate::lab::VSOCK_PORT;
use crate::output::atomic;
use crate::qemu::accel;
use guest::{BootSetup, Booted, Collecting, Machine};
use guest_kernel::btf::TaskOffsets;
use qemu_gdb_client::{Client, GdbEndpoint};
use results::*;
use stats::Spread;

/// A gdb-method trace running on its own thread, named by its workload.
type GdbTraceThread = (String, JoinHandle<Result<FunctionTrace, String>>);

/// The vsock port the blast workload sends to.
pub const BLAST_PORT: u32 = VSOCK_PORT + 1;
/// The function both the gdb method and guestscope trace in the comparison.
pub const GDB_SYMBOL: &str = "alloc_fd";
/// `nice` of QEMU in the capacity and overhead boots.
pub const MEASURE_NICE: i32 = -5;
/// Seconds the gdb-traced workload waits before its loop, so the host can set the
/// breakpoint once it knows the pid.
const GDB_START_DELAY_MS: u64 = 1500;

/// Settings of a bench run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Base initramfs.
    pub initrd: PathBuf,
    /// Where `results.json` and `results.md` go.
    pub out_dir: PathBuf,
    /// Where serial logs and scratch files go.
    pub work_dir: PathBuf,
    /// QEMU binary.
    pub qemu: String,
    /// vhost-device-vsock binary.
    pub vhost_device_vsock: String,
    /// Repetitions of each overhead condition.
    pub reps: usize,
    /// fopen loop iterations.
    pub fopen_iterations: u64,
    /// cpuinfo loop iterations.
    pub cpuinfo_iterations: u64,
    /// Iterations of the gdb-traced loop.
    pub gdb_iterations: u64,
    /// Repetitions of the gdb comparison.
    pub gdb_reps: usize,
    /// Bytes per raw vsock blast.
    pub blast_bytes: u64,
    /// Number of blasts.
    pub blast_reps: usize,
    /// Paced rates of the capacity ladder, events/s (an unpaced step is added).
    pub rates: Vec<u64>,
    /// Seconds each ladder step lasts (at its rate).
    pub step_seconds: f64,
    /// Events of the memory run.
    pub memory_events: u64,
    /// The memory run's events are cut to what fits this long at the measured rate.
    pub memory_budget: Duration,
    /// Which parts to run (`capacity`, `overhead`, `memory`); empty: all. The gdb
    /// comparison needs the capacity boot's BTF.
    pub only: Vec<String>,
    /// An uncompressed kernel (PVH entry) to time boots with, next to the default one.
    pub fast_kernel: Option<PathBuf>,
    /// Boot-only boots of each kernel for the boot-time figures.
    pub boot_samples: usize,
    /// The warm `cargo xtask lab` timing, if measured by the caller.
    pub lab: Option<(f64, Option<PathBuf>)>,
    /// Called with a short description as each step starts.
    pub progress: fn(&str),
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            out_dir: PathBuf::from("bench"),
            work_dir: std::env::temp_dir().join("guestscope-bench"),
            qemu: "qemu-system-x86_64".into(),
            vhost_device_vsock: "vhost-device-vsock".into(),
            reps: 15,
            fopen_iterations: 2000,
            cpuinfo_iterations: 300,
            gdb_iterations: 200,
            gdb_reps: 5,
            blast_bytes: 64 << 20,
            blast_reps: 3,
            rates: vec![5_000, 10_000, 20_000, 40_000, 80_000, 160_000],
            step_seconds: 2.0,
            memory_events: 10_000_000,
            memory_budget: Duration::from_secs(300),
            only: Vec::new(),
            fast_kernel: None,
            boot_samples: 3,
            lab: None,
            progress: |_| {},
        }
    }
}

/// A bench run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad input.
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    /// A boot failed to start.
    #[error("{0}")]
    Boot(String),
    /// Writing the results failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}

/// One workload's outcome, as the stream told it.
#[derive(Clone, Debug, Default)]
struct Ran {
    status: Option<i32>,
    /// The loop's time from the workload's own summary line, ns.
    elapsed_ns: Option<u64>,
    /// The agent's tracing report.
    tracing: Option<WorkloadTracing>,
    /// Events received per probe.
    received: BTreeMap<String, u64>,
    /// Stream bytes read when its start and exit records arrived.
    bytes_at_start: u64,
    bytes_at_exit: u64,
}

impl Ran {
    fn ok(&self) -> bool {
        self.status == Some(0)
    }
    fn elapsed_s(&self) -> Option<f64> {
        self.elapsed_ns
            .filter(|_| self.ok())
            .map(|ns| ns as f64 / 1e9)
    }
    fn counters(&self, probe: &str) -> guestscope_common::ProbeCounters {
        self.tracing
            .as_ref()
            .and_then(|t| t.counters.iter().find(|(n, _)| n == probe).map(|(_, c)| *c))
            .unwrap_or_default()
    }
    fn matched_total(&self) -> Option<u64> {
        self.tracing
            .as_ref()
            .map(|t| t.counters.iter().map(|(_, c)| c.matched).sum())
    }
}

/// The value of `"elapsed_ns"` in a workload's JSON summary line.
pub fn elapsed_ns(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
        v.get("workload")?;
        v.get("elapsed_ns")?.as_u64()
    })
}

/// The value in KiB of `field` (e.g. `VmHWM`) in the text of `/proc/<pid>/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// This process's peak resident set, KiB.
fn own_peak_kib() -> Option<u64> {
    status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM")
}

/// Resets this process's peak resident set to its current one (Linux ≥ 4.0).
fn reset_own_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn utc_date(unix_s: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix_s / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn spec(name: &str, program: &str, args: &[String], tracing: Tracing) -> WorkloadSpec {
    WorkloadSpec {
        name: name.to_string(),
        path: format!("{BUILTIN_WORKLOAD_DIR}/{program}"),
        args: args.to_vec(),
        origin: WorkloadOrigin::Builtin,
        tracing,
        quiet_link: false,
        as_root: false,
        timeout_ms: None,
        hold_before_exec_ms: None,
        cwd: None,
    }
}

fn all_probes() -> Tracing {
    Tracing::Probes(
        ProbeKind::BUILTIN
            .iter()
            .map(|k| k.name().to_string())
            .collect(),
    )
}

fn no_probes() -> Tracing {
    Tracing::Probes(Vec::new())
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The conditions of the overhead runs, in the order [`stats::rotation`] rotates: no
/// probe, every probe, every probe without stack walks, an ftrace kprobe, the built-in
/// alloc_fd probe alone, and user probes on the same function (kprobe, fentry). cpuinfo
/// runs the first two.
const CONDITIONS: [&str; 7] = ["off", "all", "nostack", "ftrace", "fd", "ufd", "ffd"];

fn condition_tracing(c: &str) -> Tracing {
    match c {
        "off" => no_probes(),
        "all" => all_probes(),
        "nostack" => Tracing::ProbesWithoutStacks(
            ProbeKind::BUILTIN
                .iter()
                .map(|k| k.name().to_string())
                .collect(),
        ),
        "fd" => Tracing::Probes(vec![ProbeKind::AllocFd.name().to_string()]),
        // The same function through a user probe (`--probe kprobe:alloc_fd`).
        "ufd" => Tracing::UserProbes(vec![format!("kprobe:{GDB_SYMBOL}")]),
        "ffd" => Tracing::UserProbes(vec![format!("fentry:{GDB_SYMBOL}")]),
        _ => Tracing::FtraceKprobe(GDB_SYMBOL.into()),
    }
}

/// The overhead boot's plan: the loops in rotating order, process-start baselines,
/// then the gdb comparison.
fn overhead_plan(o: &BenchOptions) -> RunPlan {
    let mut w = Vec::new();
    let fopen_n = o.fopen_iterations.to_string();
    let cpuinfo_n = o.cpuinfo_iterations.to_string();
    // Events of process start and exit, to subtract from the loops' counts.
    for i in 0..2 {
        w.push(spec(
            &format!("fopen-base-{i}"),
            "fopen",
            &args(&["--iterations", "0"]),
            all_probes(),
        ));
        w.push(spec(
            &format!("cpuinfo-base-{i}"),
            "cpuinfo",
            &args(&["--iterations", "0"]),
            all_probes(),
        ));
    }
    for rep in 0..o.reps {
        for c in stats::rotation(CONDITIONS.len(), rep) {
            let c = CONDITIONS[c];
            w.push(spec(
                &format!("fopen-{c}-{rep}"),
                "fopen",
                &args(&["--iterations", &fopen_n]),
                condition_tracing(c),
            ));
        }
        for c in stats::rotation(2, rep) {
            let c = CONDITIONS[c];
            w.push(spec(
                &format!("cpuinfo-{c}-{rep}"),
                "cpuinfo",
                &args(&["--iterations", &cpuinfo_n]),
                condition_tracing(c),
            ));
        }
    }
    let gdb_n = o.gdb_iterations.to_string();
    // guestscope on the same events as the gdb method (alloc_fd only), and with every probe.
    const SHORT: [&str; 3] = ["off", "fd", "all"];
    for rep in 0..o.gdb_reps {
        for c in stats::rotation(SHORT.len(), rep) {
            let c = SHORT[c];
            w.push(spec(
                &format!("short-{c}-{rep}"),
                "fopen",
                &args(&["--iterations", &gdb_n]),
                condition_tracing(c),
            ));
        }
        let delay = GDB_START_DELAY_MS.to_string();
        w.push(spec(
            &format!("gdb-{rep}"),
            "fopen",
            &args(&["--iterations", &gdb_n, "--start-delay-ms", &delay]),
            no_probes(),
        ));
    }
    RunPlan::new(VSOCK_PORT, w)
}

/// Events per ladder step at `rate` (at least enough to fill the 8 MiB ring twice).
fn step_events(rate: u64, seconds: f64) -> u64 {
    let ring_records =
        u64::from(guestscope_common::maps::EVENTS_BYTES) / size_of::<StackedEvent>() as u64;
    ((rate as f64 * seconds) as u64).max(2 * ring_records)
}

/// The capacity boot's plan: blasts, then the ladder, then an unpaced flood.
fn capacity_plan(o: &BenchOptions) -> RunPlan {
    let mut w = Vec::new();
    let port = BLAST_PORT.to_string();
    let bytes = o.blast_bytes.to_string();
    for i in 0..o.blast_reps {
        w.push(spec(
            &format!("blast-{i}"),
            "blast",
            &args(&["--port", &port, "--bytes", &bytes]),
            no_probes(),
        ));
    }
    let fd_only = Tracing::Probes(vec![ProbeKind::AllocFd.name().to_string()]);
    for &rate in &o.rates {
        let n = step_events(rate, o.step_seconds).to_string();
        w.push(spec(
            &format!("flood-{rate}"),
            "flood",
            &args(&["--iterations", &n, "--rate", &rate.to_string()]),
            fd_only.clone(),
        ));
    }
    let max_rate = o.rates.iter().copied().max().unwrap_or(100_000);
    let n = step_events(max_rate, o.step_seconds).to_string();
    w.push(spec(
        "flood-0",
        "flood",
        &args(&["--iterations", &n]),
        fd_only,
    ));
    RunPlan::new(VSOCK_PORT, w)
}

/// The memory boot's plan: the flood in two parts (readings after each).
fn memory_plan(events: u64) -> RunPlan {
    let fd_only = Tracing::Probes(vec![ProbeKind::AllocFd.name().to_string()]);
    let first = (events / 10).max(1);
    let w = vec![
        spec(
            "memory-0",
            "flood",
            &args(&["--iterations", &first.to_string()]),
            fd_only.clone(),
        ),
        spec(
            "memory-1",
            "flood",
            &args(&["--iterations", &(events - first).to_string()]),
            fd_only,
        ),
    ];
    RunPlan::new(VSOCK_PORT, w)
}

/// Per-workload outcomes of a boot (by workload name).
fn outcomes(b: &Booted, bytes: &HashMap<String, (u64, u64)>) -> BTreeMap<String, Ran> {
    let s = &b.session;
    s.workloads
        .iter()
        .map(|w| {
            let name = w.started.name.clone();
            let tracing = s
                .artifact_text(&format!("{TRACING_ARTIFACT_PREFIX}{name}"))
                .and_then(|t| serde_json::from_str(&t).ok());
            let (bytes_at_start, bytes_at_exit) = bytes.get(&name).copied().unwrap_or_default();
            let ran = Ran {
                status: w.exited.as_ref().map(|x| x.status),
                elapsed_ns: w.exited.as_ref().and_then(|x| elapsed_ns(&x.output)),
                tracing,
                received: w.events.clone(),
                bytes_at_start,
                bytes_at_exit,
            };
            (name, ran)
        })
        .collect()
}

/// Records, on every record, the stream bytes at each workload's start and exit.
#[derive(Default)]
struct ByteMarks {
    marks: HashMap<String, (u64, u64)>,
    started: usize,
    exited: usize,
}

impl ByteMarks {
    /// Returns (newly started workload, newly exited workload) names.
    fn observe(&mut self, s: &Collecting, bytes: u64) -> (Option<String>, Option<String>) {
        let mut new = (None, None);
        if s.workloads.len() > self.started {
            self.started = s.workloads.len();
            let name = s.workloads[self.started - 1].started.name.clone();
            self.marks.insert(name.clone(), (bytes, 0));
            new.0 = Some(name);
        }
        let exited = s.workloads.iter().filter(|w| w.exited.is_some()).count();
        if exited > self.exited {
            self.exited = exited;
            if let Some(w) = s.workloads.iter().rev().find(|w| w.exited.is_some()) {
                self.marks.entry(w.started.name.clone()).or_default().1 = bytes;
                new.1 = Some(w.started.name.clone());
            }
        }
        new
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default()
}

fn qemu_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Runs every benchmark and writes `results.json` and `results.md` to `o.out_dir`.
pub fn run(o: &BenchOptions) -> Result<BenchResults, BenchError> {
    inputs::check_kernel(&o.kernel)?;
    inputs::check_initrd(&o.initrd)?;
    inputs::check_out_dir(&o.out_dir)?;
    inputs::check_out_dir(&o.work_dir)?;
    let started = Instant::now();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let choice = accel::detect();
    let machine = Machine {
        qemu: inputs::find_program(&o.qemu)?,
        vhost: inputs::find_program(&o.vhost_device_vsock)?,
        kernel: o.kernel.clone(),
        initrd: o.initrd.clone(),
        accel: choice.accel,
        memory_mb: 1024,
        cpus: 1,
        append: "console=ttyS0 panic=-1".into(),
        boot_timeout: Duration::from_secs(180),
        run_timeout: Duration::from_secs(1200),
        nice: 0,
    };
    // The timed boots run QEMU a little ahead of the host's other work.
    let timed = Machine {
        nice: MEASURE_NICE,
        ..machine.clone()
    };
    let mut r = BenchResults {
        guestscope_version: env!("CARGO_PKG_VERSION").to_string(),
        date: utc_date(started_unix_s),
        started_unix_s,
        machine: MachineInfo {
            accel: choice.accel.as_str().into(),
            accel_reason: choice.reason.clone(),
            host_cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            host_cpu_model: cpu_model(),
            qemu: qemu_version(&machine.qemu),
            guest_kernel: String::new(),
            guest_vcpus: machine.cpus,
            guest_memory_mb: machine.memory_mb,
            load_before: load(),
            load_after: String::new(),
        },
        ..Default::default()
    };
    // (boot, seconds to the agent's hello, seconds to the kernel's first line); each boot's
    // session is dropped once analysed, so the memory run starts from a small process.
    let mut boots: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    let boot_of =
        |name: &str, b: &Booted| (name.to_string(), b.hello_host_s, b.marks.kernel_banner_s);
    let part = |name: &str| o.only.is_empty() || o.only.iter().any(|p| p == name);
    let mut offsets: Result<TaskOffsets, String> = Err("the capacity boot was not run".into());

    // 1. Capacity (its end artifacts also give the BTF the gdb method needs).
    if part("capacity") {
        (o.progress)("capacity: raw vsock blasts, then the event stream at rising rates");
        let mut marks = ByteMarks::default();
        let cap_jsonl = o.work_dir.join("capacity-events.jsonl");
        let cap_sink = File::create(&cap_jsonl).map_err(|source| BenchError::Write {
            path: cap_jsonl.clone(),
            source,
        })?;
        let cap = guest::boot(
            &timed,
            &capacity_plan(o),
            // The real path: every event written to events.jsonl, as `lab` does.
            Box::new(BufWriter::with_capacity(1 << 20, cap_sink)),
            &o.work_dir.join("serial-capacity.log"),
            BootSetup {
                blast_port: Some(BLAST_PORT),
                ..BootSetup::default()
            },
            &mut |s, bytes| {
                marks.observe(s, bytes);
            },
        )
        .map_err(BenchError::Boot)?;
        let _ = std::fs::remove_file(&cap_jsonl);
        let cap_runs = outcomes(&cap, &marks.marks);
        r.capacity = Some(capacity(o, &cap, &cap_runs, &mut r.problems));
        note_outcome("capacity", &cap, &mut r.problems);
        offsets = cap
            .session
            .artifacts
            .get("btf")
            .map(|a| guest_kernel::btf::task_offsets(&a.data).map_err(|e| e.to_string()))
            .unwrap_or_else(|| Err("the capacity boot sent no BTF".into()));
        if let Some(h) = &cap.session.hello {
            r.machine.guest_kernel = h.kernel_release.clone();
        }
        boots.push(boot_of("capacity", &cap));
        drop(cap);
    }

    // 2. Overhead and the gdb method.
    if part("overhead") && !interrupted(&mut r.problems) {
        (o.progress)(
            "overhead: fopen and cpuinfo loops untraced, with every probe, under ftrace; then the gdb method",
        );
        // The gdbstub's socket, private to this user as in `lab`.
        let gdb_dir = tempfile::Builder::new()
            .prefix("guestscope-bench-gdb-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| BenchError::Boot(format!("making the gdbstub's directory: {e}")))?;
        let gdb = GdbEndpoint::Unix(gdb_dir.path().join("gdb.sock"));
        let gdb_threads: std::cell::RefCell<Vec<GdbTraceThread>> = Default::default();
        let mut marks = ByteMarks::default();
        let gdb_opts = Cr3Options {
            step_over: StepOver::Reinsert,
            hit_timeout: Duration::from_secs(GDB_START_DELAY_MS / 1000 + 5),
            timeout: Duration::from_secs(300),
            ..Cr3Options::default()
        };
        let over = guest::boot(
            &timed,
            &overhead_plan(o),
            Box::new(io::sink()),
            &o.work_dir.join("serial-overhead.log"),
            BootSetup {
                gdb: Some(gdb.clone()),
                ..BootSetup::default()
            },
            &mut |s, bytes| {
                let (started_name, _) = marks.observe(s, bytes);
                let Some(name) = started_name.filter(|n| n.starts_with("gdb-")) else {
                    return;
                };
                let (Some(k), Ok(off)) = (s.kallsyms.clone(), offsets.clone()) else {
                    return;
                };
                let port = gdb.clone();
                let pid = s.workloads.last().map(|w| w.started.pid).unwrap_or(0);
                let (n, opts) = (o.gdb_iterations, gdb_opts.clone());
                let handle = std::thread::spawn(move || gdb_trace(port, &k, &off, pid, n, &opts));
                gdb_threads.borrow_mut().push((name, handle));
            },
        )
        .map_err(BenchError::Boot)?;
        let over_runs = outcomes(&over, &marks.marks);
        let mut traces = BTreeMap::new();
        for (name, t) in gdb_threads.into_inner() {
            match t.join() {
                Ok(Ok(trace)) => {
                    traces.insert(name, trace);
                }
                Ok(Err(e)) => r
                    .problems
                    .push(format!("{name}: the gdb method failed: {e}")),
                Err(_) => r.problems.push(format!("{name}: the gdb thread panicked")),
            }
        }
        if let Err(e) = &offsets {
            r.problems
                .push(format!("gdb method not run: no task_struct offsets ({e})"));
        }
        r.overhead = vec![
            loop_overhead(
                "fopen",
                o.fopen_iterations,
                o.reps,
                true,
                &over_runs,
                &mut r.problems,
            ),
            loop_overhead(
                "cpuinfo",
                o.cpuinfo_iterations,
                o.reps,
                false,
                &over_runs,
                &mut r.problems,
            ),
        ];
        r.gdb = Some(gdb_comparison(o, &over_runs, &traces, &mut r.problems));
        note_outcome("overhead", &over, &mut r.problems);
        boots.push(boot_of("overhead", &over));
        drop(over);
    }

    // 3. Memory.
    if part("memory") && !interrupted(&mut r.problems) {
        let rate = r
            .capacity
            .as_ref()
            .and_then(|c| c.steps.iter().map(|s| s.rate).reduce(f64::max))
            .unwrap_or(0.0);
        let fit = (rate * o.memory_budget.as_secs_f64()) as u64;
        let events = if fit > 0 {
            o.memory_events.min(fit.max(100_000))
        } else {
            o.memory_events
        };
        if events < o.memory_events {
            r.problems.push(format!(
            "memory run cut to {events} events: {} at the fastest measured rate ({rate:.0}/s) would not fit its {} s budget",
            o.memory_events,
            o.memory_budget.as_secs()
        ));
        }
        if o.only.len() != 1 {
            // A fresh process, so the collector's peak is this run's alone (a process keeps
            // the heap its earlier boots freed).
            (o.progress)(&format!(
                "memory: {events} events through the agent and the collector (in a fresh process)"
            ));
            match memory_in_child(o, events) {
                Ok(m) => {
                    boots.push(("memory".to_string(), m.1, None));
                    r.problems.extend(m.2);
                    r.memory = Some(m.0);
                }
                Err(e) => r.problems.push(format!("memory run: {e}")),
            }
        } else {
            (o.progress)(&format!(
                "memory: {events} events through the agent and the collector"
            ));
            let jsonl = o.work_dir.join("memory-events.jsonl");
            let sink = File::create(&jsonl).map_err(|source| BenchError::Write {
                path: jsonl.clone(),
                source,
            })?;
            let reset = reset_own_peak();
            let mut marks = ByteMarks::default();
            let mut points = Vec::new();
            let mem = guest::boot(
                &machine,
                &memory_plan(events),
                Box::new(BufWriter::with_capacity(1 << 20, sink)),
                &o.work_dir.join("serial-memory.log"),
                BootSetup::default(),
                &mut |s, bytes| {
                    if let (_, Some(name)) = marks.observe(s, bytes) {
                        points.push((name, s.events_received, own_peak_kib().unwrap_or(0)));
                    }
                },
            )
            .map_err(BenchError::Boot)?;
            let collector_peak = own_peak_kib();
            let mem_runs = outcomes(&mem, &marks.marks);
            let jsonl_bytes = std::fs::metadata(&jsonl).map(|m| m.len()).unwrap_or(0);
            let _ = std::fs::remove_file(&jsonl);
            r.memory = Some(memory(
                events,
                &mem,
                &mem_runs,
                &points,
                collector_peak,
                reset,
                jsonl_bytes,
            ));
            note_outcome("memory", &mem, &mut r.problems);
            boots.push(boot_of("memory", &mem));
        }
    }

    // 4. Boot to agent-ready, with the default kernel and (if given) the uncompressed one.
    let mut fast = Vec::new();
    if part("boot") && !interrupted(&mut r.problems) {
        (o.progress)("boot: boots to the agent's hello");
        let plan = RunPlan::new(VSOCK_PORT, Vec::new());
        let kernels: Vec<(&str, PathBuf)> = std::iter::once(("default", o.kernel.clone()))
            .chain(o.fast_kernel.clone().map(|k| ("uncompressed", k)))
            .collect();
        for i in 0..o.boot_samples {
            for (label, kernel) in &kernels {
                if kernel != &o.kernel
                    && let Err(e) = inputs::check_kernel(kernel)
                {
                    r.problems
                        .push(format!("uncompressed kernel not booted: {e}"));
                    continue;
                }
                let m = Machine {
                    kernel: kernel.clone(),
                    ..machine.clone()
                };
                let log = o.work_dir.join(format!("serial-boot-{label}-{i}.log"));
                match guest::boot(
                    &m,
                    &plan,
                    Box::new(io::sink()),
                    &log,
                    BootSetup {
                        stop_at_hello: true,
                        ..BootSetup::default()
                    },
                    &mut |_, _| {},
                ) {
                    Ok(b) if *label == "default" => boots.push(boot_of(&format!("boot {i}"), &b)),
                    Ok(b) => fast.push(boot_of(&format!("uncompressed boot {i}"), &b)),
                    Err(e) => r.problems.push(format!("{label} boot {i}: {e}")),
                }
            }
        }
    }
    r.boot = boot_times(&boots, o.lab.as_ref().and_then(|(_, p)| p.as_deref()));
    r.boot_uncompressed = (!fast.is_empty()).then(|| boot_times(&fast, None));
    r.lab = o
        .lab
        .as_ref()
        .map(|(wall_s, summary)| lab_timing(*wall_s, summary.as_deref()));
    r.machine.load_after = load();
    r.wall_s = started.elapsed().as_secs_f64();
    r.targets = report::targets(&r);
    write(o, &r)?;
    Ok(r)
}

/// Whether the bench was interrupted (Ctrl-C, SIGTERM): the remaining parts are skipped.
fn interrupted(problems: &mut Vec<String>) -> bool {
    match crate::interrupt::received() {
        Some(signal) => {
            let note = format!("interrupted by {signal}: the remaining parts were not run");
            if !problems.contains(&note) {
                problems.push(note);
            }
            true
        }
        None => false,
    }
}

/// Runs the memory part in a child `guestscope bench --only memory`; returns its figures,
/// its boot's seconds to hello, and its problems.
fn memory_in_child(
    o: &BenchOptions,
    events: u64,
) -> Result<(Memory, Option<f64>, Vec<String>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding guestscope: {e}"))?;
    let out = o.work_dir.join("memory");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let status = std::process::Command::new(&exe)
        .arg("bench")
        .arg("--kernel")
        .arg(&o.kernel)
        .arg("--initrd")
        .arg(&o.initrd)
        .arg("--out")
        .arg(&out)
        .arg("--work-dir")
        .arg(&o.work_dir)
        .args(["--only", "memory", "--memory-events", &events.to_string()])
        .args([
            "--qemu",
            &o.qemu,
            "--vhost-device-vsock",
            &o.vhost_device_vsock,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    let json = std::fs::read(out.join("results.json"))
        .map_err(|e| format!("the memory run wrote no results ({status}): {e}"))?;
    let v: serde_json::Value = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    let memory: Memory =
        serde_json::from_value(v["memory"].clone()).map_err(|e| format!("memory results: {e}"))?;
    let hello = v["boot"]["samples"]
        .as_array()
        .and_then(|s| s.first())
        .and_then(|s| s[1].as_f64());
    let problems = v["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(|p| format!("memory run: {p}")))
        .collect();
    Ok((memory, hello, problems))
}

fn note_outcome(what: &str, b: &Booted, problems: &mut Vec<String>) {
    if !b.outcome.complete {
        problems.push(format!(
            "{what} boot incomplete: {}{}",
            b.outcome.how,
            b.outcome
                .detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        ));
    }
    let seq = &b.session.seq;
    if seq.missing > 0 || seq.duplicates > 0 {
        problems.push(format!(
            "{what} boot: {} stream records missing, {} duplicated",
            seq.missing, seq.duplicates
        ));
    }
}

/// Connects to the gdbstub and traces [`GDB_SYMBOL`] for `pid` until `n` hits.
fn gdb_trace(
    gdb: GdbEndpoint,
    k: &guest_kernel::kallsyms::Kallsyms,
    off: &TaskOffsets,
    pid: u32,
    n: u64,
    opts: &Cr3Options,
) -> Result<FunctionTrace, String> {
    let mut client = Client::connect(gdb, opts.client.clone()).map_err(|e| e.to_string())?;
    let trace = syscall_cr3::trace_function(&mut client, k, GDB_SYMBOL, off, pid, n, opts);
    let detached = client.detach();
    let trace = trace.map_err(|e| e.to_string())?;
    detached.map_err(|e| e.to_string())?;
    Ok(trace)
}

fn series(
    runs: &BTreeMap<String, Ran>,
    prefix: &str,
    reps: usize,
    f: impl Fn(&Ran) -> Option<f64>,
) -> Vec<Option<f64>> {
    (0..reps)
        .map(|rep| runs.get(&format!("{prefix}-{rep}")).and_then(&f))
        .collect()
}

fn present(v: &[Option<f64>]) -> Vec<f64> {
    v.iter().flatten().copied().collect()
}

fn loop_overhead(
    workload: &str,
    iterations: u64,
    reps: usize,
    with_ftrace: bool,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> LoopOverhead {
    for (name, ran) in runs
        .iter()
        .filter(|(n, _)| n.starts_with(&format!("{workload}-")))
    {
        if !ran.ok() || ran.elapsed_ns.is_none() {
            problems.push(format!(
                "{name}: exit status {:?}, no loop time",
                ran.status
            ));
        }
        if let Some(t) = &ran.tracing {
            for e in &t.errors {
                problems.push(format!("{name}: {e}"));
            }
        }
    }
    let base: Vec<f64> = (0..2)
        .filter_map(|i| runs.get(&format!("{workload}-base-{i}"))?.matched_total())
        .map(|m| m as f64)
        .collect();
    let base = stats::median(&base);
    let base = if base.is_finite() { base } else { 0.0 };
    let ms = |r: &Ran| r.elapsed_s().map(|s| s * 1e3);
    let off = series(runs, &format!("{workload}-off"), reps, ms);
    let all = series(runs, &format!("{workload}-all"), reps, ms);
    let loop_events = series(runs, &format!("{workload}-all"), reps, |r| {
        r.matched_total().map(|m| (m as f64 - base).max(0.0))
    });
    let drain = series(runs, &format!("{workload}-all"), reps, |r| {
        r.tracing.as_ref().map(|t| t.drain_ns as f64 / 1e6)
    });
    let all_drained: Vec<Option<f64>> = all
        .iter()
        .zip(&drain)
        .map(|(a, d)| Some((*a)? + (*d)?))
        .collect();
    let agent_cpu = series(runs, &format!("{workload}-all"), reps, |r| {
        let t = r.tracing.as_ref()?;
        let events = r.matched_total()?;
        (events > 0).then(|| t.agent_cpu_ns as f64 / 1e3 / events as f64)
    });
    let n = iterations.max(1) as f64;
    let mut by_probe = Vec::new();
    for kind in ProbeKind::BUILTIN {
        let per: Vec<f64> = (0..reps)
            .filter_map(|rep| runs.get(&format!("{workload}-all-{rep}")))
            .map(|r| r.counters(kind.name()).matched as f64 / n)
            .collect();
        by_probe.push((kind.name().to_string(), stats::median(&per)));
    }
    let all_runs = || (0..reps).filter_map(|rep| runs.get(&format!("{workload}-all-{rep}")));
    let nested: Vec<f64> = all_runs()
        .filter_map(|r| r.tracing.as_ref())
        .map(|t| t.counters.iter().map(|(_, c)| c.nested).sum::<u64>() as f64 / n)
        .collect();
    let without_stacks = with_ftrace.then(|| {
        let ns = series(runs, &format!("{workload}-nostack"), reps, ms);
        let ns_events = series(runs, &format!("{workload}-nostack"), reps, |r| {
            r.matched_total().map(|m| (m as f64 - base).max(0.0))
        });
        NoStackOverhead {
            traced_ms: Spread::of(&present(&ns)),
            ratio: Spread::of(&stats::paired_ratios(&ns, &off)),
            us_per_event: Spread::of(&stats::paired_cost_per(&ns, &off, &ns_events))
                .map(|s| s.scaled(1e3)),
            walk_us_per_event: Spread::of(&stats::paired_cost_per(&all, &ns, &loop_events))
                .map(|s| s.scaled(1e3)),
        }
    });
    let user_probe = with_ftrace.then(|| {
        let fd = series(runs, &format!("{workload}-fd"), reps, ms);
        let ufd = series(runs, &format!("{workload}-ufd"), reps, ms);
        let events = |cond: &str, probe: &str| {
            series(runs, &format!("{workload}-{cond}"), reps, |r| {
                r.tracing.as_ref()?;
                Some(r.counters(probe).matched as f64)
            })
        };
        let fd_events = events("fd", ProbeKind::AllocFd.name());
        let ufd_events = events("ufd", ProbeKind::Kprobe.name());
        let ffd = series(runs, &format!("{workload}-ffd"), reps, ms);
        let ffd_events = events("ffd", ProbeKind::Fentry.name());
        UserProbeOverhead {
            function: GDB_SYMBOL.into(),
            builtin_ms: Spread::of(&present(&fd)),
            user_ms: Spread::of(&present(&ufd)),
            builtin_events: Spread::of(&present(&fd_events)),
            user_events: Spread::of(&present(&ufd_events)),
            builtin_us_per_event: Spread::of(&stats::paired_cost_per(&fd, &off, &fd_events))
                .map(|s| s.scaled(1e3)),
            user_us_per_event: Spread::of(&stats::paired_cost_per(&ufd, &off, &ufd_events))
                .map(|s| s.scaled(1e3)),
            user_vs_builtin: Spread::of(&stats::paired_ratios(
                &stats::paired_differences(&ufd, &off),
                &stats::paired_differences(&fd, &off),
            )),
            fentry_ms: Spread::of(&present(&ffd)),
            fentry_events: Spread::of(&present(&ffd_events)),
            fentry_us_per_event: Spread::of(&stats::paired_cost_per(&ffd, &off, &ffd_events))
                .map(|s| s.scaled(1e3)),
            fentry_vs_kprobe: Spread::of(&stats::paired_ratios(
                &stats::paired_differences(&ffd, &off),
                &stats::paired_differences(&ufd, &off),
            )),
        }
    });
    let ftrace = with_ftrace.then(|| {
        let ft = series(runs, &format!("{workload}-ftrace"), reps, ms);
        let hits = series(runs, &format!("{workload}-ftrace"), reps, |r| {
            r.tracing.as_ref()?.ftrace.as_ref().map(|f| f.hits as f64)
        });
        FtraceOverhead {
            function: GDB_SYMBOL.into(),
            traced_ms: Spread::of(&present(&ft)),
            ratio: Spread::of(&stats::paired_ratios(&ft, &off)),
            hits_per_iteration: Spread::of(
                &present(&hits).iter().map(|h| h / n).collect::<Vec<_>>(),
            ),
            us_per_hit: Spread::of(&stats::paired_cost_per(&ft, &off, &hits))
                .map(|s| s.scaled(1e3)),
        }
    });
    LoopOverhead {
        workload: workload.into(),
        iterations,
        reps,
        untraced_ms: Spread::of(&present(&off)),
        traced_ms: Spread::of(&present(&all)),
        ratio: Spread::of(&stats::paired_ratios(&all, &off)),
        events_per_iteration: Spread::of(
            &present(&loop_events)
                .iter()
                .map(|e| e / n)
                .collect::<Vec<_>>(),
        ),
        events_per_iteration_by_probe: by_probe,
        nested_per_iteration: stats::median(&nested),
        stack_failed: all_runs()
            .map(|r| {
                r.tracing
                    .as_ref()
                    .map_or(0, |t| t.counters.iter().map(|(_, c)| c.stack_failed).sum())
            })
            .sum(),
        ring_full: all_runs()
            .map(|r| {
                r.tracing
                    .as_ref()
                    .map_or(0, |t| t.counters.iter().map(|(_, c)| c.ring_full).sum())
            })
            .sum(),
        // ms / events → µs: × 1000.
        us_per_event: Spread::of(&stats::paired_cost_per(&all, &off, &loop_events))
            .map(|s| s.scaled(1e3)),
        us_per_event_with_drain: Spread::of(&stats::paired_cost_per(
            &all_drained,
            &off,
            &loop_events,
        ))
        .map(|s| s.scaled(1e3)),
        drain_ms: Spread::of(&present(&drain)),
        agent_cpu_us_per_event: Spread::of(&present(&agent_cpu)),
        without_stacks,
        user_probe,
        runs_ms: (0..reps)
            .flat_map(|rep| {
                let n = if with_ftrace { CONDITIONS.len() } else { 2 };
                stats::rotation(n, rep)
                    .into_iter()
                    .map(move |c| format!("{}-{rep}", CONDITIONS[c]))
            })
            .map(|c| {
                let ms = runs.get(&format!("{workload}-{c}")).and_then(ms);
                (c, ms)
            })
            .collect(),
        ftrace,
    }
}

fn gdb_comparison(
    o: &BenchOptions,
    runs: &BTreeMap<String, Ran>,
    traces: &BTreeMap<String, FunctionTrace>,
    problems: &mut Vec<String>,
) -> GdbComparison {
    let n = o.gdb_iterations.max(2);
    let per_iter = |r: &Ran| r.elapsed_s().map(|s| s * 1e3 / n as f64);
    let gs = series(runs, "short-fd", o.gdb_reps, per_iter);
    let gs_all = series(runs, "short-all", o.gdb_reps, per_iter);
    let off = series(runs, "short-off", o.gdb_reps, per_iter);
    let gdb: Vec<Option<f64>> = (0..o.gdb_reps)
        .map(|rep| {
            let name = format!("gdb-{rep}");
            let t = traces.get(&name)?;
            if t.matching != n {
                problems.push(format!(
                    "{name}: the gdb method saw {} of the loop's {n} {GDB_SYMBOL} calls ({})",
                    t.matching, t.ended
                ));
                return None;
            }
            // n hits span n - 1 iterations.
            Some(t.matching_span_s * 1e3 / (n - 1) as f64)
        })
        .collect();
    let per_hit: Vec<Option<f64>> = vec![Some(1.0); o.gdb_reps];
    GdbComparison {
        symbol: GDB_SYMBOL.into(),
        iterations: n,
        reps: o.gdb_reps,
        gdb_ms_per_iteration: Spread::of(&present(&gdb)),
        guestscope_ms_per_iteration: Spread::of(&present(&gs)),
        guestscope_all_ms_per_iteration: Spread::of(&present(&gs_all)),
        guestscope_all_faster: Spread::of(&stats::paired_ratios(&gdb, &gs_all)),
        untraced_ms_per_iteration: Spread::of(&present(&off)),
        guestscope_faster: Spread::of(&stats::paired_ratios(&gdb, &gs)),
        gdb_slowdown: Spread::of(&stats::paired_ratios(&gdb, &off)),
        gdb_ms_per_hit: Spread::of(&stats::paired_cost_per(&gdb, &off, &per_hit)),
        traces: traces.values().cloned().collect(),
    }
}

fn capacity(
    o: &BenchOptions,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    problems: &mut Vec<String>,
) -> Capacity {
    let host: Vec<f64> = b
        .blasts
        .iter()
        .filter(|x| x.seconds > 0.0)
        .map(|x| x.bytes as f64 / x.seconds / 1e6)
        .collect();
    let guest: Vec<f64> = (0..o.blast_reps)
        .filter_map(|i| runs.get(&format!("blast-{i}")))
        .filter_map(|r| Some(o.blast_bytes as f64 / r.elapsed_s()? / 1e6))
        .collect();
    for x in &b.blasts {
        if x.bytes != o.blast_bytes {
            problems.push(format!(
                "a vsock blast delivered {} of {} bytes",
                x.bytes, o.blast_bytes
            ));
        }
    }
    let mut steps = Vec::new();
    let mut rates: Vec<u64> = o.rates.clone();
    rates.push(0);
    for rate in rates {
        let name = format!("flood-{rate}");
        let Some(ran) = runs.get(&name) else { continue };
        let c = ran.counters(ProbeKind::AllocFd.name());
        let received = ran
            .received
            .get(ProbeKind::AllocFd.name())
            .copied()
            .unwrap_or(0);
        let Some(seconds) = ran.elapsed_s() else {
            problems.push(format!(
                "{name}: exit status {:?}, no loop time",
                ran.status
            ));
            continue;
        };
        let wire_bytes = ran.bytes_at_exit.saturating_sub(ran.bytes_at_start);
        let step = CapacityStep {
            requested_rate: rate,
            matched: c.matched,
            emitted: c.emitted,
            ring_full: c.ring_full,
            received,
            seconds,
            rate: c.matched as f64 / seconds,
            lossless: c.ring_full == 0 && received == c.matched && c.matched > 0,
            accounted: received + c.ring_full == c.matched && c.emitted == received,
            wire_bytes,
            wire_mb_s: wire_bytes as f64 / seconds / 1e6,
            ring_mb_s: c.emitted as f64 * size_of::<StackedEvent>() as f64 / seconds / 1e6,
        };
        if !step.accounted {
            problems.push(format!(
                "{name}: counts do not add up: matched {} != received {} + ring_full {} (emitted {})",
                c.matched, received, c.ring_full, c.emitted
            ));
        }
        steps.push(step);
    }
    let highest = stats::highest_lossless(
        &steps
            .iter()
            .map(|t| (t.rate, t.lossless))
            .collect::<Vec<_>>(),
    );
    let best = highest
        .and_then(|r| steps.iter().find(|s| s.rate == r))
        .cloned();
    let raw = Spread::of(&host);
    Capacity {
        raw: RawThroughput {
            reps: b.blasts.len(),
            bytes: o.blast_bytes,
            host_mb_s: raw.clone(),
            guest_mb_s: Spread::of(&guest),
        },
        max_lossless_rate: best.as_ref().map(|s| s.rate),
        max_lossless_wire_mb_s: best.as_ref().map(|s| s.wire_mb_s),
        max_lossless_ring_mb_s: best.as_ref().map(|s| s.ring_mb_s),
        wire_bytes_per_event: best
            .as_ref()
            .filter(|s| s.received > 0)
            .map(|s| s.wire_bytes as f64 / s.received as f64),
        fraction_of_raw: match (&best, &raw) {
            (Some(s), Some(r)) if r.median > 0.0 => Some(s.wire_mb_s / r.median),
            _ => None,
        },
        accounting_ok: !steps.is_empty() && steps.iter().all(|s| s.accounted),
        steps,
    }
}

fn memory(
    events: u64,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    points: &[(String, u64, u64)],
    collector_peak: Option<u64>,
    reset: bool,
    jsonl_bytes: u64,
) -> Memory {
    let status = b.session.artifact_text("agent_status").unwrap_or_default();
    let pts: Vec<MemoryPoint> = points
        .iter()
        .map(|(name, received, collector)| MemoryPoint {
            events: *received,
            agent_peak_kib: runs
                .get(name)
                .and_then(|r| r.tracing.as_ref())
                .map_or(0, |t| t.agent_peak_rss_kib),
            collector_peak_kib: *collector,
        })
        .collect();
    let slope = match pts.as_slice() {
        [a, .., z] if z.events > a.events => {
            let m = (z.events - a.events) as f64 / 1e6;
            Some((
                (z.agent_peak_kib as f64 - a.agent_peak_kib as f64) / m,
                (z.collector_peak_kib as f64 - a.collector_peak_kib as f64) / m,
            ))
        }
        _ => None,
    };
    Memory {
        events_planned: events,
        events_received: b.session.events_received,
        ring_full: runs
            .values()
            .map(|r| r.counters(ProbeKind::AllocFd.name()).ring_full)
            .sum(),
        points: pts,
        agent_peak_kib: status_kib(&status, "VmHWM"),
        agent_rss_anon_kib: status_kib(&status, "RssAnon"),
        agent_rss_file_kib: status_kib(&status, "RssFile"),
        collector_peak_kib: collector_peak,
        collector_peak_reset: reset,
        kib_per_million_events: slope,
        events_jsonl_bytes: jsonl_bytes,
        wall_s: b.wall_s,
    }
}

fn boot_times(
    boots: &[(String, Option<f64>, Option<f64>)],
    lab_summary: Option<&Path>,
) -> BootTimes {
    let mut samples: Vec<(String, f64)> = boots
        .iter()
        .filter_map(|(n, hello, _)| Some((format!("bench {n}"), (*hello)?)))
        .collect();
    let mut banners: Vec<f64> = boots.iter().filter_map(|(_, _, banner)| *banner).collect();
    if let Some(summary) = lab_summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
    {
        for s in summary["experiments"]["boot"]["samples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(i), Some(t)) = (s["boot"].as_u64(), s["agent_hello_s"].as_f64()) {
                samples.push((format!("lab boot {i}"), t));
            }
            if let Some(t) = s["kernel_banner_s"].as_f64() {
                banners.push(t);
            }
        }
    }
    BootTimes {
        agent_ready_s: Spread::of(&samples.iter().map(|(_, t)| *t).collect::<Vec<_>>()),
        kernel_banner_s: Spread::of(&banners),
        samples,
    }
}

fn lab_timing(wall_s: f64, summary: Option<&Path>) -> LabTiming {
    let s = summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    LabTiming {
        wall_s,
        guestscope_lab_s: s.as_ref().and_then(|s| s["run"]["wall_s"].as_f64()),
        complete: s
            .as_ref()
            .and_then(|s| s["run"]["outcome"]["complete"].as_bool()),
    }
}

fn write(o: &BenchOptions, r: &BenchResults) -> Result<(), BenchError> {
    let json = serde_json::to_vec_pretty(r).map_err(|e| BenchError::Write {
        path: o.out_dir.join("results.json"),
        source: io::Error::other(e),
    })?;
    for (name, data) in [
        ("results.json", json),
        ("results.md", report::render(r).into_bytes()),
    ] {
        let path = o.out_dir.join(name);
        atomic::write(&path, &data).map_err(|source| BenchError::Write { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_unix_time() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_795_564_800), "2026-11-25");
        assert_eq!(utc_date(1_795_651_199), "2026-11-25");
    }

    #[test]
    fn elapsed_is_read_from_the_summary_line() {
        let out = "noise\n{\"workload\":\"fopen\",\"iterations\":2000,\"elapsed_ns\":61234567}\n";
        assert_eq!(elapsed_ns(out), Some(61_234_567));
        assert_eq!(elapsed_ns("{\"read\":1,\"latency_ns\":5}\n"), None);
        assert_eq!(elapsed_ns(""), None);
    }

    #[test]
    fn status_fields() {
        let s = "VmPeak:\t  9000 kB\nVmHWM:\t  4321 kB\nRssAnon:\t  1200 kB\n";
        assert_eq!(status_kib(s, "VmHWM"), Some(4321));
        assert_eq!(status_kib(s, "RssAnon"), Some(1200));
        assert_eq!(status_kib(s, "RssFile"), None);
    }

    #[test]
    fn overhead_plan_rotates_conditions_and_pairs_gdb_runs() {
        let o = BenchOptions {
            reps: 3,
            gdb_reps: 2,
            ..BenchOptions::default()
        };
        let p = overhead_plan(&o);
        // Every probe a workload asks for is one the agent's plan check knows.
        for w in &p.workloads {
            if let Tracing::Probes(n) | Tracing::ProbesWithoutStacks(n) = &w.tracing {
                for name in n {
                    assert!(ProbeKind::from_name(name).is_some(), "{}: {name}", w.name);
                }
            }
        }
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        let fopen: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with("fopen-") && !n.contains("base"))
            .collect();
        assert_eq!(
            fopen,
            [
                "fopen-off-0",
                "fopen-all-0",
                "fopen-nostack-0",
                "fopen-ftrace-0",
                "fopen-fd-0",
                "fopen-ufd-0",
                "fopen-ffd-0",
                "fopen-all-1",
                "fopen-nostack-1",
                "fopen-ftrace-1",
                "fopen-fd-1",
                "fopen-ufd-1",
                "fopen-ffd-1",
                "fopen-off-1",
                "fopen-nostack-2",
                "fopen-ftrace-2",
                "fopen-fd-2",
                "fopen-ufd-2",
                "fopen-ffd-2",
                "fopen-off-2",
                "fopen-all-2",
            ]
        );
        let cpuinfo: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| n.starts_with("cpuinfo-") && !n.contains("base"))
            .collect();
        assert_eq!(
            cpuinfo,
            [
                "cpuinfo-off-0",
                "cpuinfo-all-0",
                "cpuinfo-all-1",
                "cpuinfo-off-1",
                "cpuinfo-off-2",
                "cpuinfo-all-2"
            ]
        );
        let tail: Vec<&str> = names[names.len() - 8..].to_vec();
        assert_eq!(
            tail,
            [
                "short-off-0",
                "short-fd-0",
                "short-all-0",
                "gdb-0",
                "short-fd-1",
                "short-all-1",
                "short-off-1",
                "gdb-1"
            ]
        );
        let user = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-ufd-0")
            .unwrap();
        assert_eq!(
            user.tracing,
            Tracing::UserProbes(vec!["kprobe:alloc_fd".into()])
        );
        let fentry = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-ffd-0")
            .unwrap();
        assert_eq!(
            fentry.tracing,
            Tracing::UserProbes(vec!["fentry:alloc_fd".into()])
        );
        let fd = p.workloads.iter().find(|w| w.name == "short-fd-0").unwrap();
        assert_eq!(fd.tracing, Tracing::Probes(vec!["alloc_fd".into()]));
        let gdb = p.workloads.iter().find(|w| w.name == "gdb-0").unwrap();
        assert_eq!(gdb.tracing, Tracing::Probes(vec![]));
        assert!(gdb.args.contains(&"--start-delay-ms".to_string()));
        let ft = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-ftrace-0")
            .unwrap();
        assert_eq!(ft.tracing, Tracing::FtraceKprobe("alloc_fd".into()));
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "workload names are unique");
    }

    #[test]
    fn ladder_steps_overfill_the_ring() {
        let ring = u64::from(guestscope_common::maps::EVENTS_BYTES) / 584;
        assert_eq!(step_events(1000, 2.0), 2 * ring);
        assert_eq!(step_events(1_000_000, 2.0), 2_000_000);
        let p = capacity_plan(&BenchOptions {
            rates: vec![10, 20],
            blast_reps: 1,
            ..BenchOptions::default()
        });
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["blast-0", "flood-10", "flood-20", "flood-0"]);
    }
}
