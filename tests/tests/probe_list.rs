//! `guestscope probes`: one boot reads what the guest kernel lets `--probe` attach
//! to; the list is cached per kernel image, so the second call does not boot.

use std::process::{Command, Stdio};

use guestscope_tests::{collector_binary, guest_artifacts};

#[test]
fn the_probe_list_is_read_once_and_then_cached() {
    let (kernel, initrd) = guest_artifacts();
    let cache = tempfile::tempdir().unwrap();
    let probes = |pattern: &str| {
        let out = Command::new(collector_binary())
            .arg("probes")
            .arg(pattern)
            .arg("--kernel")
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .env("XDG_CACHE_HOME", cache.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, listed, log) = probes("vfs_rea*");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("booting the guest once"), "{log}");
    let names: Vec<&str> = listed.lines().collect();
    // Every type that takes each function: vfs_read has a BTF prototype.
    assert!(names.contains(&"kprobe:vfs_read"), "{listed}");
    assert!(names.contains(&"fentry:vfs_read"), "{listed}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("kprobe:vfs_rea") || n.starts_with("fentry:vfs_rea")),
        "{listed}"
    );

    let (code, again, log) = probes("kprobe:vfs_rea*");
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("booting"), "booted again: {log}");
    let kprobes: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.starts_with("kprobe:"))
        .collect();
    assert_eq!(again.lines().collect::<Vec<_>>(), kprobes);

    // A blacklisted function is not offered, and the reason is given.
    let (code, listed, log) = probes("do_user_addr_fault");
    assert_eq!(code, Some(1), "{log}");
    assert!(listed.is_empty(), "{listed}");
    assert!(
        log.contains("on the kprobe blacklist (no kprobe: line): do_user_addr_fault"),
        "{log}"
    );
}
