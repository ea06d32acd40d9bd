//! The second test guest, a real distribution: Debian bookworm made with
//! `debootstrap` (minbase plus systemd as init, udev, kmod, initramfs-tools, and
//! Debian's bpftrace for the bench's peers),
//! booted with a second kernel series — Debian's 6.12 (`linux-image-6.12-amd64`,
//! from bookworm-security), installed into the root file system with `dpkg -i`,
//! which also makes Debian's own initramfs. The result is an ext4 image (made with
//! `mke2fs -d`, no mount), the kernel and that initramfs, in
//! `target/guestscope/cache/debian/`.
//!
//! Cached and idempotent: a stamp records the inputs (suite, mirror, packages, the
//! kernel's version, the recipe's version); with a matching stamp nothing is
//! done. It is rebuilt when Debian publishes a new 6.12 kernel. debootstrap and
//! chroot need root, like installing the Debian packages (`cargo xtask deps`).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cmd};
use crate::kernel;
use crate::paths::Layout;

/// The meta package naming the second kernel series.
pub const KERNEL_META: &str = "linux-image-6.12-amd64";
/// The Debian release debootstrap installs.
const SUITE: &str = "bookworm";
/// Where debootstrap downloads from (`GUESTSCOPE_DEBIAN_MIRROR` overrides).
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// What debootstrap adds to minbase: systemd as init, udev (module autoloading),
/// kmod, what the kernel package needs to install and build its initramfs,
/// bpftrace (`cargo xtask bench` runs it beside guestscope on the same loop) and
/// Debian's perf for the running kernel's series (the bench samples the whole guest
/// with it while guestscope traces the loop: where the loop's time goes).
const INCLUDE: &str = "systemd-sysv,udev,kmod,initramfs-tools,zstd,linux-base,bpftrace,linux-perf";
/// Bump when the recipe changes in a way the stamp cannot see.
const RECIPE_VERSION: u32 = 1;
/// Free space left in the image beyond its contents, MiB.
const HEADROOM_MIB: u64 = 256;

/// The Debian guest, ready to boot.
#[derive(Clone, Debug)]
pub struct DebianGuest {
    /// The root file system (raw ext4).
    pub image: PathBuf,
    /// The 6.12 kernel.
    pub kernel: PathBuf,
    /// Debian's own initramfs for it (mounts `root=/dev/vda`, starts systemd).
    pub initrd: PathBuf,
    /// The kernel's release.
    pub release: String,
}

/// Builds the Debian guest unless the cached one is current.
pub fn prepare(layout: &Layout) -> Result<DebianGuest> {
    let dir = layout.cache_dir().join("debian");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mirror =
        std::env::var("GUESTSCOPE_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
    let package = kernel::download(&dir, KERNEL_META)?;
    let release = package
        .name
        .strip_prefix("linux-image-")
        .context("kernel package name")?
        .to_string();
    let guest = DebianGuest {
        image: dir.join(format!("{SUITE}.ext4")),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        release: release.clone(),
    };
    let stamp_path = dir.join("stamp");
    let stamp = format!(
        "recipe {RECIPE_VERSION}\nsuite {SUITE}\nmirror {mirror}\ninclude {INCLUDE}\nkernel {} {}\n",
        package.name, package.version
    );
    let current = fs::read_to_string(&stamp_path).ok();
    if current.as_deref() == Some(stamp.as_str())
        && [&guest.image, &guest.kernel, &guest.initrd]
            .iter()
            .all(|p| p.is_file())
    {
        eprintln!(
            "    up to date: {} (kernel {release})",
            guest.image.display()
        );
        return Ok(guest);
    }
    if !cmd::is_root() {
        bail!(
            "the Debian test guest is made with debootstrap and chroot, which need root: run `cargo xtask test` as root"
        );
    }
    if cmd::which("debootstrap").is_none() {
        crate::deps::install_debian(&["debootstrap"])?;
    }
    let _ = fs::remove_file(&stamp_path);
    let root = dir.join(format!("root.partial.{}", std::process::id()));
    let result = build(&root, &mirror, &package, &guest);
    // The tree is in the image now; it is large, and half-built after a failure.
    let _ = fs::remove_dir_all(&root);
    result?;
    prune_other_debs(&dir, &package.deb)?;
    fs::write(&stamp_path, stamp)?;
    Ok(guest)
}

fn build(
    root: &Path,
    mirror: &str,
    package: &kernel::Downloaded,
    guest: &DebianGuest,
) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    eprintln!("    debootstrap {SUITE} (minbase + {INCLUDE}) from {mirror}");
    cmd::run(
        cmd("debootstrap")
            .arg("--variant=minbase")
            .arg(format!("--include={INCLUDE}"))
            .arg(SUITE)
            .arg(root)
            .arg(mirror),
    )?;
    eprintln!(
        "    installing {} {} (and its initramfs)",
        package.name, package.version
    );
    let deb_in_root = root.join("tmp/kernel.deb");
    fs::copy(&package.deb, &deb_in_root)?;
    cmd::run(
        cmd("chroot")
            .arg(root)
            .args(["dpkg", "-i", "/tmp/kernel.deb"]),
    )?;
    fs::remove_file(&deb_in_root)?;
    cmd::run(cmd("chroot").arg(root).args(["apt-get", "clean"]))?;
    fs::write(root.join("etc/hostname"), "guestscope-debian\n")?;
    fs::write(root.join("etc/fstab"), "/dev/vda / ext4 defaults 0 1\n")?;
    let boot = root.join("boot");
    let vmlinuz = boot.join(format!("vmlinuz-{}", guest.release));
    let initrd = boot.join(format!("initrd.img-{}", guest.release));
    for (from, to) in [(&vmlinuz, &guest.kernel), (&initrd, &guest.initrd)] {
        let tmp = to.with_extension(format!("tmp.{}", std::process::id()));
        fs::copy(from, &tmp).with_context(|| {
            format!("{} missing after the kernel's installation", from.display())
        })?;
        fs::rename(&tmp, to)?;
    }
    let used_mib = du_mib(root)?;
    let size_mib = used_mib + used_mib / 2 + HEADROOM_MIB;
    let tmp = guest
        .image
        .with_extension(format!("tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    eprintln!(
        "    mke2fs -d: {} ({size_mib} MiB, {used_mib} MiB used)",
        guest.image.display()
    );
    cmd::run(
        cmd("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "guestscope-debian", "-d"])
            .arg(root)
            .arg(&tmp)
            .arg(format!("{size_mib}M")),
    )?;
    fs::rename(&tmp, &guest.image)?;
    Ok(())
}

/// Disk usage of a tree, MiB (`du -sm`).
fn du_mib(root: &Path) -> Result<u64> {
    let out = cmd::stdout_of(cmd("du").arg("-sm").arg(root))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("du output")
}

/// Removes kernel packages of other versions from the Debian cache.
fn prune_other_debs(dir: &Path, keep: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") && path != keep {
            eprintln!("    removing the superseded {}", path.display());
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}
