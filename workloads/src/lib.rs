//! Shared helpers for guestscope's workloads: tiny argument parsing, timing and the
//! one-line JSON summaries every workload prints.
//!
//! The workloads are static binaries under `src/bin/`, one file each, run by the agent
//! inside the guest: `blast`, `cpuinfo`, `fault`, `flood`, `fopen`, `malloc`, `random`.
//! Each prints one JSON line `{"workload":NAME,...}` as its summary on stdout; errors go
//! to stderr as one line, with exit status 1 (2 for bad arguments).
#![deny(missing_docs)]

use std::{fmt::Write as _, process::ExitCode, time::Instant};

mod realtime;

pub use realtime::run_as_fifo;

/// A usage or run-time error, printed as one line.
#[derive(Debug)]
pub struct Error {
    /// The message.
    pub message: String,
    /// Exit status: 2 for bad arguments, 1 otherwise.
    pub status: u8,
}

impl Error {
    /// A bad-arguments error (exit status 2).
    pub fn usage(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            status: 2,
        }
    }

    /// A run-time error (exit status 1).
    pub fn runtime(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            status: 1,
        }
    }
}

/// Runs a workload's body and turns its outcome into an exit code.
pub fn main_with(name: &str, body: impl FnOnce(Args) -> Result<(), Error>) -> ExitCode {
    match body(Args::from_env()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {}", e.message);
            ExitCode::from(e.status)
        }
    }
}

/// Command-line arguments, consumed option by option.
#[derive(Debug, Clone)]
pub struct Args {
    rest: Vec<String>,
}

impl Args {
    /// The process's arguments (without argv\[0\]); non-UTF-8 arguments become lossy text.
    pub fn from_env() -> Args {
        Args {
            rest: std::env::args_os()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// Arguments from a list (for tests).
    pub fn from_list<S: Into<String>>(list: impl IntoIterator<Item = S>) -> Args {
        Args {
            rest: list.into_iter().map(Into::into).collect(),
        }
    }

    /// Removes `--name VALUE` (or `--name=VALUE`) and returns the value, if present.
    pub fn value(&mut self, name: &str) -> Result<Option<String>, Error> {
        let prefix = format!("{name}=");
        if let Some(i) = self.rest.iter().position(|a| a == name) {
            if i + 1 >= self.rest.len() {
                return Err(Error::usage(format!("{name} needs a value")));
            }
            let value = self.rest.remove(i + 1);
            self.rest.remove(i);
            return Ok(Some(value));
        }
        if let Some(i) = self.rest.iter().position(|a| a.starts_with(&prefix)) {
            let arg = self.rest.remove(i);
            return Ok(Some(arg[prefix.len()..].to_string()));
        }
        Ok(None)
    }

    /// Removes `--name N` and parses it, or returns `default`.
    pub fn number(&mut self, name: &str, default: u64) -> Result<u64, Error> {
        match self.value(name)? {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::usage(format!("{name}: {v:?} is not a whole number"))),
        }
    }

    /// Removes the flag `--name` and says whether it was there.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.rest.iter().position(|a| a == name) {
            Some(i) => {
                self.rest.remove(i);
                true
            }
            None => false,
        }
    }

    /// Fails if arguments are left that no option consumed.
    pub fn finish(self, usage: &str) -> Result<(), Error> {
        match self.rest.first() {
            None => Ok(()),
            Some(a) => Err(Error::usage(format!(
                "unexpected argument {a:?}; usage: {usage}"
            ))),
        }
    }
}

/// Nanoseconds since `start`.
pub fn elapsed_ns(start: Instant) -> u64 {
    start.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64
}

/// A JSON value for [`json_line`].
#[derive(Debug, Clone)]
pub enum Value {
    /// A number.
    Num(u64),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// One JSON object on one line, keys in the given order.
pub fn json_line(fields: &[(&str, Value)]) -> String {
    let mut out = String::from("{");
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, key);
        out.push(':');
        match value {
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Str(s) => push_json_str(&mut out, s),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
    out
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_consumed_in_any_order() {
        let mut a = Args::from_list(["--bytes", "32", "--getrandom-nonblock", "--reads=5"]);
        assert_eq!(a.number("--reads", 10).unwrap(), 5);
        assert!(a.flag("--getrandom-nonblock"));
        assert_eq!(a.number("--bytes", 16).unwrap(), 32);
        assert_eq!(a.number("--iterations", 100).unwrap(), 100);
        assert!(a.finish("x").is_ok());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(
            Args::from_list(["--iterations", "ten"])
                .number("--iterations", 1)
                .unwrap_err()
                .status,
            2
        );
        assert!(
            Args::from_list(["--iterations"])
                .number("--iterations", 1)
                .is_err()
        );
        assert!(
            Args::from_list(["--bogus"])
                .finish("usage")
                .unwrap_err()
                .message
                .contains("--bogus")
        );
    }

    #[test]
    fn json_lines_are_escaped() {
        assert_eq!(
            json_line(&[
                ("workload", Value::Str("a\"b\n".into())),
                ("n", Value::Num(3)),
                ("ok", Value::Bool(true))
            ]),
            r#"{"workload":"a\"b\n","n":3,"ok":true}"#
        );
    }
}
