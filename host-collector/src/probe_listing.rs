//! `guestscope probes [PATTERN]`: what `--probe` can attach to, as `bpftrace -l` lists
//! it: one `TYPE:NAME` line per probe the pattern matches, so the output can be pasted
//! back into `--probe`. A bare pattern (`vfs_*`) lists every type that takes the
//! function; `fentry:vfs_*` only fentry; `sched:*` or `tracepoint:sched:*` tracepoints.

use guestscope_common::ProbeKind;
use guestscope_common::probe_list::ProbeList;
use guestscope_common::user_probe::{UserProbe, UserProbeError};

/// A parsed `guestscope probes` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The pattern as given.
    pub pattern: String,
    /// The probe type asked for, if the pattern named one.
    pub only: Option<ProbeKind>,
    /// The pattern as a probe (its kind is `only`, else kprobe or tracepoint).
    probe: UserProbe,
}

/// What a query lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// One `TYPE:NAME` line per probe.
    pub lines: Vec<String>,
    /// What the lines leave out, and where they came from (for stderr).
    pub notes: Vec<String>,
}

impl Query {
    /// Reads `pattern`: `[TYPE:]GLOB` for functions, `[tracepoint:]CATEGORY:GLOB`.
    pub fn parse(pattern: &str) -> Result<Query, UserProbeError> {
        let typed = pattern
            .split_once(':')
            .and_then(|(kind, bare)| Some((ProbeKind::user_from_name(kind)?, bare)));
        let (only, bare) = match typed {
            Some((kind, bare)) => (Some(kind), bare),
            None => (None, pattern),
        };
        // CATEGORY:NAME asks for tracepoints, anything else for functions.
        let kind = match only {
            Some(k) => k,
            None if bare.contains(':') => ProbeKind::Tracepoint,
            None => ProbeKind::Kprobe,
        };
        let probe: UserProbe = format!("{}:{bare}", kind.name()).parse()?;
        Ok(Query {
            pattern: pattern.to_string(),
            only: only.or((kind == ProbeKind::Tracepoint).then_some(kind)),
            probe,
        })
    }

    /// The probes of `list` this query matches.
    pub fn list(&self, list: &ProbeList) -> Listing {
        let pattern = &self.pattern;
        let mut out = Listing::default();
        if self.only == Some(ProbeKind::Tracepoint) {
            out.lines = list
                .tracepoints
                .iter()
                .filter(|t| self.probe.matches(t))
                .map(|t| format!("tracepoint:{t}"))
                .collect();
            out.notes.push(format!(
                "{} tracepoints of kernel {} match {pattern:?}",
                out.lines.len(),
                list.release
            ));
            return out;
        }
        let wants = |k: ProbeKind| self.only.is_none_or(|o| o == k);
        let btf_known = !list.btf_functions.is_empty();
        let (mut functions, mut fentry) = (0usize, 0usize);
        for f in list.probeable.iter().filter(|f| self.probe.matches(f)) {
            functions += 1;
            if btf_known && list.takes_fentry(f) {
                fentry += 1;
                if wants(ProbeKind::Fentry) {
                    out.lines.push(format!("fentry:{f}"));
                }
            }
            if list.blacklisted.contains(f) {
                continue;
            }
            for kind in [ProbeKind::Kprobe, ProbeKind::Kretprobe] {
                // A bare pattern lists kprobe: alone; every kprobe also takes kretprobe:.
                if self.only == Some(kind) || (self.only.is_none() && kind == ProbeKind::Kprobe) {
                    out.lines.push(format!("{}:{f}", kind.name()));
                }
            }
        }
        let fentry_note = if btf_known {
            format!("{fentry} take fentry:")
        } else {
            "fentry: not known for this cache entry, --refresh to list it".to_string()
        };
        out.notes.push(format!(
            "{functions} functions of kernel {} match {pattern:?} ({fentry_note}; all but the blacklisted take kprobe: and kretprobe:; from {})",
            list.release, list.source
        ));
        // The blacklist holds functions ftrace does not list too (notrace entry code).
        let blacklisted: Vec<&str> = list
            .blacklisted
            .iter()
            .filter(|f| self.probe.matches(f))
            .map(String::as_str)
            .collect();
        match blacklisted.len() {
            0 => {}
            n if n <= 20 => out.notes.push(format!(
                "on the kprobe blacklist (no kprobe: line): {}",
                blacklisted.join(", ")
            )),
            n => out.notes.push(format!(
                "{n} matching functions are on the kprobe blacklist (no kprobe: line)"
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel() -> ProbeList {
        let mut list = ProbeList::from_texts(
            "6.1.0-test",
            Some(("test", "vfs_read\nvfs_write\ndo_int3\n")),
            "",
            "0xffffffff81000000-0xffffffff81000010\tdo_int3\n",
        )
        .with_tracepoints("sched:sched_switch\nirq:irq_handler_entry\n");
        list.btf_functions = ["vfs_read", "do_int3"].map(String::from).into();
        list.blacklisted.insert("exc_page_fault".into());
        list
    }

    fn lines(pattern: &str) -> Vec<String> {
        Query::parse(pattern).unwrap().list(&kernel()).lines
    }

    #[test]
    fn a_bare_pattern_lists_every_type_that_takes_the_function() {
        assert_eq!(
            lines("*"),
            [
                "fentry:do_int3",
                "fentry:vfs_read",
                "kprobe:vfs_read",
                "kprobe:vfs_write"
            ]
        );
        let listing = Query::parse("vfs_*").unwrap().list(&kernel());
        assert!(
            listing.notes[0].starts_with("2 functions"),
            "{:?}",
            listing.notes
        );
        assert!(
            listing.notes[0].contains("1 take fentry:"),
            "{:?}",
            listing.notes
        );
    }

    #[test]
    fn a_typed_pattern_lists_that_type_only() {
        assert_eq!(lines("fentry:*"), ["fentry:do_int3", "fentry:vfs_read"]);
        assert_eq!(lines("kretprobe:vfs_w*"), ["kretprobe:vfs_write"]);
        assert_eq!(lines("sched:*"), ["tracepoint:sched:sched_switch"]);
        assert_eq!(
            lines("tracepoint:irq:*"),
            ["tracepoint:irq:irq_handler_entry"]
        );
        let listing = Query::parse("do_*").unwrap().list(&kernel());
        assert!(
            listing
                .notes
                .iter()
                .any(|n| n.contains("blacklist (no kprobe: line): do_int3"))
        );
        // Blacklisted functions ftrace does not list are named too.
        let listing = Query::parse("exc_*").unwrap().list(&kernel());
        assert!(listing.lines.is_empty());
        assert!(
            listing
                .notes
                .iter()
                .any(|n| n.contains("blacklist (no kprobe: line): exc_page_fault")),
            "{:?}",
            listing.notes
        );
    }

    #[test]
    fn without_btf_names_fentry_is_not_guessed() {
        let mut list = kernel();
        list.btf_functions.clear();
        let listing = Query::parse("*").unwrap().list(&list);
        assert!(listing.lines.iter().all(|l| !l.starts_with("fentry:")));
        assert!(
            listing.notes[0].contains("--refresh"),
            "{:?}",
            listing.notes
        );
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(Query::parse("vfs-read").is_err());
        assert!(Query::parse("nope:a:b:c").is_err());
    }
}
