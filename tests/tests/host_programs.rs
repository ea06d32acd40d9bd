//! Host programs as workloads (`guestscope lab -- CMD`): the host's own dynamically
//! linked shell and coreutils run in the built-in guest from the host's files, in the
//! host's current directory, traced like any workload (the built-in alloc_fd probe
//! sees their opens, children included); what they write stays in the guest.

use guestscope::lab::LabOptions;
use guestscope_tests::run_lab;

#[test]
fn a_dynamic_host_program_runs_traced_and_writes_nothing_to_the_host() {
    let cwd = std::env::current_dir().unwrap();
    let marker = format!("guestscope-host-write-{}.txt", std::process::id());
    assert!(!cwd.join(&marker).exists());
    // dash and coreutils are dynamically linked on the host; the script writes a file
    // in the current directory, reads it back, lists the directory it is in, and prints
    // more lines than the report shows.
    let script = format!(
        "echo written-in-the-guest > {marker} && cat {marker} && pwd && ls /usr/lib/x86_64-linux-gnu/libc.so.6 && seq 1 100"
    );
    let opts = LabOptions {
        builtin_workloads: false,
        cr3: false,
        boots: 0,
        snapshots: false,
        probes: vec!["alloc_fd".into()],
        // Root, to write in a directory the host's root owns (as nobody it cannot).
        workloads_as_root: true,
        command: vec!["sh".into(), "-c".into(), script],
        ..LabOptions::default()
    };
    let r = run_lab("host-programs", opts);
    let w = r.workload("sh");
    assert_eq!(w["status"], 0, "{w}");
    let output = w["output"].as_str().unwrap();
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines[0], "written-in-the-guest", "{output}");
    assert_eq!(lines[1], cwd.display().to_string(), "{output}");
    assert_eq!(lines[2], "/usr/lib/x86_64-linux-gnu/libc.so.6", "{output}");
    // The whole output, not only the lines the report shows.
    assert_eq!(lines.len(), 103, "{output}");
    assert_eq!(lines[102], "100", "{output}");
    assert!(
        r.report.contains("… 83 more lines"),
        "the report shows the first lines and counts the rest"
    );
    // The guest's write went to its tmpfs, not to the host.
    assert!(
        !cwd.join(&marker).exists(),
        "the guest wrote {marker} on the host"
    );
    // Traced like any workload, children (cat, pwd is a builtin, ls) included: every
    // program's exec and the redirect open a file descriptor.
    let opens = w["events"]["alloc_fd"].as_u64().unwrap_or(0);
    assert!(opens >= 3, "{opens} alloc_fd events in sh: {w}");
    assert!(
        w["pids"].as_array().map_or(0, Vec::len) >= 3,
        "sh, cat and ls: {w}"
    );
    assert_eq!(
        r.summary["run"]["host_files_cwd"],
        cwd.display().to_string()
    );
    assert!(
        r.report
            .contains("The guest ran the host's program from the host's files, read-only"),
        "the report says where the program came from"
    );
}
