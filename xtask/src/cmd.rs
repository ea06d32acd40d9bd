//! Running external programs: a `PATH` that includes cargo's bin directory,
//! echoing each command before it runs, and turning exit statuses into errors.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result};

/// A child process that ran and failed; `main` exits with its exit code.
#[derive(Debug)]
pub struct Failed {
    /// The command line, as echoed.
    pub command: String,
    /// How it ended.
    pub status: ExitStatus,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` failed ({})", self.command, self.status)
    }
}

impl std::error::Error for Failed {}

/// Cargo's bin directory: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo").join("bin"))
}

/// The `PATH` every child gets: cargo's bin directory first (bpf-linker and
/// vhost-device-vsock live there), then the inherited `PATH`, then `/usr/sbin`
/// and `/sbin` (depmod) when missing.
pub fn search_path() -> OsString {
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = Vec::new();
    dirs.extend(cargo_bin_dir());
    dirs.extend(std::env::split_paths(&inherited));
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin"] {
        dirs.push(PathBuf::from(extra));
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    std::env::join_paths(unique).unwrap_or(inherited)
}

/// A [`Command`] for `program`, looked up in (and given) [`search_path`].
pub fn cmd(program: impl AsRef<OsStr>) -> Command {
    let path = search_path();
    let program = program.as_ref();
    let resolved = which_in(program, &path).map(PathBuf::into_os_string);
    let mut command = Command::new(resolved.as_deref().unwrap_or(program));
    command.env("PATH", path);
    command
}

/// The cargo that runs xtask (`$CARGO`), so builds use the same toolchain.
pub fn cargo() -> Command {
    match std::env::var_os("CARGO") {
        Some(cargo) => cmd(cargo),
        None => cmd("cargo"),
    }
}

/// Where `name` is found in [`search_path`], if anywhere.
pub fn which(name: &str) -> Option<PathBuf> {
    which_in(OsStr::new(name), &search_path())
}

fn which_in(name: &OsStr, path: &OsStr) -> Option<PathBuf> {
    if name.as_encoded_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether xtask runs as root (owner of `/proc/self` is the effective uid).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Renders a command line for echoing, with the environment variables set on it
/// (except `PATH`), quoting words that need it.
pub fn display(command: &Command) -> String {
    let mut words: Vec<String> = Vec::new();
    for (key, value) in command.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                quote(&value.to_string_lossy())
            ));
        }
    }
    let program = PathBuf::from(command.get_program());
    let short = program
        .file_name()
        .map(OsStr::to_os_string)
        .unwrap_or_default();
    words.push(quote(&short.to_string_lossy()));
    words.extend(command.get_args().map(|a| quote(&a.to_string_lossy())));
    words.join(" ")
}

fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+@,%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Echoes `command`, runs it with inherited stdio and fails unless it exits 0.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    eprintln!("    $ {shown}");
    let status = command
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failed {
            command: shown,
            status,
        }
        .into())
    }
}

/// Runs `command` silently and returns its stdout, or an error carrying its stderr.
pub fn stdout_of(command: &mut Command) -> Result<String> {
    let shown = display(command);
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if output.status.success() {
        String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed non-UTF-8"))
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let detail = stderr.trim().lines().last().unwrap_or("").to_string();
        Err(anyhow::Error::new(Failed {
            command: shown,
            status: output.status,
        })
        .context(detail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut command = Command::new("/usr/bin/echo");
        command
            .env("PATH", "/x")
            .env("GUESTSCOPE_BIN", "/a b")
            .args(["plain", "it's"]);
        assert_eq!(
            display(&command),
            r"GUESTSCOPE_BIN='/a b' echo plain 'it'\''s'"
        );
    }

    #[test]
    fn which_takes_paths_with_a_slash_as_is() {
        assert_eq!(
            which_in(OsStr::new("./x"), OsStr::new("")),
            Some(PathBuf::from("./x"))
        );
        assert_eq!(which_in(OsStr::new("sh"), OsStr::new("/nonexistent")), None);
    }
}
