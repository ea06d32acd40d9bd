//! Attaching the probes the user named (`--probe kprobe:FUNC`, `fentry:FUNC`): each
//! name or glob is resolved against what the running kernel offers ([`ProbeList`]) and
//! attached with the one `user_kprobe` (or `user_kretprobe`) program, or, for fentry,
//! `user_fentry` loaded once per function (fentry binds to its function at load; the
//! links keep each load alive). A name that does not resolve refuses the run with a
//! reason that names what is valid nearby, before any workload runs.

use std::collections::BTreeMap;

use aya::{
    Btf, Ebpf,
    programs::{FEntry, KProbe, TracePoint, fentry::FEntryLink},
};
use guestscope_common::{
    ProbeKind,
    probe_list::{AVAILABLE_EVENTS, BLACKLIST, FILTER_FUNCTIONS, ProbeList},
    user_probe::{MAX_TRACEPOINTS, UserProbe},
    wire::ProbeAttach,
};

use crate::probes::{FENTRY_PROGRAM, ProbeError, TRACEPOINT_PROGRAMS, chain};

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
    /// The fentry attachments: each holds its load of `user_fentry`; dropping one
    /// detaches it.
    pub fentry_links: Vec<FEntryLink>,
}

/// One function (or tracepoint) to attach a probe kind to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    /// The function, or `CATEGORY:NAME`.
    name: String,
    /// Bytes into the function (kprobes only).
    offset: u64,
    /// Whether a glob asked for it (a glob skips the functions that refuse the
    /// attach; a name the user spelled out refuses the run).
    from_glob: bool,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            0 => write!(f, "{}", self.name),
            off => write!(f, "{}+{off}", self.name),
        }
    }
}

/// Attaches every probe in `probes`; what was attached, or the reasons the run cannot
/// go on (one per probe that did not resolve or attach).
/// `btf` is the kernel's ([`crate::probes::kernel_btf`]), for fentry.
pub fn attach(
    ebpf: &mut Ebpf,
    probes: &[UserProbe],
    kernel: &ProbeList,
    btf: Result<&Btf, &ProbeError>,
) -> Result<UserAttached, Vec<String>> {
    let mut errors = Vec::new();
    let mut by_kind: BTreeMap<ProbeKind, (Vec<Target>, Vec<String>)> = BTreeMap::new();
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
                for name in functions {
                    let target = Target {
                        name,
                        offset: probe.offset,
                        from_glob: probe.is_glob(),
                    };
                    if !targets
                        .iter()
                        .any(|t| t.name == target.name && t.offset == target.offset)
                    {
                        targets.push(target);
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    // The names that resolved are attached even when others did not, so one refusal
    // lists every problem (a bad offset shows only at the attach).
    let mut attached = UserAttached::default();
    for (kind, (targets, mut notes)) in by_kind {
        let result = if kind == ProbeKind::Fentry {
            attach_fentry(ebpf, &targets, btf).map(|(links, skipped)| {
                attached.fentry_links = links;
                skipped
            })
        } else {
            attach_program(ebpf, kind, &targets).map(|()| Vec::new())
        };
        match result {
            Ok(skipped) => {
                let targets: Vec<&Target> = targets
                    .iter()
                    .filter(|t| !skipped.iter().any(|(s, _)| s == &t.name))
                    .collect();
                tracing::info!(probe = kind.name(), functions = targets.len(), "attached");
                if kind == ProbeKind::Tracepoint {
                    // Slot i holds the i-th tracepoint (see `attach_program`).
                    attached.tracepoint_slots = (0u32..)
                        .zip(targets.iter().map(|t| t.name.clone()))
                        .collect();
                }
                if let Some((first, why)) = skipped.first() {
                    notes.push(format!(
                        "{} function(s) of a glob refused {} and were skipped, e.g. {first}: {why}",
                        skipped.len(),
                        kind.name()
                    ));
                }
                let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
                attached.records.push(ProbeAttach {
                    probe: kind.name().into(),
                    target: names.join(", "),
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
        ProbeKind::Fentry => FENTRY_PROGRAM,
        _ => "user_kprobe",
    }
}

/// Functions of a glob that refused a probe, each with the reason.
type Skipped = Vec<(String, String)>;

/// Loads `user_fentry` once per target, attaches it and keeps the link, so the program
/// can be loaded again for the next function. The links, and the functions of a glob
/// that refused (no BTF prototype, on the kernel's BPF deny list) with the reason; a
/// function named outright that refuses fails the whole attach.
fn attach_fentry(
    ebpf: &mut Ebpf,
    targets: &[Target],
    btf: Result<&Btf, &ProbeError>,
) -> Result<(Vec<FEntryLink>, Skipped), String> {
    let btf =
        btf.map_err(|e| format!("fentry: the kernel's BTF, which fentry needs: {}", chain(e)))?;
    let prog: &mut FEntry = ebpf
        .program_mut(FENTRY_PROGRAM)
        .ok_or_else(|| format!("program {FENTRY_PROGRAM} is missing from the eBPF object"))?
        .try_into()
        .map_err(|e| format!("fentry: {}", chain(&e)))?;
    let mut links = Vec::with_capacity(targets.len());
    let mut skipped = Vec::new();
    for target in targets {
        let attached = prog
            .load(&target.name, btf)
            .and_then(|()| prog.attach())
            .and_then(|id| prog.take_link(id));
        // Unloading drops only the program's own fd: a taken link holds the load.
        if let Err(e) = prog.unload() {
            tracing::debug!("fentry:{}: unload: {}", target.name, chain(&e));
        }
        match attached {
            Ok(link) => links.push(link),
            Err(e) if target.from_glob => skipped.push((target.name.clone(), chain(&e))),
            Err(e) => return Err(format!("fentry:{}: {}", target.name, chain(&e))),
        }
    }
    if links.is_empty() {
        let why = skipped
            .first()
            .map_or(String::new(), |(f, why)| format!(" ({f}: {why})"));
        return Err(format!("fentry: no function of the glob took fentry{why}"));
    }
    Ok((links, skipped))
}

fn attach_program(ebpf: &mut Ebpf, kind: ProbeKind, targets: &[Target]) -> Result<(), String> {
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
            let t = &t.name;
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
    for t in targets {
        prog.attach(&t.name, t.offset)
            .map_err(|e| match os_error(&e) {
                Some(libc::EILSEQ) => format!(
                    "{}:{t}: offset {} is not the start of an instruction of {}",
                    kind.name(),
                    t.offset,
                    t.name
                ),
                _ => failed(&t.to_string(), &e),
            })?;
    }
    Ok(())
}

/// The first OS error number in `err`'s chain of sources.
fn os_error(err: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        next = e.source();
    }
    None
}
