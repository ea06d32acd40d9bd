//! Faults injected into real runs (real QEMU, real vsock through vhost-device-vsock): each
//! test provokes one and checks that every event is either received or counted as lost,
//! and that the outputs say how the run ended.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use guestscope::lab::LabOptions;
use guestscope::stream::receive::LinkFault;
use guestscope_tests::{
    children_of, collector_binary, guest_artifacts, load, run_lab, target_dir, test_out_dir,
    workload_binary,
};

/// One guest at a time: the faults depend on timing, and the host has few cores.
static ONE_VM: Mutex<()> = Mutex::new(());

fn one_vm() -> std::sync::MutexGuard<'static, ()> {
    ONE_VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// A ring buffer of four pages (about 28 records) against a workload that floods
/// `_raw_spin_lock` and `alloc_fd` at a real-time priority, so that on the guest's one
/// vCPU the agent cannot drain the ring while the loop runs (a fast host once let it keep
/// up): the ring overflows, and per probe the hits the kernel matched equal the events
/// received plus the ones it counted as lost.
#[test]
fn ring_buffer_overrun_is_counted_exactly() {
    let _vm = one_vm();
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations 20000 --realtime",
            workload_binary("flood").display()
        )],
        probes: vec!["spin_lock".into(), "alloc_fd".into()],
        events_bytes: Some(16 * 1024),
        // SCHED_FIFO needs root.
        workloads_as_root: true,
        ..LabOptions::default()
    };
    let r = run_lab("ring-overrun", opts);
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "outcome: {}",
        s["run"]["outcome"]
    );
    assert_eq!(s["run"]["events_ring_bytes"], 16 * 1024);
    assert_eq!(s["stream"]["seq"]["missing"], 0);
    assert_eq!(s["losses"]["events_missing"], 0);
    let flood = r.workload("flood");
    assert_eq!(flood["status"], 0, "flood output: {}", flood["output"]);
    assert!(
        flood["output"]
            .as_str()
            .unwrap()
            .contains("\"realtime\":true"),
        "flood did not run at a real-time priority: {}",
        flood["output"]
    );

    let mut lost = 0;
    for p in s["probes"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        if !["spin_lock", "alloc_fd"].contains(&name) {
            continue;
        }
        let c = &p["counters"];
        let (matched, ring_full) = (
            c["matched"].as_u64().unwrap(),
            c["ring_full"].as_u64().unwrap(),
        );
        let received = p["received"].as_u64().unwrap();
        let in_file = r.events.iter().filter(|e| e["probe"] == name).count() as u64;
        eprintln!("{name}: matched {matched}, received {received}, ring_full {ring_full}");
        assert_eq!(
            received, in_file,
            "{name}: events.jsonl holds every received event"
        );
        assert_eq!(
            received + ring_full,
            matched,
            "{name}: received + ring_full != matched"
        );
        assert_eq!(
            c["emitted"].as_u64().unwrap(),
            received,
            "{name}: emitted != received"
        );
        assert_eq!(p["unaccounted"], 0);
        lost += ring_full;
    }
    assert!(
        lost > 0,
        "the 16 KiB ring never overflowed: the test proves nothing"
    );
    assert_eq!(s["losses"]["ring_full"].as_u64().unwrap(), lost);
    // 20000 iterations of dup + close: at least one alloc_fd hit each.
    let alloc = r.probe("alloc_fd");
    assert!(
        alloc["counters"]["matched"].as_u64().unwrap() >= 20000,
        "{alloc}"
    );

    let coverage = r
        .report
        .split("## Coverage and losses")
        .nth(1)
        .expect("a Coverage and losses section");
    assert!(coverage.contains("ring buffer: 16 KiB"), "{coverage}");
    let row = coverage
        .lines()
        .find(|l| l.starts_with("| spin_lock |"))
        .expect("a spin_lock row");
    assert!(
        row.ends_with("| 0 |"),
        "spin_lock row leaves hits unaccounted: {row}"
    );
}

/// Starts `guestscope lab` (the real binary, in a process group of its own, with a
/// temporary directory of its own: the second path returned) on a workload that runs
/// until stopped, and waits until events are on disk.
fn start_long_run(name: &str) -> (std::process::Child, PathBuf, PathBuf) {
    let (kernel, initrd) = guest_artifacts();
    let dir = test_out_dir(name);
    // Short: the run directory inside holds Unix sockets (108-byte paths at most).
    let tmp = std::env::temp_dir().join(format!("gs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let workload = format!(
        "{} --iterations 100000000",
        workload_binary("fopen").display()
    );
    let child = Command::new(collector_binary())
        .arg("lab")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--out")
        .arg(&dir)
        .args([
            "--no-builtin-workloads",
            "--boots",
            "0",
            "--no-cr3",
            "--probes",
            "alloc_fd,spin_lock",
        ])
        .args(["--workload", &workload])
        .env("TMPDIR", &tmp)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(target_dir().join(format!("guestscope/test-out/{name}.stderr")))
                .unwrap(),
        )
        .spawn()
        .expect("guestscope lab");
    let events = dir.join("events.jsonl");
    let t = Instant::now();
    while std::fs::metadata(&events).map(|m| m.len()).unwrap_or(0) < 256 * 1024 {
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "no events written within 180 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, dir, tmp)
}

/// What the run left in its temporary directory `tmp`: each file's path under it.
fn left_behind(tmp: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![tmp.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Sends `signal` mid-run (to the process, or to its whole group as a terminal's Ctrl-C
/// does) and checks: QEMU and the vsock device stopped, exit status 128 + signal, and
/// every output complete and parseable with outcome `interrupted`.
fn interrupt_mid_run(name: &str, signal: &str, number: i32, whole_group: bool) {
    let _vm = one_vm();
    let (mut child, dir, tmp) = start_long_run(name);
    let kids = children_of(child.id());
    assert!(
        kids.iter().any(|(_, c)| c.starts_with("qemu")),
        "no QEMU child: {kids:?}"
    );
    let target = if whole_group {
        format!("-{}", child.id())
    } else {
        child.id().to_string()
    };
    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()
            .unwrap()
            .success()
    );
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
    eprintln!(
        "{name}: stopped {:.1} s after {signal}",
        sent.elapsed().as_secs_f64()
    );
    assert_eq!(
        status.code(),
        Some(128 + number),
        "exit status after {signal}"
    );
    for (pid, comm) in &kids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "{comm} ({pid}) outlived the collector"
        );
    }

    let r = load(&dir);
    let outcome = &r.summary["run"]["outcome"];
    assert_eq!(outcome["how"], "interrupted", "{outcome}");
    assert_eq!(outcome["complete"], false);
    assert!(
        outcome["detail"].as_str().unwrap().contains(signal),
        "{outcome}"
    );
    let received = r.summary["stream"]["events_received"].as_u64().unwrap();
    eprintln!(
        "{name}: {received} events received, {} lines in events.jsonl",
        r.events.len()
    );
    assert!(received > 0);
    assert_eq!(
        received,
        r.events.len() as u64,
        "events.jsonl holds every received event, whole lines only"
    );
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(text.ends_with('\n'), "events.jsonl ends inside a line");
    let w = r.workload("fopen");
    assert!(w["status"].is_null(), "the workload was still running: {w}");
    assert!(
        r.report.contains("Outcome: **interrupted**"),
        "report.md does not say how the run ended"
    );
    for leftover in std::fs::read_dir(&dir).unwrap().flatten() {
        let n = leftover.file_name().to_string_lossy().into_owned();
        assert!(!n.ends_with(".tmp"), "half-written file left behind: {n}");
    }
    // Interrupted, the run still removes its run directory (sockets, initramfs).
    let left = left_behind(&tmp);
    assert!(left.is_empty(), "left in the temporary directory: {left:?}");
    let _ = std::fs::remove_dir_all(&tmp);
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
        workloads: vec![format!(
            "{} panic --opens 100",
            workload_binary("fault").display()
        )],
        probes: vec!["alloc_fd".into()],
        // Panicking the kernel (sysrq) takes root.
        workloads_as_root: true,
        ..LabOptions::default()
    };
    let r = run_lab("panic", opts);
    let s = &r.summary;
    let outcome = &s["run"]["outcome"];
    eprintln!("panic: outcome {outcome}, {} s", s["run"]["wall_s"]);
    assert_eq!(outcome["how"], "guest kernel panic", "{outcome}");
    assert_eq!(outcome["complete"], false);
    let panic_line = "Kernel panic - not syncing: sysrq triggered crash";
    assert!(
        outcome["detail"].as_str().unwrap().contains(panic_line),
        "{outcome}"
    );
    assert!(s["boot"]["fatal"].as_str().unwrap().contains(panic_line));
    let console: Vec<&str> = outcome["console"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        console.iter().any(|l| l.contains(panic_line)),
        "{console:?}"
    );
    assert!(
        console.iter().any(|l| l.contains("sysrq")),
        "the lines before the panic: {console:?}"
    );

    // Everything received before the panic is in the outputs.
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(received, r.events.len() as u64);
    let opens = r.events_of("fault", "alloc_fd").count();
    eprintln!("panic: {received} events received, {opens} alloc_fd events of the workload");
    assert!(
        opens >= 100,
        "{opens} alloc_fd events: the 100 opens before the panic were not all kept"
    );
    assert!(r.workload("fault")["status"].is_null());
    assert!(
        r.report.contains("## How the run ended") && r.report.contains(panic_line),
        "report.md lacks the panic"
    );
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
        workloads: vec![format!(
            "{} hang --opens 100 --seconds 600",
            workload_binary("fault").display()
        )],
        probes: vec!["alloc_fd".into()],
        watchdog: Some(watchdog),
        // Hanging the guest takes root.
        workloads_as_root: true,
        ..LabOptions::default()
    };
    let started = Instant::now();
    let r = run_lab("hang", opts);
    let took = started.elapsed();
    let s = &r.summary;
    let outcome = &s["run"]["outcome"];
    eprintln!(
        "hang: outcome {outcome}, stopped after {:.1} s",
        took.as_secs_f64()
    );
    assert_eq!(outcome["how"], "guest hung", "{outcome}");
    assert_eq!(outcome["complete"], false);
    assert!(
        outcome["detail"]
            .as_str()
            .unwrap()
            .contains("no record from the agent"),
        "{outcome}"
    );
    assert!(
        took < Duration::from_secs(180),
        "the watchdog took {took:?}"
    );
    assert!(
        !outcome["console"].as_array().unwrap().is_empty(),
        "no console tail in the outcome"
    );
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(received, r.events.len() as u64);
    let opens = r.events_of("fault", "alloc_fd").count();
    assert!(
        opens >= 100,
        "{opens} alloc_fd events: the opens before the hang were not all kept"
    );
    assert!(
        r.report.contains("**guest hung**"),
        "report.md does not say how the run ended"
    );
}

/// Checks that every hit of every probe is accounted for: received, lost in the kernel
/// (ring full) or dropped by the agent (spool full while the link was down); returns
/// (received, ring_full, spool_dropped) summed over probes.
fn assert_every_hit_accounted(r: &guestscope_tests::RunOutput) -> (u64, u64, u64) {
    let mut sums = (0, 0, 0);
    for p in r.summary["probes"].as_array().unwrap() {
        let Some(c) = p["counters"].as_object() else {
            continue;
        };
        let name = p["name"].as_str().unwrap();
        let (matched, ring_full) = (
            c["matched"].as_u64().unwrap(),
            c["ring_full"].as_u64().unwrap(),
        );
        let (received, dropped) = (
            p["received"].as_u64().unwrap(),
            p["spool_dropped"].as_u64().unwrap(),
        );
        eprintln!(
            "{name}: matched {matched} = received {received} + ring_full {ring_full} + dropped by the agent {dropped}"
        );
        assert_eq!(
            received + ring_full + dropped,
            matched,
            "{name}: a hit is unaccounted for"
        );
        assert_eq!(
            r.events.iter().filter(|e| e["probe"] == name).count() as u64,
            received,
            "{name}: events.jsonl"
        );
        sums = (sums.0 + received, sums.1 + ring_full, sums.2 + dropped);
    }
    sums
}

fn flood_with_link_faults(
    name: &str,
    iterations: u64,
    faults: Vec<LinkFault>,
    spool_bytes: Option<u64>,
) -> guestscope_tests::RunOutput {
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations {iterations}",
            workload_binary("flood").display()
        )],
        probes: vec!["spin_lock".into(), "alloc_fd".into()],
        link_faults: faults,
        spool_bytes,
        ..LabOptions::default()
    };
    run_lab(name, opts)
}

/// The collector closes the agent's connection twice while events stream (and stops
/// listening for a while each time, as an outage would): the agent reconnects, resends
/// what was not acknowledged, the collector drops the duplicates, and no event is lost.
///
/// The link is cut at the host end of the hybrid vsock socket: killing and restarting
/// vhost-device-vsock instead cannot be survived, as QEMU's vhost-user-vsock device does
/// not reconnect to a restarted backend (it has no chardev event handler), so the
/// guest's vsock device is dead for the rest of the run.
#[test]
fn a_dropped_link_loses_no_event() {
    let _vm = one_vm();
    let faults = vec![
        LinkFault {
            after_records: 40,
            down_for: Duration::from_millis(500),
        },
        LinkFault {
            after_records: 90,
            down_for: Duration::from_secs(2),
        },
    ];
    let r = flood_with_link_faults("link-drop", 60_000, faults, None);
    let s = &r.summary;
    let outcome = &s["run"]["outcome"];
    assert_eq!(outcome["complete"], true, "{outcome}");
    let link = &s["stream"]["link"];
    eprintln!("link-drop: {}", serde_json::to_string_pretty(link).unwrap());
    let outages = link["outages"].as_array().unwrap();
    assert_eq!(outages.len(), 2, "{link}");
    for (o, min_gap) in outages.iter().zip([0.5, 2.0]) {
        let gap = o["gap_s"].as_f64().expect("the link was restored");
        assert!(gap >= min_gap, "a {gap} s gap for a {min_gap} s outage");
        let agent = &o["agent"];
        assert!(agent["attempts"].as_u64().unwrap() >= 1, "{o}");
        assert_eq!(
            o["resumed_from"], agent["acked"],
            "resending starts at the first unacknowledged record: {o}"
        );
    }
    assert_eq!(link["connections"], 3);
    assert_eq!(s["stream"]["seq"]["missing"], 0, "a record is missing");
    assert_eq!(s["losses"]["events_missing"], 0);
    assert_eq!(s["losses"]["spool_dropped_events"], 0);
    let (received, ring_full, dropped) = assert_every_hit_accounted(&r);
    eprintln!(
        "link-drop: {received} events received, {ring_full} lost to a full ring, {dropped} dropped; {} resent records dropped as duplicates",
        s["stream"]["seq"]["duplicates"]
    );
    assert_eq!(
        (ring_full, dropped),
        (0, 0),
        "events lost while the link was down"
    );
    assert!(
        received >= 120_000,
        "{received} events for 60000 dup+close iterations"
    );
    let coverage = r.report.split("## Coverage and losses").nth(1).unwrap();
    assert!(
        coverage.contains("The link to the agent was lost 2 time(s)"),
        "{coverage}"
    );
}

/// The link stays down longer than the agent's spool (256 KiB) can hold: the agent drops
/// whole `Events` records and counts them, and the collector's sequence gaps match its
/// count exactly; every other hit is still received (or lost to the ring buffer while
/// the agent waited for acknowledgements, and counted there).
#[test]
fn past_the_spool_bound_the_dropped_events_are_counted_exactly() {
    let _vm = one_vm();
    // The agent takes 5 s without acknowledgements for a dead link; 8 s without
    // listening leaves it about 3 s truly down while the workload floods.
    let faults = vec![LinkFault {
        after_records: 40,
        down_for: Duration::from_secs(8),
    }];
    let r = flood_with_link_faults("link-spool", 400_000, faults, Some(256 * 1024));
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "{}",
        s["run"]["outcome"]
    );
    let losses = &s["losses"];
    let dropped_records = losses["spool_dropped_records"].as_u64().unwrap();
    let dropped_events = losses["spool_dropped_events"].as_u64().unwrap();
    eprintln!(
        "link-spool: dropped {dropped_events} events in {dropped_records} records; {}",
        s["stream"]["link"]
    );
    assert!(
        dropped_records > 0,
        "the spool never overflowed: the test proves nothing"
    );
    assert_eq!(
        s["stream"]["seq"]["missing"].as_u64().unwrap(),
        dropped_records,
        "gaps != records the agent dropped"
    );
    assert_eq!(
        losses["events_missing"], 0,
        "events sent, neither received nor counted as dropped"
    );
    let (_, _, dropped) = assert_every_hit_accounted(&r);
    assert_eq!(dropped, dropped_events);
    let coverage = r.report.split("## Coverage and losses").nth(1).unwrap();
    let row = format!(
        "| events dropped by the agent (link down past its spool bound) | {dropped_events} in {dropped_records} records |"
    );
    assert!(coverage.contains(&row), "{coverage}");
}

/// `kill -9` of the collector mid-run: nothing can be written any more, but QEMU and
/// vhost-device-vsock die with it (they do not run on unattended), and what is on disk
/// parses: `events.jsonl` holds whole lines only, and no half-written JSON is left.
#[test]
fn sigkill_mid_run_leaves_no_guest_behind_and_only_whole_lines() {
    let _vm = one_vm();
    let (mut child, dir, tmp) = start_long_run("sigkill");
    let kids = children_of(child.id());
    assert!(
        kids.iter().any(|(_, c)| c.starts_with("qemu")),
        "no QEMU child: {kids:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let t = Instant::now();
    for (pid, comm) in &kids {
        // Gone, or a zombie waiting for a reaper: no longer running either way.
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
        {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{comm} ({pid}) still runs after the collector was killed"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "events.jsonl ends inside a line"
    );
    let lines = text.lines().count();
    for (i, l) in text.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("events.jsonl line {}: {e}", i + 1));
    }
    eprintln!("sigkill: {lines} whole events.jsonl lines on disk");
    assert!(lines > 0, "the run had written events before the kill");
    assert!(
        !dir.join("summary.json").exists()
            || serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(dir.join("summary.json")).unwrap()
            )
            .is_ok()
    );
    // A killed run cannot remove its run directory, but its initramfs (about 14 MB)
    // went once the guest had booted.
    let left = left_behind(&tmp);
    eprintln!("sigkill: left {left:?}");
    assert!(
        !left.iter().any(|f| f.ends_with("initrd.cpio")),
        "the run's initramfs outlived the boot: {left:?}"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
