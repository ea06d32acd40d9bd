//! The trust boundary, on a real run: only this run's agent may feed the collector, and
//! nothing the run listens on is reachable by another user or another machine.
//!
//! While the guest runs, fake agents on the host connect to the collector's hybrid-vsock
//! socket (the one vhost-device-vsock forwards the agent's connection to): one without
//! the run's secret, one with a wrong one, one speaking no guestscope at all. Each is
//! refused, nothing is acknowledged to it, and the summary counts it. Then every socket
//! the collector, QEMU and vhost-device-vsock listen on is checked: nothing on TCP (the
//! gdbstub is a Unix socket too), Unix sockets for their owner only in a directory of mode 0700,
//! no abstract Unix sockets; and an unprivileged user (`nobody`) is refused by each.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one scenario, clearest read top to bottom"
)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guestscope::lab::LabOptions;
use guestscope_common::wire::{Body, Connect, Hello, Record, encode_frame};
use guestscope_tests::other_user::{NOBODY, connect_as};
use guestscope_tests::{children_of, run_lab, target_dir, workload_binary};

/// What one fake agent sends.
fn fake_frames(secret: &str) -> Vec<u8> {
    let connect = Connect {
        agent_pid: 1,
        agent_start_ns: 1,
        connection: 1,
        after: None,
        secret: secret.into(),
    };
    let hello = Hello {
        agent_version: "0.1.0".into(),
        kernel_release: "fake".into(),
        cpus: 1,
        agent_start_ns: 1,
        monotonic_ns: 2,
        agent_pid: 1,
    };
    let mut bytes = encode_frame(&Record {
        seq: 0,
        body: Body::Connect(connect),
    })
    .unwrap();
    bytes.extend(
        encode_frame(&Record {
            seq: 0,
            body: Body::Hello(hello),
        })
        .unwrap(),
    );
    bytes
}

/// Connects to `socket`, sends `bytes`, and returns what came back before the collector
/// closed the connection (it must close it within 20 s).
fn fake_agent(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The collector may close before reading all of it.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => {
                panic!("the collector neither refused nor closed a fake agent's connection: {e}")
            }
        }
    }
}

/// The vhost-device-vsock started by the lab run in this process, and its `--uds-path`.
fn vhost_uds(deadline: Instant) -> PathBuf {
    loop {
        for (pid, comm) in children_of(std::process::id()) {
            if comm.starts_with("vhost-device-vs") {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let args: Vec<String> = cmdline
                    .split(|&b| b == 0)
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
                if let Some(i) = args.iter().position(|a| a == "--uds-path") {
                    return PathBuf::from(&args[i + 1]);
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no vhost-device-vsock child appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(what: &str, deadline: Instant, mut ok: impl FnMut() -> bool) {
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Socket inodes open in process `pid`.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Listening TCP sockets among `inodes`: (local address as in /proc/net/tcp*, port).
fn tcp_listeners(inodes: &BTreeSet<u64>) -> Vec<(String, u16)> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state != "0A" || !inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                continue;
            }
            let (addr, port) = local.split_once(':').unwrap();
            found.push((addr.to_string(), u16::from_str_radix(port, 16).unwrap()));
        }
    }
    found
}

/// Listening Unix sockets among `inodes`: their paths (abstract ones start with `@`).
fn unix_listeners(inodes: &BTreeSet<u64>) -> Vec<String> {
    const ACCEPTCON: u32 = 0x10000;
    let mut found = Vec::new();
    for line in std::fs::read_to_string("/proc/net/unix")
        .unwrap()
        .lines()
        .skip(1)
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(flags), Some(inode)) = (f.get(3), f.get(6)) else {
            continue;
        };
        let listening = u32::from_str_radix(flags, 16).is_ok_and(|v| v & ACCEPTCON != 0);
        if listening && inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
            found.push(
                f.get(7)
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "(unnamed)".into()),
            );
        }
    }
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn only_this_runs_agent_is_let_in_and_every_listening_socket_is_private() {
    let out = target_dir().join("guestscope/test-out/trust");
    let serial = out.join("serial.log");
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!(
            "{} --iterations 300000",
            workload_binary("flood").display()
        )],
        probes: vec!["alloc_fd".into()],
        ..LabOptions::default()
    };
    let started = Instant::now();
    let lab = std::thread::spawn(move || run_lab("trust", opts));
    let deadline = started + Duration::from_secs(240);

    let uds = vhost_uds(deadline);
    let socket = PathBuf::from(format!("{}_{}", uds.display(), guestscope::lab::VSOCK_PORT));
    wait_for("the collector's socket", deadline, || socket.exists());
    // Before or while the agent connects: no secret, then no guestscope at all.
    let no_secret = fake_agent(&socket, &fake_frames(""));
    let garbage = fake_agent(&socket, b"GET / HTTP/1.0\r\n\r\n");
    // While the workload runs: a secret of the right length, but not this run's.
    wait_for("the workload to start", deadline, || {
        std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("started workload=flood"))
    });
    let wrong_secret = fake_agent(&socket, &fake_frames(&"0".repeat(64)));
    for (what, got) in [
        ("no secret", &no_secret),
        ("garbage", &garbage),
        ("a wrong secret", &wrong_secret),
    ] {
        assert!(
            got.is_empty(),
            "the fake agent with {what} got {} bytes back (an acknowledgement?)",
            got.len()
        );
    }

    // Every socket the run listens on, while it runs.
    let mut pids = vec![std::process::id()];
    pids.extend(
        children_of(std::process::id())
            .into_iter()
            .filter(|(_, c)| c.starts_with("qemu") || c.starts_with("vhost"))
            .map(|(p, _)| p),
    );
    assert_eq!(
        pids.len(),
        3,
        "the collector, QEMU and vhost-device-vsock: {pids:?}"
    );
    let inodes: BTreeSet<u64> = pids.iter().flat_map(|p| socket_inodes(*p)).collect();
    let tcp = tcp_listeners(&inodes);
    let unix = unix_listeners(&inodes);
    eprintln!("listening: TCP {tcp:?}, Unix {unix:?}");
    assert!(
        tcp.is_empty(),
        "TCP listeners, reachable by every local user: {tcp:?}"
    );
    let gdb = uds.parent().unwrap().join("gdb.sock");
    // vhost-device-vsock stops listening on its control socket once QEMU is connected.
    for expected in [socket.clone(), uds.clone(), gdb.clone()] {
        assert!(
            unix.iter().any(|p| Path::new(p) == expected),
            "{} is not among the listeners {unix:?}",
            expected.display()
        );
    }
    for path in &unix {
        assert!(
            !path.starts_with('@'),
            "abstract Unix socket {path}: any local user can connect"
        );
        let p = Path::new(path);
        // Owner only (QEMU's gdbstub socket is 0700 under umask 077: the x bit means
        // nothing on a socket).
        assert_eq!(
            mode(p) & 0o077,
            0,
            "{path} is mode {:o}: group or others may connect",
            mode(p)
        );
        let refused = connect_as(NOBODY, p);
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied),
            "user {NOBODY} connecting to {path}: {refused:?}"
        );
        let dir = p.parent().unwrap();
        assert_eq!(
            mode(dir),
            0o700,
            "{} (holding {path}) is mode {:o}",
            dir.display(),
            mode(dir)
        );
    }

    let r = lab.join().expect("the lab run");
    let s = &r.summary;
    assert_eq!(
        s["run"]["outcome"]["complete"], true,
        "{}",
        s["run"]["outcome"]
    );
    assert!(
        s["run"]["gdb_port"].is_null(),
        "no TCP gdbstub: {}",
        s["run"]["gdb_port"]
    );
    let link = &s["stream"]["link"];
    let refused: Vec<&str> = link["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    eprintln!("refused: {refused:#?}");
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert_eq!(
        refused
            .iter()
            .filter(|r| r.contains("without this run's secret"))
            .count(),
        2,
        "{refused:?}"
    );
    assert_eq!(
        link["connections"], 1,
        "only the agent's connection was served"
    );
    // The fakes' Hello (pid 1, "fake") never reached the session.
    assert_ne!(s["run"]["kernel_release"], "fake");
    let n = r.events_of("flood", "alloc_fd").count();
    assert!(n >= 300_000, "{n} alloc_fd events");
    assert!(
        r.report
            .contains("| connections refused (not this run's agent) | 3 |"),
        "report.md does not count the refusals"
    );
}
