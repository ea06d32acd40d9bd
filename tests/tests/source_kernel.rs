//! The lab's exact setup: a 6.1 kernel built from source with the lab's options
//! (`cargo xtask kernel`: defconfig, frame pointers, DWARF, gdb scripts, everything
//! guestscope needs built in), booted as the lab booted it (`nokaslr`, the root file
//! system on an ext4 image with no modules), and the whole lab run on it.
//!
//! The kernel comes from `GUESTSCOPE_SOURCE_KERNEL` (its bzImage, built by `cargo
//! xtask test` and cached across runs in `~/.cache/guestscope/kernels`).

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::path::PathBuf;

use guestscope::lab::{self, LabOptions};
use guestscope_tests::guests::bare_busybox_rootfs;
use guestscope_tests::{
    assert_alloc_fd_is_the_immediate_caller, frame_function, guest_artifacts, load, target_dir,
    test_out_dir,
};

/// The bzImage `cargo xtask test` built from source.
fn source_kernel() -> PathBuf {
    let kernel = std::env::var_os("GUESTSCOPE_SOURCE_KERNEL")
        .map(PathBuf::from)
        .expect("GUESTSCOPE_SOURCE_KERNEL is not set: run the VM tests with `cargo xtask test`");
    assert!(kernel.is_file(), "{} is missing", kernel.display());
    kernel
}

#[test]
fn the_whole_lab_runs_on_a_frame_pointer_kernel_built_from_source() {
    let work = target_dir().join("guestscope/test-rootfs/source-kernel");
    std::fs::create_dir_all(&work).unwrap();
    let out = test_out_dir("source-kernel-lab");
    let opts = LabOptions {
        kernel: source_kernel(),
        initrd: guest_artifacts().1,
        rootfs: Some(bare_busybox_rootfs(&work)),
        out_dir: out.clone(),
        append: "nokaslr".into(),
        boots: 1,
        cr3: true,
        snapshots: true,
        ..LabOptions::default()
    };
    let outcome = lab::run(&opts).unwrap_or_else(|e| panic!("the lab did not start: {e}"));
    assert!(
        outcome.summary.run.outcome.complete,
        "{:?}",
        outcome.summary.run.outcome
    );
    let r = load(&out);
    let s = &r.summary;
    assert_eq!(s["losses"]["events_missing"], 0);
    assert!(
        s["run"]["kernel_cmdline"]
            .as_str()
            .unwrap()
            .contains("nokaslr"),
        "{}",
        s["run"]["kernel_cmdline"]
    );
    assert!(
        s["skipped"].as_array().unwrap().is_empty(),
        "{}",
        s["skipped"]
    );

    // The frame-pointer unwinder misses the caller at a function's entry; the agent
    // put it back, so alloc_fd is _raw_spin_lock's caller and get_unused_fd_flags
    // alloc_fd's (not inlined in this build), with file:line from the vmlinux.
    assert_eq!(s["kernel"]["unwinder"], "frame_pointer");
    assert!(s["kernel"]["callers_recovered"].as_u64().unwrap() > 0);
    assert_alloc_fd_is_the_immediate_caller(&r, "fopen", 200);
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert_eq!(alloc.len(), 200, "one alloc_fd per open");
    for e in &alloc {
        assert_eq!(frame_function(e, 0), Some("alloc_fd"), "{}", e["stack"]);
        assert_eq!(
            frame_function(e, 1),
            Some("get_unused_fd_flags"),
            "{}",
            e["stack"]
        );
    }
    assert!(
        alloc[0]["stack"][0]
            .as_str()
            .unwrap()
            .contains("(fs/file.c:"),
        "{}",
        alloc[0]["stack"]
    );

    // The lab's claims, decided as on Debian's kernel (ORC).
    let verdict = |section: &str| {
        s["claims"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["section"] == section)
            .unwrap_or_else(|| panic!("no claim {section}"))["verdict"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (section, expected) in [
        ("3.4", "contradicted"),
        ("3.5", "confirmed"),
        ("5 (timers)", "confirmed"),
        ("5 (file system)", "confirmed"),
        ("5 (scheduler)", "confirmed"),
        ("6", "contradicted"),
        ("7", "contradicted"),
    ] {
        assert_eq!(
            verdict(section),
            expected,
            "claim {section}: {}",
            s["claims"]
        );
    }

    // CR3 with `current` read through the page walk, on a kernel without KASLR.
    let runs = s["experiments"]["syscall_cr3"].as_array().unwrap();
    let report = |label: &str| {
        let run = runs.iter().find(|x| x["label"] == label).unwrap();
        assert!(run["report"].is_object(), "{label}: {}", run["error"]);
        run["report"].clone()
    };
    let (on, off) = (report("PTI on"), report("PTI off"));
    assert_eq!(on["cr3_changed"], true);
    assert_eq!(on["current_readable_before"], false);
    assert_eq!(off["cr3_changed"], false);
    assert_eq!(off["current_readable_before"], true);

    // spin_lock classes of the fopen workload: the file system's through alloc_fd.
    let fopen = s["experiments"]["spin_lock"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == "fopen")
        .expect("fopen's spin_lock classes");
    let fs = fopen["classes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["class"] == "file system")
        .expect("a file-system class");
    assert!(
        fs["through"]["alloc_fd"]["hits"].as_u64().unwrap() >= 200,
        "{fs}"
    );
}
