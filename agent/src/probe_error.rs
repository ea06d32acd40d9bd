//! Why a probe could not be loaded or attached, and the notes that say so in its
//! [`guestscope_common::wire::ProbeAttach`] record.

use std::error::Error as StdError;

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Longest note kept in a [`guestscope_common::wire::ProbeAttach`] record (verifier
/// logs can be huge).
const MAX_NOTE: usize = 4096;

/// Why the probes could not be loaded, or one of them attached.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The eBPF object was not built (`AYA_BUILD_SKIP`) into this agent.
    #[error("this agent was built without its eBPF object")]
    NoObject,
    /// The object could not be loaded (maps could not be created, ...).
    #[error("loading the eBPF object: {0}")]
    Load(#[source] EbpfError),
    /// A map the agent needs is not in the object.
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A map has an unexpected type or layout.
    #[error("map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// What is wrong.
        #[source]
        source: MapError,
    },
    /// An array the agent uses in place (`TALLIES`, `TRACED_TGIDS`) could not be
    /// mapped into its memory.
    #[error("mapping {name}: {source}")]
    Mapped {
        /// The map's name.
        name: &'static str,
        /// What failed.
        #[source]
        source: crate::mapped_array::MappedArrayError,
    },
    /// A program is not in the object.
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    /// The kernel's BTF (needed by fentry) could not be read.
    #[error("reading kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    Btf(String),
    /// The attach method was turned off by an environment variable.
    #[error("disabled by {0}=1")]
    Disabled(&'static str),
    /// A user probe kind asked for as if it were built in.
    #[error("{0} probes attach to the functions --probe names, not through the built-in list")]
    NotBuiltin(&'static str),
    /// The kernel function is not in `/proc/kallsyms` (inlined, renamed or absent).
    #[error("{0} is not in /proc/kallsyms (inlined, renamed or not built into this kernel)")]
    NoSymbol(String),
    /// The tracepoint is not in tracefs.
    #[error("tracepoint {0} is not in this kernel (no {1})")]
    NoTracepoint(String, String),
    /// Loading or attaching a program failed.
    #[error("{program}: {source}")]
    Program {
        /// The program's name.
        program: &'static str,
        /// What failed.
        #[source]
        source: ProgramError,
    },
}

/// An error and its sources, joined by ": ".
pub fn chain(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        // thiserror's `{0}` formats often repeat the source already.
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The first line of `text`.
pub(crate) fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Where a long note is cut: its head (what failed) and its tail (a verifier log
/// ends with the reason) are kept, the middle goes.
const NOTE_CUT: &str = " [… truncated …] ";

/// Bounds `note` to about [`MAX_NOTE`] bytes: its first quarter and last three quarters
/// are kept.
pub(crate) fn truncate_note(note: &mut String) {
    if note.len() <= MAX_NOTE {
        return;
    }
    let mut head = MAX_NOTE / 4;
    while !note.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = note.len() - (MAX_NOTE - MAX_NOTE / 4);
    while !note.is_char_boundary(tail) {
        tail += 1;
    }
    *note = format!("{}{NOTE_CUT}{}", &note[..head], &note[tail..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_joins_sources_without_repeating() {
        let io = std::io::Error::other("permission denied");
        let e = ProbeError::Program {
            program: "alloc_fd",
            source: ProgramError::from(io),
        };
        let text = chain(&e);
        assert!(text.starts_with("alloc_fd: "), "{text}");
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
    }

    #[test]
    fn notes_are_bounded_and_keep_head_and_tail() {
        let mut n = format!("head {} the reason", "é".repeat(MAX_NOTE));
        truncate_note(&mut n);
        assert!(n.len() <= MAX_NOTE + NOTE_CUT.len());
        assert!(n.starts_with("head "));
        assert!(n.ends_with(" the reason"));
        assert!(n.contains(NOTE_CUT));
        let mut short = String::from("short");
        truncate_note(&mut short);
        assert_eq!(short, "short");
    }
}
