//! The second, real distribution: a Debian bookworm root file system made with
//! debootstrap (systemd as init) and Debian's 6.12 kernel, next to the built-in
//! guest (Debian's 6.1 kernel, busybox initramfs).
//!
//! - Both guests run the fopen workload under the probes through the same code
//!   path (`lab::run`, the same options; only `--kernel` and `--rootfs` differ).
//! - `guestscope deploy` into a copy of the Debian image, then a boot of that image
//!   with its own kernel, initramfs and systemd (started by this test, outside
//!   guestscope): systemd starts the agent, and `attach` collects from it.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guestscope::attach::{self, AttachOptions, Endpoint, default_plan};
use guestscope::lab::{self, LabOptions};
use guestscope::rootfs::deploy::{self, DeployOptions};
use guestscope_tests::guests::{debian_guest, run, sha256};
use guestscope_tests::{
    Kill, RunOutput, assert_alloc_fd_is_the_immediate_caller, guest_artifacts, load, stack_has,
    start_vhost_device_vsock, target_dir, test_out_dir, workload_binary,
};

const ITERATIONS: usize = 100;

/// Runs the fopen workload on a guest; `rootfs` None is the built-in guest.
fn fopen_run(name: &str, kernel: &Path, rootfs: Option<&Path>) -> RunOutput {
    let out = test_out_dir(name);
    let opts = LabOptions {
        kernel: kernel.to_path_buf(),
        initrd: guest_artifacts().1,
        rootfs: rootfs.map(Path::to_path_buf),
        out_dir: out.clone(),
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations {ITERATIONS}",
            workload_binary("fopen").display()
        )],
        ..LabOptions::default()
    };
    let started = Instant::now();
    let outcome = lab::run(&opts).unwrap_or_else(|e| panic!("{name}: lab did not start: {e}"));
    eprintln!(
        "{name}: {:.1} s, boot marks {:?}",
        started.elapsed().as_secs_f64(),
        outcome.summary.boot
    );
    assert!(
        outcome.summary.run.outcome.complete,
        "{name}: {:?}",
        outcome.summary.run.outcome
    );
    load(&out)
}

fn assert_fopen_events(name: &str, r: &RunOutput) {
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert_eq!(
        alloc.len(),
        ITERATIONS,
        "{name}: one alloc_fd per iteration"
    );
    assert!(
        alloc.iter().all(|e| stack_has(e, "alloc_fd")),
        "{name}: {}",
        alloc[0]["stack"]
    );
    // The probes read the task's name straight from the task, at the offset the agent
    // found in each kernel's BTF: a wrong offset would name the loop otherwise.
    let names: std::collections::BTreeSet<&str> =
        alloc.iter().filter_map(|e| e["comm"].as_str()).collect();
    assert_eq!(names, ["fopen"].into(), "{name}: the loop's task names");
    assert_alloc_fd_is_the_immediate_caller(r, "fopen", ITERATIONS);
    // Both kernels unwind with ORC, which finds the caller at a function's entry:
    // the agent must not have added any.
    assert_eq!(r.summary["kernel"]["unwinder"], "orc", "{name}");
    assert_eq!(r.summary["kernel"]["callers_recovered"], 0, "{name}");
}

#[test]
fn the_builtin_guest_and_the_debian_guest_both_trace_fopen() {
    let (image, kernel, _) = debian_guest();
    let before = sha256(&image);
    let builtin = fopen_run("debian-vs-builtin-builtin", &guest_artifacts().0, None);
    let debian = fopen_run("debian-vs-builtin-debian", &kernel, Some(&image));
    assert_eq!(sha256(&image), before, "lab --rootfs changed the image");

    assert_fopen_events("built-in", &builtin);
    assert_fopen_events("debian", &debian);
    let release = |r: &RunOutput| {
        r.summary["run"]["kernel_release"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        release(&builtin).starts_with("6.1."),
        "{}",
        release(&builtin)
    );
    assert!(
        release(&debian).starts_with("6.12."),
        "{}",
        release(&debian)
    );
    // 6.12 has virtio-pci built in and the rest as xz modules, read from the image.
    let serial = std::fs::read_to_string(debian.dir.join("serial.log")).unwrap();
    assert!(
        serial.contains("guestscope-init: root file system /dev/vda mounted on /sysroot"),
        "{serial}"
    );
    for r in [&builtin, &debian] {
        assert_eq!(r.summary["kernel"]["btf"], true);
        assert_eq!(r.summary["kernel"]["fentry"], true);
    }
}

#[test]
fn a_deployed_image_starts_the_agent_by_its_own_init() {
    let (image, kernel, initrd) = debian_guest();
    // Short path: Unix socket paths are limited to 108 bytes.
    let dir = std::env::temp_dir().join(format!("gs-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = target_dir().join("guestscope/test-deploy/debian.ext4");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&copy));

    let port = 7400;
    let report = deploy::deploy(&DeployOptions {
        image: copy.clone(),
        initrd: guest_artifacts().1,
        plan: None,
        new_plan: default_plan(port),
    })
    .unwrap();
    assert_eq!(report.init, deploy::InitSystem::Systemd);

    let uds = dir.join("vm.vsock");
    let control = dir.join("vhost.sock");
    let out = test_out_dir("debian-deployed");
    std::fs::create_dir_all(&out).unwrap();
    let opts = AttachOptions {
        endpoint: Endpoint::Uds(uds.clone()),
        port,
        out_dir: out.clone(),
        timeout: Duration::from_secs(400),
        secret: report.plan.secret.clone(),
    };
    let collector = std::thread::spawn(move || attach::run(&opts));
    let t = Instant::now();
    while !dir.join(format!("vm.vsock_{port}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "attach did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _vhost = start_vhost_device_vsock(&control, &uds);
    let serial = out.join("serial.log");
    let launched = Instant::now();
    let _qemu = Kill(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel",
                "tcg",
                "-m",
                "1024M",
                "-display",
                "none",
                "-serial",
                "stdio",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 root=/dev/vda rw panic=-1"])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=virtio,snapshot=on",
                copy.display()
            ))
            .args([
                "-object",
                "memory-backend-memfd,id=mem,size=1024M,share=on",
                "-machine",
                "memory-backend=mem",
            ])
            .arg("-chardev")
            .arg(format!("socket,id=vsock0,path={}", control.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vsock0"])
            .stdout(std::fs::File::create(&serial).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64"),
    );
    let outcome = collector.join().unwrap().expect("attach run");
    eprintln!(
        "deployed Debian guest: stream complete {:.1} s after QEMU started",
        launched.elapsed().as_secs_f64()
    );
    assert!(
        outcome.summary.run.outcome.complete,
        "{:?}",
        outcome.summary.run.outcome
    );
    let console = strip_ansi(&std::fs::read_to_string(&serial).unwrap());
    // systemd's status line (cut to the terminal width), and the agent's own lines
    // as the journal forwards them, tagged with the unit's process name.
    assert!(
        console.contains("Started guestscope-agent"),
        "systemd did not start the agent:\n{console}"
    );
    assert!(
        console.contains("guestscope-agent[")
            && console.contains("INFO plan loaded from /etc/guestscope/plan.json"),
        "{console}"
    );
    let r = load(&out);
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(
        alloc.len() >= 100,
        "{} alloc_fd events for fopen",
        alloc.len()
    );
    assert!(alloc.iter().all(|e| stack_has(e, "alloc_fd")));
    assert!(
        r.summary["run"]["kernel_release"]
            .as_str()
            .unwrap()
            .starts_with("6.12.")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The text without terminal colour sequences (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
