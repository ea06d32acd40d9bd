//! The gdbstub client and the syscall CR3 experiment on a real guest under QEMU/TCG.
//!
//! Two boots of the guest kernel (`GUESTSCOPE_KERNEL`, set by `cargo xtask test`)
//! with a scratch initramfs made here from the host's static busybox: its /init
//! prints the kallsyms lines the experiment needs and two busy loops' pids (a
//! target and a noise process, each making system calls from its own pid without
//! forking), and, when asked on the kernel command line, copies
//! /sys/kernel/btf/vmlinux raw to a second serial port that QEMU writes to a file
//! (4.3 MB in ~7 s of TCG time; base64 over the console would be slower and
//! mixed with console text).
//!
//! 1. `-cpu Haswell-noTSX` (Meltdown-affected: PTI on): CR3 read through the
//!    gdbstub is page aligned; `current` is read at an arbitrary stop and at
//!    `entry_SYSCALL_64` hits (pids of both loops appear); the experiment finds the
//!    target and sees CR3 bit 12 switch with `current` unreadable before it; the
//!    per-hit cost is measured with the breakpoint kept and with gdb's
//!    remove/step/insert.
//! 2. QEMU's default model (AMD vendor, "meltdown: Not affected": no PTI), two
//!    vCPUs: CR3 never changes and `current` is readable at the breakpoint.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guest_kernel::btf::{self, TaskOffsets};
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{CurrentReader, KernelLayout, MemoryPath, PHYS_ADDR_MASK};
use guestscope::experiments::syscall_cr3::{self, Cr3Options, StepOver};
use qemu_gdb_client::{Client, ClientOptions, GdbEndpoint};

const BUSYBOX: &str = "/bin/busybox";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
grep -E ' (entry_SYSCALL_64|current_task|pcpu_hot|_text)$' /proc/kallsyms | sed 's/^/GS-KSYM /'
cat /sys/devices/system/cpu/vulnerabilities/meltdown | sed 's/^/GS-MELTDOWN /'
if grep -q gs.btf=1 /proc/cmdline; then
  echo "GS-BTF-SIZE $(wc -c < /sys/kernel/btf/vmlinux)"
  stty -F /dev/ttyS1 raw -echo
  cat /sys/kernel/btf/vmlinux > /dev/ttyS1
fi
( while true; do read l < /proc/uptime; done ) &
echo "GS-TARGET $!"
( while true; do echo x > /dev/null; done ) &
echo "GS-NOISE $!"
echo GS-READY
while true; do sleep 1000; done
"#;

fn kernel() -> PathBuf {
    match std::env::var_os("GUESTSCOPE_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => panic!(
            "GUESTSCOPE_KERNEL is not set: this test boots the guest kernel under QEMU. \
             Run `cargo xtask test` (it builds the guest image and sets GUESTSCOPE_KERNEL), \
             or set GUESTSCOPE_KERNEL to a bzImage yourself."
        ),
    }
}

fn scratch_initramfs(dir: &Path) -> PathBuf {
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("{BUSYBOX}: {e} (install busybox-static)"));
    let path = dir.join("scratch.cpio");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let mut ino = 1u32;
    for d in ["bin", "proc", "sys", "dev"] {
        ino += 1;
        out = cpio::newc::Builder::new(d)
            .ino(ino)
            .mode(0o040755)
            .nlink(2)
            .write(out, 0)
            .finish()
            .unwrap();
    }
    for (name, data, mode) in [
        ("bin/busybox", busybox.as_slice(), 0o100755),
        ("init", INIT.as_bytes(), 0o100755),
    ] {
        ino += 1;
        let mut w = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .write(out, data.len() as u32);
        std::io::Write::write_all(&mut w, data).unwrap();
        out = w.finish().unwrap();
    }
    cpio::newc::trailer(out).unwrap();
    path
}

/// A booted guest with its gdbstub; QEMU is killed on drop.
struct Guest {
    child: Child,
    /// Over loopback TCP here (the lab uses a Unix socket): both transports get a real stub.
    gdb: GdbEndpoint,
    kallsyms: Kallsyms,
    target_pid: u32,
    noise_pid: u32,
    meltdown: String,
    btf: Option<Vec<u8>>,
    boot_s: f64,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn boot(dir: &Path, initrd: &Path, cpu: Option<&str>, smp: u32, want_btf: bool) -> Guest {
    let port = free_port();
    let btf_path = dir.join(format!("btf-{port}.bin"));
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-smp",
        &smp.to_string(),
        "-nographic",
        "-no-reboot",
    ]);
    if let Some(cpu) = cpu {
        cmd.args(["-cpu", cpu]);
    }
    cmd.arg("-kernel").arg(kernel()).arg("-initrd").arg(initrd);
    cmd.args([
        "-append",
        &format!("console=ttyS0 panic=-1 quiet gs.btf={}", u8::from(want_btf)),
    ]);
    cmd.args([
        "-serial",
        "mon:stdio",
        "-serial",
        &format!("file:{}", btf_path.display()),
    ]);
    cmd.args(["-gdb", &format!("tcp:127.0.0.1:{port}")]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .expect("qemu-system-x86_64 (package qemu-system-x86) must be installed");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { return };
            if tx
                .send(String::from_utf8_lossy(&line).trim_end().to_string())
                .is_err()
            {
                return;
            }
        }
    });
    let mut guest = Guest {
        child,
        gdb: SocketAddr::from(([127, 0, 0, 1], port)).into(),
        kallsyms: Kallsyms::default(),
        target_pid: 0,
        noise_pid: 0,
        meltdown: String::new(),
        btf: None,
        boot_s: 0.0,
    };
    let mut ksyms = String::new();
    let mut btf_size = None;
    let mut console = Vec::new();
    loop {
        let left = BOOT_TIMEOUT.saturating_sub(start.elapsed());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(_) => panic!(
                "guest not ready within {BOOT_TIMEOUT:?} (cpu {cpu:?}); console:\n{}",
                console.join("\n")
            ),
        };
        console.push(line.clone());
        let Some(at) = line.find("GS-") else { continue };
        let line = &line[at..];
        if let Some(s) = line.strip_prefix("GS-KSYM ") {
            ksyms.push_str(s);
            ksyms.push('\n');
        } else if let Some(s) = line.strip_prefix("GS-MELTDOWN ") {
            guest.meltdown = s.to_string();
        } else if let Some(s) = line.strip_prefix("GS-BTF-SIZE ") {
            btf_size = Some(s.trim().parse::<usize>().unwrap());
        } else if let Some(s) = line.strip_prefix("GS-TARGET ") {
            guest.target_pid = s.trim().parse().unwrap();
        } else if let Some(s) = line.strip_prefix("GS-NOISE ") {
            guest.noise_pid = s.trim().parse().unwrap();
        } else if line.starts_with("GS-READY") {
            break;
        }
    }
    guest.boot_s = start.elapsed().as_secs_f64();
    guest.kallsyms = Kallsyms::parse(&ksyms).unwrap();
    if let Some(size) = btf_size {
        let blob = std::fs::read(&btf_path).unwrap();
        assert_eq!(
            blob.len(),
            size,
            "BTF copied through the second serial port"
        );
        guest.btf = Some(blob);
    }
    eprintln!(
        "booted (cpu {}, {smp} vCPUs) in {:.1} s: meltdown {:?}, target pid {}, noise pid {}",
        cpu.unwrap_or("default"),
        guest.boot_s,
        guest.meltdown,
        guest.target_pid,
        guest.noise_pid
    );
    guest
}

fn check_cr3_and_current(guest: &Guest, offsets: &TaskOffsets, vcpus: usize) {
    let mut c = Client::connect(guest.gdb.clone(), ClientOptions::default()).unwrap();
    assert_eq!(c.threads().unwrap().len(), vcpus, "one thread per vCPU");
    let cr3 = c.read_register("cr3").unwrap();
    let cr4 = c.read_register("cr4").unwrap();
    eprintln!("cr3 {cr3:#x} cr4 {cr4:#x} at a stop");
    assert_ne!(cr3 & PHYS_ADDR_MASK, 0, "CR3 points at a PGD");
    assert_eq!(cr3 >> 52 & 0x7ff, 0, "reserved CR3 bits");
    if cr4 & (1 << 17) == 0 {
        // CR4.PCIDE off (TCG has no PCID): bits 0-11 are flags Linux leaves clear.
        assert_eq!(cr3 & 0xfff, 0, "page-aligned PGD, no PCID");
    }
    let mut reader =
        CurrentReader::new(KernelLayout::new(&guest.kallsyms, offsets.clone()).unwrap());
    let cur = reader.current(&mut c).unwrap();
    eprintln!(
        "current at the connect stop: pid {} tgid {} comm {:?} via {:?}",
        cur.ids.pid, cur.ids.tgid, cur.comm, cur.ids.path
    );
    assert!(!cur.comm.is_empty());
    if cur.ids.pid == 0 {
        assert!(cur.comm.starts_with("swapper"), "{cur:?}");
    }
    c.detach().unwrap();
}

fn report_cost(label: &str, cost: &syscall_cr3::ConditionCost) {
    eprintln!(
        "{label}: {} hits ({} of the target) via {:?}: per hit {:.2} ms median / {:.2} mean / {:.2} min (run {:.2}, handling {:.3} ms median), {:.1} round trips per hit",
        cost.hits,
        cost.matching,
        cost.condition_path,
        cost.per_hit.median,
        cost.per_hit.mean,
        cost.per_hit.min,
        cost.run_to_hit.median,
        cost.handling.median,
        cost.round_trips_per_hit
    );
}

#[test]
fn syscall_cr3_with_and_without_pti() {
    let kernel = kernel();
    assert!(
        kernel.is_file(),
        "GUESTSCOPE_KERNEL={} is not a file",
        kernel.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let initrd = scratch_initramfs(dir.path());
    let opts = Cr3Options::default();

    // ---- PTI on -----------------------------------------------------------------
    let pti = boot(dir.path(), &initrd, Some("Haswell-noTSX"), 1, true);
    assert!(
        pti.meltdown.contains("PTI"),
        "Haswell-noTSX should get PTI: {:?}",
        pti.meltdown
    );
    let offsets = btf::task_offsets(pti.btf.as_deref().unwrap()).unwrap();
    eprintln!("task_struct offsets from the guest's BTF: {offsets:?}");
    assert_eq!(offsets.tgid, offsets.pid + 4);
    assert_eq!(offsets.comm_len, 16);
    check_cr3_and_current(&pti, &offsets, 1);

    // current at the syscall entry: both loops show up, read through a page walk.
    let mut c = Client::connect(pti.gdb.clone(), ClientOptions::default()).unwrap();
    let cost_keep =
        syscall_cr3::measure_condition(&mut c, &pti.kallsyms, &offsets, pti.target_pid, 300, &opts)
            .unwrap();
    report_cost("PTI, breakpoint kept, step over", &cost_keep);
    let tgids: Vec<u32> = cost_keep.samples.iter().map(|s| s.tgid).collect();
    assert_eq!(cost_keep.hits, 300);
    assert!(
        cost_keep.matching > 0,
        "target pid {} not among {tgids:?}",
        pti.target_pid
    );
    assert_eq!(cost_keep.condition_path, Some(MemoryPath::PageWalk));
    let reinsert = Cr3Options {
        step_over: StepOver::Reinsert,
        ..opts.clone()
    };
    let cost_reinsert = syscall_cr3::measure_condition(
        &mut c,
        &pti.kallsyms,
        &offsets,
        pti.target_pid,
        100,
        &reinsert,
    )
    .unwrap();
    report_cost("PTI, gdb-style remove/step/insert", &cost_reinsert);
    c.detach().unwrap();

    let report = syscall_cr3::run(
        pti.gdb.clone(),
        &pti.kallsyms,
        &offsets,
        pti.target_pid,
        &opts,
    )
    .unwrap();
    eprintln!("PTI report:\n{report}");
    assert_eq!(report.target.tgid, pti.target_pid);
    assert!(report.cr3_changed, "{report}");
    assert!(report.pgd_switch_bit12, "{report}");
    assert!(!report.current_readable_before, "{report}");
    assert!(report.current_readable_after, "{report}");
    assert!(report.pti_observed());
    assert!(
        report.steps <= 20,
        "SWITCH_TO_KERNEL_CR3 is a few instructions in: {report}"
    );
    assert!(
        report
            .switch_at
            .as_deref()
            .unwrap_or("")
            .starts_with("entry_SYSCALL_64+"),
        "{report}"
    );
    // The guest runs on after detach: a new connection finds it making syscalls.
    let again = syscall_cr3::run(
        pti.gdb.clone(),
        &pti.kallsyms,
        &offsets,
        pti.noise_pid,
        &opts,
    )
    .unwrap();
    assert_eq!(again.target.tgid, pti.noise_pid);
    drop(pti);

    // ---- PTI off (QEMU's default CPU model) -----------------------------------------
    // Two vCPUs here: hits come from both, each with its own per-cpu base, and
    // steps must move only the vCPU that hit.
    let nopti = boot(dir.path(), &initrd, None, 2, false);
    assert!(
        nopti.meltdown.contains("Not affected"),
        "default model: {:?}",
        nopti.meltdown
    );
    check_cr3_and_current(&nopti, &offsets, 2);
    let mut c = Client::connect(nopti.gdb.clone(), ClientOptions::default()).unwrap();
    let all = Cr3Options {
        keep_samples: 300,
        ..opts.clone()
    };
    let cost_plain = syscall_cr3::measure_condition(
        &mut c,
        &nopti.kallsyms,
        &offsets,
        nopti.target_pid,
        300,
        &all,
    )
    .unwrap();
    report_cost("no PTI, 2 vCPUs, breakpoint kept, step over", &cost_plain);
    let mut vcpus: Vec<_> = cost_plain.samples.iter().map(|s| s.thread).collect();
    vcpus.sort_by_key(|t| t.map(|t| t.tid));
    vcpus.dedup();
    assert_eq!(vcpus.len(), 2, "hits on both vCPUs");
    assert_eq!(cost_plain.condition_path, Some(MemoryPath::Virtual));
    assert!(cost_plain.matching > 0);
    c.detach().unwrap();
    let report = syscall_cr3::run(
        nopti.gdb.clone(),
        &nopti.kallsyms,
        &offsets,
        nopti.target_pid,
        &opts,
    )
    .unwrap();
    eprintln!("no-PTI report:\n{report}");
    assert_eq!(report.target.tgid, nopti.target_pid);
    assert!(!report.cr3_changed, "{report}");
    assert_eq!(report.steps, opts.max_steps);
    assert!(
        report.current_readable_before && report.current_readable_after,
        "{report}"
    );
    assert_eq!(report.condition_path, MemoryPath::Virtual);
    assert!(!report.pti_observed());
}
