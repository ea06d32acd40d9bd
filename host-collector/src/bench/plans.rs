//! The plans of the benchmark boots: the workloads of each, in rotating order, and how each condition is traced.

use super::*;
use guestscope_common::event::RAW_EVENT_BYTES;

pub(super) fn spec(name: &str, program: &str, args: &[String], tracing: Tracing) -> WorkloadSpec {
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

/// Baseline `i` of a loop: no iteration, every probe: the events of its process's
/// start and exit, subtracted from the loop's counts.
fn baseline(program: &str, i: usize) -> WorkloadSpec {
    spec(
        &format!("{program}-base-{i}"),
        program,
        &args(&["--iterations", "0"]),
        all_probes(),
    )
}

pub(super) fn all_probes() -> Tracing {
    Tracing::Probes(builtin_names())
}

/// The built-in probes' names.
fn builtin_names() -> Vec<String> {
    ProbeKind::BUILTIN
        .iter()
        .map(|k| k.name().to_string())
        .collect()
}

pub(super) fn no_probes() -> Tracing {
    Tracing::Probes(Vec::new())
}

pub(super) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The conditions of the overhead runs, in the order [`stats::rotation`] rotates: no
/// probe, every probe, every probe without stack walks, an ftrace kprobe, the built-in
/// alloc_fd probe alone, user probes on the same function (kprobe, fentry), every
/// probe walking every event's stack (the stack cache off), and the ftrace peer of the
/// probes on spin_lock and alloc_fd, without and with stacks; `tallied` is every probe
/// with the cached hits only counted per stack, `caller` every probe with the stacks
/// taken by caller, `caller-tallied` both, `unstaged` every probe with each cached hit
/// written on its own (not staged). cpuinfo runs the first two.
pub(super) const CONDITIONS: [&str; 14] = [
    "off",
    "all",
    "unstaged",
    "nostack",
    "tallied",
    "caller",
    "caller-tallied",
    "ftrace",
    "fd",
    "ufd",
    "ffd",
    "walkall",
    "ftpeer",
    "ftpeerstk",
];

/// The kernel functions of the ftrace peer: those of the spin_lock and alloc_fd probes.
pub(super) const PEER_FUNCTIONS: [&str; 2] = ["_raw_spin_lock", GDB_SYMBOL];

/// The task name the ftrace peer keeps hits for: the fopen loop's.
pub(super) const PEER_COMM: &str = "fopen";

/// The conditions of the peers boot, rotated: the untraced loop, guestscope (every
/// probe, with stacks recorded (cached hits staged, or each on its own), the cached
/// hits tallied, the stacks taken by caller (`--stacks caller`), both
/// (`--stacks caller-tallied`), and without stacks), ftrace on the same functions
/// (without and with stacks), and bpftrace on them (a count, and a count per kernel
/// stack, aggregated in the kernel).
pub(super) const PEER_CONDITIONS: [&str; 11] = [
    "off",
    "all",
    "unstaged",
    "tallied",
    "caller",
    "caller-tallied",
    "nostack",
    "ftpeer",
    "ftpeerstk",
    "bpfcount",
    "bpfstack",
];

/// Where the peers boot's root file system has bpftrace.
pub(super) const BPFTRACE: &str = "/usr/bin/bpftrace";

/// bpftrace's program: kprobes on [`PEER_FUNCTIONS`], filtered to [`PEER_COMM`],
/// counting (printed as `@n: N` at the end) or counting per kernel stack (the map is
/// cleared at the end, so its stacks are not printed).
pub(super) fn bpftrace_program(stacks: bool) -> String {
    let probes: Vec<String> = PEER_FUNCTIONS
        .iter()
        .map(|f| format!("kprobe:{f}"))
        .collect();
    let (action, end) = if stacks {
        ("@s[kstack] = count();", "clear(@s);")
    } else {
        ("@n = count();", "print(@n); clear(@n);")
    };
    format!(
        "{} /comm == \"{PEER_COMM}\"/ {{ {action} }} END {{ {end} }}",
        probes.join(", ")
    )
}

/// The peers boot's plan: process-start baselines, then [`PEER_CONDITIONS`] in
/// rotating order, every workload as root (bpftrace needs it; the others match).
pub(super) fn peers_plan(o: &BenchOptions) -> RunPlan {
    let n = o.fopen_iterations.to_string();
    let fopen = format!("{BUILTIN_WORKLOAD_DIR}/fopen");
    let mut w: Vec<WorkloadSpec> = (0..2).map(|i| baseline("fopen", i)).collect();
    for rep in 0..o.peer_reps {
        for c in stats::rotation(PEER_CONDITIONS.len(), rep) {
            let c = PEER_CONDITIONS[c];
            let name = format!("fopen-{c}-{rep}");
            w.push(match c {
                "bpfcount" | "bpfstack" => WorkloadSpec {
                    path: BPFTRACE.into(),
                    origin: WorkloadOrigin::User,
                    // bpftrace compiles its program with LLVM first: slow under TCG.
                    timeout_ms: Some(300_000),
                    ..spec(
                        &name,
                        "fopen",
                        &[
                            "-e".to_string(),
                            bpftrace_program(c == "bpfstack"),
                            "-c".to_string(),
                            format!("{fopen} --iterations {n}"),
                        ],
                        no_probes(),
                    )
                },
                _ => spec(
                    &name,
                    "fopen",
                    &args(&["--iterations", &n]),
                    condition_tracing(c),
                ),
            });
        }
    }
    // Last, so its long loop and perf's report move no timed run.
    w.extend(profile::workloads(
        &fopen,
        o.fopen_iterations * profile::ITERATIONS_FACTOR,
    ));
    for s in &mut w {
        s.as_root = true;
    }
    RunPlan::new(VSOCK_PORT, w)
}

pub(super) fn condition_tracing(c: &str) -> Tracing {
    match c {
        "off" => no_probes(),
        "all" => all_probes(),
        "nostack" => Tracing::ProbesWith(builtin_names(), StackMode::Off),
        "tallied" => Tracing::ProbesWith(builtin_names(), StackMode::Tallied),
        "caller" => Tracing::ProbesWith(builtin_names(), StackMode::Caller),
        "caller-tallied" => Tracing::ProbesWith(builtin_names(), StackMode::CallerTallied),
        "unstaged" => Tracing::ProbesWith(builtin_names(), StackMode::Unstaged),
        "walkall" => Tracing::ProbesWith(builtin_names(), StackMode::WalkEvery),
        "fd" => Tracing::Probes(vec![ProbeKind::AllocFd.name().to_string()]),
        // The same function through a user probe (`--probe kprobe:alloc_fd`).
        "ufd" => Tracing::UserProbes(vec![format!("kprobe:{GDB_SYMBOL}")]),
        "ffd" => Tracing::UserProbes(vec![format!("fentry:{GDB_SYMBOL}")]),
        "ftpeer" | "ftpeerstk" => Tracing::FtracePeer {
            functions: args(&PEER_FUNCTIONS),
            comm: PEER_COMM.into(),
            stacktrace: c == "ftpeerstk",
        },
        _ => Tracing::FtraceKprobe(GDB_SYMBOL.into()),
    }
}

/// The overhead boot's plan: the loops in rotating order, process-start baselines,
/// then the gdb comparison.
pub(super) fn overhead_plan(o: &BenchOptions) -> RunPlan {
    let mut w = Vec::new();
    let fopen_n = o.fopen_iterations.to_string();
    let cpuinfo_n = o.cpuinfo_iterations.to_string();
    // Events of process start and exit, to subtract from the loops' counts.
    for i in 0..2 {
        w.push(baseline("fopen", i));
        w.push(baseline("cpuinfo", i));
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
        w.push(WorkloadSpec {
            // The host holds the VM at every hit: the link stays silent meanwhile (a
            // stop with vsock traffic in flight can wedge the vhost-user device; the
            // agent took the unanswered link for dead and reconnected 5 times a boot).
            quiet_link: true,
            ..spec(
                &format!("gdb-{rep}"),
                "fopen",
                &args(&["--iterations", &gdb_n, "--start-delay-ms", &delay]),
                no_probes(),
            )
        });
    }
    RunPlan::new(VSOCK_PORT, w)
}

/// Events per ladder step at `rate` (at least enough to fill the ring twice).
pub(super) fn step_events(rate: u64, seconds: f64) -> u64 {
    let ring_records =
        u64::from(guestscope_common::maps::EVENTS_BYTES) / size_of::<StackedEvent>() as u64;
    ((rate as f64 * seconds) as u64).max(2 * ring_records)
}

/// The capacity boot's workload whose events the agent makes itself (the pipeline's
/// ceiling, eBPF and the workload out of it); run `i` is `synthetic-i`.
pub(super) const SYNTHETIC: &str = "synthetic";

/// Events a synthetic run sends: as many as a raw blast of `blast_bytes` would hold
/// in their 64-byte records ([`RAW_EVENT_BYTES`]), so that the two it is paired with
/// move the same events (packed, the stream carries fewer bytes).
pub(super) fn synthetic_events(blast_bytes: u64) -> u64 {
    (blast_bytes / RAW_EVENT_BYTES as u64).max(1)
}

/// The capacity boot's plan: raw blasts alternated with the synthetic producer (pair
/// `i`: `blast-i`, then `synthetic-i`), then the ladder, then an unpaced flood.
pub(super) fn capacity_plan(o: &BenchOptions) -> RunPlan {
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
        // No program runs: the agent makes the events (the path is never executed).
        w.push(spec(
            &format!("{SYNTHETIC}-{i}"),
            SYNTHETIC,
            &[],
            Tracing::Synthetic(synthetic_events(o.blast_bytes)),
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
pub(super) fn memory_plan(events: u64) -> RunPlan {
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

/// Repetitions of each fopen mode in the stack-cache boot (medians of the programs'
/// time per run).
pub(super) const STACK_CACHE_FOPEN_REPS: usize = 3;

/// User probes the stack-cache boot checks on the fopen loop ([`USER_CHECKED`]): a
/// kprobe and an fentry probe at functions' entry, whose cached records carry the
/// arguments too, one of them on the spin lock (hit on many paths).
pub(super) const USER_PROBES_CHECKED: [&str; 3] = [
    "kprobe:alloc_fd",
    "kprobe:_raw_spin_lock",
    "fentry:do_filp_open",
];

/// The stack-cache boot's run of the fopen loop under the user probes of
/// `USER_PROBES_CHECKED` (its name in `results.json`'s stack-cache runs).
pub const USER_CHECKED: &str = "checked-user-probes";

/// The stack-cache boot's plan: every workload of the lab run with its stacks checked
/// against the cache, the fopen loop under user probes checked the same way (the
/// plan's stack mode is the check, which user probes run under), then the fopen loop
/// with the cache off, on, and tallying ([`STACK_CACHE_FOPEN_REPS`] times each, in
/// rotation), with the kernel timing every program run (`program_stats`: this boot's
/// loops are not timed).
pub(super) fn stack_cache_plan(o: &BenchOptions) -> RunPlan {
    // Each of the lab's workloads checked twice: against the cache's answers, and
    // against the answers it gives by caller (`--stacks caller`).
    let mut w: Vec<WorkloadSpec> = [
        ("checked", StackMode::Checked),
        ("caller-checked", StackMode::CallerChecked),
    ]
    .into_iter()
    .flat_map(|(prefix, mode)| {
        crate::lab::BUILTIN_WORKLOADS
            .iter()
            .map(move |(name, program, list)| {
                spec(
                    &format!("{prefix}-{name}"),
                    program,
                    &args(list),
                    Tracing::ProbesWith(builtin_names(), mode),
                )
            })
    })
    .collect();
    let fopen_n = o.fopen_iterations.to_string();
    w.push(spec(
        USER_CHECKED,
        "fopen",
        &args(&["--iterations", &fopen_n]),
        Tracing::UserProbes(USER_PROBES_CHECKED.map(String::from).to_vec()),
    ));
    let modes = [
        ("walkall", StackMode::WalkEvery),
        ("cached", StackMode::Cached),
        ("tallied", StackMode::Tallied),
    ];
    for rep in 0..STACK_CACHE_FOPEN_REPS {
        for m in stats::rotation(modes.len(), rep) {
            let (name, mode) = modes[m];
            w.push(spec(
                &format!("fopen-{name}-{}", rep + 1),
                "fopen",
                &args(&["--iterations", &fopen_n]),
                Tracing::ProbesWith(builtin_names(), mode),
            ));
        }
    }
    RunPlan {
        program_stats: true,
        stacks: StackMode::Checked,
        ..RunPlan::new(VSOCK_PORT, w)
    }
}
