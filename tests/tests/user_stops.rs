//! Stops the user asks for (`--snapshot-at`, `--read`): the lab's own sites through
//! the new flags only — `show_cpuinfo` while the cpuinfo workload runs (the lab's
//! pid discovery, §4.1), `do_sys_openat2` with the file name from its argument, and
//! `entry_SYSCALL_64` with `$cr3` (the CR3 experiment's first step) — each read
//! checked against the eBPF events of the same moment; and a function the kernel
//! does not have, refused before any workload runs.

use guestscope::lab::{LabError, LabOptions};
use guestscope_tests::{guest_artifacts, run_lab, test_out_dir, workload_binary};
use serde_json::Value;

fn read<'a>(stop: &'a Value, expr: &str) -> &'a str {
    stop["reads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["expr"] == expr)
        .and_then(|r| r["value"].as_str())
        .unwrap_or_else(|| panic!("no value for {expr}: {stop}"))
}

fn hex(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn stops_at_the_labs_functions_read_what_the_probes_saw() {
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!("{} --iterations 3", workload_binary("cpuinfo").display()),
            format!("{} --iterations 10", workload_binary("fopen").display()),
        ],
        probes: vec!["alloc_fd".into()],
        // The same functions probed by eBPF: each stop's call is seen by both.
        user_probes: vec!["kprobe:show_cpuinfo".into(), "kprobe:do_sys_openat2".into()],
        stop_at: vec![
            "show_cpuinfo".into(),
            "do_sys_openat2".into(),
            "entry_SYSCALL_64".into(),
        ],
        reads: vec![
            "current->pid".into(),
            "current->comm".into(),
            "current->real_parent->comm".into(),
            "current->mm->pgd".into(),
            "$cr3".into(),
            "arg1".into(),
            // globals: untyped, and per-CPU ones typed from BTF on the stopped CPU
            "jiffies".into(),
            "current_task->pid".into(),
            "runqueues.nr_running".into(),
        ],
        stops_per_site: 3,
        ..LabOptions::default()
    };
    let r = run_lab("user-stops", opts);
    let snaps = &r.summary["timeline"]["snapshots"];
    let run = &snaps["run"];
    let stops = run["snapshots"]
        .as_array()
        .unwrap_or_else(|| panic!("{snaps}"));
    let pid_of = |name: &str| r.workload(name)["pid"].as_u64().unwrap();
    let at = |site: &str| -> Vec<&Value> { stops.iter().filter(|s| s["site"] == site).collect() };

    // show_cpuinfo: only while cpuinfo reads /proc/cpuinfo, by cpuinfo itself.
    let cpuinfo = at("show_cpuinfo");
    assert_eq!(cpuinfo.len(), 3, "{run}");
    for s in &cpuinfo {
        assert_eq!(read(s, "current->pid"), pid_of("cpuinfo").to_string());
        assert_eq!(read(s, "current->comm"), "\"cpuinfo\"");
        assert_eq!(s["tgid"], pid_of("cpuinfo"));
        assert_eq!(read(s, "current->real_parent->comm"), "\"guestscope-agen\"");
    }
    // Globals by name: this CPU's `current_task` is `current`; its run queue holds at
    // least the running task; jiffies never goes back.
    let mut last_jiffies = 0u64;
    for s in stops {
        assert_eq!(read(s, "current_task->pid"), read(s, "current->pid"), "{s}");
        let running: u64 = read(s, "runqueues.nr_running").parse().unwrap();
        assert!(running >= 1, "{s}");
        let jiffies = read(s, "jiffies");
        let (value, note) = jiffies.split_once(' ').unwrap();
        assert_eq!(note, "(no BTF type: read as unsigned long)");
        let value: u64 = value.parse().unwrap();
        assert!(
            value >= last_jiffies,
            "jiffies went back: {value} after {last_jiffies}"
        );
        last_jiffies = value;
    }
    // Each workload's stops ended on their own (no gdbstub error), and what ended them
    // is said with every failure below.
    let ended = run["ended"].as_str().unwrap_or_default();
    assert!(
        !ended.contains("error") && !ended.contains("failed"),
        "{ended}"
    );
    // do_sys_openat2's second argument is the user's file name.
    let opens = at("do_sys_openat2");
    assert!(
        opens
            .iter()
            .any(|s| read(s, "arg1").ends_with("\"/proc/cpuinfo\"")),
        "{ended}: {opens:?}"
    );
    assert!(
        opens
            .iter()
            .any(|s| s["comm"] == "fopen" && read(s, "arg1").contains("/file.txt\"")),
        "{ended}; the workloads: {}: {opens:?}",
        r.summary["workloads"]
    );
    // entry_SYSCALL_64, before the kernel switched anything: CR3 holds the task's own
    // page tables, the physical address of current->mm->pgd (the direct map is
    // 1 GiB aligned, KASLR or not).
    let entries = at("entry_SYSCALL_64");
    assert!(!entries.is_empty(), "{run}");
    for s in &entries {
        let cr3 = hex(read(s, "$cr3")) & 0x000f_ffff_ffff_f000;
        let pgd = hex(read(s, "current->mm->pgd"));
        assert_eq!(
            pgd.wrapping_sub(cr3) % (1 << 30),
            0,
            "cr3 {cr3:#x} is not current->mm->pgd {pgd:#x}"
        );
    }
    same_calls_follow_the_stops(snaps, stops);
    assert!(r.report.contains("## Your stops"));
    assert!(r.report.contains("### `show_cpuinfo`: 3 stops"));
}

/// Every stop at a probed function is followed on its CPU by the same thread's event of
/// the probe on that function: the same call, seen by the gdbstub and by eBPF, looked
/// for from the guest's last tick before the stop (read at every stop).
fn same_calls_follow_the_stops(snaps: &Value, stops: &[Value]) {
    let cc = &snaps["cross_check"];
    assert_eq!(
        cc["placed_by_ticks"].as_u64(),
        Some(stops.len() as u64),
        "{cc}"
    );
    for s in stops {
        let ticks = &s["ticks"];
        assert!(
            ticks["next_ns"].as_u64().unwrap() > ticks["last_ns"].as_u64().unwrap(),
            "{s}"
        );
    }
    let matches = cc["matches"].as_array().unwrap();
    let mut same_call = 0;
    for m in matches {
        let stop = &stops[m["snapshot"].as_u64().unwrap() as usize];
        if stop["site"] == "entry_SYSCALL_64" {
            continue; // not kprobe-able: an entry in assembly
        }
        let (tid, _) = (&m["same_call"][0], &m["same_call"][1]);
        assert_eq!(
            tid, &stop["pid"],
            "no event of the same call: stop {stop} against {m}"
        );
        same_call += 1;
    }
    assert!(same_call >= 5, "{cc}");
    assert_eq!(cc["same_call_possible"].as_u64(), Some(same_call), "{cc}");
    assert_eq!(cc["same_call_agreed"].as_u64(), Some(same_call), "{cc}");
}

#[test]
fn a_function_the_kernel_lacks_is_refused_before_any_workload() {
    let (kernel, initrd) = guest_artifacts();
    let opts = LabOptions {
        kernel,
        initrd,
        out_dir: test_out_dir("user-stops-refused"),
        // No cached list: the agent is the one that refuses.
        probe_cache: Some(tempfile::tempdir().unwrap().keep()),
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations 3",
            workload_binary("cpuinfo").display()
        )],
        stop_at: vec!["show_cpuinfoo".into()],
        reads: vec!["current->pid".into()],
        cr3: false,
        boots: 0,
        ..LabOptions::default()
    };
    let err = guestscope::lab::run(&opts).expect_err("the run went on");
    assert!(matches!(err, LabError::Probes(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("--snapshot-at show_cpuinfoo: no function show_cpuinfoo in this kernel; closest: show_cpuinfo"),
        "{text}"
    );
}

/// A workload the VM is held in runs with a quiet link: the agent sends nothing, not
/// even heartbeats, until it has exited. One that runs longer than the watchdog is not
/// taken for a hung guest (it was, after the watchdog's 30 s by default), and its stop
/// thread ends as soon as the first drained event arrives.
#[test]
fn a_quiet_workload_longer_than_the_watchdog_is_not_taken_for_hung() {
    let opts = LabOptions {
        builtin_workloads: false,
        // About 10 s at 500 dup+close a second: twice the watchdog.
        workloads: vec![format!(
            "{} --iterations 5000 --rate 500",
            workload_binary("flood").display()
        )],
        probes: vec!["alloc_fd".into()],
        // A function flood never calls: the stop thread waits the workload out.
        stop_at: vec!["show_cpuinfo".into()],
        reads: vec!["current->pid".into()],
        // Short, but not so short that the agent's start on a loaded host (loading
        // and verifying the probes, with no heartbeat meanwhile) is taken for a hang
        // (at 2 s it was, once in a loaded run).
        watchdog: Some(std::time::Duration::from_secs(5)),
        cr3: false,
        boots: 0,
        ..LabOptions::default()
    };
    let r = run_lab("user-stops-quiet", opts);
    let outcome = &r.summary["run"]["outcome"];
    assert_eq!(outcome["complete"], true, "{outcome}");
    let flood = r.workload("flood");
    assert_eq!(flood["status"], 0, "{flood}");
    let alloc_fd = r.events.iter().filter(|e| e["probe"] == "alloc_fd").count();
    assert!(alloc_fd >= 5000, "{alloc_fd} alloc_fd events");
    let run = &r.summary["timeline"]["snapshots"]["run"];
    assert_eq!(run["snapshots"].as_array().map(Vec::len), Some(0), "{run}");
}

/// Once its stops are taken, the host holds the VM no longer and tells the agent, and a
/// quiet workload streams its events again instead of leaving them in the ring buffer
/// until it exits. With a ring of about 900 records against 4000 events over 2 s,
/// staying quiet to the end lost three quarters of them.
#[test]
fn a_workload_streams_again_once_its_stops_are_taken() {
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations 4000 --rate 2000",
            workload_binary("flood").display()
        )],
        probes: vec!["alloc_fd".into()],
        stop_at: vec!["alloc_fd".into()],
        reads: vec!["current->pid".into()],
        stops_per_site: 2,
        events_bytes: Some(64 * 1024),
        cr3: false,
        boots: 0,
        ..LabOptions::default()
    };
    let r = run_lab("user-stops-release", opts);
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "{}",
        s["run"]["outcome"]
    );
    let run = &s["timeline"]["snapshots"]["run"];
    assert_eq!(run["snapshots"].as_array().map(Vec::len), Some(2), "{run}");
    assert!(
        s["stream"]["link"]["releases_sent"].as_u64() >= Some(1),
        "{}",
        s["stream"]["link"]
    );
    let serial = std::fs::read_to_string(r.dir.join("serial.log")).unwrap();
    assert!(
        serial.contains("the host holds the VM no longer"),
        "the agent never streamed again"
    );
    let alloc_fd = s["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "alloc_fd")
        .unwrap();
    let c = &alloc_fd["counters"];
    assert_eq!(c["ring_full"], 0, "{c}");
    assert!(alloc_fd["received"].as_u64() >= Some(4000), "{alloc_fd}");
}
