//! The house rules `cargo xtask test` enforces before any test runs: one
//! rustfmt style (`rustfmt.toml`), a clippy-clean tree, and documentation whose
//! links resolve, warnings denied.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::cmd;

/// The eBPF crate only builds for the BPF target (the agent's build script
/// builds and so checks it); every other crate is linted on the host.
const EXCLUDED_PACKAGE: &str = "guestscope-probes";

/// Runs `cargo fmt --check` over every crate, then `cargo clippy` over every host
/// crate and target and `cargo doc` over every host crate, with warnings as errors;
/// fails on the first finding.
pub fn check(root: &Path) -> Result<()> {
    ensure_components()?;
    cmd::run(
        cmd::cargo()
            .args(["fmt", "--all", "--check"])
            .current_dir(root),
    )
    .context("the tree is not formatted as rustfmt.toml says: run `cargo fmt --all`")?;
    cmd::run(
        cmd::cargo()
            .args([
                "clippy",
                "--workspace",
                "--exclude",
                EXCLUDED_PACKAGE,
                "--all-targets",
                "--locked",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(root),
    )
    .context("clippy found problems (warnings are errors here)")?;
    cmd::run(
        cmd::cargo()
            .args([
                "doc",
                "--workspace",
                "--exclude",
                EXCLUDED_PACKAGE,
                "--no-deps",
                "--locked",
            ])
            .env("RUSTDOCFLAGS", "-D warnings")
            .current_dir(root),
    )
    .context("rustdoc found problems (a broken or private link, say; warnings are errors here)")
}

/// rustfmt and clippy are rustup components a minimal toolchain may lack.
fn ensure_components() -> Result<()> {
    let present = |sub: &str| {
        cmd::cargo()
            .args([sub, "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if present("fmt") && present("clippy") {
        return Ok(());
    }
    cmd::run(cmd::cmd("rustup").args(["component", "add", "rustfmt", "clippy"]))
        .context("installing the rustfmt and clippy components")
}
