//! Faults injected into real runs (real QEMU, real vsock through vhost-device-vsock): each
//! test provokes one and checks that every event is either received or counted as lost,
//! and that the outputs say how the run ended.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use guestscope::lab::LabOptions;
use guestscope_tests::{collector_binary, guest_artifacts, load, run_lab, target_dir, test_out_dir, workload_binary};

/// One guest at a time: the faults depend on timing, and the host has few cores.
static ONE_VM: Mutex<()> = Mutex::new(());

fn one_vm() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ring buffer of four pages (about 28 records) against a workload that floods
/// `_raw_spin_lock` and `alloc_fd`: the ring overflows, and per probe the hits the kernel
/// matched equal the events received plus the ones it counted as lost.
#[test]
fn ring_buffer_overrun_is_counted_exactly() {
    let _vm = one_vm();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} --iterations 20000", workload_binary("flood").display())],
        probes: vec!["spin_lock".into(), "alloc_fd".into()],
        events_bytes: Some(16 * 1024),
        ..LabOptions::default()
    };
    let r = run_lab("ring-overrun", opts);
    let s = &r.summary;
    assert_eq!(s["run"]["outcome"]["complete"], true, "outcome: {}", s["run"]["outcome"]);
    assert_eq!(s["run"]["events_ring_bytes"], 16 * 1024);
    assert_eq!(s["stream"]["seq"]["missing"], 0);
    assert_eq!(s["losses"]["events_missing"], 0);
    let flood = r.workload("flood");
    assert_eq!(flood["status"], 0, "flood output: {}", flood["output"]);

    let mut lost = 0;
    for p in s["probes"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if !["spin_lock", "alloc_fd"].contains(&name) {
            continue;
        }
        let c = &p["counters"];
        let (matched, ring_full) = (c["matched"].as_u64().unwrap(), c["ring_full"].as_u64().unwrap());
        let received = p["received"].as_u64().unwrap();
        let in_file = r.events.iter().filter(|e| e["probe"] == name).count() as u64;
        eprintln!("{name}: matched {matched}, received {received}, ring_full {ring_full}");
        assert_eq!(received, in_file, "{name}: events.jsonl holds every received event");
        assert_eq!(received + ring_full, matched, "{name}: received + ring_full != matched");
        assert_eq!(c["emitted"].as_u64().unwrap(), received, "{name}: emitted != received");
        assert_eq!(p["unaccounted"], 0);
        lost += ring_full;
    }
    assert!(lost > 0, "the 16 KiB ring never overflowed: the test proves nothing");
    assert_eq!(s["losses"]["ring_full"].as_u64().unwrap(), lost);
    // 20000 iterations of dup + close: at least one alloc_fd hit each.
    let alloc = s["probes"].as_array().unwrap().iter().find(|p| p["name"] == "alloc_fd").unwrap();
    assert!(alloc["counters"]["matched"].as_u64().unwrap() >= 20000, "{alloc}");

    let coverage = r.report.split("## Coverage and losses").nth(1).expect("a Coverage and losses section");
    assert!(coverage.contains("ring buffer: 16 KiB"), "{coverage}");
    let row = coverage.lines().find(|l| l.starts_with("| spin_lock |")).expect("a spin_lock row");
    assert!(row.ends_with("| 0 |"), "spin_lock row leaves hits unaccounted: {row}");
}

/// Starts `guestscope lab` (the real binary, in a process group of its own) on a
/// workload that runs until stopped, and waits until events are on disk.
fn start_long_run(name: &str) -> (std::process::Child, PathBuf) {
    let (kernel, initrd) = guest_artifacts();
    let dir = test_out_dir(name);
    let workload = format!("{} --iterations 100000000", workload_binary("fopen").display());
    let child = Command::new(collector_binary())
        .arg("lab")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--out")
        .arg(&dir)
        .args(["--no-builtin-workloads", "--boots", "0", "--no-cr3", "--probes", "alloc_fd,spin_lock"])
        .args(["--workload", &workload])
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(target_dir().join(format!("guestscope/test-out/{name}.stderr"))).unwrap())
        .spawn()
        .expect("guestscope lab");
    let events = dir.join("events.jsonl");
    let t = Instant::now();
    while std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0) < 256 * 1024 {
        assert!(t.elapsed() < Duration::from_secs(180), "no events written within 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, dir)
}

/// The processes whose parent is `pid`, with their names.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for k in list.split_whitespace().filter_map(|k| k.parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
            kids.push((k, comm.trim().to_string()));
        }
    }
    kids
}

/// Sends `signal` mid-run (to the process, or to its whole group as a terminal's Ctrl-C
/// does) and checks: QEMU and the vsock device stopped, exit status 128 + signal, and
/// every output complete and parseable with outcome `interrupted`.
fn interrupt_mid_run(name: &str, signal: &str, number: i32, whole_group: bool) {
    let _vm = one_vm();
    let (mut child, dir) = start_long_run(name);
    let kids = children_of(child.id());
    assert!(kids.iter().any(|(_, c)| c.starts_with("qemu")), "no QEMU child: {kids:?}");
    let target = if whole_group { format!("-{}", child.id()) } else { child.id().to_string() };
    let sent = Instant::now();
    assert!(Command::new("kill").args([&format!("-{signal}"), "--", &target]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("guestscope did not stop within 120 s of {signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{name}: stopped {:.1} s after {signal}", sent.elapsed().as_secs_f64());
    assert_eq!(status.code(), Some(128 + number), "exit status after {signal}");
    for (pid, comm) in &kids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "{comm} ({pid}) outlived the collector");
    }

    let r = load(&dir);
    let outcome = &r.summary["run"]["outcome"];
    assert_eq!(outcome["how"], "interrupted", "{outcome}");
    assert_eq!(outcome["complete"], false);
    assert!(outcome["detail"].as_str().unwrap().contains(signal), "{outcome}");
    let received = r.summary["stream"]["events_received"].as_u64().unwrap();
    eprintln!("{name}: {received} events received, {} lines in events.jsonl", r.events.len());
    assert!(received > 0);
    assert_eq!(received, r.events.len() as u64, "events.jsonl holds every received event, whole lines only");
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "events.jsonl ends inside a line");
    let w = r.workload("fopen");
    assert!(w["status"].is_null(), "the workload was still running: {w}");
    assert!(r.report.contains("Outcome: **interrupted**"), "report.md does not say how the run ended");
    for leftover in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = leftover.file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".tmp"), "half-written file left behind: {n}");
    }
}

#[test]
fn sigterm_mid_run_stops_qemu_and_writes_complete_outputs() {
    interrupt_mid_run("sigterm", "SIGTERM", 15, false);
}

#[test]
fn ctrl_c_to_the_process_group_mid_run_stops_qemu_and_writes_complete_outputs() {
    interrupt_mid_run("sigint-group", "SIGINT", 2, true);
}

/// A workload crashes the guest kernel (`sysrq c`, as root): the collector sees the panic
/// on the console, stops, and writes what it received, with the panic text.
#[test]
fn guest_kernel_panic_ends_the_run_with_the_panic_text() {
    let _vm = one_vm();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} panic --opens 100", workload_binary("fault").display())],
        probes: vec!["alloc_fd".into()],
        ..LabOptions::default()
    };
    let r = run_lab("panic", opts);
    let s = &r.summary;
    let outcome = &s["run"]["outcome"];
    eprintln!("panic: outcome {outcome}, {} s", s["run"]["wall_s"]);
    assert_eq!(outcome["how"], "guest kernel panic", "{outcome}");
    assert_eq!(outcome["complete"], false);
    let panic_line = "Kernel panic - not syncing: sysrq triggered crash";
    assert!(outcome["detail"].as_str().unwrap().contains(panic_line), "{outcome}");
    assert!(s["boot"]["fatal"].as_str().unwrap().contains(panic_line));
    let console: Vec<&str> = outcome["console"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    assert!(console.iter().any(|l| l.contains(panic_line)), "{console:?}");
    assert!(console.iter().any(|l| l.contains("sysrq")), "the lines before the panic: {console:?}");

    // Everything received before the panic is in the outputs.
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(received, r.events.len() as u64);
    let opens = r.events_of("fault", "alloc_fd").count();
    eprintln!("panic: {received} events received, {opens} alloc_fd events of the workload");
    assert!(opens >= 100, "{opens} alloc_fd events: the 100 opens before the panic were not all kept");
    assert!(r.workload("fault")["status"].is_null());
    assert!(r.report.contains("## How the run ended") && r.report.contains(panic_line), "report.md lacks the panic");
}

/// A workload starves the guest's user space (a SCHED_FIFO spin with the real-time
/// throttle off), so the agent's heartbeats stop: the watchdog takes the guest for hung,
/// stops QEMU, and writes what was received.
#[test]
fn hung_guest_is_stopped_by_the_watchdog() {
    let _vm = one_vm();
    let watchdog = Duration::from_secs(10);
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} hang --opens 100 --seconds 600", workload_binary("fault").display())],
        probes: vec!["alloc_fd".into()],
        watchdog: Some(watchdog),
        ..LabOptions::default()
    };
    let started = Instant::now();
    let r = run_lab("hang", opts);
    let took = started.elapsed();
    let s = &r.summary;
    let outcome = &s["run"]["outcome"];
    eprintln!("hang: outcome {outcome}, stopped after {:.1} s", took.as_secs_f64());
    assert_eq!(outcome["how"], "guest hung", "{outcome}");
    assert_eq!(outcome["complete"], false);
    assert!(outcome["detail"].as_str().unwrap().contains("no record from the agent"), "{outcome}");
    assert!(took < Duration::from_secs(180), "the watchdog took {took:?}");
    assert!(!outcome["console"].as_array().unwrap().is_empty(), "no console tail in the outcome");
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(received, r.events.len() as u64);
    let opens = r.events_of("fault", "alloc_fd").count();
    assert!(opens >= 100, "{opens} alloc_fd events: the opens before the hang were not all kept");
    assert!(r.report.contains("**guest hung**"), "report.md does not say how the run ended");
}
