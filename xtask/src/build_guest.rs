//! Building guestscope's binaries: the guest side (agent and workloads, static
//! musl executables) and the host collector (`guestscope`).
//!
//! Paths come from cargo's JSON messages, so they follow the target directory
//! wherever it is. The guest side can be replaced by prebuilt files
//! ([`Overrides`]), which also lets the image be assembled before the guest
//! crates build.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, Failed};
use crate::deps::MUSL_TARGET;

/// The agent's package and binary name.
pub const AGENT_PACKAGE: &str = "guestscope-agent";
/// The agent's binary name.
pub const AGENT_BIN: &str = "guestscope-agent";
/// The workloads' package.
pub const WORKLOADS_PACKAGE: &str = "guestscope-workloads";
/// The workload binaries, installed in the guest under their own names.
pub const WORKLOAD_BINS: [&str; 6] = ["cpuinfo", "fopen", "malloc", "random", "flood", "blast"];
/// The collector's package.
pub const COLLECTOR_PACKAGE: &str = "guestscope-collector";
/// The collector's binary name.
pub const COLLECTOR_BIN: &str = "guestscope";

/// Prebuilt guest binaries to use instead of building them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Put this file in the guest as the agent instead of building guestscope-agent.
    #[arg(long, value_name = "PATH")]
    pub guest_agent: Option<PathBuf>,
    /// Take the workloads (cpuinfo, fopen, malloc, random, flood, blast) from this directory
    /// instead of building guestscope-workloads.
    #[arg(long, value_name = "DIR")]
    pub guest_workloads: Option<PathBuf>,
}

/// The guest's executables, by role.
#[derive(Clone, Debug)]
pub struct GuestBinaries {
    /// The agent (`/bin/guestscope-agent` in the guest).
    pub agent: PathBuf,
    /// Each workload's name and file.
    pub workloads: Vec<(String, PathBuf)>,
}

/// Builds the agent and the workloads for the musl target (each unless overridden).
pub fn build_guest(overrides: &Overrides) -> Result<GuestBinaries> {
    let mut packages = Vec::new();
    if overrides.guest_agent.is_none() {
        packages.push(AGENT_PACKAGE);
    }
    if overrides.guest_workloads.is_none() {
        packages.push(WORKLOADS_PACKAGE);
    }
    // The agent with [`GUEST_PROFILE`]; the workloads as before, since they are what
    // the lab and the bench measure.
    let mut built = BTreeMap::new();
    for package in packages {
        let config: &[&str] = if package == AGENT_PACKAGE {
            &GUEST_PROFILE
        } else {
            &[]
        };
        built.extend(cargo_build(
            &["--target", MUSL_TARGET, "-p", package],
            config,
        )?);
    }
    let agent = match &overrides.guest_agent {
        Some(path) => existing(path)?,
        None => take(&built, AGENT_BIN)?,
    };
    let workloads = WORKLOAD_BINS
        .iter()
        .map(|name| {
            let path = match &overrides.guest_workloads {
                Some(dir) => existing(&dir.join(name))?,
                None => take(&built, name)?,
            };
            Ok((name.to_string(), path))
        })
        .collect::<Result<_>>()?;
    Ok(GuestBinaries { agent, workloads })
}

/// Builds the host collector and returns the path of `guestscope`.
pub fn build_collector() -> Result<PathBuf> {
    let built = cargo_build(&["-p", COLLECTOR_PACKAGE], &[])?;
    take(&built, COLLECTOR_BIN)
}

fn existing(path: &Path) -> Result<PathBuf> {
    let path = crate::paths::absolute(path)?;
    if !path.is_file() {
        bail!("{} does not exist or is not a file", path.display());
    }
    Ok(path)
}

/// The release profile as the agent is built: fat LTO in one codegen unit, so its
/// per-record path (aya's ring-buffer reads and releases, the record's parsing and
/// accounting) is one loop, not a chain of calls. Under TCG every return is an
/// indirect jump QEMU looks up: the guest's perf put the agent's hottest samples on
/// the instructions right after calls. With it the agent's CPU per event of the
/// pipeline's own ceiling fell from 0.71-0.82 to 0.50-0.61 µs (three alternated boots
/// each). Only the agent gets it: the host's test binaries would each pay the link
/// time, and the workloads are what is measured.
const GUEST_PROFILE: [&str; 2] = [
    "profile.release.lto=\"fat\"",
    "profile.release.codegen-units=1",
];

fn take(built: &BTreeMap<String, PathBuf>, name: &str) -> Result<PathBuf> {
    built
        .get(name)
        .cloned()
        .with_context(|| format!("cargo built no executable named {name}"))
}

/// `cargo build --release --locked <args>`, with `config` (`--config` values, such as
/// [`GUEST_PROFILE`]); returns the executables it produced (fresh or rebuilt), by
/// target name. Diagnostics and progress go to stderr.
fn cargo_build(args: &[&str], config: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
    let mut command = cmd::cargo();
    command
        .args([
            "build",
            "--release",
            "--locked",
            "--message-format=json-render-diagnostics",
        ])
        .args(config.iter().flat_map(|c| ["--config", c]))
        .args(args)
        .current_dir(crate::paths::Layout::discover()?.root)
        .stdout(Stdio::piped());
    let shown = cmd::display(&command);
    eprintln!("    $ {shown}");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut executables = BTreeMap::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's output")?;
        if let Some((name, path)) = executable_of(&line) {
            executables.insert(name, path);
        }
    }
    let status = child.wait().context("cannot wait for cargo")?;
    if !status.success() {
        return Err(Failed {
            command: shown,
            status,
        }
        .into());
    }
    Ok(executables)
}

/// The (binary name, path) of a `compiler-artifact` message that produced an executable.
fn executable_of(line: &str) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message.get("reason")?.as_str()? != "compiler-artifact" {
        return None;
    }
    let executable = message.get("executable")?.as_str()?;
    let name = message.get("target")?.get("name")?.as_str()?;
    Some((name.to_string(), PathBuf::from(executable)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_executables_from_cargo_messages() {
        let bin = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["bin"],"name":"cpuinfo"},"filenames":["/t/cpuinfo"],"executable":"/t/x86_64-unknown-linux-musl/release/cpuinfo","fresh":true}"#;
        assert_eq!(
            executable_of(bin),
            Some((
                "cpuinfo".into(),
                PathBuf::from("/t/x86_64-unknown-linux-musl/release/cpuinfo")
            ))
        );
        let lib = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"libc"},"executable":null}"#;
        assert_eq!(executable_of(lib), None);
        let script = r#"{"reason":"build-script-executed","package_id":"x"}"#;
        assert_eq!(executable_of(script), None);
        assert_eq!(executable_of("not json"), None);
    }
}
