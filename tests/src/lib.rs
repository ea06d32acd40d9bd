//! Shared harness for guestscope's end-to-end tests: they boot the real guest
//! (kernel + initramfs built by `cargo xtask test`) under QEMU and check what the
//! collector wrote.
//!
//! The guest artifacts come from the environment: `GUESTSCOPE_KERNEL` and
//! `GUESTSCOPE_INITRD` (set by `cargo xtask test`). A VM test run without them
//! fails with a message saying so; it never passes vacuously.
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod guests;
pub mod other_user;

use guestscope::lab::{self, LabOptions};
use serde_json::Value;

/// What one guest run left in its output directory.
pub struct RunOutput {
    /// The output directory (kept after the test for inspection).
    pub dir: PathBuf,
    /// `summary.json`.
    pub summary: Value,
    /// `events.jsonl`, one value per line, each with its frames from `stacks.jsonl`
    /// joined in as `stack` (innermost first; empty for an event without a stack).
    pub events: Vec<Value>,
    /// `report.md`.
    pub report: String,
}

impl RunOutput {
    /// The workload entry of `summary.json` named `name`.
    pub fn workload(&self, name: &str) -> &Value {
        self.summary["workloads"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["name"] == name))
            .unwrap_or_else(|| {
                panic!(
                    "workload {name} missing from summary ({})",
                    self.dir.display()
                )
            })
    }

    /// The probe entry of `summary.json` named `name` (a built-in probe, or `kprobe`,
    /// `fentry`, … for the user's).
    pub fn probe(&self, name: &str) -> &Value {
        self.summary["probes"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("probe {name} missing from summary ({})", self.dir.display()))
    }

    /// The spin_lock experiment's entry of `summary.json` for workload `name`.
    pub fn spin_lock_experiment(&self, name: &str) -> &Value {
        self.summary["experiments"]["spin_lock"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["workload"] == name))
            .unwrap_or_else(|| {
                panic!(
                    "no spin_lock experiment for {name} ({})",
                    self.dir.display()
                )
            })
    }

    /// Events of workload `name` from probe `probe`.
    pub fn events_of<'a>(
        &'a self,
        name: &'a str,
        probe: &'a str,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.events
            .iter()
            .filter(move |e| e["workload"] == name && e["probe"] == probe)
    }
}

/// Debian's busybox-static on the host (installed by `cargo xtask deps`): a static
/// program the built-in guest can run as a user workload.
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether any frame of an event's stack is in function `func`.
pub fn stack_has(event: &Value, func: &str) -> bool {
    event["stack"].as_array().is_some_and(|frames| {
        frames
            .iter()
            .any(|f| f.as_str().is_some_and(|s| function_name(s) == func))
    })
}

/// The function of frame `n` of an event's stack (0 is the innermost).
pub fn frame_function(event: &Value, n: usize) -> Option<&str> {
    event["stack"].get(n)?.as_str().map(function_name)
}

/// The function of a symbolized frame: `alloc_fd+0x5 (fs/file.c:488)` → `alloc_fd`.
fn function_name(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

/// Asserts that at least `at_least` spin_lock events of workload `name` have alloc_fd
/// as `_raw_spin_lock`'s immediate caller (one per open): the caller at the probed
/// function's entry is in the stack, whichever unwinder the kernel uses.
pub fn assert_alloc_fd_is_the_immediate_caller(r: &RunOutput, name: &str, at_least: usize) {
    let under: Vec<&Value> = r
        .events_of(name, "spin_lock")
        .filter(|e| stack_has(e, "alloc_fd"))
        .collect();
    let direct = under
        .iter()
        .filter(|e| frame_function(e, 0) == Some("_raw_spin_lock"))
        .filter(|e| frame_function(e, 1) == Some("alloc_fd"))
        .count();
    assert!(
        direct >= at_least,
        "{}: {direct} spin_lock events of {name} called from alloc_fd, expected at least {at_least}; e.g. {}",
        r.dir.display(),
        under
            .first()
            .map_or(serde_json::Value::Null, |e| e["stack"].clone())
    );
}

/// The repository's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Guest kernel and base initramfs from the environment.
pub fn guest_artifacts() -> (PathBuf, PathBuf) {
    let get = |var: &str| {
        std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{var} is not set: VM tests need the guest built by `cargo xtask test` (run that instead of cargo test)")
        })
    };
    (get("GUESTSCOPE_KERNEL"), get("GUESTSCOPE_INITRD"))
}

/// A fresh directory `target/guestscope/test-out/<name>` and the options of a
/// `guestscope bench` run of only `part` writing into it (`out/`, `work/`), with the
/// guest from the environment; the rest of the options are the bench's defaults.
pub fn bench_in(name: &str, part: &str) -> (PathBuf, guestscope::bench::BenchOptions) {
    let (kernel, initrd) = guest_artifacts();
    let dir = target_dir().join("guestscope/test-out").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let o = guestscope::bench::BenchOptions {
        kernel,
        initrd,
        out_dir: dir.join("out"),
        work_dir: dir.join("work"),
        only: vec![part.into()],
        ..guestscope::bench::BenchOptions::default()
    };
    (dir, o)
}

/// A static musl binary of one of guestscope's workloads, on the host.
pub fn workload_binary(name: &str) -> PathBuf {
    let p = target_dir()
        .join("x86_64-unknown-linux-musl/release")
        .join(name);
    assert!(
        p.is_file(),
        "{} missing: build with `cargo xtask test`",
        p.display()
    );
    p
}

/// The `guestscope` binary: `GUESTSCOPE_BIN` (set by `cargo xtask test`), else the
/// release build in the target directory.
pub fn collector_binary() -> PathBuf {
    let p = std::env::var_os("GUESTSCOPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("release/guestscope"));
    assert!(
        p.is_file(),
        "{} missing: build with `cargo xtask test`",
        p.display()
    );
    p
}

/// A fresh output directory for test `name`, under the target directory (kept after
/// the test for inspection).
pub fn test_out_dir(name: &str) -> PathBuf {
    let parent = target_dir().join("guestscope/test-out");
    std::fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("{}: {e}", parent.display()));
    let dir = parent.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The processes whose parent is `pid`, with their names (`comm`).
pub fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut kids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for k in list
            .split_whitespace()
            .filter_map(|k| k.parse::<u32>().ok())
        {
            let comm = std::fs::read_to_string(format!("/proc/{k}/comm")).unwrap_or_default();
            kids.push((k, comm.trim().to_string()));
        }
    }
    kids
}

/// Boots the guest with `opts` (kernel, initrd and out dir filled in) and loads
/// what it wrote.
pub fn run_lab(test_name: &str, mut opts: LabOptions) -> RunOutput {
    let (kernel, initrd) = guest_artifacts();
    let dir = target_dir().join("guestscope/test-out").join(test_name);
    let _ = std::fs::remove_dir_all(&dir);
    opts.kernel = kernel;
    opts.initrd = initrd;
    opts.out_dir = dir.clone();
    // Each test's own probe-list cache: none of them sees another's, nor the user's.
    opts.probe_cache
        .get_or_insert_with(|| dir.join("probe-cache"));
    let outcome = lab::run(&opts).unwrap_or_else(|e| panic!("lab run failed to start: {e}"));
    assert_eq!(outcome.out_dir, dir);
    load(&dir)
}

/// Boots the guest with only the fopen workload (`opens` opens), its probes getting
/// stacks as `stacks` says, and loads what it wrote.
pub fn run_fopen(
    test_name: &str,
    opens: u64,
    stacks: guestscope_common::plan::StackMode,
) -> RunOutput {
    let fopen = workload_binary("fopen");
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![format!("{} --iterations {opens}", fopen.display())],
        stacks,
        ..LabOptions::default()
    };
    run_lab(test_name, opts)
}

/// Asserts that every probe's hits are accounted for: received, tallied or counted as
/// lost (`unaccounted` 0).
pub fn assert_every_hit_accounted(r: &RunOutput) {
    for p in r.summary["probes"].as_array().unwrap() {
        assert_eq!(
            p["unaccounted"],
            0,
            "{}: every hit accounted for: {p}",
            r.dir.display()
        );
    }
}

/// Loads the outputs in `dir`.
pub fn load(dir: &Path) -> RunOutput {
    let read = |n: &str| {
        std::fs::read_to_string(dir.join(n))
            .unwrap_or_else(|e| panic!("{}/{n}: {e}", dir.display()))
    };
    let summary: Value = serde_json::from_str(&read("summary.json")).expect("summary.json parses");
    let parse = |file: &str| -> Vec<Value> {
        read(file)
            .lines()
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{file} line {}: {e}", i + 1))
            })
            .collect()
    };
    let stacks: std::collections::HashMap<i64, Value> = parse("stacks.jsonl")
        .into_iter()
        .map(|s| (s["stack_id"].as_i64().unwrap(), s["frames"].clone()))
        .collect();
    let mut events = parse("events.jsonl");
    for e in &mut events {
        let frames = e["stack_id"]
            .as_i64()
            .and_then(|id| stacks.get(&id).cloned())
            .unwrap_or_else(|| Value::Array(Vec::new()));
        e["stack"] = frames;
    }
    RunOutput {
        dir: dir.to_path_buf(),
        summary,
        events,
        report: read("report.md"),
    }
}

/// A child process that is killed and reaped when dropped (QEMU, vhost-device-vsock
/// started by a test itself).
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `vhost-device-vsock` for guest CID 3 with its control socket at `control`
/// and hybrid sockets under `uds`, as `guestscope attach --print-setup` tells a user
/// to, and waits (up to 20 s) for the control socket.
pub fn start_vhost_device_vsock(control: &Path, uds: &Path) -> Kill {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let child = Command::new("vhost-device-vsock")
        .args(["--guest-cid", "3", "--socket"])
        .arg(control)
        .arg("--uds-path")
        .arg(uds)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vhost-device-vsock");
    let guard = Kill(child);
    let t = Instant::now();
    while !control.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "vhost-device-vsock did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    guard
}
