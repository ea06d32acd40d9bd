//! `cargo xtask bench`: times a warm `cargo xtask lab`, then runs `guestscope bench`,
//! which writes `bench/results.json` and `bench/results.md` (the table the README shows).
//! The Debian test guest, which carries bpftrace, is the peers boot's root file system.
//!
//! `--exact-counts` runs [`crate::exact_counts`] instead: every kernel instruction of
//! the fopen loop counted, untraced and traced, summed per function.
//!
//! Run it after `cargo xtask lab` has set things up once (the first `lab` installs the
//! tools and builds everything; this one must find all of it in place). Under TCG on a
//! 2-core machine it takes about 4 minutes.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context as _, Result, bail};

use crate::build_guest::Overrides;
use crate::cmd::{self, cmd};
use crate::image;
use crate::paths::{self, Layout};
use crate::steps::Steps;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// Where results.json and results.md go [default: bench/ in the workspace root].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip timing the warm `cargo xtask lab` (its row stays empty).
    #[arg(long)]
    pub no_lab: bool,
    /// Instead of the benchmarks: count every kernel instruction of the fopen loop,
    /// untraced and traced, with a QEMU plugin, and write `exact-counts.md` (where a
    /// traced event's instructions go, per kernel function; about a minute).
    #[arg(long)]
    pub exact_counts: bool,
    /// Prebuilt guest binaries.
    #[command(flatten)]
    pub overrides: Overrides,
    /// Further arguments, passed to `guestscope bench` as they are (e.g. `--reps 5`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "GUESTSCOPE_ARGS"
    )]
    pub args: Vec<String>,
}

/// Entry point of `cargo xtask bench`.
pub fn bench(options: &Options) -> Result<()> {
    let layout = Layout::discover()?;
    let out = match &options.out {
        Some(out) => paths::absolute(out)?,
        None => layout.root.join("bench"),
    };
    let mut steps = Steps::default();
    let result = run(&layout, &mut steps, options, &out);
    eprintln!("steps: {}", steps.summary());
    result?;
    if !options.exact_counts {
        eprintln!("results: {}", out.join("results.md").display());
    }
    Ok(())
}

fn run(layout: &Layout, steps: &mut Steps, options: &Options, out: &std::path::Path) -> Result<()> {
    let image = image::prepare(layout, steps, &options.overrides, true)?;
    let collector = image
        .collector
        .clone()
        .context("the collector was not built")?;
    if options.exact_counts {
        return crate::exact_counts::run(layout, steps, &image, &collector, out);
    }
    let work = layout.guestscope_dir().join("bench");
    let lab_out = work.join("lab");
    let mut lab_args = Vec::new();
    if !options.no_lab {
        // The whole command, as a user runs it, with everything already built.
        let _ = std::fs::remove_dir_all(&lab_out);
        let xtask = std::env::current_exe().context("finding the xtask binary")?;
        let built = [
            xtask.as_path(),
            collector.as_path(),
            image.initrd.as_path(),
            image.kernel.as_path(),
        ];
        let before = modified(&built);
        let started = Instant::now();
        steps.run("warm cargo xtask lab", || {
            cmd::run(
                cmd::cargo()
                    .args(["xtask", "lab", "--out"])
                    .arg(&lab_out)
                    .current_dir(&layout.root),
            )
        })?;
        let wall_s = started.elapsed().as_secs_f64();
        let rebuilt = rebuilt(&built, &before);
        if !rebuilt.is_empty() {
            bail!(
                "the warm `cargo xtask lab` rebuilt {} (sources changed after the bench built them?): its {wall_s:.1} s is not a warm lab's; run `cargo xtask bench` again with the sources left as they are",
                rebuilt.join(", ")
            );
        }
        lab_args.push("--lab-wall-s".to_string());
        lab_args.push(format!("{wall_s:.3}"));
        lab_args.push("--lab-summary".to_string());
        lab_args.push(lab_out.join("summary.json").display().to_string());
    }
    // The root file system with bpftrace, for the peers boot: the Debian test guest
    // (made by `cargo xtask test` as well; cached). Without it the bench runs the rest.
    let peers = match steps.run("debian guest", || crate::debian::prepare(layout)) {
        Ok(debian) => vec!["--peer-rootfs".into(), debian.image.into_os_string()],
        Err(e) => {
            eprintln!("    no root file system with bpftrace, the peers boot is skipped: {e:#}");
            Vec::new()
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    steps.run("guestscope bench", || {
        cmd::run(
            cmd(&collector)
                .arg("bench")
                .arg("--kernel")
                .arg(&image.kernel)
                .arg("--initrd")
                .arg(&image.initrd)
                .arg("--out")
                .arg(out)
                .arg("--work-dir")
                .arg(work.join("work"))
                .args(
                    image
                        .kernel_elf
                        .iter()
                        .flat_map(|k| [std::ffi::OsStr::new("--fast-kernel"), k.as_os_str()]),
                )
                .args(&lab_args)
                .args(&peers)
                .args(&options.args),
        )
    })
}

/// When each of `files` was last modified (`None`: missing or unreadable).
fn modified(files: &[&Path]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// The names of those of `files` modified since `before` ([`modified`] of the same
/// files): what a lab that should have found everything built made again.
fn rebuilt(files: &[&Path], before: &[Option<SystemTime>]) -> Vec<String> {
    files
        .iter()
        .zip(before)
        .zip(modified(files))
        .filter(|((_, then), now)| *then != now)
        .map(|((f, _), _)| {
            f.file_name()
                .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_again_counts_as_rebuilt_and_an_untouched_one_does_not() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-rebuilt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (kept, remade) = (dir.join("kept"), dir.join("remade"));
        std::fs::write(&kept, b"a").unwrap();
        std::fs::write(&remade, b"a").unwrap();
        let files = [kept.as_path(), remade.as_path()];
        let before = modified(&files);
        assert_eq!(rebuilt(&files, &before), Vec::<String>::new());
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&remade)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(rebuilt(&files, &before), vec!["remade".to_string()]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
