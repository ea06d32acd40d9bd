//! Attaching the probes the user named (`--probe kprobe:FUNC`): each name or glob is
//! resolved against what the running kernel offers ([`ProbeList`]) and attached with
//! the one `user_kprobe` (or `user_kretprobe`) program. A name that does not resolve
//! refuses the run with a reason that names what is valid nearby, before any
//! workload runs.

use std::collections::BTreeMap;

use aya::{Ebpf, programs::KProbe};
use guestscope_common::{
    ProbeKind,
    probe_list::{BLACKLIST, FILTER_FUNCTIONS, ProbeList},
    user_probe::UserProbe,
    wire::ProbeAttach,
};

use crate::probes::chain;

/// Reads what the running kernel offers for probing.
pub fn read_probe_list() -> ProbeList {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let filter = FILTER_FUNCTIONS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok().map(|t| (*p, t)));
    let blacklist = std::fs::read_to_string(BLACKLIST).unwrap_or_else(|e| {
        tracing::warn!("{BLACKLIST}: {e}; the attach alone decides what is refused");
        String::new()
    });
    let list = ProbeList::from_texts(
        release.trim(),
        filter.as_ref().map(|(p, t)| (*p, t.as_str())),
        &kallsyms,
        &blacklist,
    );
    tracing::info!(
        probeable = list.probeable.len(),
        source = %list.source,
        symbols = list.symbols.len(),
        blacklisted = list.blacklisted.len(),
        "kernel functions"
    );
    list
}

/// Attaches every probe in `probes`; returns one [`ProbeAttach`] per probe kind used
/// (`kprobe`, `kretprobe`), or the reasons the run cannot go on (one per probe that
/// did not resolve or attach).
pub fn attach(
    ebpf: &mut Ebpf,
    probes: &[UserProbe],
    kernel: &ProbeList,
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
