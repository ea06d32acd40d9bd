//! The pipeline end to end, on one shared boot of the built-in guest: probes in
//! the guest kernel → ring buffer → agent → vsock → collector → outputs.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use guestscope::lab::LabOptions;
use guestscope_tests::{RunOutput, run_lab, stack_has, workload_binary};

/// The user workload: our fopen program under another name, given with
/// `--workload`, so it goes through the same path as any user's binary.
const USER_WORKLOAD: &str = "user-fopen";
const USER_ITERATIONS: u64 = 60;
/// Boots of the boot-time experiment, on top of the traced run.
const BOOTS: u32 = 2;

fn run() -> &'static RunOutput {
    static RUN: OnceLock<RunOutput> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = guestscope_tests::target_dir().join("guestscope/test-bin");
        std::fs::create_dir_all(&dir).unwrap();
        let user = dir.join(USER_WORKLOAD);
        std::fs::copy(workload_binary("fopen"), &user).unwrap();
        // The lab's default: the uncompressed kernel for every boot but the boot-time
        // ones, as `guestscope lab` does with the guest `cargo xtask` built.
        let fast = guestscope_tests::guest_artifacts()
            .0
            .with_file_name("vmlinux");
        let opts = LabOptions {
            fast_kernel: fast.is_file().then_some(fast),
            workloads: vec![format!("{} --iterations {USER_ITERATIONS}", user.display())],
            boots: BOOTS,
            // The boot-time and CR3 boots two at a time, as on a two-core host.
            parallel_boots: 2,
            cr3: true,
            snapshots: true,
            ..LabOptions::default()
        };
        run_lab("pipeline", opts)
    })
}

#[test]
fn the_run_completes_with_nothing_lost() {
    let r = run();
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "outcome: {}",
        s["run"]["outcome"]
    );
    assert_eq!(s["stream"]["seq"]["missing"], 0);
    assert_eq!(s["losses"]["events_missing"], 0);
    assert_eq!(s["losses"]["ring_full"], 0);
    assert_eq!(
        s["losses"]["stack_failed"], 0,
        "every event keeps its stack"
    );
    let received = s["stream"]["events_received"].as_u64().unwrap();
    assert_eq!(
        received as usize,
        r.events.len(),
        "events.jsonl has every received event"
    );
    assert!(r.report.contains("## Workloads"));
}

#[test]
fn fopen_alloc_fd_events_carry_its_pid_and_an_alloc_fd_stack() {
    let r = run();
    let pid = r.workload("fopen")["pid"].as_u64().unwrap();
    let events: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(
        events.len() >= 50,
        "only {} alloc_fd events for fopen",
        events.len()
    );
    for e in &events {
        assert_eq!(e["pid"].as_u64(), Some(pid));
    }
    let with_stack = events.iter().filter(|e| stack_has(e, "alloc_fd")).count();
    assert!(
        with_stack * 10 >= events.len() * 9,
        "{with_stack} of {} alloc_fd stacks contain alloc_fd; first: {}",
        events.len(),
        events[0]["stack"]
    );
}

/// The agent's peak memory is reported twice: loading the probes (aya parses the
/// kernel's BTF), then the run alone, after the agent reset its peak.
#[test]
fn the_agents_peak_is_reset_once_its_probes_are_loaded() {
    let r = run();
    let peak = |file: &str| {
        let text = std::fs::read_to_string(r.dir.join("guest").join(file))
            .unwrap_or_else(|e| panic!("guest/{file}: {e}"));
        guestscope::bench::status_kib(&text, "VmHWM")
            .unwrap_or_else(|| panic!("no VmHWM in guest/{file}:\n{text}"))
    };
    let (loading, run) = (peak("agent_status_loaded"), peak("agent_status"));
    assert!(
        run < loading,
        "the run's peak {run} KiB is not below the loading peak {loading} KiB: the reset did not happen"
    );
}

#[test]
fn spin_lock_is_seen_through_alloc_fd() {
    let r = run();
    let through = r
        .events_of("fopen", "spin_lock")
        .filter(|e| stack_has(e, "alloc_fd"))
        .count();
    assert!(
        through > 0,
        "no spin_lock event of fopen has alloc_fd in its stack"
    );
    // The report's flame graph of the spin_lock stacks has alloc_fd's box.
    let html = std::fs::read_to_string(r.dir.join("report.html")).unwrap();
    assert!(html.contains("spin_lock's kernel stacks"), "no flame graph");
    assert!(
        html.contains("<title>alloc_fd ("),
        "no alloc_fd box in the flame graph"
    );
    let first = r
        .events_of("fopen", "spin_lock")
        .find(|e| stack_has(e, "alloc_fd"))
        .unwrap();
    assert!(
        stack_has(first, "_raw_spin_lock"),
        "stack starts at the lock: {}",
        first["stack"]
    );
}

#[test]
fn page_faults_are_attributed_to_malloc() {
    let r = run();
    let pid = r.workload("malloc")["pid"].as_u64().unwrap();
    let faults: Vec<_> = r.events_of("malloc", "page_fault_user").collect();
    // 16 MiB touched page by page, 4 times: thousands of faults.
    assert!(
        faults.len() >= 1000,
        "only {} user page faults for malloc",
        faults.len()
    );
    assert!(faults.iter().all(|e| e["pid"].as_u64() == Some(pid)));
    // Nearly all of them are first writes to fresh pages, by the error code.
    let malloc = r.summary["experiments"]["page_faults"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == "malloc")
        .expect("malloc's faults");
    let first_writes = malloc["accesses"]["write to an unmapped page"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        first_writes as usize >= faults.len() * 9 / 10,
        "{first_writes} first writes of {} faults: {malloc}",
        faults.len()
    );
}

#[test]
fn no_event_comes_from_a_process_outside_the_filter() {
    let r = run();
    let workload_pids: BTreeSet<u64> = r.summary["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap())
        .collect();
    let outside: Vec<_> = r
        .events
        .iter()
        .filter(|e| !workload_pids.contains(&e["pid"].as_u64().unwrap()))
        .collect();
    assert!(
        outside.is_empty(),
        "{} events from other pids, e.g. {}",
        outside.len(),
        outside[0]
    );
    assert_eq!(r.summary["stream"]["events_unattributed"], 0);
}

#[test]
fn a_user_workload_shows_up_with_its_own_events() {
    let r = run();
    let w = r.workload(USER_WORKLOAD);
    assert_eq!(w["status"], 0, "user workload output: {}", w["output"]);
    let pid = w["pid"].as_u64().unwrap();
    let n = r
        .events_of(USER_WORKLOAD, "alloc_fd")
        .filter(|e| e["pid"].as_u64() == Some(pid))
        .count() as u64;
    assert!(
        n >= USER_ITERATIONS,
        "{n} alloc_fd events for {USER_ITERATIONS} iterations"
    );
    assert!(r.report.contains(&format!("### {USER_WORKLOAD}")));
}

#[test]
fn spin_lock_file_system_class_holds_a_stack_through_alloc_fd_for_fopen() {
    let r = run();
    let fopen = r.spin_lock_experiment("fopen");
    let fs = fopen["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "file system")
        .expect("a file-system class for fopen");
    let through = &fs["through"]["alloc_fd"];
    assert!(
        through["hits"].as_u64().unwrap() >= 50,
        "alloc_fd lock hits: {through}"
    );
    let stack: Vec<&str> = through["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        stack[0].starts_with("_raw_spin_lock") && stack.iter().any(|f| f.starts_with("alloc_fd+")),
        "{stack:?}"
    );
}

#[test]
fn spin_lock_timer_class_shows_jiffies_lock_or_the_tick_path() {
    let r = run();
    let timers: Vec<_> = r.summary["experiments"]["spin_lock"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| {
            w["classes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["class"] == "timers")
        })
        .collect();
    assert!(
        !timers.is_empty(),
        "no timer-class spin_lock hit in any workload"
    );
    let jiffies: u64 = timers
        .iter()
        .filter_map(|c| c["named_locks"]["jiffies_lock"].as_u64())
        .sum();
    let tick = timers.iter().any(|c| {
        c["through"]["tick_do_update_jiffies64"]["hits"]
            .as_u64()
            .unwrap_or(0)
            > 0
    });
    assert!(
        jiffies > 0 || tick,
        "timer class without jiffies_lock or the tick path: {timers:?}"
    );
}

#[test]
fn boot_table_has_a_row_per_boot_with_kernel_time_below_wall_time() {
    let r = run();
    let boot = &r.summary["experiments"]["boot"];
    let samples = boot["samples"].as_array().unwrap();
    assert_eq!(samples.len(), BOOTS as usize);
    // They ran side by side, and are still reported in their order.
    assert_eq!(boot["at_once"], 2);
    assert!(r.report.contains("The boots ran 2 at a time"));
    let numbers: Vec<u64> = samples
        .iter()
        .map(|s| s["boot"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=u64::from(BOOTS)).collect::<Vec<_>>());
    for s in samples {
        let wall = s["agent_hello_s"].as_f64().expect("boot reached the agent");
        let kernel = s["agent_hello_kernel_s"].as_f64().unwrap();
        assert!(
            kernel > 0.0 && kernel < wall,
            "kernel {kernel} s vs wall {wall} s"
        );
        assert!(s["kernel_banner_s"].as_f64().unwrap() < wall);
    }
    assert!(boot["gap"]["mean"].as_f64().unwrap() > 0.0);
    // The boot-time boots time the boot, not the probes' verification: their agents
    // start and load nothing, while the traced boot's loads its probes.
    let loaded = "program verified and loaded";
    for i in 1..=BOOTS {
        let log = std::fs::read_to_string(r.dir.join(format!("boots/serial-{i}.log"))).unwrap();
        assert!(
            log.contains("no probe loaded: the plan asks for none") && !log.contains(loaded),
            "boot {i} loaded probes:\n{log}"
        );
    }
    let traced = std::fs::read_to_string(r.dir.join("serial.log")).unwrap();
    assert!(traced.contains(loaded), "the traced boot loads its probes");
    // The traced boot runs on qboot where QEMU ships it; the boot-time boots keep
    // QEMU's default firmware, which the lab measured (the kernel's DMI line names it).
    let qemu = guestscope::inputs::find_program("qemu-system-x86_64").expect("QEMU");
    let command = r.summary["run"]["qemu_command"].as_str().unwrap();
    let dmi = |log: &str| {
        log.lines()
            .find(|l| l.contains("DMI:"))
            .map(|l| l[l.find("DMI:").unwrap()..].to_string())
    };
    let first = std::fs::read_to_string(r.dir.join("boots/serial-1.log")).unwrap();
    if guestscope::qemu::firmware::qboot(&qemu).is_some() {
        assert!(command.contains("qboot.rom"), "{command}");
        assert_ne!(
            dmi(&traced),
            dmi(&first),
            "the boot-time boot ran the same firmware"
        );
    } else {
        assert!(!command.contains("-bios"), "{command}");
    }
    assert!(!first.is_empty());
}

#[test]
fn pci_table_has_the_host_bridge_with_its_class_and_dmesg_line() {
    let r = run();
    let pci = r.summary["experiments"]["pci"].as_array().unwrap();
    let hb = pci
        .iter()
        .find(|d| d["ids"] == "8086:1237")
        .expect("host bridge 8086:1237");
    assert_eq!(hb["class_code"].as_u64().unwrap() >> 8, 0x0600);
    assert_eq!(hb["subclass_name"], "Host bridge");
    let line = hb["dmesg"]
        .as_str()
        .expect("the dmesg line that discovered it");
    assert!(
        line.contains("[8086:1237]") && line.contains("class 0x060000"),
        "{line}"
    );
}

#[test]
fn random_devices_only_wait_until_the_crng_is_ready() {
    let r = run();
    let rnd = &r.summary["experiments"]["random"];
    let crng = rnd["crng_ready_s"]
        .as_f64()
        .expect("crng init time from dmesg");
    for s in rnd["sources"].as_array().unwrap() {
        let start = s["start_s"].as_f64().unwrap();
        let name = s["workload"].as_str().unwrap();
        if start > crng {
            // After the CRNG is seeded nothing blocks, /dev/random included.
            assert_eq!(
                s["blocked"], false,
                "{name} blocked after the CRNG was ready: {s}"
            );
        }
        if s["method"] == "/dev/urandom" && s["blocked"] == true {
            // A wait on urandom is the reader seeding the CRNG itself, seen on its stacks.
            assert!(
                s["jitter_events"].as_u64().unwrap() > 0,
                "urandom waited without try_to_generate_entropy: {s}"
            );
        }
    }
    let after = rnd["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["workload"] == "getrandom-after")
        .unwrap();
    assert_eq!(
        after["errors"], 0,
        "non-blocking getrandom failed after the CRNG was ready"
    );
}

#[test]
fn the_report_has_every_section_and_the_html_is_self_contained() {
    let r = run();
    for section in [
        "## Claims check",
        "## Boot time",
        "## PCI devices",
        "## /dev/random",
        "## spin_lock by subsystem",
        "## Page faults",
        "## Coverage and losses",
    ] {
        assert!(r.report.contains(section), "report.md lacks {section}");
    }
    let html = std::fs::read_to_string(r.dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "no plot in report.html");
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "report.html loads something from the network"
    );
    let claims = r.summary["claims"].as_array().unwrap();
    assert!(claims.len() >= 6);
    assert!(
        claims.iter().any(|c| c["verdict"] == "contradicted"),
        "{claims:?}"
    );
}

/// Parses `trace.perfetto-trace` with Perfetto's own published protos (PyPI
/// `perfetto`, installed by `cargo xtask deps`; the script is
/// `tests/tests/perfetto_check.py`, which also runs by hand on any trace) and
/// checks the guest's machine and clock, the interned stacks, and that guest
/// events and host-clock boot phases share one time axis.
#[test]
fn the_perfetto_trace_parses_with_perfettos_protos_and_shares_one_time_axis() {
    let r = run();
    let path = r.dir.join("trace.perfetto-trace");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(include_str!("perfetto_check.py"))
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "Perfetto's protos could not parse the trace: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    // Each event once, on its thread's track, on the guest machine (the script
    // asserts machine id 1 and the guest clock for each).
    assert_eq!(v["probe_events"].as_u64().unwrap(), r.events.len() as u64);
    assert!(v["machines"]["0"].as_u64().unwrap() > 0, "no host packet");
    assert!(v["machines"]["1"].as_u64().unwrap() > 0, "no guest packet");
    // The guest clock's snapshots against the host's axis.
    assert!(v["guest_clock_snapshots"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(v["guest_clock_snapshots_monotonic"], true);
    // Every stack is an interned callstack whose frames resolve.
    assert_eq!(v["events_with_unresolved_callstack"], 0);
    let with_stack = r
        .events
        .iter()
        .filter(|e| e["stack"].as_array().is_some_and(|s| !s.is_empty()))
        .count();
    assert_eq!(
        v["events_with_resolved_callstack"].as_u64().unwrap(),
        with_stack as u64
    );
    // Reported, not asserted: trace_processor downloads its binary, which this
    // machine's network does not allow, so what it answers was never seen here.
    if let Some(tp) = v["trace_processor"].as_object() {
        eprintln!("trace_processor: {tp:?}");
    } else {
        eprintln!("trace_processor not checked: {}", v["trace_processor"]);
    }
    assert!(
        v["threads"].as_u64().unwrap() >= r.summary["workloads"].as_array().unwrap().len() as u64
    );
    let user_space = v["boot"]["user space to agent ready"]
        .as_u64()
        .expect("boot phase slice");
    let kernel_init = v["boot"]["kernel init"].as_u64().unwrap();
    let first = v["first_probe"].as_u64().unwrap();
    // Guest events (mapped from the guest clock) come after the kernel started
    // and after user space began (host clock): one consistent axis.
    assert!(
        kernel_init < user_space && user_space < first,
        "kernel init {kernel_init}, user space {user_space}, first event {first}"
    );
    // The gdbstub snapshots (host clock) sit among the guest's events, with their
    // registers as arguments.
    let snaps = v["snapshots"].as_array().unwrap();
    assert!(!snaps.is_empty(), "no gdbstub snapshot in the trace");
    let last = v["last_probe"].as_u64().unwrap();
    for sn in snaps {
        let ts = sn["ts"].as_u64().unwrap();
        assert!(
            first < ts && ts < last,
            "snapshot at {ts} outside the events' span {first}..{last}"
        );
        assert!(
            sn["cr3"].as_str().is_some_and(|c| c.starts_with("0x")),
            "{sn}"
        );
    }
}

/// The clock-sync exchange and the traced run's gdbstub snapshots: one line through
/// every round trip, and every snapshot's pid, read through the gdbstub, agrees with
/// the eBPF events of the same moment.
#[test]
fn snapshots_agree_with_the_ebpf_events_on_one_time_line() {
    let r = run();
    let t = &r.summary["timeline"];
    let answered = t["probes"]["answered"].as_u64().unwrap();
    assert!(
        answered >= 10,
        "only {answered} clock-sync round trips: {}",
        t["probes"]
    );
    let fit = &t["fit"];
    let bound = fit["error_bound_ns"].as_f64().unwrap();
    assert!(bound > 0.0 && bound < 5e6, "error bound {bound} ns");
    let sr = &t["snapshots"];
    let run = &sr["run"];
    assert!(run.is_object(), "snapshots not taken: {}", sr["error"]);
    let pid = r.workload("fopen")["pid"].as_u64().unwrap();
    let snaps = run["snapshots"].as_array().unwrap();
    assert!(
        snaps.len() >= 5,
        "{} snapshots ({})",
        snaps.len(),
        run["ended"]
    );
    for sn in snaps {
        assert_eq!(sn["tgid"].as_u64(), Some(pid), "{sn}");
        assert_eq!(sn["comm"], "fopen");
        let regs: std::collections::HashMap<String, u64> =
            serde_json::from_value(serde_json::Value::Object(
                sn["registers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p[0].as_str().unwrap().to_string(), p[1].clone()))
                    .collect(),
            ))
            .unwrap();
        assert_eq!(
            regs["rip"],
            run["address"].as_u64().unwrap(),
            "stopped at the breakpoint"
        );
        // QEMU's default CPU model has no PCID: CR3 is the page-aligned PGD address.
        assert_eq!(
            regs["cr3"] & 0xfff,
            0,
            "CR3 {:#x} is not page-aligned",
            regs["cr3"]
        );
        assert!(
            regs["cr3"] >> 12 != 0,
            "CR3 {:#x} has no page-table base",
            regs["cr3"]
        );
    }
    // Every stop is a hold (the guest clock stood still), taken out of the time line.
    assert!(t["holds"].as_u64().unwrap() >= snaps.len() as u64);
    let cc = &sr["cross_check"];
    let compared = cc["compared"].as_u64().unwrap();
    assert_eq!(compared, snaps.len() as u64, "{cc}");
    assert_eq!(cc["agreed"].as_u64().unwrap(), compared, "{cc}");
    assert_eq!(cc["same_call_agreed"].as_u64().unwrap(), compared, "{cc}");
    // Each stop read the guest's own tick bookkeeping.
    assert_eq!(cc["placed_by_ticks"].as_u64(), Some(compared), "{cc}");
    assert!(r.report.contains("## One time line"));
}

/// The gdbstub CR3 experiment, run by the lab on two extra boots: with PTI
/// (Haswell-noTSX) CR3 changes at system-call entry, without it does not.
#[test]
fn cr3_changes_at_syscall_entry_only_with_pti() {
    let r = run();
    let runs = r.summary["experiments"]["syscall_cr3"].as_array().unwrap();
    let labels: Vec<&str> = runs.iter().map(|x| x["label"].as_str().unwrap()).collect();
    assert_eq!(
        labels,
        ["PTI on", "PTI off"],
        "in their order, though run side by side"
    );
    let get = |label: &str| {
        runs.iter()
            .find(|x| x["label"] == label)
            .unwrap_or_else(|| panic!("no {label} run: {runs:?}"))
    };
    let (on, off) = (get("PTI on"), get("PTI off"));
    // The CR3 boots use the gdbstub alone: their agents load no eBPF probe.
    for log in ["serial-cr3-pti.log", "serial-cr3-nopti.log"] {
        let text = std::fs::read_to_string(r.dir.join(log)).unwrap();
        assert!(
            text.contains("no probe loaded: the plan asks for none")
                && !text.contains("program verified and loaded"),
            "{log} loaded probes"
        );
    }
    let (con, coff) = (&on["report"], &off["report"]);
    assert!(con.is_object(), "PTI-on run failed: {}", on["error"]);
    assert!(coff.is_object(), "PTI-off run failed: {}", off["error"]);
    // The guest's own verdict arrives with the end-of-run artifacts; a CR3 boot can
    // lose them (known: the agent's acknowledgement link gives up while the gdbstub
    // holds the guest), so it is checked when present.
    if let Some(m) = on["meltdown"].as_str() {
        assert!(m.contains("PTI"), "guest says: {m}");
    }
    if let Some(m) = off["meltdown"].as_str() {
        assert!(m.contains("Not affected"), "guest says: {m}");
    }
    for c in [con, coff] {
        let cr3 = c["cr3_user"].as_u64().unwrap();
        assert!(cr3 >> 12 != 0, "CR3 {cr3:#x} has no page-table base");
        // The breakpoint's host-side condition found the workload itself.
        assert_eq!(
            c["target"]["tgid"].as_u64(),
            c["target_pid"].as_u64(),
            "{c}"
        );
    }
    assert_eq!(con["cr3_changed"], true);
    assert_eq!(
        con["differing_bits"].as_u64().unwrap() & 0x1000,
        0x1000,
        "bit 12 is PTI's PGD switch: {con}"
    );
    assert_eq!(con["current_readable_before"], false);
    assert_eq!(coff["cr3_changed"], false);
    assert_eq!(coff["current_readable_before"], true);
    let claim = r.summary["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["section"] == "6")
        .unwrap();
    assert_eq!(claim["verdict"], "contradicted", "{claim}");
}

/// `stacks.folded` holds every event once: per workload and probe, its counts add up
/// to the events received, and alloc_fd's stacks end in alloc_fd.
#[test]
fn folded_stacks_count_every_event_once() {
    let r = run();
    let text = std::fs::read_to_string(r.dir.join("stacks.folded")).expect("stacks.folded");
    let mut per: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("'STACK COUNT'");
        let mut frames = stack.split(';');
        let workload = frames.next().unwrap().to_string();
        let probe = frames.next().unwrap().to_string();
        let frames: Vec<&str> = frames.collect();
        assert!(!frames.is_empty(), "{line}");
        if probe == "alloc_fd" && workload == "fopen" && frames != ["[no stack]"] {
            assert_eq!(frames.last(), Some(&"alloc_fd"), "{line}");
        }
        *per.entry((workload, probe)).or_default() += count.parse::<u64>().unwrap();
    }
    for w in r.summary["workloads"].as_array().unwrap() {
        let name = w["name"].as_str().unwrap();
        for (probe, n) in w["events"].as_object().unwrap() {
            assert_eq!(
                per.get(&(name.to_string(), probe.clone())).copied(),
                Some(n.as_u64().unwrap()),
                "{name} {probe}"
            );
        }
    }
}

/// `guestscope report DIR` renders a run folder's report files again from its
/// summary.json, events.jsonl and stacks.jsonl alone (no boot): the same bytes the
/// run wrote, figures included (flame graphs, page-fault time lines).
#[test]
fn guestscope_report_renders_the_runs_files_again_byte_for_byte() {
    let r = run();
    let copy = tempfile::tempdir().unwrap();
    for f in ["summary.json", "events.jsonl", "stacks.jsonl"] {
        std::fs::copy(r.dir.join(f), copy.path().join(f)).unwrap();
    }
    let out = std::process::Command::new(guestscope_tests::collector_binary())
        .arg("report")
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "guestscope report: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["report.md", "report.html", "stacks.folded"] {
        let (was, again) = (
            std::fs::read(r.dir.join(f)).unwrap(),
            std::fs::read(copy.path().join(f)).unwrap(),
        );
        assert!(!was.is_empty(), "{f} empty");
        assert!(was == again, "{f} differs when rendered again");
    }
}
