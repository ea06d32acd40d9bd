//! `cargo xtask lab`: build everything, then run `guestscope lab` on the guest image.

use std::path::PathBuf;

use anyhow::{Context as _, Result};

use crate::build_guest::Overrides;
use crate::cmd::{self, cmd};
use crate::image;
use crate::paths::{self, Layout};
use crate::steps::Steps;

/// Options of `cargo xtask lab`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Where guestscope writes the trace and the report [default: guestscope-out
    /// in the workspace root].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Prebuilt guest binaries.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Further arguments, passed to `guestscope lab` as they are.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "GUESTSCOPE_ARGS"
    )]
    pub args: Vec<String>,
}

/// Entry point of `cargo xtask lab`.
pub fn lab(options: &Options) -> Result<()> {
    if gives(&options.args, "--out") {
        anyhow::bail!(
            "--out is cargo xtask lab's own option: give it before the `--` \
             (cargo xtask lab --out DIR -- ...)"
        );
    }
    let layout = Layout::discover()?;
    let out = match &options.out {
        Some(out) => paths::absolute(out)?,
        None => layout.default_lab_out(),
    };
    let mut steps = Steps::default();
    let result = run(&layout, &mut steps, options, &out);
    eprintln!("steps: {}", steps.summary());
    result?;
    eprintln!("output: {}", out.display());
    Ok(())
}

fn run(layout: &Layout, steps: &mut Steps, options: &Options, out: &std::path::Path) -> Result<()> {
    let image = image::prepare(layout, steps, &options.overrides, true)?;
    let collector = image.collector.context("the collector was not built")?;
    steps.run("guestscope lab", || {
        let mut lab = cmd(&collector);
        lab.arg("lab");
        // The collector finds the guest just built next to itself, in the same target
        // directory (its bzImage for the boot-time boots, the uncompressed kernel for
        // the others), unless the arguments name a kernel of their own.
        cmd::run(lab.arg("--out").arg(out).args(&options.args))
    })
}

/// Whether `args` set `option` (`--option VALUE` or `--option=VALUE`).
fn gives(args: &[String], option: &str) -> bool {
    args.iter()
        .any(|a| a == option || a.starts_with(&format!("{option}=")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_kernel_replaces_the_built_in_one() {
        let args: Vec<String> = ["--rootfs", "d.img", "--kernel=/k"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(gives(&args, "--kernel"));
        assert!(!gives(&args, "--initrd"));
        assert!(!gives(&["--kernels".to_string()], "--kernel"));
    }
}
