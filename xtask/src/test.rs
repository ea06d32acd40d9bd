//! `cargo xtask test`: build the guest image (as `lab` does), the Debian test
//! guest ([`crate::debian`]) and a kernel from source ([`crate::kernel_build`]), then
//! run every crate's tests in release mode, the VM
//! tests included, which find the images and the collector through environment
//! variables. Before building anything it checks the house rules
//! ([`crate::lints`]: rustfmt and clippy with warnings denied), so CI enforces them,
//! then runs each fuzz target for a bounded time ([`crate::fuzz`]).

use anyhow::Result;

use crate::build_guest::Overrides;
use crate::cmd;
use crate::debian;
use crate::deps;
use crate::disk;
use crate::fuzz;
use crate::image;
use crate::kernel_build;
use crate::lints;
use crate::paths::Layout;
use crate::steps::Steps;

/// The kernel the VM tests boot.
pub const KERNEL_ENV: &str = "GUESTSCOPE_KERNEL";
/// The base initramfs the VM tests boot.
pub const INITRD_ENV: &str = "GUESTSCOPE_INITRD";
/// The `guestscope` binary the VM tests run.
pub const BIN_ENV: &str = "GUESTSCOPE_BIN";
/// The built-in kernel's `lib/modules/<release>` (root file system tests).
pub const MODULES_ENV: &str = "GUESTSCOPE_KERNEL_MODULES";
/// The Debian test guest's root file system image.
pub const DEBIAN_IMAGE_ENV: &str = "GUESTSCOPE_DEBIAN_IMAGE";
/// The Debian test guest's 6.12 kernel.
pub const DEBIAN_KERNEL_ENV: &str = "GUESTSCOPE_DEBIAN_KERNEL";
/// The Debian test guest's own initramfs.
pub const DEBIAN_INITRD_ENV: &str = "GUESTSCOPE_DEBIAN_INITRD";
/// The bzImage of the kernel built from source ([`crate::kernel_build`]).
pub const SOURCE_KERNEL_ENV: &str = "GUESTSCOPE_SOURCE_KERNEL";

/// The eBPF crate only builds for the BPF target (the agent's build script
/// builds it), so it is left out like in the workspace's `default-members`.
const EXCLUDED_PACKAGE: &str = "guestscope-probes";

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Prebuilt guest binaries.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Skip the rustfmt and clippy checks (for quick local iterations; CI runs them).
    #[arg(long)]
    pub no_lints: bool,
    /// Seconds each fuzz target runs (`fuzz/`: the wire decoder, the gdb packet
    /// parser, the BTF reader); 0 skips fuzzing.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub fuzz_seconds: u64,
    /// Further arguments for `cargo test` (a test name filter, `-- --nocapture`, ...).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CARGO_TEST_ARGS"
    )]
    pub args: Vec<String>,
}

/// Entry point of `cargo xtask test`.
pub fn test(options: &Options) -> Result<()> {
    let layout = Layout::discover()?;
    let mut steps = Steps::default();
    let result = run(&layout, &mut steps, options);
    eprintln!("steps: {}", steps.summary());
    result
}

fn run(layout: &Layout, steps: &mut Steps, options: &Options) -> Result<()> {
    disk::report(&[
        ("target/", &layout.target_dir),
        ("the kernel cache", &layout.user_cache_dir()),
    ]);
    // The lints build the agent, whose build script builds the eBPF crate with nightly,
    // rust-src and bpf-linker: they are installed first.
    steps.run("deps", deps::ensure)?;
    if !options.no_lints {
        steps.run("lints", || lints::check(&layout.root))?;
    }
    // Installs what the fuzz step needs too (nightly, cargo-fuzz).
    let image = image::prepare(layout, steps, &options.overrides, true)?;
    if options.fuzz_seconds > 0 {
        steps.run("fuzz", || fuzz::run(&layout.root, options.fuzz_seconds))?;
    }
    let debian = steps.run("debian guest", || debian::prepare(layout))?;
    // Debian's 6.1 source with the lab's options: a quarter of an hour cold on two
    // cores, seconds once cached (the cache outlives clones).
    let source_kernel = steps.run("kernel from source", || {
        kernel_build::build(layout, &kernel_build::Options::default())
    })?;
    let collector = image
        .collector
        .clone()
        .expect("prepare built the collector");
    steps.run("cargo test", || {
        cmd::run(
            cmd::cargo()
                .args([
                    "test",
                    "--workspace",
                    "--exclude",
                    EXCLUDED_PACKAGE,
                    "--release",
                    "--locked",
                    // A failing test binary must not hide the rest of the suite's results.
                    "--no-fail-fast",
                ])
                .args(&options.args)
                .env(KERNEL_ENV, &image.kernel)
                .env(INITRD_ENV, &image.initrd)
                .env(BIN_ENV, &collector)
                .env(MODULES_ENV, &image.modules_dir)
                .env(DEBIAN_IMAGE_ENV, &debian.image)
                .env(DEBIAN_KERNEL_ENV, &debian.kernel)
                .env(DEBIAN_INITRD_ENV, &debian.initrd)
                .env(SOURCE_KERNEL_ENV, &source_kernel)
                .current_dir(&layout.root),
        )
    })
}
