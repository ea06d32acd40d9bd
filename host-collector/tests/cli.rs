//! Bad input on the command line: one clear line on stderr, a non-zero exit, and
//! no VM started. These run the real `guestscope` binary.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    Fixture { dir, kernel, initrd }
}

fn lab(f: &Fixture, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestscope"))
        .arg("lab")
        .arg("--kernel")
        .arg(&f.kernel)
        .arg("--initrd")
        .arg(&f.initrd)
        .arg("--out")
        .arg(f.dir.path().join("out"))
        .args(extra)
        .output()
        .unwrap()
}

fn lab_with(kernel: &Path, initrd: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestscope"))
        .args(["lab", "--kernel"])
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

/// Asserts a one-line error containing `needle` and exit code 2.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn missing_kernel() {
    let f = fixture();
    let out = lab_with(&f.dir.path().join("nope"), &f.initrd, &f.dir.path().join("o"));
    assert_one_line_error(&out, "kernel image not found");
}

#[test]
fn file_that_is_not_a_kernel() {
    let f = fixture();
    let out = lab_with(&f.initrd, &f.initrd, &f.dir.path().join("o"));
    assert_one_line_error(&out, "not a bootable x86 kernel");
}

#[test]
fn missing_initrd() {
    let f = fixture();
    let out = lab_with(&f.kernel, &f.dir.path().join("nope.cpio"), &f.dir.path().join("o"));
    assert_one_line_error(&out, "initramfs not found");
}

#[test]
fn unknown_probe() {
    let f = fixture();
    assert_one_line_error(&lab(&f, &["--probes", "alloc_fd,kmalloc"]), "unknown probe 'kmalloc'");
}

#[test]
fn workload_that_does_not_exist() {
    let f = fixture();
    assert_one_line_error(&lab(&f, &["--workload", "/no/such/prog -x"]), "no such file");
}

#[test]
fn workload_not_executable() {
    let f = fixture();
    let p = f.dir.path().join("data.bin");
    std::fs::write(&p, b"\x7fELF").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_one_line_error(&lab(&f, &["--workload", p.to_str().unwrap()]), "not an executable file");
}

#[test]
fn workload_dynamically_linked() {
    let f = fixture();
    // This host's own dynamically linked test binary.
    let me = std::env::current_exe().unwrap();
    assert_one_line_error(&lab(&f, &["--workload", me.to_str().unwrap()]), "dynamically linked");
}

#[test]
fn gdb_port_in_use() {
    let f = fixture();
    let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    assert_one_line_error(&lab(&f, &["--gdb-port", &port]), "already in use");
}

#[test]
fn output_dir_not_writable() {
    let f = fixture();
    let out = lab_with(&f.kernel, &f.initrd, Path::new("/proc/guestscope-out"));
    assert_one_line_error(&out, "not writable");
}

#[test]
fn qemu_binary_absent() {
    let f = fixture();
    assert_one_line_error(&lab(&f, &["--qemu", "/no/qemu-system-x86_64"]), "not found");
}

#[test]
fn ring_size_not_a_power_of_two() {
    let f = fixture();
    assert_one_line_error(&lab(&f, &["--ring-bytes", "10000"]), "power of two");
}
