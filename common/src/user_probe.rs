//! Probes the user names (`--probe fentry:FUNC`, `--probe kprobe:FUNC+OFFSET`,
//! `--probe 'kretprobe:vfs_*'`): their syntax, checked on the host before any boot and
//! again by the agent, and the glob the agent expands against the guest kernel's
//! probeable functions.

use std::fmt;
use std::str::FromStr;

use crate::event::ProbeKind;

/// Functions one glob may expand to; more is almost surely a mistake (`kprobe:*`)
/// and would take minutes to attach.
pub const MAX_GLOB_FUNCTIONS: usize = 500;
/// Tracepoints one run may probe: the eBPF object has one program per slot.
pub const MAX_TRACEPOINTS: usize = 8;

/// A probe the user asked for: how, and on which function(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserProbe {
    /// [`ProbeKind::Fentry`], [`ProbeKind::Kprobe`], [`ProbeKind::Kretprobe`] or
    /// [`ProbeKind::Tracepoint`].
    pub kind: ProbeKind,
    /// A function name, or a glob of them (`*` any run of characters, `?` one).
    pub pattern: String,
    /// Bytes into the function (`kprobe:FUNC+OFFSET`); 0 is its entry.
    pub offset: u64,
}

/// Why a `--probe` value is not a probe.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserProbeError {
    /// No `TYPE:` prefix.
    #[error("--probe {0:?}: expected TYPE:FUNCTION, e.g. fentry:vfs_read or kretprobe:alloc_fd")]
    NoType(String),
    /// A type guestscope does not know.
    #[error(
        "--probe {spec:?}: unknown probe type {kind:?}; use fentry:FUNCTION, kprobe:FUNCTION[+OFFSET], kretprobe:FUNCTION or tracepoint:CATEGORY:NAME"
    )]
    UnknownType {
        /// The whole value.
        spec: String,
        /// The type given.
        kind: String,
    },
    /// A type guestscope knows of but cannot attach yet.
    #[error(
        "--probe {spec:?}: {kind} probes are not available yet; fentry:FUNCTION or kprobe:FUNCTION probes a function's entry, kretprobe:FUNCTION its return"
    )]
    NotYet {
        /// The whole value.
        spec: String,
        /// The type given.
        kind: String,
    },
    /// A character no kernel function name has.
    #[error(
        "--probe {spec:?}: {found:?} at column {column} cannot be in a function name (letters, digits, '_', '.', and the globs '*' '?')"
    )]
    BadCharacter {
        /// The whole value.
        spec: String,
        /// The character.
        found: char,
        /// Its column in `spec`, from 1.
        column: usize,
    },
    /// Nothing after `TYPE:`.
    #[error("--probe {0:?}: no function after the type")]
    NoFunction(String),
    /// `+OFFSET` that is not a number, on a glob, or on a probe other than kprobe.
    #[error(
        "--probe {spec:?}: {why}; an offset is kprobe:FUNCTION+BYTES, e.g. kprobe:vfs_read+4 or kprobe:vfs_read+0x10"
    )]
    BadOffset {
        /// The whole value.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// A tracepoint not given as `CATEGORY:NAME`.
    #[error(
        "--probe {0:?}: a tracepoint is tracepoint:CATEGORY:NAME, e.g. tracepoint:sched:sched_switch"
    )]
    NotCategoryName(String),
}

impl FromStr for UserProbe {
    type Err = UserProbeError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (kind, pattern) = spec
            .split_once(':')
            .ok_or_else(|| UserProbeError::NoType(spec.to_string()))?;
        let kind = match kind {
            "fentry" => ProbeKind::Fentry,
            "kprobe" => ProbeKind::Kprobe,
            "kretprobe" => ProbeKind::Kretprobe,
            "tracepoint" => ProbeKind::Tracepoint,
            "fexit" | "uprobe" => {
                return Err(UserProbeError::NotYet {
                    spec: spec.to_string(),
                    kind: kind.to_string(),
                });
            }
            other => {
                return Err(UserProbeError::UnknownType {
                    spec: spec.to_string(),
                    kind: other.to_string(),
                });
            }
        };
        let (pattern, offset) = match pattern.split_once('+') {
            Some((function, offset)) => (function, Some(offset)),
            None => (pattern, None),
        };
        if pattern.is_empty() {
            return Err(UserProbeError::NoFunction(spec.to_string()));
        }
        let bad_offset = |why: &str| UserProbeError::BadOffset {
            spec: spec.to_string(),
            why: why.to_string(),
        };
        let offset = match offset {
            None => 0,
            Some(_) if kind != ProbeKind::Kprobe => {
                return Err(bad_offset(&format!(
                    "only a kprobe takes an offset, not a {}",
                    kind.name()
                )));
            }
            Some(_) if pattern.contains(['*', '?']) => {
                return Err(bad_offset("a glob cannot take an offset"));
            }
            Some(text) => parse_offset(text)
                .ok_or_else(|| bad_offset(&format!("{text:?} is not a byte count")))?,
        };
        // A tracepoint is CATEGORY:NAME: one ':' inside, neither side empty.
        let tracepoint = kind == ProbeKind::Tracepoint;
        if tracepoint
            && !pattern
                .split_once(':')
                .is_some_and(|(c, n)| !c.is_empty() && !n.is_empty() && !n.contains(':'))
        {
            return Err(UserProbeError::NotCategoryName(spec.to_string()));
        }
        let prefix = spec.len() - pattern.len();
        if let Some((at, found)) = pattern.char_indices().find(|&(_, c)| {
            !(c.is_ascii_alphanumeric()
                || matches!(c, '_' | '.' | '*' | '?')
                || (tracepoint && c == ':'))
        }) {
            return Err(UserProbeError::BadCharacter {
                spec: spec.to_string(),
                found,
                column: prefix + at + 1,
            });
        }
        Ok(UserProbe {
            kind,
            pattern: pattern.to_string(),
            offset,
        })
    }
}

impl fmt::Display for UserProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.pattern)?;
        if self.offset != 0 {
            write!(f, "+{}", self.offset)?;
        }
        Ok(())
    }
}

impl UserProbe {
    /// Whether the pattern is a glob rather than one function.
    pub fn is_glob(&self) -> bool {
        self.pattern.contains(['*', '?'])
    }

    /// Whether function `name` is one this probe asks for.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// A byte offset: decimal, or hexadecimal after `0x`.
fn parse_offset(text: &str) -> Option<u64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None if text.bytes().all(|b| b.is_ascii_digit()) => text.parse().ok(),
        None => None,
    }
}

/// `*` (any run) and `?` (one byte) matching, iterative with one backtrack point
/// (linear in practice, never exponential).
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<UserProbe, UserProbeError> {
        s.parse()
    }

    #[test]
    fn kinds_and_functions_parse_and_print_back() {
        for s in [
            "kprobe:vfs_read",
            "kretprobe:alloc_fd",
            "kprobe:filemap_*",
            "kprobe:a.isra.0",
        ] {
            assert_eq!(parse(s).unwrap().to_string(), s);
        }
        assert_eq!(parse("kretprobe:x").unwrap().kind, ProbeKind::Kretprobe);
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        assert_eq!(
            parse("vfs_read"),
            Err(UserProbeError::NoType("vfs_read".into()))
        );
        assert!(matches!(
            parse("kprob:vfs_read"),
            Err(UserProbeError::UnknownType { .. })
        ));
        assert!(matches!(
            parse("fexit:vfs_read"),
            Err(UserProbeError::NotYet { .. })
        ));
        assert_eq!(
            parse("tracepoint:sched_switch"),
            Err(UserProbeError::NotCategoryName(
                "tracepoint:sched_switch".into()
            ))
        );
        let tp = parse("tracepoint:sched:sched_*").unwrap();
        assert_eq!(tp.kind, ProbeKind::Tracepoint);
        assert!(tp.matches("sched:sched_switch") && !tp.matches("irq:sched_x"));
        assert!(matches!(
            parse("kprobe:a:b"),
            Err(UserProbeError::BadCharacter { found: ':', .. })
        ));
        assert_eq!(
            parse("kprobe:"),
            Err(UserProbeError::NoFunction("kprobe:".into()))
        );
        let e = parse("kprobe:vfs-read").unwrap_err();
        assert_eq!(
            e,
            UserProbeError::BadCharacter {
                spec: "kprobe:vfs-read".into(),
                found: '-',
                column: 11
            }
        );
        assert!(e.to_string().contains("column 11"), "{e}");
    }

    #[test]
    fn fentry_and_kprobe_offsets_parse() {
        let f = parse("fentry:vfs_*").unwrap();
        assert_eq!((f.kind, f.offset), (ProbeKind::Fentry, 0));
        let k = parse("kprobe:vfs_read+0x10").unwrap();
        assert_eq!((k.pattern.as_str(), k.offset), ("vfs_read", 16));
        assert_eq!(k.to_string(), "kprobe:vfs_read+16");
        assert_eq!(parse("kprobe:vfs_read+16").unwrap(), k);
        assert_eq!(
            parse("kprobe:vfs_read+0").unwrap().to_string(),
            "kprobe:vfs_read"
        );
        for (bad, says) in [
            ("kprobe:vfs_read+", "is not a byte count"),
            ("kprobe:vfs_read+x4", "is not a byte count"),
            ("kprobe:vfs_read+-4", "is not a byte count"),
            ("kprobe:vfs_*+4", "a glob cannot take an offset"),
            ("kretprobe:vfs_read+4", "only a kprobe takes an offset"),
            ("fentry:vfs_read+4", "only a kprobe takes an offset"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(e, UserProbeError::BadOffset { .. }),
                "{bad}: {e:?}"
            );
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn globs_match_as_shells_do() {
        let p = parse("kprobe:filemap_*").unwrap();
        assert!(p.is_glob());
        assert!(p.matches("filemap_fault") && p.matches("filemap_"));
        assert!(!p.matches("do_filemap_fault"));
        let q = parse("kprobe:vfs_?ead*").unwrap();
        assert!(q.matches("vfs_read") && q.matches("vfs_readv") && !q.matches("vfs_write"));
        let exact = parse("kprobe:vfs_read").unwrap();
        assert!(!exact.is_glob() && exact.matches("vfs_read") && !exact.matches("vfs_readv"));
        assert!(
            parse("kprobe:*a*a*a*b")
                .unwrap()
                .matches("aaaaaaaaaaaaaaaaaaaab")
        );
        assert!(
            !parse("kprobe:*a*a*a*b")
                .unwrap()
                .matches("aaaaaaaaaaaaaaaaaaaaa")
        );
    }
}
