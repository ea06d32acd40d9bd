//! Root file systems of "your own guest" kind, for the `--rootfs` and `deploy` tests.
//!
//! - [`busybox_rootfs`]: a Buildroot-like ext4 image (static busybox as `/sbin/init`,
//!   `/lib` a symlink to `usr/lib` as on merged-/usr systems) holding the
//!   modules the built-in kernel needs, xz-compressed as distributions ship them.
//! - [`debian_guest`]: the Debian bookworm rootfs made with debootstrap (systemd as
//!   init) and its 6.12 kernel and initramfs, built and cached by `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The module files (relative to `lib/modules/<release>`) a virtio disk with ext4
/// and the virtio vsock need on Debian's 6.1 kernel.
const MODULES: &[&str] = &[
    "kernel/drivers/virtio",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/fs/ext4",
    "kernel/fs/jbd2",
    "kernel/fs/mbcache.ko",
    "kernel/net/vmw_vsock",
    "kernel/lib/crc16.ko",
    "kernel/crypto/crc32c_generic.ko",
];

/// Runs `cmd`, panicking with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The built-in kernel's `lib/modules/<release>` (`GUESTSCOPE_KERNEL_MODULES`, set
/// by `cargo xtask test`).
pub fn kernel_modules() -> PathBuf {
    let dir = std::env::var_os("GUESTSCOPE_KERNEL_MODULES").map(PathBuf::from).unwrap_or_else(|| {
        panic!("GUESTSCOPE_KERNEL_MODULES is not set: root file system tests need `cargo xtask test`")
    });
    assert!(
        dir.join("modules.dep").is_file(),
        "{}: no modules.dep",
        dir.display()
    );
    dir
}

/// Writes `dir/rootfs.ext4`: busybox, `/etc/os-release`, and the modules the
/// kernel of `modules` (its `lib/modules/<release>`) needs, xz-compressed, with a
/// `modules.dep` naming the compressed files.
pub fn busybox_rootfs(dir: &Path, modules: &Path) -> PathBuf {
    let release = modules.file_name().unwrap().to_str().unwrap();
    let root = busybox_tree(dir);
    let mdir = root.join("usr/lib/modules").join(release);
    std::fs::create_dir_all(&mdir).unwrap();
    for m in MODULES {
        let dest = mdir.join(m);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        run(Command::new("cp")
            .arg("-r")
            .arg(modules.join(m))
            .arg(dest.parent().unwrap()));
    }
    run(Command::new("find")
        .arg(&mdir)
        .args(["-name", "*.ko", "-exec", "xz", "{}", ";"]));
    let dep = std::fs::read_to_string(modules.join("modules.dep"))
        .unwrap()
        .replace(".ko", ".ko.xz");
    std::fs::write(mdir.join("modules.dep"), dep).unwrap();
    std::fs::copy(
        modules.join("modules.builtin"),
        mdir.join("modules.builtin"),
    )
    .unwrap();
    ext4_image(dir, &root)
}

/// A Buildroot-style root file system as [`busybox_rootfs`] makes it, but with no
/// `/lib/modules` at all (Buildroot images built for a kernel with its drivers built
/// in have none), as a raw ext4 image in `dir`.
pub fn bare_busybox_rootfs(dir: &Path) -> PathBuf {
    let root = busybox_tree(dir);
    ext4_image(dir, &root)
}

/// The BusyBox userland of [`busybox_rootfs`] in `dir/root`, without modules.
fn busybox_tree(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "sbin", "etc", "tmp", "proc", "sys", "dev", "usr/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("../bin/busybox", root.join("sbin/init")).unwrap();
    std::fs::write(
        root.join("etc/os-release"),
        "NAME=Buildroot\nID=buildroot\n",
    )
    .unwrap();
    // Buildroot's BusyBox init runs /etc/init.d/rcS, which starts every S??* script.
    std::fs::create_dir_all(root.join("etc/init.d")).unwrap();
    let rcs = root.join("etc/init.d/rcS");
    std::fs::write(
        &rcs,
        "#!/bin/sh\nfor i in /etc/init.d/S??*; do [ -x \"$i\" ] && \"$i\" start; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&rcs, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    root
}

/// `root` as a 64 MiB raw ext4 image in `dir`.
fn ext4_image(dir: &Path, root: &Path) -> PathBuf {
    let image = dir.join("rootfs.ext4");
    let _ = std::fs::remove_file(&image);
    run(Command::new("mke2fs")
        .args(["-q", "-t", "ext4", "-d"])
        .arg(root)
        .arg(&image)
        .arg("64M"));
    image
}

/// Converts a raw image to qcow2 next to it.
pub fn to_qcow2(raw: &Path) -> PathBuf {
    let q = raw.with_extension("qcow2");
    let _ = std::fs::remove_file(&q);
    run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(&q));
    q
}

/// A file's SHA-256, to show an image was not changed.
pub fn sha256(path: &Path) -> String {
    String::from_utf8(run(Command::new("sha256sum").arg(path)))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The Debian test guest: (root file system image, 6.12 kernel, Debian's initramfs),
/// from `GUESTSCOPE_DEBIAN_IMAGE`, `GUESTSCOPE_DEBIAN_KERNEL` and
/// `GUESTSCOPE_DEBIAN_INITRD` (set by `cargo xtask test`).
pub fn debian_guest() -> (PathBuf, PathBuf, PathBuf) {
    let get = |var: &str| {
        let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            panic!("{var} is not set: the Debian guest tests need `cargo xtask test`")
        });
        assert!(p.is_file(), "{var}={} does not exist", p.display());
        p
    };
    (
        get("GUESTSCOPE_DEBIAN_IMAGE"),
        get("GUESTSCOPE_DEBIAN_KERNEL"),
        get("GUESTSCOPE_DEBIAN_INITRD"),
    )
}
