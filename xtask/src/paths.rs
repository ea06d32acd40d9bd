//! Where xtask keeps things: the workspace, the target directory, the kernel
//! cache and the guest image that `lab` and `test` hand to the collector.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// The directories xtask works in, all derived from the workspace root.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The workspace root (the directory holding the top `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory (`$CARGO_TARGET_DIR`, else `<root>/target`).
    pub target_dir: PathBuf,
}

impl Layout {
    /// Finds the workspace from this crate's manifest directory.
    pub fn discover() -> Result<Self> {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("xtask's manifest directory has no parent")?
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        Ok(Self { root, target_dir })
    }

    /// `target/guestscope`: everything xtask produces outside cargo's own layout.
    pub fn guestscope_dir(&self) -> PathBuf {
        self.target_dir.join("guestscope")
    }

    /// Kernels built from source and the Debian source tree they are built from,
    /// kept across clones and `cargo clean` (a cold build takes a quarter of an hour
    /// on two cores): `$GUESTSCOPE_CACHE`, else `$XDG_CACHE_HOME/guestscope`, else
    /// `~/.cache/guestscope`, else (no home) `target/guestscope/cache`.
    pub fn user_cache_dir(&self) -> PathBuf {
        let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = env("GUESTSCOPE_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = env("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("guestscope");
        }
        match env("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/guestscope"),
            None => self.cache_dir(),
        }
    }

    /// `target/guestscope/cache`: downloaded kernel packages and their unpacked trees.
    pub fn cache_dir(&self) -> PathBuf {
        self.guestscope_dir().join("cache")
    }

    /// `target/guestscope/guest`: the guest image the collector boots.
    pub fn guest_dir(&self) -> PathBuf {
        self.guestscope_dir().join("guest")
    }

    /// The guest kernel image (a copy of the Debian package's `vmlinuz`).
    pub fn kernel(&self) -> PathBuf {
        self.guest_dir().join("vmlinuz")
    }

    /// The uncompressed kernel (ELF with a PVH entry), unpacked from [`Layout::kernel`]:
    /// QEMU boots it directly, without the 2 s of decompression a bzImage takes under TCG
    /// (and without KASLR, which the bzImage's decompressor applies).
    pub fn kernel_elf(&self) -> PathBuf {
        self.guest_dir().join("vmlinux")
    }

    /// The base initramfs (uncompressed newc cpio); the collector appends a per-run layer.
    pub fn initrd(&self) -> PathBuf {
        self.guest_dir().join("base.cpio")
    }

    /// The guest kernel's build configuration (to check which features it has).
    pub fn kernel_config(&self) -> PathBuf {
        self.guest_dir().join("config")
    }

    /// A text file holding the guest kernel's release (`uname -r`).
    pub fn kernel_release_file(&self) -> PathBuf {
        self.guest_dir().join("kernel-release")
    }

    /// The stamp recording which inputs built the current guest image.
    pub fn image_stamp(&self) -> PathBuf {
        self.guest_dir().join("base.cpio.stamp")
    }

    /// The default output directory of `cargo xtask lab` (ignored by git).
    pub fn default_lab_out(&self) -> PathBuf {
        self.root.join("guestscope-out")
    }
}

/// Makes `path` absolute against the current directory (without touching the file system).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot make {} absolute", path.display()))
}
