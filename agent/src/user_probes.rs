//! Attaching the probes the user named (`--probe kprobe:FUNC`): each name or glob is
//! resolved against what the running kernel offers ([`ProbeList`]) and attached with
//! the one `user_kprobe` (or `user_kretprobe`) program. A name that does not resolve
//! refuses the run with a reason that names what is valid nearby, before any
//! workload runs.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    programs::{KProbe, TracePoint},
};
use guestscope_common::{
    ProbeKind,
    probe_list::{AVAILABLE_EVENTS, BLACKLIST, FILTER_FUNCTIONS, ProbeList},
    user_probe::{MAX_TRACEPOINTS, UserProbe},
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
    let events = AVAILABLE_EVENTS
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let list = ProbeList::from_texts(
        release.trim(),
        filter.as_ref().map(|(p, t)| (*p, t.as_str())),
        &kallsyms,
        &blacklist,
    )
    .with_tracepoints(&events);
    tracing::info!(
        probeable = list.probeable.len(),
        source = %list.source,
        symbols = list.symbols.len(),
        blacklisted = list.blacklisted.len(),
        "kernel functions"
    );
    list
}

/// What [`attach`] attached.
#[derive(Debug, Default)]
pub struct UserAttached {
    /// One record per probe kind used (`kprobe`, `kretprobe`, `tracepoint`).
    pub records: Vec<ProbeAttach>,
    /// The tracepoints by slot (the `flags` of their events), for the host to name them.
    pub tracepoint_slots: BTreeMap<u32, String>,
}

/// Attaches every probe in `probes`; what was attached, or the reasons the run cannot
/// go on (one per probe that did not resolve or attach).
pub fn attach(
    ebpf: &mut Ebpf,
    probes: &[UserProbe],
    kernel: &ProbeList,
) -> Result<UserAttached, Vec<String>> {
    let mut errors = Vec::new();
    let mut by_kind: BTreeMap<ProbeKind, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for probe in probes {
        match kernel.resolve(probe) {
            Ok(functions) => {
                let (targets, notes) = by_kind.entry(probe.kind).or_default();
                let what = if probe.kind == ProbeKind::Tracepoint {
                    "tracepoint(s)"
                } else {
                    "function(s)"
                };
                notes.push(format!("{probe}: {} {what}", functions.len()));
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
    let mut attached = UserAttached::default();
    for (kind, (targets, notes)) in by_kind {
        match attach_program(ebpf, kind, &targets) {
            Ok(()) => {
                tracing::info!(probe = kind.name(), functions = targets.len(), "attached");
                if kind == ProbeKind::Tracepoint {
                    // Slot i holds the i-th tracepoint (see `attach_program`).
                    attached.tracepoint_slots = (0u32..).zip(targets.iter().cloned()).collect();
                }
                attached.records.push(ProbeAttach {
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
        Ok(attached)
    } else {
        Err(errors)
    }
}

/// The eBPF program of a user probe kind (tracepoints: see [`TRACEPOINT_PROGRAMS`]).
pub fn program(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::Kretprobe => "user_kretprobe",
        _ => "user_kprobe",
    }
}

/// The tracepoint programs, one per slot: the slot is each event's `flags`.
pub const TRACEPOINT_PROGRAMS: [&str; MAX_TRACEPOINTS] = [
    "user_tracepoint_0",
    "user_tracepoint_1",
    "user_tracepoint_2",
    "user_tracepoint_3",
    "user_tracepoint_4",
    "user_tracepoint_5",
    "user_tracepoint_6",
    "user_tracepoint_7",
];

fn attach_program(ebpf: &mut Ebpf, kind: ProbeKind, targets: &[String]) -> Result<(), String> {
    let failed =
        |what: &str, e: &dyn std::error::Error| format!("{}:{what}: {}", kind.name(), chain(e));
    let missing = |program: &str| format!("program {program} is missing from the eBPF object");
    if kind == ProbeKind::Tracepoint {
        if targets.len() > MAX_TRACEPOINTS {
            return Err(format!(
                "tracepoint: {} tracepoints asked for; a run can probe {MAX_TRACEPOINTS}",
                targets.len()
            ));
        }
        // Slot i gets the i-th tracepoint (the order `attach` names them to the host in).
        for (t, program) in targets.iter().zip(TRACEPOINT_PROGRAMS) {
            let (category, name) = t.split_once(':').unwrap_or((t, ""));
            let prog: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| missing(program))?
                .try_into()
                .map_err(|e| failed(program, &e))?;
            prog.load().map_err(|e| failed(program, &e))?;
            prog.attach(category, name).map_err(|e| failed(t, &e))?;
        }
        return Ok(());
    }
    let program = program(kind);
    let prog: &mut KProbe = ebpf
        .program_mut(program)
        .ok_or_else(|| missing(program))?
        .try_into()
        .map_err(|e| failed(program, &e))?;
    prog.load().map_err(|e| failed(program, &e))?;
    for f in targets {
        prog.attach(f, 0).map_err(|e| failed(f, &e))?;
    }
    Ok(())
}
