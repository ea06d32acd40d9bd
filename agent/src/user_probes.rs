//! Attaching the probes the user named (`--probe kprobe:FUNC`): each name or glob is
//! expanded against the functions the kernel lets kprobes attach to, checked against
//! the kprobe blacklist, and attached with the one `user_kprobe` (or `user_kretprobe`)
//! program. A name that does not resolve refuses the run with a reason that names
//! what is valid nearby, before any workload runs.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use aya::{Ebpf, programs::KProbe};
use guestscope_common::{
    ProbeKind,
    user_probe::{MAX_GLOB_FUNCTIONS, UserProbe},
    wire::ProbeAttach,
};

use crate::probes::chain;

/// Where the kernel lists the functions ftrace (and so a kprobe at entry) can use.
const FILTER_FUNCTIONS: &[&str] = &[
    "/sys/kernel/tracing/available_filter_functions",
    "/sys/kernel/debug/tracing/available_filter_functions",
];
/// The kernel's kprobe blacklist (debugfs).
const BLACKLIST: &str = "/sys/kernel/debug/kprobes/blacklist";
/// Close names offered for a function that does not exist.
const SUGGESTIONS: usize = 5;

/// What the guest kernel offers for probing.
#[derive(Debug, Default)]
pub struct KernelFunctions {
    /// Functions a kprobe can attach to, sorted.
    pub probeable: BTreeSet<String>,
    /// Every text symbol of `/proc/kallsyms` (to tell "inlined or notrace" from "absent").
    pub symbols: HashSet<String>,
    /// Functions on the kprobe blacklist.
    pub blacklisted: HashSet<String>,
    /// Where `probeable` came from.
    pub source: &'static str,
}

impl KernelFunctions {
    /// Reads the running kernel's lists.
    pub fn read() -> KernelFunctions {
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let symbols: HashSet<String> = kallsyms
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (_, kind, name) = (w.next()?, w.next()?, w.next()?);
                matches!(kind, "t" | "T").then(|| name.to_string())
            })
            .collect();
        let filter = FILTER_FUNCTIONS
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok().map(|t| (*p, t)));
        let (source, probeable) = match filter {
            Some((path, text)) => (path, parse_filter_functions(&text)),
            // No tracefs: every text symbol is a candidate, the attach decides.
            None => ("/proc/kallsyms", symbols.iter().cloned().collect()),
        };
        let blacklisted = match std::fs::read_to_string(BLACKLIST) {
            Ok(text) => parse_blacklist(&text),
            Err(e) => {
                tracing::warn!("{BLACKLIST}: {e}; the attach alone decides what is refused");
                HashSet::new()
            }
        };
        tracing::info!(
            probeable = probeable.len(),
            source,
            symbols = symbols.len(),
            blacklisted = blacklisted.len(),
            "kernel functions"
        );
        KernelFunctions {
            probeable,
            symbols,
            blacklisted,
            source,
        }
    }

    /// The functions `probe` asks for, or why it cannot be attached.
    pub fn resolve(&self, probe: &UserProbe) -> Result<Vec<String>, String> {
        if !probe.is_glob() {
            let name = &probe.pattern;
            if self.blacklisted.contains(name) {
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
            .filter(|f| probe.matches(f) && !self.blacklisted.contains(*f))
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
fn parse_blacklist(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// The names nearest to `name` by edit distance (a swap of two letters counts one) (at most [`SUGGESTIONS`], and only
/// reasonably close ones).
fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Vec<String> {
    let limit = (name.len() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = candidates
        .map(|c| (strsim::osa_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Attaches every probe in `probes`; returns one [`ProbeAttach`] per probe kind used
/// (`kprobe`, `kretprobe`), or the reasons the run cannot go on (one per probe that
/// did not resolve or attach).
pub fn attach(
    ebpf: &mut Ebpf,
    probes: &[UserProbe],
    kernel: &KernelFunctions,
) -> Result<Vec<ProbeAttach>, Vec<String>> {
    let mut errors = Vec::new();
    let mut by_kind: BTreeMap<ProbeKind, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for probe in probes {
        match kernel.resolve(probe) {
            Ok(functions) => {
                let (targets, notes) = by_kind.entry(probe.kind).or_default();
                notes.push(format!("{probe}: {} function(s)", functions.len()));
                for f in functions {
                    if !targets.contains(&f) {
                        targets.push(f);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut records = Vec::new();
    for (kind, (targets, notes)) in by_kind {
        let program = program(kind);
        match attach_program(ebpf, program, &targets) {
            Ok(()) => {
                tracing::info!(probe = kind.name(), functions = targets.len(), "attached");
                records.push(ProbeAttach {
                    probe: kind.name().into(),
                    target: targets.join(", "),
                    method: kind.name().into(),
                    note: notes.join("; "),
                    attached: true,
                });
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(records)
    } else {
        Err(errors)
    }
}

/// The eBPF program of a user probe kind.
pub fn program(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Kretprobe => "user_kretprobe",
        _ => "user_kprobe",
    }
}

fn attach_program(
    ebpf: &mut Ebpf,
    program: &'static str,
    functions: &[String],
) -> Result<(), String> {
    let prog: &mut KProbe = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("{program}: {}", chain(&e)))?;
    prog.load()
        .map_err(|e| format!("{program}: {}", chain(&e)))?;
    for f in functions {
        if let Err(e) = prog.attach(f, 0) {
            return Err(format!(
                "{}:{f}: {}",
                if program == "user_kretprobe" {
                    "kretprobe"
                } else {
                    "kprobe"
                },
                chain(&e)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> KernelFunctions {
        KernelFunctions {
            probeable: parse_filter_functions(
                "vfs_read\nvfs_readv\nvfs_write\nfilemap_fault\nfilemap_map_pages\nxfs_thing [xfs]\n__ftrace_invalid_address___64\n",
            ),
            symbols: [
                "vfs_read",
                "vfs_readv",
                "vfs_write",
                "filemap_fault",
                "filemap_map_pages",
                "native_write_msr",
            ]
            .map(String::from)
            .into(),
            blacklisted: parse_blacklist("0xffffffff81000000-0xffffffff81000010\tdo_int3\n"),
            source: "test",
        }
    }

    fn probe(s: &str) -> UserProbe {
        s.parse().unwrap()
    }

    #[test]
    fn names_and_globs_resolve() {
        let k = kernel();
        assert!(k.probeable.contains("xfs_thing"));
        assert!(!k.probeable.iter().any(|f| f.starts_with("__ftrace")));
        assert_eq!(k.resolve(&probe("kprobe:vfs_read")).unwrap(), ["vfs_read"]);
        assert_eq!(
            k.resolve(&probe("kretprobe:filemap_*")).unwrap(),
            ["filemap_fault", "filemap_map_pages"]
        );
    }

    #[test]
    fn what_cannot_be_probed_says_why() {
        let k = kernel();
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
}
