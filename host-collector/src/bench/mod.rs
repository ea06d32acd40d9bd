//! `guestscope bench`: how much cheaper guestscope is than the lab's gdb method, and how
//! close it runs to the limits, measured side by side on this machine.
//!
//! Boots of the guest, each with a plan made of measurement workloads:
//! 1. capacity: raw vsock blasts, then the event stream paced at rising rates until it
//!    loses events (every loss counted by the probes, every count checked), then the
//!    pipeline alone (events the agent makes itself: no eBPF, no workload);
//! 2. overhead: the fopen and cpuinfo loops with no probe, with every probe, and under an
//!    ftrace kprobe, in rotating order; then the fopen loop under the gdbstub method
//!    (a hardware breakpoint on `alloc_fd` with the pid decided on the host), paired
//!    with guestscope runs of the same loop; with `--peer-rootfs`, a peers boot: the
//!    fopen loop in a root file system with bpftrace, under guestscope, ftrace and
//!    bpftrace on the same events; then the peers boot again with the guest's clock
//!    counting its instructions (QEMU's `-icount`, TCG only), where the host's other
//!    work does not move the figures;
//! 3. memory: a long flood of events, with the agent's and the collector's peak RSS;
//! 4. stack cache: the lab's workloads with every event's stack walked and compared
//!    with the probes' stack cache, then the fopen loop with the cache off and on.
//!
//! Speed figures are medians of paired ratios (these machines are noisy). Loop times come
//! from the workloads' own clocks, except under gdb, whose stops also stop the guest's
//! clock: that one is timed on the host.
//!
//! - `options.rs`: what a run is asked to do ([`BenchOptions`]);
//! - `plans.rs`: the plans of the boots, the conditions in rotating order;
//! - `measures/`: from the boots' outcomes to the figures (the loop overheads; capacity,
//!   memory and times each in its own file);
//! - `gdb_comparison.rs`: the lab's gdb method against guestscope on the same events;
//! - `peers.rs`: guestscope, ftrace and bpftrace on the same loop's events;
//! - `agent_cpu.rs`: the agent's CPU per event, gross and marginal;
//! - `parts.rs`: the parts of a run, each its boots of the guest;
//! - `outcomes.rs`: what a boot's stream told of its workloads;
//! - `host.rs`: facts about the host and this process.
//! - [`stats`]: medians, spread, pairing, rotation.
//! - [`guest`]: one boot with the hooks the benchmarks need.
//! - [`results`]: what `results.json` holds.
//! - [`report`][]: `results.md`.

pub mod guest;
pub mod report;
pub mod results;
pub mod stats;

mod agent_cpu;
mod gdb_comparison;
mod host;
mod measures;
mod options;
mod outcomes;
mod parts;
mod peers;
mod plans;
mod profile;
mod stack_cache_check;
mod stack_modes;
mod staging;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guestscope_common::plan::{
    BUILTIN_WORKLOAD_DIR, RunPlan, StackMode, TRACING_ARTIFACT_PREFIX, Tracing, WorkloadOrigin,
    WorkloadSpec, WorkloadTracing,
};
use guestscope_common::{CachedEvent, ProbeCounters, ProbeKind, StackedEvent};

use self::agent_cpu::*;
use self::gdb_comparison::*;
use self::host::*;
pub use self::host::{status_kib, utc_date};
use self::measures::*;
pub use self::options::*;
pub use self::outcomes::elapsed_ns;
use self::outcomes::*;
use self::parts::*;
use self::peers::*;
pub use self::plans::USER_CHECKED;
use self::plans::*;
use self::stack_cache_check::*;
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

/// The vsock port the blast workload sends to.
pub const BLAST_PORT: u32 = VSOCK_PORT + 1;
/// The function both the gdb method and guestscope trace in the comparison.
pub const GDB_SYMBOL: &str = "alloc_fd";
/// `nice` of QEMU in the capacity and overhead boots.
pub const MEASURE_NICE: i32 = -5;
/// Seconds the gdb-traced workload waits before its loop, so the host can set the
/// breakpoint once it knows the pid.
const GDB_START_DELAY_MS: u64 = 1500;

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
    let qemu = inputs::find_program(&o.qemu)?;
    let machine = Machine {
        // The bench times guestscope's own boots: qboot where QEMU has it and their
        // kernel command line, as the lab boots all but its boot-time boots.
        bios: crate::qemu::firmware::qboot(&qemu),
        qemu,
        vhost: inputs::find_program(&o.vhost_device_vsock)?,
        kernel: o.kernel.clone(),
        initrd: o.initrd.clone(),
        accel: choice.accel,
        memory_mb: 1024,
        cpus: 1,
        append: crate::qemu::kernel_cmdline::for_boot(false, ""),
        boot_timeout: Duration::from_secs(180),
        run_timeout: Duration::from_secs(1200),
        nice: 0,
        rootfs: None,
        instruction_clock: false,
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
        machine: machine_info(&choice, &machine),
        ..Default::default()
    };
    // Each boot's session is dropped once analysed, so the memory run starts from a
    // small process.
    let mut boots: Vec<BootSample> = Vec::new();
    let part = |name: &str| o.only.is_empty() || o.only.iter().any(|p| p == name);
    let mut offsets: Result<TaskOffsets, String> = Err("the capacity boot was not run".into());

    // 1. Capacity (its end artifacts also give the BTF the gdb method needs).
    if part("capacity") {
        offsets = capacity_part(o, &timed, &mut r, &mut boots)?;
    }
    // 2. Overhead and the gdb method.
    if part("overhead") && !interrupted(&mut r.problems) {
        overhead_part(o, &timed, &offsets, &mut r, &mut boots)?;
    }
    // 2b. guestscope, ftrace and bpftrace on the same events.
    if part("peers") && !interrupted(&mut r.problems) {
        peers_part(o, &timed, &mut r)?;
    }
    // 2c. The same, counted in instructions.
    if part("instructions") && !interrupted(&mut r.problems) {
        instructions_part(o, &timed, &mut r)?;
    }
    // 3. Memory.
    if part("memory") && !interrupted(&mut r.problems) {
        memory_part(o, &machine, &mut r, &mut boots)?;
    }
    // 4. The stack cache checked against the walk.
    if part("stack-cache") && !interrupted(&mut r.problems) {
        stack_cache_part(o, &machine, &mut r, &mut boots)?;
    }
    // 5. Boot to agent-ready, with the default kernel and (if given) the uncompressed one.
    let mut fast = Vec::new();
    if part("boot") && !interrupted(&mut r.problems) {
        fast = boot_part(o, &machine, &mut r, &mut boots);
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
#[allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]
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
    fn the_peers_plan_runs_every_tracer_on_the_same_loop_as_root() {
        let o = BenchOptions {
            peer_reps: 3,
            ..BenchOptions::default()
        };
        let p = peers_plan(&o);
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names.len(), 2 + 3 * PEER_CONDITIONS.len() + 6);
        // The guest profiles come last: perf records the whole guest around a long
        // loop untraced, then traced with every probe (records, then tallied), each
        // followed by its report, untraced.
        let [baseline, _, record, report, tallied, _] = &p.workloads[names.len() - 6..] else {
            unreachable!()
        };
        assert_eq!(baseline.name, "fopen-profile-untraced");
        assert_eq!(baseline.tracing, no_probes());
        assert_eq!(
            baseline.args[baseline.args.len() - 3..],
            record.args[record.args.len() - 3..]
        );
        assert_eq!(record.name, "fopen-profile");
        assert_eq!(record.path, "/usr/bin/perf");
        assert_eq!(record.tracing, all_probes());
        assert_eq!(tallied.tracing, condition_tracing("tallied"));
        assert_eq!(&record.args[..3], ["record", "-a", "-g"]);
        assert_eq!(
            record.args[record.args.len() - 3..],
            [
                "/usr/lib/guestscope/workloads/fopen",
                "--iterations",
                "20000"
            ]
        );
        assert_eq!(report.name, "fopen-profile-report");
        assert_eq!(report.tracing, no_probes());
        assert_eq!(&report.args[..3], ["report", "-i", &record.args[6]]);
        assert_eq!(
            &names[..4],
            ["fopen-base-0", "fopen-base-1", "fopen-off-0", "fopen-all-0"]
        );
        // Repetition 1 starts one condition later.
        assert_eq!(names[2 + PEER_CONDITIONS.len()], "fopen-all-1");
        assert!(p.workloads.iter().all(|w| w.as_root));
        let bpf = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-bpfstack-2")
            .unwrap();
        assert_eq!(bpf.path, BPFTRACE);
        assert_eq!(bpf.tracing, Tracing::Probes(vec![]));
        assert_eq!(bpf.args[0], "-e");
        assert!(
            bpf.args[1].contains("@s[kstack] = count()"),
            "{}",
            bpf.args[1]
        );
        assert!(
            bpf.args[1].starts_with("kprobe:_raw_spin_lock, kprobe:alloc_fd /comm == \"fopen\"/"),
            "{}",
            bpf.args[1]
        );
        assert_eq!(
            bpf.args[2..],
            [
                "-c",
                "/usr/lib/guestscope/workloads/fopen --iterations 2000"
            ]
        );
        let count = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-bpfcount-0")
            .unwrap();
        assert!(count.args[1].contains("print(@n)"), "{}", count.args[1]);
        let ft = p
            .workloads
            .iter()
            .find(|w| w.name == "fopen-ftpeerstk-1")
            .unwrap();
        assert!(matches!(
            ft.tracing,
            Tracing::FtracePeer {
                stacktrace: true,
                ..
            }
        ));
    }

    #[test]
    fn bpftraces_printed_count_is_read_from_the_workload_output() {
        let out = "Attaching 2 probes...\n{\"workload\":\"fopen\",\"elapsed_ns\":5}\n@n: 12260\n\n@n: 0\n";
        assert_eq!(outcomes::bpftrace_count(out), Some(12260));
        assert_eq!(outcomes::bpftrace_count("Attaching 2 probes...\n"), None);
        assert_eq!(outcomes::bpftrace_count("@n: many\n"), None);
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
            if let Tracing::Probes(n) | Tracing::ProbesWith(n, _) = &w.tracing {
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
                "fopen-unstaged-0",
                "fopen-nostack-0",
                "fopen-tallied-0",
                "fopen-caller-0",
                "fopen-caller-tallied-0",
                "fopen-ftrace-0",
                "fopen-fd-0",
                "fopen-ufd-0",
                "fopen-ffd-0",
                "fopen-walkall-0",
                "fopen-ftpeer-0",
                "fopen-ftpeerstk-0",
                "fopen-all-1",
                "fopen-unstaged-1",
                "fopen-nostack-1",
                "fopen-tallied-1",
                "fopen-caller-1",
                "fopen-caller-tallied-1",
                "fopen-ftrace-1",
                "fopen-fd-1",
                "fopen-ufd-1",
                "fopen-ffd-1",
                "fopen-walkall-1",
                "fopen-ftpeer-1",
                "fopen-ftpeerstk-1",
                "fopen-off-1",
                "fopen-unstaged-2",
                "fopen-nostack-2",
                "fopen-tallied-2",
                "fopen-caller-2",
                "fopen-caller-tallied-2",
                "fopen-ftrace-2",
                "fopen-fd-2",
                "fopen-ufd-2",
                "fopen-ffd-2",
                "fopen-walkall-2",
                "fopen-ftpeer-2",
                "fopen-ftpeerstk-2",
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
        let peer = |name: &str| &p.workloads.iter().find(|w| w.name == name).unwrap().tracing;
        assert_eq!(
            peer("fopen-ftpeerstk-1"),
            &Tracing::FtracePeer {
                functions: vec!["_raw_spin_lock".into(), "alloc_fd".into()],
                comm: "fopen".into(),
                stacktrace: true,
            }
        );
        assert!(matches!(
            peer("fopen-ftpeer-2"),
            Tracing::FtracePeer {
                stacktrace: false,
                ..
            }
        ));
        // Only the workloads the gdbstub holds keep the link silent.
        for w in &p.workloads {
            assert_eq!(w.quiet_link, w.name.starts_with("gdb-"), "{}", w.name);
        }
        assert!(p.workloads.iter().any(|w| w.quiet_link));
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
            blast_reps: 2,
            blast_bytes: 64 << 20,
            ..BenchOptions::default()
        });
        let names: Vec<&str> = p.workloads.iter().map(|w| w.name.as_str()).collect();
        // Each blast is paired with the synthetic producer's run after it.
        assert_eq!(
            names,
            [
                "blast-0",
                "synthetic-0",
                "blast-1",
                "synthetic-1",
                "flood-10",
                "flood-20",
                "flood-0"
            ]
        );
        // The synthetic runs carry the events the blast's 64 MiB would hold, 64 bytes each.
        assert_eq!(
            p.workloads[1].tracing,
            guestscope_common::plan::Tracing::Synthetic(1 << 20)
        );
    }
}
