//! `guestscope deploy`: the agent installed into ext4 images for the image's own
//! init, idempotently, raw and qcow2, without root and without mounting; what it
//! refuses, it refuses in one line. (The boot of a deployed image is in
//! `debian.rs`.)

use std::path::Path;
use std::process::Command;

use guestscope::attach::default_plan;
use guestscope::rootfs::deploy::{
    self, DeployOptions, INIT_SCRIPT_PATH, InitSystem, UNIT_PATH, UNIT_WANTS,
};
use guestscope::rootfs::ext4::Ext4Image;
use guestscope_tests::guests::{busybox_rootfs, kernel_modules, run, sha256, to_qcow2};
use guestscope_tests::{collector_binary, guest_artifacts, target_dir};

fn options(image: &Path) -> DeployOptions {
    DeployOptions {
        image: image.to_path_buf(),
        initrd: guest_artifacts().1,
        plan: None,
        new_plan: default_plan(7171),
    }
}

fn fsck_clean(image: &Path) {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

fn work(name: &str) -> std::path::PathBuf {
    let d = target_dir().join("guestscope/test-deploy").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn deploy_into_a_busybox_image_is_idempotent() {
    let dir = work("busybox");
    let image = busybox_rootfs(&dir, &kernel_modules());
    let first = deploy::deploy(&options(&image)).unwrap();
    assert_eq!(first.init, InitSystem::RcScripts);
    assert!(
        first.written.iter().any(|p| p == INIT_SCRIPT_PATH),
        "{first:?}"
    );
    fsck_clean(&image);
    let ext = Ext4Image::new(&image, 0);
    let agent = ext
        .stat(deploy::AGENT_PATH)
        .unwrap()
        .expect("agent installed");
    assert_eq!((agent.perm, agent.uid, agent.gid), (0o755, 0, 0));
    let script = String::from_utf8(ext.read(INIT_SCRIPT_PATH).unwrap().unwrap()).unwrap();
    assert_eq!(script, deploy::init_script());
    let plan: serde_json::Value =
        serde_json::from_slice(&ext.read("/etc/guestscope/plan.json").unwrap().unwrap()).unwrap();
    assert_eq!(plan["vsock_port"], 7171);
    assert_eq!(
        plan["secret"].as_str(),
        first.plan.secret.as_deref(),
        "a fresh secret, reported for attach"
    );
    assert_eq!(
        ext.stat("/etc/guestscope/plan.json").unwrap().unwrap().perm,
        0o600,
        "the plan holds the secret"
    );
    assert!(
        ext.stat("/usr/lib/guestscope/workloads/fopen")
            .unwrap()
            .is_some()
    );

    let before = sha256(&image);
    let second = deploy::deploy(&options(&image)).unwrap();
    assert!(second.written.is_empty(), "{second:?}");
    assert_eq!(
        second.plan, first.plan,
        "the installed plan (and its secret) is kept"
    );
    assert_eq!(sha256(&image), before, "a second deploy changed the image");

    // A changed file is put back, and only it.
    run(Command::new("debugfs")
        .args(["-w", "-R", &format!("rm {INIT_SCRIPT_PATH}")])
        .arg(&image));
    let third = deploy::deploy(&options(&image)).unwrap();
    assert_eq!(third.written, [INIT_SCRIPT_PATH]);
    fsck_clean(&image);
}

#[test]
fn deploy_into_qcow2_round_trips_and_refuses_overlays() {
    let dir = work("qcow2");
    let image = to_qcow2(&busybox_rootfs(&dir, &kernel_modules()));
    let r = deploy::deploy(&options(&image)).unwrap();
    assert!(!r.written.is_empty());
    let raw = dir.join("check.raw");
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(&image)
        .arg(&raw));
    fsck_clean(&raw);
    assert!(
        Ext4Image::new(&raw, 0)
            .stat(deploy::AGENT_PATH)
            .unwrap()
            .is_some()
    );
    let before = sha256(&image);
    assert!(deploy::deploy(&options(&image)).unwrap().written.is_empty());
    assert_eq!(
        sha256(&image),
        before,
        "an idempotent deploy rewrote the qcow2"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".guestscope"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let overlay = dir.join("overlay.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&overlay));
    let out = Command::new(collector_binary())
        .arg("deploy")
        .arg("--rootfs")
        .arg(&overlay)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("overlay of"), "{stderr}");
}

#[test]
fn systemd_images_get_an_enabled_unit() {
    let dir = work("systemd");
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(root.join("usr/sbin")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/sbin", root.join("sbin")).unwrap();
    std::fs::write(root.join("usr/lib/systemd/systemd"), b"\x7fELF").unwrap();
    std::os::unix::fs::symlink("/lib/systemd/systemd", root.join("usr/sbin/init")).unwrap();
    let image = dir.join("systemd.ext4");
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-d"])
        .arg(&root)
        .arg(&image)
        .arg("32M"));
    let r = deploy::deploy(&options(&image)).unwrap();
    assert_eq!(r.init, InitSystem::Systemd);
    let ext = Ext4Image::new(&image, 0);
    assert_eq!(
        ext.read_link(UNIT_WANTS).unwrap().as_deref(),
        Some(UNIT_PATH)
    );
    assert_eq!(
        String::from_utf8(ext.read(UNIT_PATH).unwrap().unwrap()).unwrap(),
        deploy::systemd_unit()
    );
    fsck_clean(&image);
}

#[test]
fn images_deploy_cannot_use_are_one_line_errors() {
    let dir = work("bad");
    let no_init = dir.join("noinit.ext4");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-d"])
        .arg(dir.join("empty"))
        .arg(&no_init)
        .arg("8M"));
    let junk = dir.join("junk.img");
    std::fs::write(&junk, vec![1u8; 65536]).unwrap();
    for (image, expected) in [
        (dir.join("missing.img"), "root file system image not found"),
        (junk, "unsupported image"),
        (no_init, "cannot tell how it starts services"),
    ] {
        let out = Command::new(collector_binary())
            .arg("deploy")
            .arg("--rootfs")
            .arg(&image)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}
