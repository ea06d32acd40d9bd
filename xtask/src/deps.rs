//! `cargo xtask deps`: check, and install when missing, what the lab needs on
//! the host. Idempotent, and quick when everything is present: a second run
//! installs and downloads nothing.
//!
//! - Debian packages: `qemu-system-x86`, `busybox-static`, `kmod`, `qemu-utils`,
//!   `e2fsprogs`, `xz-utils`, `tmux`, installed with
//!   `apt-get` when root; otherwise the exact command is printed and xtask fails.
//! - rustup: the nightly toolchain with `rust-src` (the eBPF build), and the musl
//!   target for the active toolchain (agent and workloads are static binaries).
//! - `bpf-linker`, `vhost-device-vsock` and `cargo-fuzz`, pinned, with `cargo install`.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cmd};
use crate::elf;

/// Options of `cargo xtask deps` (none yet).
#[derive(Debug, clap::Args)]
pub struct Options {}

/// Entry point of `cargo xtask deps`.
pub fn deps(_options: &Options) -> Result<()> {
    ensure()
}

/// The target the guest binaries are built for.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Where the guest's busybox comes from (Debian's `busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

/// Tells whether a package is installed (by a binary it ships, usually).
type Check = fn() -> bool;

/// A Debian package and how to tell it is installed.
struct DebianPackage {
    name: &'static str,
    installed: Check,
}

const DEBIAN_PACKAGES: &[DebianPackage] = &[
    DebianPackage {
        name: "qemu-system-x86",
        installed: || cmd::which("qemu-system-x86_64").is_some(),
    },
    DebianPackage {
        name: "busybox-static",
        installed: busybox_is_static,
    },
    DebianPackage {
        name: "kmod",
        installed: || cmd::which("depmod").is_some(),
    },
    // qemu-img: reading (and deploying into) qcow2 root file systems.
    DebianPackage {
        name: "qemu-utils",
        installed: || cmd::which("qemu-img").is_some(),
    },
    // debugfs: reading and writing ext4 images without mounting them.
    DebianPackage {
        name: "e2fsprogs",
        installed: || cmd::which("debugfs").is_some(),
    },
    // Unpacks the kernel's xz payload into the uncompressed, directly bootable kernel.
    DebianPackage {
        name: "xz-utils",
        installed: || cmd::which("xz").is_some(),
    },
    // A terminal for the test of the live progress line (`tmux capture-pane`).
    DebianPackage {
        name: "tmux",
        installed: || cmd::which("tmux").is_some(),
    },
];

/// A tool installed with `cargo install`, pinned to one version.
struct CargoTool {
    /// Binary and crate name.
    name: &'static str,
    version: &'static str,
    /// The toolchain to build it with (`+nightly`), if not the default.
    toolchain: Option<&'static str>,
}

const CARGO_TOOLS: &[CargoTool] = &[
    // 0.10.3 loads the nightly rustc's LLVM; 0.11+ wants a system LLVM 21+,
    // which Debian 12 does not have.
    CargoTool {
        name: "bpf-linker",
        version: "0.10.3",
        toolchain: Some("nightly"),
    },
    // The host end of the guest's vsock, since there is no /dev/vhost-vsock.
    CargoTool {
        name: "vhost-device-vsock",
        version: "0.3.0",
        toolchain: None,
    },
    // Builds and runs the libFuzzer targets in fuzz/ (with the nightly toolchain).
    CargoTool {
        name: "cargo-fuzz",
        version: "0.13.2",
        toolchain: None,
    },
];

/// Checks everything and installs what is missing.
pub fn ensure() -> Result<()> {
    let mut present: Vec<String> = Vec::new();
    ensure_debian_packages(&mut present)?;
    ensure_rust(&mut present)?;
    for tool in CARGO_TOOLS {
        ensure_cargo_tool(tool, &mut present)?;
    }
    ensure_python_packages(&mut present)?;
    eprintln!("    present: {}", present.join(", "));
    Ok(())
}

/// A Python package the tests use as a reference: what pip installs, and the import
/// that shows it is there.
struct PythonPackage {
    /// What it is for, in the progress line.
    purpose: &'static str,
    /// pip's requirement specifiers.
    pip: &'static [&'static str],
    /// A statement that imports it.
    check: &'static str,
    /// Whether the tests need it (else a failed install is a warning: the tests report
    /// what they could not run).
    required: bool,
}

/// The Python packages of the tests: Perfetto's published trace protos (the reference
/// parser of our trace), DuckDB and ClickHouse's engine chdb (the SQL engines the
/// fleet route's test queries the run files with).
const PYTHON_PACKAGES: [PythonPackage; 3] = [
    PythonPackage {
        purpose: "the trace tests",
        pip: &["perfetto>=0.59,<0.60", "protobuf"],
        check: "from perfetto.protos.perfetto.trace import perfetto_trace_pb2",
        required: true,
    },
    PythonPackage {
        purpose: "the SQL-engine test",
        pip: &["duckdb>=1.1,<3"],
        check: "import duckdb",
        required: true,
    },
    PythonPackage {
        purpose: "the SQL-engine test (optional: its wheel is large)",
        pip: &["chdb>=3,<5"],
        check: "import chdb",
        required: false,
    },
];

fn ensure_python_packages(present: &mut Vec<String>) -> Result<()> {
    for p in &PYTHON_PACKAGES {
        let importable = || {
            std::process::Command::new("python3")
                .args(["-c", p.check])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if importable() {
            present.push(format!("python {}", p.pip[0]));
            continue;
        }
        let spec = p.pip.join(" ");
        eprintln!("    installing {spec} (Python) for {}", p.purpose);
        let status = std::process::Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(p.pip)
            .status()
            .map_err(|e| anyhow::anyhow!("running pip: {e}"))?;
        let installed = status.success() && importable();
        if !installed && p.required {
            anyhow::bail!(
                "could not install the Python package {spec}: run `python3 -m pip install {spec}`"
            );
        }
        if !installed {
            eprintln!("    warning: {spec} did not install; the tests will say what they skipped");
        }
    }
    Ok(())
}

fn busybox_is_static() -> bool {
    std::fs::read(BUSYBOX).is_ok_and(|bytes| elf::classify(&bytes) == elf::Kind::Static)
}

fn ensure_debian_packages(present: &mut Vec<String>) -> Result<()> {
    let checks: Vec<(&str, Check)> = DEBIAN_PACKAGES
        .iter()
        .map(|p| (p.name, p.installed))
        .collect();
    let mut install = |missing: &[&str]| -> Result<()> {
        let install = apt_install_command(missing);
        if !cmd::is_root() {
            bail!(
                "missing Debian packages: {}; install them with:\n    sudo {install}",
                missing.join(" ")
            );
        }
        eprintln!("    installing Debian packages: {}", missing.join(" "));
        if !apt_lists_present() {
            eprintln!("    apt's package lists are missing: running apt-get update first");
            apt_update()?;
            apt_install(missing)
        } else if let Err(err) = apt_install(missing) {
            eprintln!(
                "    apt-get install failed ({err:#}); the package lists may be stale: running apt-get update and retrying once"
            );
            apt_update()?;
            apt_install(missing)
        } else {
            Ok(())
        }
    };
    present.extend(settle(&checks, |check| check(), &mut install)?);
    Ok(())
}

/// How many install rounds [`settle`] makes before giving up.
const INSTALL_ROUNDS: usize = 3;

/// Installs what is missing until every check passes, checking *every* package
/// again after each install: installing one package can remove another (on this
/// project's machines, bookworm's `qemu-system-x86` removes the preinstalled
/// backports `qemu-utils`, and with it `qemu-img`). Returns the names found
/// present by the last check, never by a check made before an install.
/// Generic over the check, so tests can drive it with a fake system.
fn settle<C>(
    packages: &[(&str, C)],
    is_installed: impl Fn(&C) -> bool,
    install: &mut dyn FnMut(&[&str]) -> Result<()>,
) -> Result<Vec<String>> {
    let mut installed_already: Vec<&str> = Vec::new();
    for _ in 0..INSTALL_ROUNDS {
        let missing: Vec<&str> = packages
            .iter()
            .filter(|(_, check)| !is_installed(check))
            .map(|(name, _)| *name)
            .collect();
        if missing.is_empty() {
            return Ok(packages.iter().map(|(name, _)| name.to_string()).collect());
        }
        for name in &missing {
            if installed_already.contains(name) {
                eprintln!("    {name} was installed earlier and is missing again: reinstalling");
            }
        }
        install(&missing)?;
        installed_already.extend(missing);
    }
    let still: Vec<&str> = packages
        .iter()
        .filter(|(_, check)| !is_installed(check))
        .map(|(name, _)| *name)
        .collect();
    if still.is_empty() {
        return Ok(packages.iter().map(|(name, _)| name.to_string()).collect());
    }
    bail!(
        "Debian packages still missing after {INSTALL_ROUNDS} install rounds: {} (installing one removes another?)",
        still.join(" ")
    )
}

/// The Debian packages of `packages` that are not installed (`dpkg-query`).
pub fn missing_debian<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages
        .iter()
        .copied()
        .filter(|p| {
            cmd::stdout_of(cmd("dpkg-query").args(["-W", "-f=${Status}", p]))
                .map_or(true, |status| status.trim() != "install ok installed")
        })
        .collect()
}

/// Installs Debian packages as root, updating apt's lists first when they are
/// missing, and once more when the install fails.
pub fn install_debian(packages: &[&str]) -> Result<()> {
    if !cmd::is_root() {
        bail!(
            "missing Debian packages: {}; install them with:\n    sudo {}",
            packages.join(" "),
            apt_install_command(packages)
        );
    }
    eprintln!("    installing Debian packages: {}", packages.join(" "));
    if !apt_lists_present() {
        apt_update()?;
    }
    if let Err(err) = apt_install(packages) {
        eprintln!("    apt-get install failed ({err:#}): running apt-get update and retrying once");
        apt_update()?;
        apt_install(packages)?;
    }
    Ok(())
}

/// The one command that installs `packages` (printed for non-root users).
fn apt_install_command(packages: &[&str]) -> String {
    format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

fn apt_install(packages: &[&str]) -> Result<()> {
    cmd::run(
        cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(packages),
    )
}

/// `apt-get update` (root only).
pub fn apt_update() -> Result<()> {
    cmd::run(
        cmd("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .arg("update"),
    )
}

/// Whether apt has any package index at all (a fresh container has none).
fn apt_lists_present() -> bool {
    std::fs::read_dir("/var/lib/apt/lists").is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("_Packages"))
    })
}

fn ensure_rust(present: &mut Vec<String>) -> Result<()> {
    // The eBPF crate is built by the agent's build script with nightly and
    // `-Z build-std=core`, which needs rust-src.
    match cmd::stdout_of(cmd("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ])) {
        Ok(list) if has_component(&list, "rust-src") => present.push("nightly+rust-src".into()),
        Ok(_) => {
            eprintln!("    adding rust-src to the nightly toolchain");
            cmd::run(cmd("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]))?;
        }
        Err(_) => {
            eprintln!("    installing the nightly toolchain with rust-src");
            cmd::run(cmd("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
                "-c",
                "rust-src",
            ]))?;
        }
    }
    // The target for the toolchain cargo uses in this workspace (the one running xtask).
    let root = crate::paths::Layout::discover()?.root;
    let targets = cmd::stdout_of(
        cmd("rustup")
            .args(["target", "list", "--installed"])
            .current_dir(&root),
    )
    .context("cannot list the installed rustup targets")?;
    if has_component(&targets, MUSL_TARGET) {
        present.push(format!("target {MUSL_TARGET}"));
    } else {
        eprintln!("    adding the {MUSL_TARGET} target");
        cmd::run(
            cmd("rustup")
                .args(["target", "add", MUSL_TARGET])
                .current_dir(&root),
        )?;
    }
    Ok(())
}

/// Whether `rustup component list --installed` (or `target list --installed`)
/// output has the line `component` (`rust-src` and targets are listed bare).
fn has_component(list: &str, component: &str) -> bool {
    list.lines().map(str::trim).any(|line| line == component)
}

fn ensure_cargo_tool(tool: &CargoTool, present: &mut Vec<String>) -> Result<()> {
    let found = installed_version(tool.name);
    if found.as_deref() == Some(tool.version) {
        present.push(format!("{} {}", tool.name, tool.version));
        return Ok(());
    }
    match &found {
        Some(other) => eprintln!(
            "    {} {other} found, {} wanted: installing",
            tool.name, tool.version
        ),
        None => eprintln!("    {} not found: installing {}", tool.name, tool.version),
    }
    let mut install = cmd("cargo");
    if let Some(toolchain) = tool.toolchain {
        install.arg(format!("+{toolchain}"));
    }
    install.args([
        "install",
        &format!("{}@{}", tool.name, tool.version),
        "--locked",
    ]);
    // Leave the workspace, so its configuration does not apply to the install.
    install.current_dir(std::env::temp_dir());
    cmd::run(&mut install)?;
    let now = installed_version(tool.name);
    if now.as_deref() != Some(tool.version) {
        let where_ = cmd::which(tool.name);
        bail!(
            "installed {} {} but `{} --version` now reports {:?} (found at {:?}); is another copy earlier on PATH?",
            tool.name,
            tool.version,
            tool.name,
            now,
            where_.as_deref().map(Path::display).map(|d| d.to_string())
        );
    }
    present.push(format!("{} {}", tool.name, tool.version));
    Ok(())
}

/// The version `name --version` reports, if it runs.
fn installed_version(name: &str) -> Option<String> {
    let output = cmd::stdout_of(cmd(name).arg("--version")).ok()?;
    parse_version(&output, name)
}

/// Parses `<name> <version>` from the first line of a `--version` output.
fn parse_version(output: &str, name: &str) -> Option<String> {
    let mut words = output.lines().next()?.split_whitespace();
    (words.next()? == name).then(|| words.next().map(str::to_string))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_components_with_or_without_a_triple() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(!has_component(list, "rust"));
        assert!(!has_component(list, "clippy"));
        let targets = "x86_64-unknown-linux-gnu\nx86_64-unknown-linux-musl\n";
        assert!(has_component(targets, MUSL_TARGET));
        assert!(!has_component("x86_64-unknown-linux-gnu\n", MUSL_TARGET));
    }

    #[test]
    fn parses_tool_versions() {
        assert_eq!(
            parse_version("bpf-linker 0.10.3\n", "bpf-linker").as_deref(),
            Some("0.10.3")
        );
        assert_eq!(
            parse_version("vhost-device-vsock 0.3.0\nmore\n", "vhost-device-vsock").as_deref(),
            Some("0.3.0")
        );
        assert_eq!(parse_version("something-else 1.0\n", "bpf-linker"), None);
        assert_eq!(parse_version("", "bpf-linker"), None);
        assert_eq!(parse_version("bpf-linker\n", "bpf-linker"), None);
    }

    /// A fake system where installing `qemu-system-x86` removes `qemu-utils`, as
    /// bookworm's package does to the preinstalled backports one.
    fn fake_system() -> std::cell::RefCell<Vec<String>> {
        std::cell::RefCell::new(vec!["qemu-utils".to_string(), "kmod".to_string()])
    }

    #[test]
    fn a_package_an_install_removes_is_installed_again_and_not_reported_present_early() {
        let system = fake_system();
        let names = ["qemu-system-x86", "kmod", "qemu-utils"];
        let packages: Vec<(&str, &str)> = names.iter().map(|n| (*n, *n)).collect();
        let mut rounds: Vec<Vec<String>> = Vec::new();
        let mut install = |missing: &[&str]| -> Result<()> {
            rounds.push(missing.iter().map(|m| m.to_string()).collect());
            let mut sys = system.borrow_mut();
            for m in missing {
                if *m == "qemu-system-x86" {
                    sys.retain(|p| p != "qemu-utils");
                }
                sys.push(m.to_string());
            }
            Ok(())
        };
        let present = settle(
            &packages,
            |name| system.borrow().iter().any(|p| p == name),
            &mut install,
        )
        .unwrap();
        assert_eq!(rounds, vec![vec!["qemu-system-x86"], vec!["qemu-utils"]]);
        assert_eq!(present, ["qemu-system-x86", "kmod", "qemu-utils"]);
        assert!(system.borrow().iter().any(|p| p == "qemu-utils"));
    }

    #[test]
    fn two_packages_that_remove_each_other_fail_with_their_names() {
        let system = std::cell::RefCell::new(Vec::<String>::new());
        let packages = [("a", "a"), ("b", "b")];
        let mut install = |missing: &[&str]| -> Result<()> {
            let mut sys = system.borrow_mut();
            for m in missing {
                let other = if *m == "a" { "b" } else { "a" };
                sys.retain(|p| p != other);
                sys.push(m.to_string());
            }
            Ok(())
        };
        let err = settle(
            &packages,
            |name| system.borrow().iter().any(|p| p == name),
            &mut install,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("still missing after 3 install rounds"),
            "{err}"
        );
    }

    #[test]
    fn nothing_is_installed_when_everything_is_present() {
        let packages = [("a", true), ("b", true)];
        let mut install = |_: &[&str]| -> Result<()> { panic!("nothing to install") };
        let present = settle(&packages, |ok| *ok, &mut install).unwrap();
        assert_eq!(present, ["a", "b"]);
    }

    #[test]
    fn install_command_is_one_line() {
        assert_eq!(
            apt_install_command(&["kmod", "busybox-static"]),
            "apt-get install -y --no-install-recommends kmod busybox-static"
        );
    }
}
