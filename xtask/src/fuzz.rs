//! The bounded fuzzing step of `cargo xtask test`: each libFuzzer target of `fuzz/`
//! runs for a fixed time from the seeds kept in `fuzz/corpus/<target>` (and what
//! earlier runs on this machine found, in `target/fuzz/corpus/<target>`). A crash,
//! a leak or a timeout fails the step and names the input that caused it.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::cmd;

/// The targets of `fuzz/Cargo.toml`, each a parser of input from outside.
pub const TARGETS: &[&str] = &["wire_decode", "gdb_packet", "btf_reader", "read_expr"];

/// What one bounded run reached.
#[derive(Debug, PartialEq, Eq)]
pub struct Reached {
    /// Inputs executed.
    pub runs: u64,
    /// Coverage points (libFuzzer's `cov`: edges of the instrumented code).
    pub coverage: u64,
    /// Features (libFuzzer's `ft`).
    pub features: u64,
    /// Inputs in the working corpus at the end.
    pub corpus: u64,
}

/// Builds the targets with nightly and runs each for `seconds`.
pub fn run(root: &Path, seconds: u64) -> Result<()> {
    let target_dir = root.join("target/fuzz");
    cmd::run(
        fuzz_command(root)
            .args(["build", "--target-dir"])
            .arg(&target_dir),
    )
    .context("building the fuzz targets")?;
    for target in TARGETS {
        let work = target_dir.join("corpus").join(target);
        let artifacts = target_dir.join("artifacts").join(target);
        std::fs::create_dir_all(&work)?;
        std::fs::create_dir_all(&artifacts)?;
        let mut command = fuzz_command(root);
        command
            .args(["run", "--target-dir"])
            .arg(&target_dir)
            .arg(target)
            .arg(&work)
            .arg(root.join("fuzz/corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1");
        eprintln!("    $ {}", cmd::display(&command));
        let out = command
            .stdout(Stdio::null())
            .output()
            .with_context(|| format!("running fuzz target {target}"))?;
        let log = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for line in tail.iter().rev() {
                eprintln!("    {line}");
            }
            bail!(
                "fuzz target {target} failed ({}); the input is in {}",
                out.status,
                artifacts.display()
            );
        }
        let reached = parse_final(&log)
            .with_context(|| format!("no final statistics in {target}'s output"))?;
        eprintln!(
            "    {target}: {} runs in {seconds} s, coverage {} edges, {} features, corpus {}",
            reached.runs, reached.coverage, reached.features, reached.corpus
        );
    }
    Ok(())
}

/// `cargo +nightly fuzz` in the repository, free of the outer cargo's toolchain.
fn fuzz_command(root: &Path) -> std::process::Command {
    let mut command = cmd::cmd("cargo");
    command
        .args(["+nightly", "fuzz"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .current_dir(root);
    command
}

/// The last status line (`#N DONE cov: C ft: F corp: K/...`) and `Done N runs`.
fn parse_final(log: &str) -> Option<Reached> {
    let field = |line: &str, name: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.split('/').next()?.parse().ok()
    };
    let status = log.lines().rev().find(|l| l.contains(" cov: "))?;
    let runs = log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })?;
    Some(Reached {
        runs,
        coverage: field(status, "cov:")?,
        features: field(status, "ft:")?,
        corpus: field(status, "corp:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statistics_are_read_from_libfuzzer_output() {
        let log = "#2432899\tNEW    cov: 1924 ft: 5769 corp: 878/193Kb lim: 4096 exec/s: 40548 rss: 455Mb\n\
                   #2440790\tDONE   cov: 1925 ft: 5770 corp: 879/193Kb lim: 4096 exec/s: 40012 rss: 455Mb\n\
                   Done 2440790 runs in 61 second(s)\n\
                   stat::number_of_executed_units: 2440790\n";
        assert_eq!(
            parse_final(log),
            Some(Reached {
                runs: 2440790,
                coverage: 1925,
                features: 5770,
                corpus: 879
            })
        );
        assert_eq!(
            parse_final("==1==ERROR: AddressSanitizer: stack-overflow\n"),
            None
        );
    }
}
