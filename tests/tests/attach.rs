//! `guestscope attach` against a QEMU that the test starts itself, outside
//! guestscope, with the vsock and gdbstub options `attach --print-setup` prints.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guestscope::attach::{self, AttachOptions, Endpoint};
use guestscope::image;
use guestscope_common::plan::{BUILTIN_WORKLOAD_DIR, RunPlan, WorkloadOrigin, WorkloadSpec};
use guestscope_tests::{
    Kill, guest_artifacts, load, stack_has, start_vhost_device_vsock, target_dir,
};
use qemu_gdb_client::GdbEndpoint;

#[test]
fn attach_collects_from_a_vm_started_outside_guestscope() {
    let (kernel, base) = guest_artifacts();
    let dir = tempfile_dir();
    let uds = dir.join("vm.vsock");
    let control = dir.join("vhost.sock");
    let port = 7300;
    let gdb_socket = dir.join("gdb.sock");
    let gdb = GdbEndpoint::Unix(gdb_socket.clone());
    let setup = attach::setup_text(&Endpoint::Uds(uds.clone()), &gdb);
    for option in [
        "vhost-user-vsock-pci,chardev=vsock0",
        "memory-backend-memfd",
        "share=on",
        &format!(
            "-chardev socket,id=gdbstub,path={},server=on,wait=off -gdb chardev:gdbstub",
            gdb_socket.display()
        ),
    ] {
        assert!(
            setup.contains(option),
            "setup text lacks {option}:\n{setup}"
        );
    }

    let plan = RunPlan {
        vsock_port: port,
        probes: Vec::new(),
        // As `attach --write-plan FILE --probe kretprobe:alloc_fd` makes it.
        user_probes: vec!["kretprobe:alloc_fd".into()],
        send_probe_list: false,
        stop_functions: Vec::new(),
        stacks: Default::default(),
        without_probes: false,
        program_stats: false,
        workloads: vec![WorkloadSpec {
            name: "fopen".into(),
            path: format!("{BUILTIN_WORKLOAD_DIR}/fopen"),
            args: vec!["--iterations".into(), "50".into()],
            origin: WorkloadOrigin::Builtin,
            tracing: Default::default(),
            quiet_link: false,
            as_root: false,
            timeout_ms: None,
            hold_before_exec_ms: None,
            cwd: None,
        }],
        settle_ms: 0,
        events_bytes: None,
        spool_bytes: None,
        // As `attach --write-plan` makes it: the agent must present this secret.
        secret: Some(guestscope_common::plan::new_secret().unwrap()),
    };
    let initrd = dir.join("initrd.cpio");
    image::build_run_initrd(&base, &plan, &[], &initrd).unwrap();

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let opts = AttachOptions {
        endpoint: Endpoint::Uds(uds.clone()),
        port,
        out_dir: out.clone(),
        timeout: Duration::from_secs(300),
        secret: plan.secret.clone(),
    };
    let collector = std::thread::spawn(move || attach::run(&opts));
    // The listener is up once its socket exists.
    let sock = dir.join(format!("vm.vsock_{port}"));
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "attach did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let _vhost = start_vhost_device_vsock(&control, &uds);
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
                "null",
                "-monitor",
                "none",
                "-no-reboot",
            ])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", "console=ttyS0 panic=-1"])
            .args([
                "-object",
                "memory-backend-memfd,id=mem,size=1024M,share=on",
                "-machine",
                "memory-backend=mem",
            ])
            .arg("-chardev")
            .arg(format!("socket,id=vsock0,path={}", control.display()))
            .args(["-device", "vhost-user-vsock-pci,chardev=vsock0"])
            .args(gdb.qemu_args())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64"),
    );

    let outcome = collector.join().unwrap().expect("attach run");
    assert!(
        outcome.summary.run.outcome.complete,
        "{:?}",
        outcome.summary.run.outcome
    );
    let r = load(&out);
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(alloc.len() >= 50, "{} alloc_fd events", alloc.len());
    assert!(alloc.iter().all(|e| stack_has(e, "alloc_fd")));
    assert!(r.report.contains("### fopen"));
    // The plan's own probe: each alloc_fd call seen at its return too.
    let ret: Vec<_> = r.events_of("fopen", "kretprobe:alloc_fd").collect();
    assert_eq!(
        ret.len(),
        alloc.len(),
        "kretprobe:alloc_fd against alloc_fd"
    );
    assert!(r.report.contains("## Your probes"));
    // Passed: the directory (its initramfs and outputs, about 22 MB) goes; a failed
    // run keeps it for a look.
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    // Short path: Unix socket paths are limited to 108 bytes.
    let d = std::env::temp_dir().join(format!("gs-attach-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let _ = target_dir();
    d
}
