//! An ftrace kprobe event, made through tracefs the way trace-cmd makes one: a line in
//! `kprobe_events`, the event's `enable` switch, and its hit count in `kprobe_profile`.
//! `guestscope bench` runs a workload under one to compare its cost with the eBPF probes',
//! and under its ftrace peer: one event per probed function, filtered to the workload's
//! task name, with a kernel stack per hit when asked ([`StackTraces`]).

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

/// The event group guestscope's kprobe events are made in.
pub const GROUP: &str = "guestscope";

/// Where tracefs may be mounted, in order of preference.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// A tracefs step failed.
#[derive(Debug, thiserror::Error)]
pub enum FtraceError {
    /// Neither tracefs location has `kprobe_events`.
    #[error("no tracefs with kprobe_events at /sys/kernel/tracing or /sys/kernel/debug/tracing")]
    NoTracefs,
    /// Reading or writing a tracefs file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// `kprobe_profile` has no line for the event.
    #[error("kprobe_profile has no line for {0}")]
    NotProfiled(String),
}

/// A kprobe event that exists (and is enabled) until [`KprobeEvent::remove`] or drop.
#[derive(Debug)]
pub struct KprobeEvent {
    tracefs: PathBuf,
    name: String,
    function: String,
    removed: bool,
}

/// The event name for a probe on `function` (tracefs wants `[A-Za-z_][A-Za-z0-9_]*`).
pub fn event_name(function: &str) -> String {
    let mut name: String = function
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

/// Hits and misses of event `name` in the text of `kprobe_profile`
/// (`  <event> <hits> <misses>` per line).
pub fn parse_profile(text: &str, name: &str) -> Option<(u64, u64)> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let event = fields.next()?;
        // Some kernels print `group/event`.
        if event != name && event.rsplit('/').next() != Some(name) {
            return None;
        }
        let hits = fields.next()?.parse().ok()?;
        let misses = fields.next()?.parse().ok()?;
        Some((hits, misses))
    })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FtraceError + '_ {
    move |source| FtraceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn append(path: &Path, line: &str) -> Result<(), FtraceError> {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(line.as_bytes()).map_err(io_err(path))
}

fn write(path: &Path, text: &str) -> Result<(), FtraceError> {
    fs::write(path, text).map_err(io_err(path))
}

/// The mounted tracefs with kprobe events.
fn tracefs() -> Result<PathBuf, FtraceError> {
    TRACEFS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("kprobe_events").exists())
        .ok_or(FtraceError::NoTracefs)
}

/// Every enabled event records its kernel stack (tracefs `options/stacktrace`) until
/// dropped.
#[derive(Debug)]
pub struct StackTraces {
    option: PathBuf,
}

impl StackTraces {
    /// Turns the option on.
    pub fn on() -> Result<StackTraces, FtraceError> {
        let option = tracefs()?.join("options").join("stacktrace");
        write(&option, "1")?;
        Ok(StackTraces { option })
    }
}

impl Drop for StackTraces {
    fn drop(&mut self) {
        let _ = write(&self.option, "0");
    }
}

impl KprobeEvent {
    /// Creates the event `guestscope/<name>` on `function`'s entry and enables it.
    /// `function` must be a plain symbol name (the plan's check makes sure).
    pub fn create(function: &str) -> Result<KprobeEvent, FtraceError> {
        KprobeEvent::create_for(function, None)
    }

    /// [`KprobeEvent::create`], keeping only the hits of tasks named `comm` when given
    /// (the event's filter, set before it is enabled). `comm` must hold no quote or
    /// backslash (the plan's check makes sure).
    pub fn create_for(function: &str, comm: Option<&str>) -> Result<KprobeEvent, FtraceError> {
        let tracefs = tracefs()?;
        let name = event_name(function);
        let mut event = KprobeEvent {
            tracefs,
            name,
            function: function.to_string(),
            removed: false,
        };
        // A leftover from an earlier run of the agent would make the definition fail.
        let _ = event.undefine();
        append(
            &event.tracefs.join("kprobe_events"),
            &format!("p:{GROUP}/{} {function}\n", event.name),
        )?;
        let enable = event.enable_path();
        let filtered = match comm {
            Some(comm) => write(
                &enable.with_file_name("filter"),
                &format!("comm == \"{comm}\"\n"),
            ),
            None => Ok(()),
        };
        if let Err(e) = filtered.and_then(|()| write(&enable, "1")) {
            let _ = event.undefine();
            event.removed = true;
            return Err(e);
        }
        Ok(event)
    }

    /// `group/name`.
    pub fn event(&self) -> String {
        format!("{GROUP}/{}", self.name)
    }

    /// The probed function.
    pub fn function(&self) -> &str {
        &self.function
    }

    fn enable_path(&self) -> PathBuf {
        self.tracefs
            .join("events")
            .join(GROUP)
            .join(&self.name)
            .join("enable")
    }

    /// Hits and misses so far.
    pub fn profile(&self) -> Result<(u64, u64), FtraceError> {
        let path = self.tracefs.join("kprobe_profile");
        let text = fs::read_to_string(&path).map_err(io_err(&path))?;
        parse_profile(&text, &self.name).ok_or_else(|| FtraceError::NotProfiled(self.event()))
    }

    fn undefine(&self) -> Result<(), FtraceError> {
        let _ = write(&self.enable_path(), "0");
        append(
            &self.tracefs.join("kprobe_events"),
            &format!("-:{GROUP}/{}\n", self.name),
        )
    }

    /// Disables and deletes the event.
    pub fn remove(mut self) -> Result<(), FtraceError> {
        self.removed = true;
        self.undefine()
    }
}

impl Drop for KprobeEvent {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.undefine();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_tracefs_identifiers() {
        assert_eq!(event_name("alloc_fd"), "alloc_fd");
        assert_eq!(event_name("do_sys_openat2.isra.0"), "do_sys_openat2_isra_0");
        assert_eq!(event_name("9p_x"), "_9p_x");
    }

    #[test]
    fn profile_lines_are_found_by_event_name() {
        // Linux 6.1's format: "  %-44s %15lu %15lu".
        let text = "  other                                                    5               0\n  \
                    alloc_fd                                              2000               3\n";
        assert_eq!(parse_profile(text, "alloc_fd"), Some((2000, 3)));
        assert_eq!(
            parse_profile("  guestscope/alloc_fd 7 0\n", "alloc_fd"),
            Some((7, 0))
        );
        assert_eq!(parse_profile(text, "alloc"), None);
        assert_eq!(parse_profile("  alloc_fd x 0\n", "alloc_fd"), None);
        assert_eq!(parse_profile("", "alloc_fd"), None);
    }
}
