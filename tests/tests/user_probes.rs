//! Probes the user names (`--probe`): a dozen kernel functions across the file
//! system, memory management and the scheduler in one boot, each filtered to the
//! workloads, with stacks and argument values, checked against the built-in
//! `alloc_fd` probe of the same run; and names the kernel refuses, refused before any
//! workload runs with the closest valid names.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use guestscope::lab::{LabError, LabOptions};
use guestscope_tests::{guest_artifacts, run_lab, stack_has, test_out_dir, workload_binary};
use serde_json::Value;

const OPENS: u64 = 40;

const PROBES: &[&str] = &[
    // file system
    "kprobe:do_sys_open*",
    "kprobe:getname_flags",
    "kprobe:do_filp_open",
    // the same function by fentry (BTF trampoline), and by a kprobe past its
    // `call __fentry__` (5 bytes: the guest kernel has no IBT)
    "fentry:do_filp_open",
    "kprobe:do_filp_open+5",
    "kretprobe:alloc_fd",
    // dozens at once: every vfs_ function (73 on Debian's 6.1)
    "kprobe:vfs_*",
    "kprobe:filp_close",
    // memory management
    "kprobe:handle_mm_fault",
    "kprobe:__handle_mm_fault",
    "kprobe:pte_alloc_one",
    "kprobe:__alloc_pages",
    // one fentry program load per function of a glob
    "fentry:filemap_*",
    // scheduler and process life
    "kprobe:schedule",
    "kprobe:do_exit",
    // tracepoints
    "tracepoint:syscalls:sys_enter_open*",
    "tracepoint:sched:sched_process_e*",
];

fn hits(probe: &Value, workload: &str) -> u64 {
    probe["by_workload"][workload].as_u64().unwrap_or(0)
}

#[test]
fn a_dozen_named_probes_in_one_boot() {
    let fopen = workload_binary("fopen");
    let malloc = workload_binary("malloc");
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![
            format!(
                "{} --iterations {OPENS} --start-delay-ms 50",
                fopen.display()
            ),
            format!("{} --mib 8 --repeat 2 --no-thp", malloc.display()),
        ],
        probes: vec!["alloc_fd".into()],
        user_probes: PROBES.iter().map(|p| p.to_string()).collect(),
        ..LabOptions::default()
    };
    let r = run_lab("user-probes", opts);
    let s = &r.summary;
    // Loading this many probes takes the agent seconds before its first record; its
    // first connection is waited for, not refused and made again.
    let link = &s["stream"]["link"];
    assert_eq!(link["refused"], serde_json::json!([]), "{link}");
    assert!(
        link["outages"].as_array().is_some_and(Vec::is_empty),
        "{link}"
    );
    for kind in ["kprobe", "kretprobe", "fentry"] {
        let attach = r.probe(kind);
        assert_eq!(attach["attach"]["attached"], true, "{attach}");
    }
    let functions = r.probe("kprobe")["attach"]["target"]
        .as_str()
        .map_or(0, |t| t.split(", ").count());
    assert!(functions >= 50, "{functions} functions attached");
    let fentry_functions = r.probe("fentry")["attach"]["target"]
        .as_str()
        .map_or(0, |t| t.split(", ").count());
    assert!(
        fentry_functions >= 5,
        "{fentry_functions} fentry functions attached"
    );
    let user = s["user_probes"].as_array().unwrap();
    let by_name = |name: &str| -> &Value {
        user.iter().find(|p| p["name"] == name).unwrap_or_else(|| {
            panic!(
                "{name} was never hit; hit: {:?}",
                user.iter().map(|p| &p["name"]).collect::<Vec<_>>()
            )
        })
    };
    assert!(user.len() >= 10, "{} probed functions hit", user.len());

    // fs: one open per iteration, seen at entry and at alloc_fd's return, which gave
    // the same fd every time (the loop closes it).
    assert!(hits(by_name("kprobe:do_sys_openat2"), "fopen") >= OPENS);
    assert!(hits(by_name("kprobe:filp_close"), "fopen") >= OPENS);
    let ret = by_name("kretprobe:alloc_fd");
    let builtin = r.events_of("fopen", "alloc_fd").count() as u64;
    assert_eq!(
        hits(ret, "fopen"),
        builtin,
        "kretprobe:alloc_fd and the built-in alloc_fd probe disagree"
    );
    // `arg` is named and typed from the guest's BTF prototypes.
    assert_eq!(ret["arg"], "returns int", "{ret}");
    assert_eq!(by_name("kprobe:do_sys_openat2")["arg"], "int dfd");
    assert_eq!(by_name("kprobe:filp_close")["arg"], "struct file *filp");
    let values = ret["values"].as_object().expect("few distinct fds");
    assert!(values.contains_key("0x3"), "fds returned: {values:?}");
    // The same function three ways sees the same calls: at entry by kprobe and by
    // fentry, and 5 bytes in by a kprobe (named as asked, its rdi no argument any more).
    for workload in ["fopen", "malloc"] {
        let at_entry = hits(by_name("kprobe:do_filp_open"), workload);
        assert_eq!(
            hits(by_name("fentry:do_filp_open"), workload),
            at_entry,
            "{workload}"
        );
        assert_eq!(
            hits(by_name("kprobe:do_filp_open+5"), workload),
            at_entry,
            "{workload}"
        );
    }
    assert_eq!(by_name("fentry:do_filp_open")["arg"], "int dfd");
    // The arguments after the first, named from the prototype, and the same in both
    // probes call by call: each call's file name pointer (rsi) as fentry and the
    // kprobe saw it.
    let more: Vec<&str> = by_name("fentry:do_filp_open")["more_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(more, ["struct filename *pathname", "struct open_flags *op"]);
    let second_args = |probe: &str| {
        let mut v: Vec<String> = r
            .events
            .iter()
            .filter(|e| e["probe"] == probe)
            .map(|e| {
                assert_eq!(e["args"].as_array().map(Vec::len), Some(6), "{e}");
                e["args"][1].as_str().unwrap().to_string()
            })
            .collect();
        v.sort();
        v
    };
    let by_fentry = second_args("fentry:do_filp_open");
    assert!(by_fentry.len() as u64 >= OPENS);
    assert_eq!(by_fentry, second_args("kprobe:do_filp_open"));
    assert_eq!(by_name("kprobe:do_filp_open+5")["arg"], "rdi at +5");
    assert!(
        user.iter().any(|p| p["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("fentry:filemap_"))
            && hits(p, "malloc") + hits(p, "fopen") > 0),
        "no fentry:filemap_* hit"
    );
    // mm: the page faults of malloc reach pte_alloc_one through the fault entry.
    let pte = by_name("kprobe:pte_alloc_one");
    assert!(hits(pte, "malloc") > 0, "{pte}");
    let frames: Vec<&str> = pte["top_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        frames.iter().any(|f| f.starts_with("exc_page_fault")),
        "pte_alloc_one's stack: {frames:?}"
    );
    assert!(hits(by_name("kprobe:handle_mm_fault"), "malloc") > 0);
    // sched: the start delay sleeps; every workload exits.
    assert!(hits(by_name("kprobe:schedule"), "fopen") > 0);
    let exit = by_name("kprobe:do_exit");
    assert!(
        hits(exit, "fopen") >= 1 && hits(exit, "malloc") >= 1,
        "{exit}"
    );
    // Tracepoints, told apart by their type id: fopen's open(2) calls, and each
    // workload's own exec and exit.
    assert!(hits(by_name("tracepoint:syscalls:sys_enter_open"), "fopen") >= OPENS);
    for tp in [
        "tracepoint:sched:sched_process_exec",
        "tracepoint:sched:sched_process_exit",
    ] {
        let p = by_name(tp);
        assert!(hits(p, "fopen") >= 1 && hits(p, "malloc") >= 1, "{p}");
    }

    // Every event is a workload's own (the exec of each counts too: it opens the
    // program), with its function's name and a stack that starts there.
    let events: Vec<&Value> = r
        .events
        .iter()
        .filter(|e| e["probe"] == "kprobe:do_filp_open")
        .collect();
    let in_fopen = events.iter().filter(|e| e["workload"] == "fopen").count() as u64;
    assert!(in_fopen >= OPENS, "{in_fopen} do_filp_open events in fopen");
    for e in &events {
        assert!(e["workload"] == "fopen" || e["workload"] == "malloc", "{e}");
        assert!(stack_has(e, "do_filp_open"), "{e}");
    }
    assert!(r.report.contains("## Your probes"));
    assert!(r.report.contains("| `kretprobe:alloc_fd` |"));
    assert!(
        r.report.contains("`fentry:do_filp_open`: 1 function(s)"),
        "the report's list of what was asked for misses the fentry probes"
    );
    // A glob is code, not Markdown emphasis.
    assert!(
        r.report.contains("`kprobe:vfs_*`: "),
        "the glob is not code"
    );
}

#[test]
fn names_the_kernel_refuses_stop_the_run_before_any_workload() {
    let (kernel, initrd) = guest_artifacts();
    let opts = LabOptions {
        kernel,
        initrd,
        out_dir: test_out_dir("user-probes-refused"),
        // No cached list: the agent is the one that refuses.
        probe_cache: Some(tempfile::tempdir().unwrap().keep()),
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations 5",
            workload_binary("fopen").display()
        )],
        user_probes: vec![
            "kprobe:vfs_raed".into(),
            "kprobe:nothing_like_this_*".into(),
            // The page-fault entry is on the kernel's kprobe blacklist.
            "kprobe:do_user_addr_fault".into(),
            "tracepoint:sched:sched_swtich".into(),
            // 1 byte into `call __fentry__`.
            "kprobe:do_filp_open+1".into(),
        ],
        cr3: false,
        snapshots: false,
        boots: 2,
        ..LabOptions::default()
    };
    let started = std::time::Instant::now();
    let err = guestscope::lab::run(&opts).expect_err("the run went on");
    let LabError::Probes(reasons) = &err else {
        panic!("not a probe refusal: {err}");
    };
    let text = err.to_string();
    assert_eq!(reasons.len(), 5, "{text}");
    assert!(
        text.contains(
            "kprobe:do_filp_open+1: offset 1 is not the start of an instruction of do_filp_open"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "no tracepoint sched:sched_swtich in this kernel; closest: sched:sched_switch"
        ),
        "{text}"
    );
    assert!(
        text.contains("no function vfs_raed in this kernel; closest: vfs_read"),
        "{text}"
    );
    assert!(
        text.contains("kprobe:nothing_like_this_*: matches no probeable function"),
        "{text}"
    );
    assert!(
        text.contains("do_user_addr_fault is on the kernel's kprobe blacklist"),
        "{text}"
    );
    assert!(!text.contains('\n'), "not one line: {text}");
    // One boot, not the boot-time experiment's two more.
    assert!(
        !opts.out_dir.join("boots").exists(),
        "the boot-time boots ran before the refusal"
    );
    eprintln!("refused after {:.1} s", started.elapsed().as_secs_f64());
}
