//! `cargo xtask image`, and the pipeline `lab` and `test` share: deps → build →
//! kernel → initramfs, each a timed step, ending with a bootable guest image.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::build_guest::{self, Overrides};
use crate::paths::Layout;
use crate::steps::Steps;
use crate::{deps, initramfs, kernel, shell_files};

/// Options of `cargo xtask image`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Prebuilt guest binaries.
    #[command(flatten)]
    pub overrides: Overrides,
}

/// A guest image ready to boot, and the collector when it was built.
#[derive(Clone, Debug)]
pub struct Image {
    /// The kernel (`target/guestscope/guest/vmlinuz`).
    pub kernel: PathBuf,
    /// The base initramfs (`target/guestscope/guest/base.cpio`).
    pub initrd: PathBuf,
    /// The kernel's release.
    pub release: String,
    /// The kernel's unpacked `lib/modules/<release>` (for tests that build a root
    /// file system for this kernel).
    pub modules_dir: PathBuf,
    /// The uncompressed kernel (direct PVH boot), when the image's kernel has one.
    pub kernel_elf: Option<PathBuf>,
    /// The host binary `guestscope`, if [`prepare`] was asked to build it.
    pub collector: Option<PathBuf>,
    /// The workloads put in the image, each by name (as built, or the override's).
    pub workloads: Vec<(String, PathBuf)>,
}

/// Entry point of `cargo xtask image`: the guest image only (no collector).
pub fn image(options: &Options) -> Result<()> {
    let layout = Layout::discover()?;
    let mut steps = Steps::default();
    let image = prepare(&layout, &mut steps, &options.overrides, false)?;
    eprintln!(
        "kernel: {} ({})\ninitrd: {}",
        image.kernel.display(),
        image.release,
        image.initrd.display()
    );
    if let Some(elf) = &image.kernel_elf {
        eprintln!(
            "uncompressed kernel (boots faster, no KASLR): {}",
            elf.display()
        );
    }
    eprintln!("steps: {}", steps.summary());
    Ok(())
}

/// Runs deps (unless a step before did) → build → kernel → initramfs; builds the
/// collector too when `with_collector`.
pub fn prepare(
    layout: &Layout,
    steps: &mut Steps,
    overrides: &Overrides,
    with_collector: bool,
) -> Result<Image> {
    if !steps.has_run("deps") {
        steps.run("deps", deps::ensure)?;
    }
    let (guest, collector) = steps.run("build", || {
        let guest = build_guest::build_guest(overrides)?;
        let collector = with_collector
            .then(build_guest::build_collector)
            .transpose()?;
        if let Some(collector) = &collector {
            shell_files::write(layout, collector)?;
        }
        Ok((guest, collector))
    })?;
    let kernel = steps.run("kernel", || kernel::prepare(layout))?;
    steps.run("initramfs", || {
        let inputs = initramfs::Inputs {
            kernel: &kernel,
            busybox: Path::new(deps::BUSYBOX),
            guest: &guest,
        };
        initramfs::write(layout, &inputs)
    })?;
    let kernel_elf = steps.run("kernel ELF", || unpack_kernel_elf(layout))?;
    Ok(Image {
        kernel: layout.kernel(),
        initrd: layout.initrd(),
        modules_dir: kernel.modules_dir.clone(),
        release: kernel.release,
        kernel_elf,
        collector,
        workloads: guest.workloads,
    })
}

/// Unpacks `vmlinux` from the image's `vmlinuz` unless it is current (a stamp records the
/// `vmlinuz` it came from). `None` when the kernel has no xz payload or no PVH entry.
fn unpack_kernel_elf(layout: &Layout) -> Result<Option<PathBuf>> {
    let (bzimage, elf) = (layout.kernel(), layout.kernel_elf());
    let stamp_path = elf.with_extension("stamp");
    let meta = std::fs::metadata(&bzimage)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let stamp = format!(
        "vmlinuz {} {}.{:09}\n",
        meta.len(),
        mtime.as_secs(),
        mtime.subsec_nanos()
    );
    if elf.is_file() && std::fs::read_to_string(&stamp_path).ok().as_deref() == Some(stamp.as_str())
    {
        eprintln!("    up to date: {}", elf.display());
        return Ok(Some(elf));
    }
    let _ = std::fs::remove_file(&stamp_path);
    if !kernel::unpack_elf(&bzimage, &elf)? {
        eprintln!(
            "    {} has no xz payload with a PVH entry: no direct-boot kernel",
            bzimage.display()
        );
        return Ok(None);
    }
    std::fs::write(&stamp_path, stamp)?;
    eprintln!(
        "    wrote {} ({:.0} MiB)",
        elf.display(),
        std::fs::metadata(&elf)?.len() as f64 / (1024.0 * 1024.0)
    );
    Ok(Some(elf))
}
