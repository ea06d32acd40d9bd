//! `cargo xtask image`, and the pipeline `lab` and `test` share: deps → build →
//! kernel → initramfs, each a timed step, ending with a bootable guest image.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::build_guest::{self, Overrides};
use crate::paths::Layout;
use crate::steps::Steps;
use crate::{deps, initramfs, kernel};

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
    /// The host binary `guestscope`, if [`prepare`] was asked to build it.
    pub collector: Option<PathBuf>,
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
    eprintln!("steps: {}", steps.summary());
    Ok(())
}

/// Runs deps → build → kernel → initramfs; builds the collector too when `with_collector`.
pub fn prepare(
    layout: &Layout,
    steps: &mut Steps,
    overrides: &Overrides,
    with_collector: bool,
) -> Result<Image> {
    steps.run("deps", deps::ensure)?;
    let (guest, collector) = steps.run("build", || {
        let guest = build_guest::build_guest(overrides)?;
        let collector = with_collector
            .then(build_guest::build_collector)
            .transpose()?;
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
    Ok(Image {
        kernel: layout.kernel(),
        initrd: layout.initrd(),
        modules_dir: kernel.modules_dir.clone(),
        release: kernel.release,
        collector,
    })
}
