//! The parts of a bench run, each a boot (or several) of the guest: capacity,
//! overhead with the gdb method, memory, and boot times.

use super::*;

/// A boot's name, seconds to the agent's hello, and seconds to the kernel's first line.
pub(super) type BootSample = (String, Option<f64>, Option<f64>);

/// A gdb-method trace running on its own thread, named by its workload.
type GdbTraceThread = (String, JoinHandle<Result<FunctionTrace, String>>);

/// The boot times of boot `name`.
fn boot_of(name: &str, b: &Booted) -> BootSample {
    (name.to_string(), b.hello_host_s, b.marks.kernel_banner_s)
}

/// Capacity: raw vsock blasts, then the event stream at rising rates. Returns the
/// `task_struct` offsets from the boot's BTF, which the gdb method needs.
pub(super) fn capacity_part(
    o: &BenchOptions,
    timed: &Machine,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Result<Result<TaskOffsets, String>, BenchError> {
    (o.progress)("capacity: raw vsock blasts, then the event stream at rising rates");
    let mut marks = StreamMarks::default();
    let cap_jsonl = o.work_dir.join("capacity-events.jsonl");
    let cap_sink = File::create(&cap_jsonl).map_err(|source| BenchError::Write {
        path: cap_jsonl.clone(),
        source,
    })?;
    let cap = guest::boot(
        timed,
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
    let cap_runs = outcomes(&cap, &marks);
    r.capacity = Some(capacity(o, &cap, &cap_runs, &mut r.problems));
    note_outcome("capacity", &cap, &mut r.problems);
    let offsets = cap
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
    Ok(offsets)
}

/// Overhead: the loops untraced, with every probe, under ftrace; then the fopen loop
/// under the gdb method, paired with guestscope runs.
pub(super) fn overhead_part(
    o: &BenchOptions,
    timed: &Machine,
    offsets: &Result<TaskOffsets, String>,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Result<(), BenchError> {
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
    let mut marks = StreamMarks::default();
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
        timed,
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
    let over_runs = outcomes(&over, &marks);
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
    if let Err(e) = offsets {
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
    Ok(())
}

/// Peers: the fopen loop in a root file system with bpftrace, under guestscope, ftrace
/// and bpftrace, in one boot. Not a boot-time sample: this boot mounts a disk the others
/// do not.
pub(super) fn peers_part(
    o: &BenchOptions,
    timed: &Machine,
    r: &mut BenchResults,
) -> Result<(), BenchError> {
    r.peers = peers_on(o, timed, false, "peers", &mut r.problems)?;
    Ok(())
}

/// Instructions: the peers boot again, with the guest's clock counting its
/// instructions ([`crate::qemu::command::INSTRUCTION_CLOCK`]), so each tracer's cost
/// per event is a count of instructions that the host's other work does not move.
/// TCG only.
pub(super) fn instructions_part(
    o: &BenchOptions,
    timed: &Machine,
    r: &mut BenchResults,
) -> Result<(), BenchError> {
    if timed.accel != accel::Accel::Tcg {
        r.problems.push(format!(
            "instructions not run: QEMU counts a guest's instructions only under TCG, and this host runs {}",
            timed.accel.as_str()
        ));
        return Ok(());
    }
    r.peers_instructions = peers_on(o, timed, true, "instructions", &mut r.problems)?;
    Ok(())
}

/// The peers boot on `timed`, its clock the guest's instructions when
/// `instruction_clock`; `part` names it in progress lines, problems and the files left
/// in the work directory. `None` when there is no root file system to run it in.
fn peers_on(
    o: &BenchOptions,
    timed: &Machine,
    instruction_clock: bool,
    part: &str,
    problems: &mut Vec<String>,
) -> Result<Option<PeersBoot>, BenchError> {
    let Some(image) = &o.peer_rootfs else {
        if o.only.iter().any(|p| p == part) {
            problems.push(format!(
                "{part} not run: no --peer-rootfs image with bpftrace"
            ));
        }
        return Ok(None);
    };
    (o.progress)(&if instruction_clock {
        format!("{part}: the peers boot again, the guest's clock counting its instructions")
    } else {
        format!("{part}: the fopen loop under guestscope, ftrace and bpftrace, in one boot")
    });
    let rootfs = match crate::rootfs::prepare(image, &o.kernel, &o.initrd) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("{part} not run: {e}"));
            return Ok(None);
        }
    };
    let description = rootfs.description.clone();
    let m = Machine {
        rootfs: Some(rootfs),
        instruction_clock,
        ..timed.clone()
    };
    let booted = guest::boot(
        &m,
        &peers_plan(o),
        Box::new(io::sink()),
        &o.work_dir.join(format!("serial-{part}.log")),
        BootSetup::default(),
        &mut |_, _| {},
    )
    .map_err(BenchError::Boot)?;
    let runs = outcomes(&booted, &StreamMarks::default());
    // perf's reports as it printed them, beside the serial logs.
    for (name, _, _) in profile::RECORDINGS {
        if let Some(report) = runs.get(&profile::report_name(name)) {
            let path = o.work_dir.join(format!("perf-report-{part}-{name}.txt"));
            if let Err(e) = std::fs::write(&path, &report.output) {
                problems.push(format!("writing {}: {e}", path.display()));
            }
        }
    }
    let boot = peers_boot(o, description, instruction_clock, &runs, problems);
    note_outcome(part, &booted, problems);
    Ok(Some(boot))
}

/// Memory: a long flood of events, with the agent's and the collector's peak RSS;
/// in a fresh process unless this one runs the memory part alone.
pub(super) fn memory_part(
    o: &BenchOptions,
    machine: &Machine,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Result<(), BenchError> {
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
        memory_here(o, machine, events, r, boots)?;
    }
    Ok(())
}

/// The memory run in this process: the collector's peak is this process's.
fn memory_here(
    o: &BenchOptions,
    machine: &Machine,
    events: u64,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Result<(), BenchError> {
    (o.progress)(&format!(
        "memory: {events} events through the agent and the collector"
    ));
    let jsonl = o.work_dir.join("memory-events.jsonl");
    let sink = File::create(&jsonl).map_err(|source| BenchError::Write {
        path: jsonl.clone(),
        source,
    })?;
    let reset = reset_own_peak();
    let mut marks = StreamMarks::default();
    let mut points = Vec::new();
    let mem = guest::boot(
        machine,
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
    let mem_runs = outcomes(&mem, &marks);
    let jsonl_bytes = std::fs::metadata(&jsonl).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&jsonl);
    let measured = memory(
        events,
        &mem,
        &mem_runs,
        &points,
        collector_peak,
        reset,
        jsonl_bytes,
    );
    r.problems.extend(measured.shortfall());
    r.memory = Some(measured);
    note_outcome("memory", &mem, &mut r.problems);
    boots.push(boot_of("memory", &mem));
    Ok(())
}

/// The stack cache checked: the lab's workloads with each event's stack walked and
/// compared with the cache's answer, then the fopen loop with the cache off and on.
pub(super) fn stack_cache_part(
    o: &BenchOptions,
    machine: &Machine,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Result<(), BenchError> {
    (o.progress)(
        "stack cache: the lab's workloads, every stack walked and checked against the cache",
    );
    let mut marks = StreamMarks::default();
    let booted = guest::boot(
        machine,
        &stack_cache_plan(o),
        Box::new(io::sink()),
        &o.work_dir.join("serial-stack-cache.log"),
        BootSetup::default(),
        &mut |s, bytes| {
            marks.observe(s, bytes);
        },
    )
    .map_err(BenchError::Boot)?;
    let runs = outcomes(&booted, &marks);
    r.stack_cache = Some(stack_cache(&runs, &mut r.problems));
    note_outcome("stack cache", &booted, &mut r.problems);
    boots.push(boot_of("stack-cache", &booted));
    Ok(())
}

/// Boot times: boots to the agent's hello with the default kernel and (if given) the
/// uncompressed one. Returns the uncompressed kernel's.
pub(super) fn boot_part(
    o: &BenchOptions,
    machine: &Machine,
    r: &mut BenchResults,
    boots: &mut Vec<BootSample>,
) -> Vec<BootSample> {
    let mut fast = Vec::new();
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
    fast
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
