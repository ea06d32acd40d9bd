//! Bad input, as a table: for every case the real `guestscope` binary prints one clear
//! line, exits non-zero, and loses nothing it had already collected.
//!
//! Two tables: input the command line is given (checked before any VM starts: exactly one
//! line on stderr, exit status 2), and bad streams from a fake agent connecting to
//! `guestscope attach` on its hybrid-vsock socket (corrupt, truncated, newer-version
//! frames, no secret, a disk that fills up): one error line, a non-zero exit, and
//! `summary.json` and `events.jsonl` holding everything received before the fault. The
//! gdbstub's own bad behaviour (refusing, hanging up, staying silent) is tabulated too,
//! through the client library the lab uses.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::any::Any;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use guestscope_common::event::{ProbeKind, RawEvent};
use guestscope_common::plan::RunPlan;
use guestscope_common::wire::{
    Body, Connect, Hello, MAGIC, MAX_PAYLOAD, Record, Totals, WIRE_VERSION, WorkloadStarted,
    encode_frame,
};
use qemu_gdb_client::{Client, ClientOptions};

const BIN: &str = env!("CARGO_BIN_EXE_guestscope");

struct Fixture {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut img = vec![0u8; 8192];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, img).unwrap();
    let initrd = dir.path().join("base.cpio");
    std::fs::write(&initrd, b"070701").unwrap();
    Fixture {
        dir,
        kernel,
        initrd,
    }
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `lab` with this fixture's kernel, initrd and output directory, then `extra`.
    fn lab(&self, extra: &[&str]) -> Vec<OsString> {
        let mut a: Vec<OsString> =
            vec!["lab".into(), "--kernel".into(), self.kernel.clone().into()];
        a.extend([
            "--initrd".into(),
            self.initrd.clone().into(),
            "--out".into(),
            self.path("out").into(),
        ]);
        a.extend(extra.iter().map(OsString::from));
        a
    }

    /// `lab` with the given kernel, initrd and output directory.
    fn lab_with(&self, kernel: &Path, initrd: &Path, out: &Path) -> Vec<OsString> {
        vec![
            "lab".into(),
            "--kernel".into(),
            kernel.into(),
            "--initrd".into(),
            initrd.into(),
            "--out".into(),
            out.into(),
        ]
    }

    /// An executable file named `name` with `data`.
    fn program(&self, name: &str, data: &[u8], mode: u32) -> String {
        let p = self.path(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    }
}

/// The smallest x86-64 ELF header with no program headers: "static" to the checks.
fn static_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little endian
    h[6] = 1; // ELF version
    h[16] = 2; // ET_EXEC
    h[18] = 62; // EM_X86_64
    h[20] = 1; // e_version
    h[52] = 64; // e_ehsize
    h[54] = 56; // e_phentsize
    h
}

fn run(args: &[OsString]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// One clear line on stderr, exit status 2, no panic.
fn one_line_error(out: &Output, needle: &str) -> Result<(), String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() != Some(2) {
        return Err(format!(
            "exit status {:?}, want 2; stderr: {stderr}",
            out.status.code()
        ));
    }
    if stderr.trim_end().lines().count() != 1 {
        return Err(format!("not one line: {stderr:?}"));
    }
    if !stderr.contains(needle) || stderr.contains("panicked") {
        return Err(format!("expected {needle:?} in {stderr:?}"));
    }
    Ok(())
}

/// A case: its name, and what to run (with anything that must live while it runs).
type Case = (
    &'static str,
    Box<dyn Fn(&Fixture) -> (Vec<OsString>, Vec<Box<dyn Any>>)>,
    &'static str,
);

fn input_cases() -> Vec<Case> {
    fn case(
        name: &'static str,
        needle: &'static str,
        f: impl Fn(&Fixture) -> (Vec<OsString>, Vec<Box<dyn Any>>) + 'static,
    ) -> Case {
        (name, Box::new(f), needle)
    }
    let plain = |f: fn(&Fixture) -> Vec<OsString>| move |fx: &Fixture| (f(fx), Vec::new());
    vec![
        case(
            "host program's interpreter missing",
            "its interpreter /nonexistent/sh does not exist",
            plain(|f| {
                let script = f.program("run.sh", b"#!/nonexistent/sh\n", 0o755);
                let mut a = f.lab(&["--"]);
                a.push(script.into());
                a
            }),
        ),
        case(
            "a bad option is refused by --dry-run too",
            "kmalloc",
            plain(|f| f.lab(&["--dry-run", "--probes", "alloc_fd,kmalloc"])),
        ),
        case(
            "kernel missing",
            "kernel image not found",
            plain(|f| f.lab_with(&f.path("nope"), &f.initrd, &f.path("o"))),
        ),
        case(
            "kernel not a kernel",
            "not a bootable x86 kernel",
            plain(|f| f.lab_with(&f.initrd, &f.initrd, &f.path("o"))),
        ),
        case(
            "initramfs missing",
            "initramfs not found",
            plain(|f| f.lab_with(&f.kernel, &f.path("nope.cpio"), &f.path("o"))),
        ),
        case(
            "initramfs empty",
            "initramfs not found or empty",
            plain(|f| {
                std::fs::write(f.path("empty.cpio"), b"").unwrap();
                f.lab_with(&f.kernel, &f.path("empty.cpio"), &f.path("o"))
            }),
        ),
        case(
            "rootfs not an image",
            "unsupported image",
            plain(|f| {
                std::fs::write(f.path("disk.img"), vec![b'x'; 4096]).unwrap();
                f.lab(&["--rootfs", f.path("disk.img").to_str().unwrap()])
            }),
        ),
        case(
            "unknown probe",
            "unknown probe 'kmalloc'",
            plain(|f| f.lab(&["--probes", "alloc_fd,kmalloc"])),
        ),
        case(
            "--probe without a type",
            "expected TYPE:FUNCTION, e.g. fentry:vfs_read",
            plain(|f| f.lab(&["--probe", "vfs_read"])),
        ),
        case(
            "--probe of an unknown type",
            "unknown probe type \"kprob\"; use fentry:FUNCTION, kprobe:FUNCTION[+OFFSET], kretprobe:FUNCTION or tracepoint:CATEGORY:NAME",
            plain(|f| f.lab(&["--probe", "kprob:vfs_read"])),
        ),
        case(
            "--probe of a type not available yet",
            "fexit probes are not available yet",
            plain(|f| f.lab(&["--probe", "fexit:vfs_read"])),
        ),
        case(
            "--probe with an offset that is not a number",
            "\"0xg\" is not a byte count; an offset is kprobe:FUNCTION+BYTES",
            plain(|f| f.lab(&["--probe", "kprobe:vfs_read+0xg"])),
        ),
        case(
            "--probe with an offset on a glob",
            "a glob cannot take an offset",
            plain(|f| f.lab(&["--probe", "kprobe:vfs_*+4"])),
        ),
        case(
            "--probe with an offset on an fentry",
            "only a kprobe takes an offset, not a fentry",
            plain(|f| f.lab(&["--probe", "fentry:vfs_read+4"])),
        ),
        case(
            "--probe with a character no function has",
            "'-' at column 11 cannot be in a function name",
            plain(|f| f.lab(&["--probe", "kprobe:vfs-read"])),
        ),
        case(
            "--read that does not parse",
            "--read \"current->\": expected a member name at column 10",
            plain(|f| f.lab(&["--snapshot-at", "show_cpuinfo", "--read", "current->"])),
        ),
        case(
            "--read of an argument past the sixth",
            "unknown root \"arg6\": the arguments are arg0..arg5 at column 1",
            plain(|f| f.lab(&["--snapshot-at", "show_cpuinfo", "--read", "arg6"])),
        ),
        case(
            "host program that is not there",
            "-- ./no-such-program: no such file",
            plain(|f| f.lab(&["--", "./no-such-program", "-x"])),
        ),
        case(
            "host program not in PATH",
            "-- no-such-program-in-path: not found in PATH",
            plain(|f| f.lab(&["--", "no-such-program-in-path"])),
        ),
        case(
            "host program that is not executable",
            "not an executable file",
            plain(|f| f.lab(&["--", f.kernel.to_str().unwrap()])),
        ),
        case(
            "host program with --rootfs",
            "a host program runs in the built-in guest",
            plain(|f| f.lab(&["--rootfs", f.path("disk.img").to_str().unwrap(), "--", "ls"])),
        ),
        case(
            "--read without a stop",
            "--read needs --snapshot-at FUNCTION",
            plain(|f| f.lab(&["--read", "current->pid"])),
        ),
        case(
            "more stop sites than hardware breakpoints",
            "--snapshot-at given 5 times; at most 4",
            plain(|f| {
                f.lab(&[
                    "--snapshot-at",
                    "a",
                    "--snapshot-at",
                    "b",
                    "--snapshot-at",
                    "c",
                    "--snapshot-at",
                    "d",
                    "--snapshot-at",
                    "e",
                ])
            }),
        ),
        case(
            "workload missing",
            "no such file",
            plain(|f| f.lab(&["--workload", "/no/such/prog -x"])),
        ),
        case(
            "workload not executable",
            "not an executable file",
            plain(|f| {
                let p = f.program("data.bin", b"\x7fELF", 0o644);
                f.lab(&["--workload", &p])
            }),
        ),
        case(
            "workload not an ELF program",
            "not an x86-64 ELF executable",
            plain(|f| {
                let p = f.program("script.sh", b"#!/bin/sh\necho hi\n", 0o755);
                f.lab(&["--workload", &p])
            }),
        ),
        case(
            "workload dynamically linked",
            "dynamically linked",
            plain(|f| {
                // This host's own test binary: glibc, with an interpreter.
                f.lab(&[
                    "--workload",
                    std::env::current_exe().unwrap().to_str().unwrap(),
                ])
            }),
        ),
        case(
            "workload spec unparsable",
            "--workload",
            plain(|f| f.lab(&["--workload", "'unclosed"])),
        ),
        case(
            "workload named like a built-in one",
            "two workloads named 'fopen'",
            plain(|f| {
                let p = f.program("prog", &static_elf(), 0o755);
                f.lab(&["--workload", &format!("fopen={p}")])
            }),
        ),
        case(
            "two workloads given the same name",
            "two workloads named 'mine'",
            plain(|f| {
                let p = f.program("prog", &static_elf(), 0o755);
                f.lab(&[
                    "--workload",
                    &format!("mine={p} -n 1"),
                    "--workload",
                    &format!("mine={p} -n 2"),
                ])
            }),
        ),
        case(
            "workload with an empty name",
            "the name before '='",
            plain(|f| {
                let p = f.program("prog", &static_elf(), 0o755);
                f.lab(&["--workload", &format!("={p}")])
            }),
        ),
        case("gdb port in use", "already in use", |f| {
            let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
            let port = l.local_addr().unwrap().port().to_string();
            (
                f.lab(&["--gdb-port", &port]),
                vec![Box::new(l) as Box<dyn Any>],
            )
        }),
        case(
            "output directory not writable",
            "not writable",
            plain(|f| f.lab_with(&f.kernel, &f.initrd, Path::new("/proc/guestscope-out"))),
        ),
        case(
            "output directory is a file",
            "not writable",
            plain(|f| f.lab_with(&f.kernel, &f.initrd, &f.initrd)),
        ),
        case(
            "QEMU binary absent",
            "not found",
            plain(|f| f.lab(&["--qemu", "/no/qemu-system-x86_64"])),
        ),
        case(
            "vhost-device-vsock absent",
            "not found",
            plain(|f| f.lab(&["--vhost-device-vsock", "/no/vhost-device-vsock"])),
        ),
        case(
            // No --kernel or --initrd: the guest `cargo xtask` built next to this binary
            // is taken (so validation goes on to the ring size).
            "the built guest is the default",
            "power of two",
            plain(|f| {
                vec![
                    "lab".into(),
                    "--out".into(),
                    f.path("out").into(),
                    "--ring-bytes".into(),
                    "10000".into(),
                ]
            }),
        ),
        case(
            "ring size not a power of two",
            "power of two",
            plain(|f| f.lab(&["--ring-bytes", "10000"])),
        ),
        case(
            "attach: gdbstub not on loopback",
            "loopback only",
            plain(|f| {
                vec![
                    "attach".into(),
                    "--vsock-uds".into(),
                    f.path("vm.vsock").into(),
                    "--gdb".into(),
                    "10.0.0.1:1234".into(),
                ]
            }),
        ),
        case(
            "attach: --probe without a plan to put it in",
            "--probe goes into the plan: give --write-plan FILE too",
            plain(|_| {
                vec![
                    "attach".into(),
                    "--vsock-cid".into(),
                    "3".into(),
                    "--probe".into(),
                    "kprobe:vfs_read".into(),
                ]
            }),
        ),
        case(
            "attach: --probe that does not parse",
            "expected TYPE:FUNCTION",
            plain(|f| {
                vec![
                    "attach".into(),
                    "--write-plan".into(),
                    f.path("plan.json").into(),
                    "--probe".into(),
                    "vfs_read".into(),
                ]
            }),
        ),
        case(
            "attach: two endpoints",
            "not both",
            plain(|f| {
                vec![
                    "attach".into(),
                    "--vsock-uds".into(),
                    f.path("vm.vsock").into(),
                    "--vsock-cid".into(),
                    "3".into(),
                ]
            }),
        ),
        case("attach: socket in use", "cannot listen on", |f| {
            let uds = f.path("vm.vsock");
            let held = UnixListener::bind(f.path("vm.vsock_7171")).unwrap();
            let args = vec![
                "attach".into(),
                "--vsock-uds".into(),
                uds.into(),
                "--out".into(),
                f.path("o").into(),
                "--timeout".into(),
                "2".into(),
            ];
            (args, vec![Box::new(held) as Box<dyn Any>])
        }),
        case(
            "attach: plan missing",
            "--plan",
            plain(|f| {
                vec![
                    "attach".into(),
                    "--vsock-uds".into(),
                    f.path("vm.vsock").into(),
                    "--plan".into(),
                    f.path("nope.json").into(),
                ]
            }),
        ),
        case(
            "attach: plan without a secret",
            "has no secret",
            plain(|f| {
                let plan = guestscope::attach::default_plan(7171);
                std::fs::write(f.path("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
                vec![
                    "attach".into(),
                    "--vsock-uds".into(),
                    f.path("vm.vsock").into(),
                    "--plan".into(),
                    f.path("plan.json").into(),
                ]
            }),
        ),
        case(
            "report: not a run folder",
            "is /nonexistent-run a guestscope run folder?",
            plain(|_| vec!["report".into(), "/nonexistent-run".into()]),
        ),
        case(
            "report: summary of another shape",
            "(written by another guestscope version?)",
            plain(|f| {
                std::fs::write(f.path("summary.json"), b"{\"run\": 1}").unwrap();
                vec!["report".into(), f.path("").into()]
            }),
        ),
        case(
            "attach: plan not a plan",
            "not a run plan",
            plain(|f| {
                std::fs::write(f.path("plan.json"), b"{\"vsock_port\": \"x\"}").unwrap();
                vec![
                    "attach".into(),
                    "--vsock-uds".into(),
                    f.path("vm.vsock").into(),
                    "--plan".into(),
                    f.path("plan.json").into(),
                ]
            }),
        ),
    ]
}

/// Completions and the manual page come from the same command definition the
/// parser uses: the options of `lab` are in both.
#[test]
fn completions_and_the_manual_page_name_the_options() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions".into(), shell.into()]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            text.contains("dry-run") && text.contains("snapshot-at"),
            "{shell}: {text}"
        );
    }
    let out = run(&["man".into()]);
    let roff = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        roff.starts_with(".ie") || roff.contains(".TH guestscope"),
        "{roff}"
    );
    assert!(roff.contains("lab"), "{roff}");
    let bad = run(&["completions".into(), "tcsh".into()]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `--dry-run` checks the inputs, prints the boots, the command lines and the plan,
/// and starts nothing.
#[test]
fn dry_run_prints_the_plan_and_starts_nothing() {
    let f = fixture();
    let tool = f.program("tool", &static_elf(), 0o755);
    let out = run(&f.lab(&["--dry-run", "--boots", "2", "--workload", &tool]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("nothing was started"), "{stdout}");
    assert!(stdout.contains("2 boot-time boots"), "{stdout}");
    assert!(
        stdout.contains("CR3 boot, PTI on (-cpu Haswell-noTSX"),
        "{stdout}"
    );
    let qemu = stdout
        .lines()
        .find(|l| l.contains("-kernel"))
        .expect("a QEMU line");
    assert!(qemu.contains(&f.kernel.display().to_string()), "{qemu}");
    assert!(stdout.contains("--guest-cid 3"), "{stdout}");
    let plan_start = stdout.find("\n{").expect("the plan as JSON");
    let plan: serde_json::Value = serde_json::from_str(&stdout[plan_start..]).expect("JSON plan");
    let names: Vec<&str> = plan["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"fopen") && names.contains(&"tool"),
        "{names:?}"
    );
    assert!(plan["secret"].is_null(), "no secret is shown");
    // The output folder is checked as a run checks it (made if missing), and left empty.
    let written = std::fs::read_dir(f.path("out")).map_or(0, |d| d.count());
    assert_eq!(written, 0, "a dry run writes nothing");
}

#[test]
fn bad_input_gets_one_clear_line_and_exit_status_2() {
    let cases = input_cases();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    let mut failed = Vec::new();
    for (name, make, needle) in &cases {
        let f = fixture();
        let (args, _keep) = make(&f);
        if let Err(why) = one_line_error(&run(&args), needle) {
            failed.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

// ---- Bad streams from a fake agent ----

const PORT: u32 = 7400;
const PID: u32 = 4242;

fn frame(body: Body) -> Vec<u8> {
    encode_frame(&Record { seq: 0, body }).unwrap()
}

/// Frames of a well-behaved start: Connect (with `secret`), Hello, a workload, and
/// `events` alloc_fd events; sequence numbers from 0.
fn good_start(secret: &str, events: usize) -> Vec<u8> {
    let connect = Connect {
        agent_pid: PID,
        agent_start_ns: 1,
        connection: 1,
        after: None,
        secret: secret.into(),
    };
    let hello = Hello {
        agent_version: "0.1.0".into(),
        kernel_release: "6.1-fake".into(),
        cpus: 1,
        agent_start_ns: 1,
        monotonic_ns: 2,
        agent_pid: PID,
    };
    let started = WorkloadStarted {
        name: "w".into(),
        pid: 77,
        argv: vec!["w".into()],
        start_ns: 3,
    };
    let mut bytes = frame(Body::Connect(connect));
    for (seq, body) in [
        Body::Hello(hello),
        Body::WorkloadStarted(started),
        Body::Events(event_batch(events)),
    ]
    .into_iter()
    .enumerate()
    {
        bytes.extend(
            encode_frame(&Record {
                seq: seq as u64,
                body,
            })
            .unwrap(),
        );
    }
    bytes
}

fn event_batch(n: usize) -> Vec<RawEvent> {
    let e = RawEvent {
        stack_id: -1,
        ..RawEvent::new(ProbeKind::AllocFd, 77, 10)
    }
    .with_comm("w");
    vec![e; n]
}

/// A header announcing `len` payload bytes, with wire version `version`.
fn header(version: u16, len: u32) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend(version.to_le_bytes());
    h.extend([0, 0]);
    h.extend(len.to_le_bytes());
    h
}

/// What a fake agent sends, and what the collector must say.
struct StreamCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// Also pass `--plan` with a secret the fake does not know.
    with_plan: bool,
    /// Write the output to a 64 KiB file system.
    tiny_disk: bool,
    needle: &'static str,
    /// Events `events.jsonl` must hold (what was received before the fault); None for the
    /// full disk, where it is whatever fitted.
    events: Option<usize>,
}

fn stream_cases() -> Vec<StreamCase> {
    let mut corrupt = good_start("", 5);
    corrupt.extend(b"XXXXgarbage that is no frame header");
    let mut truncated = good_start("", 5);
    let next = encode_frame(&Record {
        seq: 3,
        body: Body::Events(event_batch(50)),
    })
    .unwrap();
    truncated.extend(&next[..next.len() / 2]);
    let mut bad_payload = good_start("", 5);
    bad_payload.extend(header(WIRE_VERSION, 16));
    bad_payload.extend([0xfb; 16]);
    let mut oversized = good_start("", 5);
    oversized.extend(header(WIRE_VERSION, MAX_PAYLOAD + 1));
    let mut newer = header(WIRE_VERSION + 1, 4);
    newer.extend([0; 4]);
    let mut flood = good_start("", 0);
    for seq in 3..60u64 {
        flood.extend(
            encode_frame(&Record {
                seq,
                body: Body::Events(event_batch(1000)),
            })
            .unwrap(),
        );
    }
    flood.extend(
        encode_frame(&Record {
            seq: 60,
            body: Body::Finished(Totals::default()),
        })
        .unwrap(),
    );
    let case = |name, bytes, needle, events| StreamCase {
        name,
        bytes,
        with_plan: false,
        tiny_disk: false,
        needle,
        events,
    };
    vec![
        case("corrupt frame", corrupt, "bad frame magic", Some(5)),
        case(
            "frame cut short, then the link closed",
            truncated,
            "stream truncated inside a frame",
            Some(5),
        ),
        case(
            "undecodable record",
            bad_payload,
            "corrupt frame payload",
            Some(5),
        ),
        case("oversized frame length", oversized, "exceeds the", Some(5)),
        case(
            "newer wire version",
            newer,
            Box::leak(
                format!("wire version {} is not supported", WIRE_VERSION + 1).into_boxed_str(),
            ),
            Some(0),
        ),
        StreamCase {
            with_plan: true,
            ..case(
                "no secret",
                good_start("", 5),
                "without this run's secret",
                Some(0),
            )
        },
        StreamCase {
            tiny_disk: true,
            ..case(
                "disk full while writing",
                flood,
                "No space left on device",
                None,
            )
        },
    ]
}

/// Mounts a 64 KiB tmpfs on `dir` (root only); unmounted on drop.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> Option<TinyDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| TinyDisk(dir.to_path_buf()))
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs one stream case; returns why it failed, if it did.
fn run_stream_case(c: &StreamCase) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let _disk = if c.tiny_disk {
        match TinyDisk::mount(&out) {
            Some(d) => Some(d),
            None => {
                eprintln!("{}: skipped (cannot mount a tmpfs: not root)", c.name);
                return Ok(());
            }
        }
    } else {
        None
    };
    let uds = dir.path().join("vm.vsock");
    let mut cmd = Command::new(BIN);
    cmd.arg("attach")
        .arg("--vsock-uds")
        .arg(&uds)
        .args(["--port", &PORT.to_string(), "--timeout", "4"])
        .arg("--out")
        .arg(&out);
    if c.with_plan {
        let plan = RunPlan {
            secret: Some("a".repeat(64)),
            ..guestscope::attach::default_plan(PORT)
        };
        let p = dir.path().join("plan.json");
        std::fs::write(&p, serde_json::to_vec(&plan).unwrap()).unwrap();
        cmd.arg("--plan").arg(p);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = PathBuf::from(format!("{}_{PORT}", uds.display()));
    let t = Instant::now();
    while !socket.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("attach did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The socket file appears at bind(), a moment before listen(): retry a refusal.
    let connect = || {
        let mut tries = 0;
        loop {
            match UnixStream::connect(&socket) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                r => return r,
            }
        }
    };
    let mut agent = match connect() {
        Ok(s) => s,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("connecting: {e}"));
        }
    };
    // The collector may stop reading before the end (that is the point of some cases).
    let _ = agent.write_all(&c.bytes);
    drop(agent);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("attach did not end within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    if status.success() || stderr.contains("panicked") {
        return Err(format!("exit {status}; stderr: {stderr}"));
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            [
                "guestscope: error:",
                "guestscope: run incomplete",
                "guestscope: run stopped",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect();
    if errors.len() != 1 || !errors[0].contains(c.needle) {
        return Err(format!(
            "want one error line with {:?}; stderr: {stderr}",
            c.needle
        ));
    }
    eprintln!("{} -> exit {:?}: {}", c.name, status.code(), errors[0]);
    if let Some(stray) = stderr.lines().find(|l| !l.starts_with("guestscope: ")) {
        return Err(format!("a stray line on stderr: {stray:?}"));
    }
    // Nothing received is lost: events.jsonl parses line by line and holds what came
    // before the fault; summary.json parses when the disk had room for it.
    let lines = std::fs::read_to_string(out.join("events.jsonl"))
        .map_err(|e| format!("events.jsonl: {e}"))?;
    if !lines.is_empty() && !lines.ends_with('\n') {
        return Err("events.jsonl ends inside a line".into());
    }
    for (i, l) in lines.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(l)
            .map_err(|e| format!("events.jsonl line {}: {e}", i + 1))?;
    }
    if c.events.is_none() && lines.lines().count() == 0 {
        return Err("events.jsonl kept nothing of what fitted".into());
    }
    if let Some(n) = c.events {
        if lines.lines().count() != n {
            return Err(format!(
                "events.jsonl has {} events, want {n}",
                lines.lines().count()
            ));
        }
        let summary: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join("summary.json")).map_err(|e| format!("summary.json: {e}"))?,
        )
        .map_err(|e| format!("summary.json: {e}"))?;
        if summary["stream"]["events_received"] != n
            || summary["run"]["outcome"]["complete"] != false
        {
            return Err(format!(
                "summary.json: {} events, outcome {}",
                summary["stream"]["events_received"], summary["run"]["outcome"]
            ));
        }
    }
    for f in std::fs::read_dir(&out).unwrap().flatten() {
        if f.file_name().to_string_lossy().ends_with(".tmp") {
            return Err(format!(
                "half-written {} left behind",
                f.file_name().to_string_lossy()
            ));
        }
    }
    Ok(())
}

#[test]
fn bad_streams_get_one_clear_line_and_keep_what_was_received() {
    let cases = stream_cases();
    let failed: Vec<String> = cases
        .iter()
        .filter_map(|c| run_stream_case(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

// ---- A gdbstub that misbehaves ----

#[test]
fn gdbstub_that_refuses_hangs_up_or_stays_silent_is_one_clear_error() {
    let quick = ClientOptions {
        reply_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    // Refuses: nothing listens on the port.
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // Hangs up: accepts, then closes.
    let hangs_up = TcpListener::bind("127.0.0.1:0").unwrap();
    let hangs_up_addr = hangs_up.local_addr().unwrap();
    let t1 = std::thread::spawn(move || drop(hangs_up.accept()));
    // Stays silent: accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let t2 = std::thread::spawn(move || {
        let c = silent.accept();
        std::thread::sleep(Duration::from_secs(2));
        drop(c);
    });
    let cases: [(&str, SocketAddr, &str); 4] = [
        ("refuses", refused, "connect"),
        ("hangs up", hangs_up_addr, "closed"),
        ("stays silent", silent_addr, "no reply"),
        (
            "not on loopback",
            "192.0.2.1:1234".parse().unwrap(),
            "must listen on 127.0.0.1",
        ),
    ];
    let mut failed = Vec::new();
    for (name, addr, needle) in cases {
        match Client::connect(addr, quick.clone()) {
            Ok(_) => failed.push(format!("{name}: connected")),
            Err(e) => {
                let text = e.to_string();
                if text.contains('\n') || !text.to_lowercase().contains(needle) {
                    failed.push(format!("{name}: {text:?} (want one line with {needle:?})"));
                }
            }
        }
    }
    t1.join().unwrap();
    t2.join().unwrap();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// With the kernel's probe list in the cache (as `guestscope probes` or an earlier
/// `--probe` run leaves it), a function the kernel does not offer is refused before
/// any boot, with the closest names; one it offers goes on to the next check.
#[test]
fn a_cached_probe_list_refuses_unknown_functions_before_any_boot() {
    use guestscope_common::probe_list::ProbeList;
    let f = fixture();
    let cache = f.path("cache");
    let file =
        guestscope::probe_catalog::cache_file(&cache.join("guestscope/probes"), &f.kernel).unwrap();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    let list = ProbeList::from_texts(
        "6.1.0-test",
        Some(("test", "vfs_read\nvfs_readv\nvfs_write\n")),
        "ffffffff81000000 T vfs_read\n",
        "",
    );
    std::fs::write(&file, serde_json::to_vec(&list).unwrap()).unwrap();
    let lab = |probe: &str| {
        Command::new(BIN)
            .args(f.lab(&["--probe", probe, "--qemu", "/no/such/qemu"]))
            .env("XDG_CACHE_HOME", &cache)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    one_line_error(
        &lab("kprobe:vfs_raed"),
        "no function vfs_raed in this kernel; closest: vfs_read, vfs_readv (by this kernel's cached probe list)",
    )
    .unwrap();
    // A name the list has passes this check: the next one (the missing QEMU) speaks.
    one_line_error(&lab("kprobe:vfs_read"), "/no/such/qemu").unwrap();
}

/// With the kernel's BTF in the cache (kept beside its probe list), a `--read` that
/// fails on the types at every stop site is refused before any boot, listing the
/// members there are; one that type-checks goes on to the next check.
#[test]
fn a_cached_btf_refuses_reads_of_members_that_are_not_there() {
    let f = fixture();
    let cache = f.path("cache");
    let file =
        guestscope::probe_catalog::cache_file(&cache.join("guestscope/probes"), &f.kernel).unwrap();
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    // struct task_struct { pid, tgid, comm[16] }: the BTF reader's fuzz seed.
    let btf = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/btf_reader/seed-task-struct"
    );
    std::fs::copy(btf, file.with_extension("btf")).unwrap();
    let lab = |read: &str| {
        Command::new(BIN)
            .args(f.lab(&[
                "--snapshot-at",
                "show_cpuinfo",
                "--read",
                read,
                "--qemu",
                "/no/such/qemu",
            ]))
            .env("XDG_CACHE_HOME", &cache)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    one_line_error(
        &lab("current->pidd"),
        "--read \"current->pidd\": struct task_struct has no member \"pidd\"; members: pid, tgid, comm (by this kernel's cached BTF)",
    )
    .unwrap();
    one_line_error(
        &lab("current->pid->x"),
        "--read \"current->pid->x\": current->pid is int, not a pointer",
    )
    .unwrap();
    one_line_error(&lab("current->comm"), "/no/such/qemu").unwrap();
}
