//! `guestscope lab --rootfs`: the user's root file system image, booted with a
//! kernel whose drivers are modules inside that image.
//!
//! The image is Buildroot-like (busybox as init, `/lib` → `usr/lib`), holds the
//! built-in kernel's modules xz-compressed, and is given as qcow2: the collector
//! must find the modules through the qcow2, decompress and load them, mount the
//! disk, and run the agent and workloads chrooted in it — and leave the image
//! file exactly as it was. The kernel's BTF is hidden (`guestscope.btf=off`), as on a
//! kernel built without it: the spin-lock probe must fall back to a kprobe and the
//! CR3 experiment must be skipped with its reason, and the run still succeed.

use std::process::Command;

use guestscope::lab::{self, LabOptions};
use guestscope_tests::guests::{
    bare_busybox_rootfs, busybox_rootfs, kernel_modules, sha256, to_qcow2,
};
use guestscope_tests::{
    collector_binary, guest_artifacts, load, stack_has, target_dir, test_out_dir,
};

#[test]
fn lab_runs_the_workloads_inside_a_qcow2_root_file_system() {
    let (kernel, initrd) = guest_artifacts();
    let work = target_dir().join("guestscope/test-rootfs/busybox");
    std::fs::create_dir_all(&work).unwrap();
    let image = to_qcow2(&busybox_rootfs(&work, &kernel_modules()));
    let before = sha256(&image);

    let out = test_out_dir("rootfs-busybox");
    let opts = LabOptions {
        kernel,
        initrd,
        rootfs: Some(image.clone()),
        out_dir: out.clone(),
        builtin_workloads: false,
        append: "guestscope.btf=off".into(),
        cr3: true,
        workloads: vec![format!(
            "{} --iterations 50",
            guestscope_tests::workload_binary("fopen").display()
        )],
        ..LabOptions::default()
    };
    let outcome = lab::run(&opts).unwrap_or_else(|e| panic!("lab --rootfs did not start: {e}"));
    assert!(
        outcome.summary.run.outcome.complete,
        "{:?}",
        outcome.summary.run.outcome
    );
    assert_eq!(sha256(&image), before, "the image file changed");

    let r = load(&out);
    let serial = std::fs::read_to_string(out.join("serial.log")).unwrap();
    assert!(
        serial.contains("guestscope-init: root file system /dev/vda mounted on /sysroot"),
        "{serial}"
    );
    assert!(!serial.contains("cannot load module"), "{serial}");
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert_eq!(alloc.len(), 50, "one alloc_fd per fopen iteration");
    assert!(alloc.iter().all(|e| stack_has(e, "alloc_fd")));

    // No BTF: kprobe instead of fentry, the CR3 experiment skipped with its reason.
    assert!(
        serial.contains("guestscope-init: kernel BTF hidden"),
        "{serial}"
    );
    let s = &r.summary;
    let spin = r.probe("spin_lock");
    assert_eq!(spin["attach"]["method"], "kprobe", "{spin}");
    assert!(
        spin["attach"]["note"].as_str().unwrap().contains("BTF"),
        "{spin}"
    );
    assert!(r.events_of("fopen", "spin_lock").count() > 0);
    // alloc_fd falls back the same way.
    let alloc = r.probe("alloc_fd");
    assert_eq!(alloc["attach"]["method"], "kprobe", "{alloc}");
    assert!(r.events_of("fopen", "alloc_fd").count() > 0);
    assert_eq!(s["kernel"]["btf"], false);
    assert_eq!(s["kernel"]["fentry"], false);
    let skipped = s["skipped"].as_array().unwrap();
    let cr3 = skipped
        .iter()
        .find(|x| x["experiment"].as_str().unwrap().starts_with("CR3"))
        .expect("CR3 skipped");
    assert!(cr3["reason"].as_str().unwrap().contains("BTF"), "{cr3}");
    assert!(
        !skipped
            .iter()
            .any(|x| x["experiment"].as_str().unwrap().starts_with("spin_lock")),
        "{skipped:?}"
    );
    assert!(
        r.report.contains("### Skipped")
            && r.report
                .contains("| BTF (`/sys/kernel/btf/vmlinux`) | no |"),
        "{}",
        r.report
    );
}

/// A Buildroot image with no `/lib/modules` at all, booted with the kernel `cargo
/// xtask lab` built (its drivers are modules): the disk, ext4 and vsock drivers come
/// from guestscope's own initramfs, and the run works in one boot.
#[test]
fn an_image_without_modules_gets_ours_for_the_default_kernel() {
    let (kernel, initrd) = guest_artifacts();
    let work = target_dir().join("guestscope/test-rootfs/bare");
    std::fs::create_dir_all(&work).unwrap();
    let image = bare_busybox_rootfs(&work);
    let out = test_out_dir("rootfs-bare");
    let opts = LabOptions {
        kernel,
        initrd,
        rootfs: Some(image),
        out_dir: out.clone(),
        builtin_workloads: false,
        cr3: false,
        boots: 0,
        workloads: vec![format!(
            "{} --iterations 20",
            guestscope_tests::workload_binary("fopen").display()
        )],
        ..LabOptions::default()
    };
    let outcome = lab::run(&opts).unwrap_or_else(|e| panic!("lab --rootfs did not start: {e}"));
    assert!(
        outcome.summary.run.outcome.complete,
        "{:?}",
        outcome.summary.run.outcome
    );
    let serial = std::fs::read_to_string(out.join("serial.log")).unwrap();
    assert!(!serial.contains("cannot load module"), "{serial}");
    let r = load(&out);
    assert_eq!(r.events_of("fopen", "alloc_fd").count(), 20);
}

#[test]
fn bad_rootfs_images_are_one_line_errors() {
    let (kernel, initrd) = guest_artifacts();
    let work = target_dir().join("guestscope/test-rootfs/bad");
    std::fs::create_dir_all(&work).unwrap();
    let junk = work.join("junk.img");
    std::fs::write(&junk, vec![0x5a; 64 * 1024]).unwrap();
    // A root file system for this kernel whose modules.dep offers nothing the guest
    // needs (and nothing is built in): stopped before the boot, naming what is missing.
    let release = kernel_modules()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let root = work.join("nomodules");
    let mdir = root.join("lib/modules").join(&release);
    std::fs::create_dir_all(&mdir).unwrap();
    std::fs::write(mdir.join("modules.dep"), "kernel/fs/fat/fat.ko:\n").unwrap();
    let no_modules = work.join("nomodules.ext4");
    let _ = std::fs::remove_file(&no_modules);
    guestscope_tests::guests::run(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-d"])
            .arg(&root)
            .arg(&no_modules)
            .arg("8M"),
    );
    let cases = [
        (work.join("missing.img"), "root file system image not found"),
        (junk, "unsupported image"),
        (
            no_modules,
            "has no support for virtio PCI devices (CONFIG_VIRTIO_PCI, module virtio_pci), the virtio disk",
        ),
    ];
    for (image, expected) in cases {
        let out = Command::new(collector_binary())
            .arg("lab")
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .arg("--rootfs")
            .arg(&image)
            .arg("--out")
            .arg(work.join("out"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
