//! Builds the eBPF object (`guestscope-probes`) with the nightly toolchain and bpf-linker,
//! and leaves it in `OUT_DIR` for `include_bytes_aligned!`.
//!
//! Set `AYA_BUILD_SKIP=1` to skip the eBPF build (e.g. for `cargo check` without
//! bpf-linker); the agent then embeds an empty object and fails to load probes at run time.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let probes_dir = manifest_dir
        .parent()
        .ok_or_else(|| anyhow!("agent manifest has no parent directory"))?
        .join("probes-ebpf");
    let probes_dir = probes_dir
        .to_str()
        .context("probes-ebpf path is not UTF-8")?;
    let package = Package {
        name: "guestscope-probes",
        root_dir: probes_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Nightly)?;

    // Under AYA_BUILD_SKIP nothing is produced; leave an empty object so the agent compiles.
    let object =
        PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?).join("guestscope-probes");
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
