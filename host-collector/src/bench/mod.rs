//! `guestscope bench`: how much cheaper guestscope is than the lab's gdb method, and how
//! close it runs to the limits, measured side by side on this machine.
//!
//! Three boots of the guest, each with a plan made of measurement workloads:
//! 1. capacity: raw vsock blasts, then the event stream paced at rising rates until it
//!    loses events (every loss counted by the probes, every count checked), then the
//!    pipeline alone (events the agent makes itself: no eBPF, no workload);
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
//! - `options.rs`: what a run is asked to do ([`BenchOptions`]);
//! - `plans.rs`: the plans of the boots, the conditions in rotating order;
//! - `measures.rs`: from the boots' outcomes to the figures.
//! - [`stats`]: medians, spread, pairing, rotation.
//! - [`guest`]: one boot with the hooks the benchmarks need.
//! - [`results`]: what `results.json` holds.
//! - [`report`][]: `results.md`.

pub mod guest;
pub mod report;
pub mod results;
pub mod stats;

mod measures;
mod options;
mod plans;

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

use self::measures::*;
pub use self::options::*;
use self::plans::*;
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
        // Replies to the guest wait while the gdb method holds it, as in `lab`: a held
        // guest drains no vsock, and blocked replies stalled the collector until the
        // agent took the link for dead and the boot was lost.
        let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let over = guest::boot(
            &timed,
            &overhead_plan(o),
            Box::new(io::sink()),
            &o.work_dir.join("serial-overhead.log"),
            BootSetup {
                gdb: Some(gdb.clone()),
                replies_paused: Some(paused.clone()),
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
                let handle = crate::lab::spawn_holding(&paused, move || {
                    gdb_trace(port, &k, &off, pid, n, &opts)
                });
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
        let record = std::mem::size_of::<guestscope_common::StackedEvent>() as u64;
        let ring = u64::from(guestscope_common::maps::EVENTS_BYTES) / record;
        assert_eq!(step_events(1000, 2.0), 2 * ring);
        assert_eq!(step_events(1_000_000, 2.0), 2_000_000);
        let p = capacity_plan(&BenchOptions {
            rates: vec![10, 20],
            blast_reps: 1,
            ..BenchOptions::default()
        });
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["blast-0", "flood-10", "flood-20", "flood-0", "synthetic"]
        );
    }
}
