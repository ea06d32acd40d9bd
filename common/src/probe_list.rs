//! What a guest kernel lets `--probe` attach to: the functions ftrace lists as usable
//! (`available_filter_functions`, where a kprobe at entry works), its text symbols
//! (to tell "exists but cannot be probed" from "absent"), and the kprobe blacklist.
//! The agent reads it from the running kernel; `guestscope probes` caches it on the
//! host per kernel, so a name can be checked (and suggested) before any boot.

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::user_probe::{MAX_GLOB_FUNCTIONS, MAX_TRACEPOINTS, UserProbe};

/// Where the kernel lists the functions ftrace (and so a kprobe at entry) can use.
pub const FILTER_FUNCTIONS: &[&str] = &[
    "/sys/kernel/tracing/available_filter_functions",
    "/sys/kernel/debug/tracing/available_filter_functions",
];
/// The kernel's kprobe blacklist (debugfs).
pub const BLACKLIST: &str = "/sys/kernel/debug/kprobes/blacklist";
/// Where the kernel lists its tracepoints (`CATEGORY:NAME` per line).
pub const AVAILABLE_EVENTS: &[&str] = &[
    "/sys/kernel/tracing/available_events",
    "/sys/kernel/debug/tracing/available_events",
];
/// Name of the artifact the agent sends the list as (JSON), when the plan asks.
pub const ARTIFACT: &str = "probe-list";
/// Name of the artifact mapping the user's tracepoints' slots (their events' `flags`)
/// to `CATEGORY:NAME` (JSON object), sent before any workload runs.
pub const TRACEPOINT_IDS: &str = "tracepoint-ids";
/// Close names offered for a function that does not exist.
const SUGGESTIONS: usize = 5;

/// What one kernel offers for probing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeList {
    /// The kernel release (`uname -r`).
    pub release: String,
    /// Where [`ProbeList::probeable`] came from.
    pub source: String,
    /// Functions a kprobe can attach to, sorted.
    pub probeable: BTreeSet<String>,
    /// Every text symbol of `/proc/kallsyms`.
    pub symbols: BTreeSet<String>,
    /// Functions on the kprobe blacklist.
    pub blacklisted: BTreeSet<String>,
    /// Tracepoints, as `CATEGORY:NAME`.
    #[serde(default)]
    pub tracepoints: BTreeSet<String>,
    /// Functions with a BTF prototype in the kernel's BTF: those of them in
    /// [`ProbeList::probeable`] take `fentry:`. Empty when not known (the agent does not
    /// parse the BTF; the host adds these from the BTF the guest sent), in which case
    /// the attach decides.
    #[serde(default)]
    pub btf_functions: BTreeSet<String>,
}

impl ProbeList {
    /// The list from the texts of `available_filter_functions` (`None`: no tracefs;
    /// every text symbol is then a candidate and the attach decides), `/proc/kallsyms`
    /// and the blacklist.
    pub fn from_texts(
        release: &str,
        filter_functions: Option<(&str, &str)>,
        kallsyms: &str,
        blacklist: &str,
    ) -> ProbeList {
        let symbols: BTreeSet<String> = kallsyms
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (_, kind, name) = (w.next()?, w.next()?, w.next()?);
                matches!(kind, "t" | "T").then(|| name.to_string())
            })
            .collect();
        let (source, probeable) = match filter_functions {
            Some((path, text)) => (path.to_string(), parse_filter_functions(text)),
            None => ("/proc/kallsyms".to_string(), symbols.clone()),
        };
        ProbeList {
            release: release.to_string(),
            source,
            probeable,
            symbols,
            blacklisted: parse_blacklist(blacklist),
            tracepoints: BTreeSet::new(),
            btf_functions: BTreeSet::new(),
        }
    }

    /// This list with the tracepoints of `available_events` text.
    pub fn with_tracepoints(mut self, available_events: &str) -> ProbeList {
        self.tracepoints = available_events
            .lines()
            .map(str::trim)
            .filter(|l| l.contains(':'))
            .map(str::to_string)
            .collect();
        self
    }

    /// The functions `probe` asks for, or why it cannot be attached (one line that
    /// names what is valid nearby).
    pub fn resolve(&self, probe: &UserProbe) -> Result<Vec<String>, String> {
        if probe.kind == crate::ProbeKind::Tracepoint {
            return self.resolve_tracepoint(probe);
        }
        let fentry = probe.kind == crate::ProbeKind::Fentry;
        // The kprobe blacklist is about kprobes; fentry needs a BTF prototype instead.
        let refused = |f: &str| {
            if fentry {
                !self.btf_functions.is_empty() && !self.btf_functions.contains(f)
            } else {
                self.blacklisted.contains(f)
            }
        };
        if !probe.is_glob() {
            let name = &probe.pattern;
            if fentry && self.probeable.contains(name) && refused(name) {
                return Err(format!(
                    "{probe}: {name} has no BTF prototype in this kernel, which fentry needs; kprobe:{name} probes it"
                ));
            }
            if !fentry && self.blacklisted.contains(name) {
                return Err(format!(
                    "{probe}: {name} is on the kernel's kprobe blacklist ({BLACKLIST}): probing it could crash the kernel"
                ));
            }
            if self.probeable.contains(name) {
                return Ok(vec![name.clone()]);
            }
            if self.symbols.contains(name) {
                return Err(format!(
                    "{probe}: {name} exists but cannot be probed (notrace, or not in {})",
                    self.source
                ));
            }
            let close = closest(name, self.probeable.iter().map(String::as_str));
            return Err(if close.is_empty() {
                format!("{probe}: no function {name} in this kernel")
            } else {
                format!(
                    "{probe}: no function {name} in this kernel; closest: {}",
                    close.join(", ")
                )
            });
        }
        let found: Vec<String> = self
            .probeable
            .iter()
            .filter(|f| probe.matches(f) && !refused(f))
            .cloned()
            .collect();
        match found.len() {
            0 => Err(format!(
                "{probe}: matches no probeable function of this kernel"
            )),
            n if n > MAX_GLOB_FUNCTIONS => Err(format!(
                "{probe}: matches {n} functions, more than {MAX_GLOB_FUNCTIONS}; narrow the pattern"
            )),
            _ => Ok(found),
        }
    }
}

impl ProbeList {
    /// Whether `name` takes `fentry:`: probeable, and with a BTF prototype when those
    /// are known.
    pub fn takes_fentry(&self, name: &str) -> bool {
        self.probeable.contains(name)
            && (self.btf_functions.is_empty() || self.btf_functions.contains(name))
    }

    /// Whether `name` is a function a breakpoint can stop at (any text symbol), or why
    /// not, with the closest names.
    pub fn check_stop(&self, name: &str) -> Result<(), String> {
        if self.symbols.contains(name) {
            return Ok(());
        }
        let close = closest(name, self.symbols.iter().map(String::as_str));
        Err(if close.is_empty() {
            format!("--snapshot-at {name}: no function {name} in this kernel")
        } else {
            format!(
                "--snapshot-at {name}: no function {name} in this kernel; closest: {}",
                close.join(", ")
            )
        })
    }
}

impl ProbeList {
    fn resolve_tracepoint(&self, probe: &UserProbe) -> Result<Vec<String>, String> {
        let found: Vec<String> = self
            .tracepoints
            .iter()
            .filter(|t| probe.matches(t))
            .cloned()
            .collect();
        if !found.is_empty() {
            return if found.len() > MAX_TRACEPOINTS {
                Err(format!(
                    "{probe}: matches {} tracepoints, more than the {MAX_TRACEPOINTS} a run can probe; narrow the pattern",
                    found.len()
                ))
            } else {
                Ok(found)
            };
        }
        if probe.is_glob() {
            return Err(format!("{probe}: matches no tracepoint of this kernel"));
        }
        let close = closest(&probe.pattern, self.tracepoints.iter().map(String::as_str));
        Err(if close.is_empty() {
            format!("{probe}: no tracepoint {} in this kernel", probe.pattern)
        } else {
            format!(
                "{probe}: no tracepoint {} in this kernel; closest: {}",
                probe.pattern,
                close.join(", ")
            )
        })
    }
}

/// `available_filter_functions`: one function per line, maybe followed by ` [module]`;
/// `__ftrace_invalid_address___…` placeholders are skipped.
fn parse_filter_functions(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|f| !f.starts_with("__ftrace_invalid_address"))
        .map(str::to_string)
        .collect()
}

/// The blacklist's lines are `0xSTART-0xEND\tNAME`.
fn parse_blacklist(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// The names nearest to `name` by edit distance (a swap of two letters counts one),
/// at most [`SUGGESTIONS`], and only reasonably close ones.
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .collect();
    scored.sort();
    let mut seen = HashSet::new();
    scored
        .into_iter()
        .filter(|(_, c)| seen.insert(*c))
        .take(SUGGESTIONS)
        .map(|(_, c)| c.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list() -> ProbeList {
        ProbeList::from_texts(
            "6.1.0-test",
            Some((
                "test",
                "vfs_read\nvfs_readv\nvfs_write\nfilemap_fault\nfilemap_map_pages\nxfs_thing [xfs]\n__ftrace_invalid_address___64\n",
            )),
            "ffffffff81000000 T vfs_read\nffffffff81000100 t native_write_msr\nffffffff82000000 D jiffies\n",
            "0xffffffff81000000-0xffffffff81000010\tdo_int3\n",
        )
    }

    fn probe(s: &str) -> UserProbe {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_globs_resolve() {
        let k = list();
        assert!(k.probeable.contains("xfs_thing"));
        assert!(!k.probeable.iter().any(|f| f.starts_with("__ftrace")));
        assert!(
            !k.symbols.contains("jiffies"),
            "data symbols are not functions"
        );
        assert_eq!(k.resolve(&probe("kprobe:vfs_read")).unwrap(), ["vfs_read"]);
        assert_eq!(
            k.resolve(&probe("kretprobe:filemap_*")).unwrap(),
            ["filemap_fault", "filemap_map_pages"]
        );
    }

    #[test]
    fn what_cannot_be_probed_says_why() {
        let k = list();
        let e = k.resolve(&probe("kprobe:vfs_raed")).unwrap_err();
        assert!(
            e.ends_with("no function vfs_raed in this kernel; closest: vfs_read, vfs_readv"),
            "{e}"
        );
        let e = k.resolve(&probe("kprobe:native_write_msr")).unwrap_err();
        assert!(e.contains("exists but cannot be probed"), "{e}");
        let e = k.resolve(&probe("kprobe:do_int3")).unwrap_err();
        assert!(e.contains("blacklist"), "{e}");
        let e = k.resolve(&probe("kprobe:nothing_*")).unwrap_err();
        assert!(e.contains("matches no probeable function"), "{e}");
        let e = k.resolve(&probe("kprobe:qqqqqqqqqqqq")).unwrap_err();
        assert!(
            e.ends_with("no function qqqqqqqqqqqq in this kernel"),
            "{e}"
        );
    }

    #[test]
    fn fentry_needs_a_btf_prototype_not_the_kprobe_blacklist() {
        let mut k = list();
        k.blacklisted.insert("vfs_write".into());
        // BTF unknown: every probeable function is a candidate; the attach decides.
        assert_eq!(
            k.resolve(&probe("fentry:vfs_write")).unwrap(),
            ["vfs_write"]
        );
        k.btf_functions = ["vfs_read", "vfs_write", "filemap_fault"]
            .map(String::from)
            .into();
        assert_eq!(
            k.resolve(&probe("fentry:vfs_write")).unwrap(),
            ["vfs_write"]
        );
        assert!(k.resolve(&probe("kprobe:vfs_write")).is_err());
        assert_eq!(
            k.resolve(&probe("fentry:filemap_*")).unwrap(),
            ["filemap_fault"]
        );
        assert!(k.takes_fentry("vfs_read") && !k.takes_fentry("filemap_map_pages"));
        let e = k.resolve(&probe("fentry:filemap_map_pages")).unwrap_err();
        assert!(
            e.contains("no BTF prototype") && e.contains("kprobe:filemap_map_pages probes it"),
            "{e}"
        );
        let e = k.resolve(&probe("fentry:vfs_raed")).unwrap_err();
        assert!(e.contains("closest: vfs_read"), "{e}");
    }

    #[test]
    fn tracepoints_resolve_with_suggestions() {
        let k = list()
            .with_tracepoints("sched:sched_switch\nsched:sched_wakeup\nirq:irq_handler_entry\n");
        assert_eq!(
            k.resolve(&probe("tracepoint:sched:*")).unwrap(),
            ["sched:sched_switch", "sched:sched_wakeup"]
        );
        let e = k
            .resolve(&probe("tracepoint:sched:sched_swtich"))
            .unwrap_err();
        assert!(
            e.contains(
                "no tracepoint sched:sched_swtich in this kernel; closest: sched:sched_switch"
            ),
            "{e}"
        );
        let e = k.resolve(&probe("tracepoint:nope:*")).unwrap_err();
        assert!(e.contains("matches no tracepoint"), "{e}");
    }

    #[test]
    fn the_list_round_trips_through_json() {
        let k = list();
        let text = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<ProbeList>(&text).unwrap(), k);
    }
}
