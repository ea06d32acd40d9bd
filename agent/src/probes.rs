//! Loading the embedded eBPF object and attaching its programs.
//!
//! Attaching never fails the run: every probe gets a [`ProbeAttach`] record saying how it
//! was attached or why it was not. A tracepoint must be in tracefs before its attach;
//! a function whose attach failed is looked up in `/proc/kallsyms`, so a kernel
//! without it gets a plain reason. `_raw_spin_lock` and `alloc_fd` are tried as fentry
//! first (cheap BTF trampoline) and fall back to a kprobe; setting [`NO_FENTRY_ENV`]`=1` skips fentry
//! (for kernels where it misbehaves, and to exercise the fallback).
//!
//! Tracepoints need tracefs mounted at `/sys/kernel/tracing` (or debugfs at
//! `/sys/kernel/debug`); the guest's init mounts it.

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, MapData, MapError, PerCpuArray, RingBuf},
};
use guestscope_common::{
    ProbeCounters, ProbeKind, STACK_CACHE_ENTRIES,
    maps::{self as names, PID_MAX_LIMIT},
    wire::ProbeAttach,
};

pub use crate::probe_error::{ProbeError, chain};
use crate::probe_error::{first_line, truncate_note};
use crate::probe_links::{Links, fentry, kprobe, tracepoint};
use crate::{
    mapped_array::MappedArrayError, staging::Staging, tally_map::TallyMap, traced_set::TracedSet,
};

/// The eBPF object built from `probes-ebpf/` by the build script.
pub(crate) static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/guestscope-probes"));

/// Kernel function the spin-lock probes attach to.
pub const SPIN_LOCK_FN: &str = "_raw_spin_lock";
/// Kernel function the fd probe attaches to.
pub const ALLOC_FD_FN: &str = "alloc_fd";
/// Environment variable that, set to `1`, makes the spin-lock probe skip fentry.
pub const NO_FENTRY_ENV: &str = "GUESTSCOPE_NO_FENTRY";
/// The maps the agent reads and writes.
pub struct Maps {
    /// `EVENTS`: probe events with their kernel stacks.
    pub events: RingBuf<MapData>,
    /// `TRACED_TGIDS`: the processes under study, mapped.
    pub traced: TracedSet,
    /// `COUNTERS`: per-CPU, per-probe outcome counters.
    pub counters: PerCpuArray<MapData, ProbeCounters>,
    /// `SETTINGS`: switches for the probes.
    pub settings: Array<MapData, u32>,
    /// `TALLIES`: hits counted per CPU and stack-cache entry, with no record, mapped.
    pub tallies: TallyMap,
}

/// The loaded object (its programs stay attached while it lives) and its maps.
pub struct Loaded {
    /// The object.
    pub ebpf: Ebpf,
    /// Its maps, taken out of it.
    pub maps: Maps,
    /// Which built-in programs are attached.
    pub links: Links,
    /// The program that writes out the probes' staged hits; `None` if it could not be
    /// loaded (the probes then write every cached hit on its own).
    pub staging: Option<Staging>,
}

/// Loads the embedded object and takes its maps. No program is attached yet.
pub fn load() -> Result<Loaded, ProbeError> {
    load_with(None)
}

/// Like [`load`], with the `EVENTS` ring buffer resized to `events_bytes` when given
/// (a power of two of at least a page; the plan's `events_bytes`).
pub fn load_with(events_bytes: Option<u32>) -> Result<Loaded, ProbeError> {
    if OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    raise_memlock_limit();
    // Before the loader: it freezes the read-only globals when it makes their map.
    let comm_offset = crate::comm_offset::task_comm_offset();
    let mut loader = EbpfLoader::new();
    loader.override_global(names::TASK_COMM_OFFSET, &comm_offset, true);
    if let Some(bytes) = events_bytes {
        loader.map_max_entries(names::EVENTS, bytes);
    }
    // One row of entries per possible CPU (the probes index it by CPU).
    let cpus = aya::util::nr_cpus()
        .unwrap_or(crate::stacks::MAX_CPUS)
        .max(1) as u32;
    loader.map_max_entries(names::TALLIES, cpus * STACK_CACHE_ENTRIES);
    // Every pid the kernel may hand out (one byte each).
    loader.map_max_entries(names::TRACED_TGIDS, names::traced_words(pid_limit()));
    let started = std::time::Instant::now();
    let mut ebpf = loader.load(OBJECT).map_err(ProbeError::Load)?;
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "object loaded (maps made, kernel BTF parsed by the loader)"
    );
    let maps = Maps {
        events: take(&mut ebpf, names::EVENTS)?,
        traced: take_mapped(&mut ebpf, names::TRACED_TGIDS, TracedSet::new)?,
        counters: take(&mut ebpf, names::COUNTERS)?,
        settings: take(&mut ebpf, names::SETTINGS)?,
        tallies: take_mapped(&mut ebpf, names::TALLIES, TallyMap::new)?,
    };
    let staging = Staging::load(&mut ebpf)
        .inspect_err(|e| tracing::warn!("cached hits are written one by one: {e}"))
        .ok();
    Ok(Loaded {
        ebpf,
        maps,
        links: Links::default(),
        staging,
    })
}

/// Map `name`, mapped into the agent's memory by `map_it`.
fn take_mapped<M>(
    ebpf: &mut Ebpf,
    name: &'static str,
    map_it: impl FnOnce(aya::maps::Map) -> Result<M, MappedArrayError>,
) -> Result<M, ProbeError> {
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    map_it(map).map_err(|source| ProbeError::Mapped { name, source })
}

/// The kernel's `pid_max` (the largest pid plus one), bounded by [`PID_MAX_LIMIT`];
/// [`PID_MAX_LIMIT`] if it cannot be read.
fn pid_limit() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(PID_MAX_LIMIT, |n| n.min(PID_MAX_LIMIT))
}

fn take<M>(ebpf: &mut Ebpf, name: &'static str) -> Result<M, ProbeError>
where
    M: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))?;
    M::try_from(map).map_err(|source| ProbeError::Map { name, source })
}

/// Kernels before 5.11 charge eBPF maps to RLIMIT_MEMLOCK; lift it (harmless later).
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The running kernel's BTF (for fentry), or why there is none.
pub fn kernel_btf() -> Result<Btf, ProbeError> {
    let started = std::time::Instant::now();
    let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Btf(e.to_string()));
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        "kernel BTF parsed"
    );
    btf
}

/// Attaches the probes in `selected` and reports every probe kind, selected or not.
/// `btf` is the kernel's ([`kernel_btf`]), for fentry.
pub fn attach_all(
    ebpf: &mut Ebpf,
    links: &mut Links,
    selected: &[ProbeKind],
    btf: Result<&Btf, &ProbeError>,
) -> Vec<ProbeAttach> {
    // Read only when an attach fails, to say plainly why: the text is 10 MB and takes
    // 0.2 s to make under TCG, which every boot paid before the first probe loaded.
    let mut kallsyms: Option<Option<String>> = None;
    ProbeKind::BUILTIN
        .into_iter()
        .map(|kind| {
            if !selected.contains(&kind) {
                return ProbeAttach {
                    probe: kind.name().into(),
                    target: target(kind).into(),
                    method: String::new(),
                    note: "not requested by the plan".into(),
                    attached: false,
                };
            }
            let refused = |e: ProbeError| ProbeAttach {
                probe: kind.name().into(),
                target: target(kind).into(),
                method: String::new(),
                note: chain(&e),
                attached: false,
            };
            // Without kallsyms text, only the tracepoints are checked before the attach.
            let record = match precheck(kind, None) {
                Err(e) => refused(e),
                Ok(()) => {
                    let record = attach_one(ebpf, links, kind, btf);
                    let text = if record.attached {
                        None
                    } else {
                        kallsyms
                            .get_or_insert_with(|| std::fs::read_to_string("/proc/kallsyms").ok())
                            .as_deref()
                    };
                    match text.map(|t| precheck(kind, Some(t))) {
                        Some(Err(e)) => refused(e),
                        _ => record,
                    }
                }
            };
            if record.attached {
                tracing::info!(probe = %record.probe, method = %record.method, target = %record.target, "attached");
            } else {
                tracing::warn!(probe = %record.probe, "not attached: {}", first_line(&record.note));
            }
            record
        })
        .collect()
}

/// Attaches the fork follower (children of traced processes are traced too).
pub fn attach_fork_follower(ebpf: &mut Ebpf, links: &mut Links) -> Result<(), ProbeError> {
    tracepoint(ebpf, links, FORK_FOLLOWER, "sched", "sched_process_fork")
}

/// The kernel symbol or tracepoint a probe kind attaches to.
pub fn target(kind: ProbeKind) -> &'static str {
    match kind {
        ProbeKind::SpinLock => SPIN_LOCK_FN,
        ProbeKind::AllocFd => ALLOC_FD_FN,
        ProbeKind::PageFaultUser => "exceptions:page_fault_user",
        ProbeKind::PageFaultKernel => "exceptions:page_fault_kernel",
        ProbeKind::Kprobe | ProbeKind::Kretprobe | ProbeKind::Fentry => {
            "the functions --probe named"
        }
        ProbeKind::Tracepoint => "the tracepoints --probe named",
    }
}

/// Checks that the kernel has what `kind` attaches to, so a missing function or
/// tracepoint gets a plain reason instead of a perf or verifier error.
fn precheck(kind: ProbeKind, kallsyms: Option<&str>) -> Result<(), ProbeError> {
    match kind {
        ProbeKind::SpinLock | ProbeKind::AllocFd => match kallsyms {
            Some(text) if !has_symbol(text, target(kind)) => {
                Err(ProbeError::NoSymbol(target(kind).into()))
            }
            _ => Ok(()),
        },
        ProbeKind::Kprobe | ProbeKind::Kretprobe | ProbeKind::Tracepoint | ProbeKind::Fentry => {
            Ok(())
        }
        ProbeKind::PageFaultUser | ProbeKind::PageFaultKernel => {
            let (category, name) = target(kind).split_once(':').expect("category:name");
            let roots = [
                "/sys/kernel/tracing/events",
                "/sys/kernel/debug/tracing/events",
            ];
            let Some(root) = roots.iter().find(|r| std::path::Path::new(r).is_dir()) else {
                // No tracefs to look in: let the attach say what is wrong.
                return Ok(());
            };
            let dir = format!("{root}/{category}/{name}");
            if std::path::Path::new(&dir).is_dir() {
                Ok(())
            } else {
                Err(ProbeError::NoTracepoint(target(kind).into(), dir))
            }
        }
    }
}

/// Whether `/proc/kallsyms` text lists function `name` (in the kernel or a module).
fn has_symbol(kallsyms: &str, name: &str) -> bool {
    kallsyms
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some(name))
}

/// The eBPF programs of probe kind `kind` (spin_lock has two: fentry and its kprobe
/// fallback; one at most is loaded).
pub fn programs(kind: ProbeKind) -> &'static [&'static str] {
    match kind {
        ProbeKind::SpinLock => &[SPIN_LOCK_FENTRY, SPIN_LOCK_KPROBE],
        ProbeKind::AllocFd => &[ALLOC_FD_FENTRY, ALLOC_FD_KPROBE],
        ProbeKind::PageFaultUser => &["page_fault_user"],
        ProbeKind::PageFaultKernel => &["page_fault_kernel"],
        ProbeKind::Kprobe => &["user_kprobe"],
        ProbeKind::Kretprobe => &["user_kretprobe"],
        ProbeKind::Fentry => &[FENTRY_PROGRAM],
        ProbeKind::Tracepoint => &TRACEPOINT_PROGRAMS,
    }
}

/// The fentry program, loaded once per function.
pub const FENTRY_PROGRAM: &str = "user_fentry";

/// The tracepoint programs, one per slot: the slot is each event's `flags`.
pub const TRACEPOINT_PROGRAMS: [&str; guestscope_common::user_probe::MAX_TRACEPOINTS] = [
    "user_tracepoint_0",
    "user_tracepoint_1",
    "user_tracepoint_2",
    "user_tracepoint_3",
    "user_tracepoint_4",
    "user_tracepoint_5",
    "user_tracepoint_6",
    "user_tracepoint_7",
];

/// spin_lock's program through the function's BTF trampoline.
pub const SPIN_LOCK_FENTRY: &str = "spin_lock_fentry";

/// spin_lock's program where fentry is not available.
pub const SPIN_LOCK_KPROBE: &str = "spin_lock_kprobe";

/// alloc_fd's program through the function's BTF trampoline.
pub const ALLOC_FD_FENTRY: &str = "alloc_fd_fentry";

/// alloc_fd's program where fentry is not available.
pub const ALLOC_FD_KPROBE: &str = "alloc_fd";

/// A built-in probe made of an fentry program and its kprobe fallback (one at most is
/// loaded): fentry when the kernel's BTF allows it, else the kprobe.
struct FentryPair {
    fentry: &'static str,
    kprobe: &'static str,
    function: &'static str,
}

impl FentryPair {
    /// The pair of probe kind `kind`, if it has one.
    fn of(kind: ProbeKind) -> Option<FentryPair> {
        match kind {
            ProbeKind::SpinLock => Some(FentryPair {
                fentry: SPIN_LOCK_FENTRY,
                kprobe: SPIN_LOCK_KPROBE,
                function: SPIN_LOCK_FN,
            }),
            ProbeKind::AllocFd => Some(FentryPair {
                fentry: ALLOC_FD_FENTRY,
                kprobe: ALLOC_FD_KPROBE,
                function: ALLOC_FD_FN,
            }),
            _ => None,
        }
    }

    /// Whether neither program is loaded yet (attaching then needs the kernel's BTF).
    fn unloaded(&self, ebpf: &Ebpf) -> bool {
        !is_loaded(ebpf, self.fentry) && !is_loaded(ebpf, self.kprobe)
    }

    /// Attaches the pair: the way it was loaded before (a probe detached and attached
    /// again is not verified again), else fentry, else the kprobe with `note` saying
    /// why. Returns the method used and the outcome.
    fn attach(
        &self,
        ebpf: &mut Ebpf,
        links: &mut Links,
        btf: Result<&Btf, &ProbeError>,
        note: &mut String,
    ) -> (&'static str, Result<(), ProbeError>) {
        if is_loaded(ebpf, self.fentry) {
            return (
                "fentry",
                fentry(ebpf, links, self.fentry, self.function, btf.ok()),
            );
        }
        if is_loaded(ebpf, self.kprobe) {
            return ("kprobe", kprobe(ebpf, links, self.kprobe, self.function));
        }
        let fentry_result = match btf {
            _ if std::env::var_os(NO_FENTRY_ENV).is_some_and(|v| v == "1") => {
                Err(ProbeError::Disabled(NO_FENTRY_ENV))
            }
            Ok(btf) => fentry(ebpf, links, self.fentry, self.function, Some(btf)),
            Err(ProbeError::Btf(why)) => Err(ProbeError::Btf(why.clone())),
            Err(e) => Err(ProbeError::Btf(e.to_string())),
        };
        match fentry_result {
            Ok(()) => ("fentry", Ok(())),
            Err(e) => {
                *note = format!("fentry unavailable ({}); fell back to kprobe", chain(&e));
                ("kprobe", kprobe(ebpf, links, self.kprobe, self.function))
            }
        }
    }
}

/// The fork follower's program.
pub const FORK_FOLLOWER: &str = "sched_process_fork";

/// Whether program `name` is loaded (verified, in the kernel).
pub fn is_loaded(ebpf: &Ebpf, name: &str) -> bool {
    ebpf.program(name).is_some_and(|p| p.fd().is_ok())
}

/// Whether program `name` is attached: a built-in one when `links` says so (it stays
/// loaded when detached), one of the user's while loaded (detached by unloading).
pub fn is_attached(ebpf: &Ebpf, links: &Links, name: &str) -> bool {
    links.is_attached(name) || (!is_builtin_program(name) && is_loaded(ebpf, name))
}

/// Whether `name` is a built-in probe's program or the fork follower.
fn is_builtin_program(name: &str) -> bool {
    name == FORK_FOLLOWER
        || ProbeKind::BUILTIN
            .into_iter()
            .any(|kind| programs(kind).contains(&name))
}

/// The probe kinds whose program is attached, in id order.
pub fn attached_kinds(ebpf: &Ebpf, links: &Links) -> Vec<ProbeKind> {
    ProbeKind::ALL
        .into_iter()
        .filter(|&kind| {
            programs(kind)
                .iter()
                .any(|name| is_attached(ebpf, links, name))
        })
        .collect()
}

/// Detaches program `name`: a built-in one keeps loaded for its next attach, one of
/// the user's is unloaded (aya detaches its links first). Detaching a program that is
/// not attached does nothing.
pub fn detach_program(
    ebpf: &mut Ebpf,
    links: &mut Links,
    name: &'static str,
) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Program {
        program: name,
        source,
    };
    if links.detach(ebpf, name).map_err(err)? || is_builtin_program(name) {
        return Ok(());
    }
    if !is_loaded(ebpf, name) {
        return Ok(());
    }
    let prog = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram(name))?;
    let result = match prog {
        aya::programs::Program::KProbe(p) => p.unload(),
        aya::programs::Program::FEntry(p) => p.unload(),
        aya::programs::Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    };
    result.map_err(err)
}

/// Detaches every program of probe kind `kind`.
pub fn detach_kind(ebpf: &mut Ebpf, links: &mut Links, kind: ProbeKind) -> Result<(), ProbeError> {
    for name in programs(kind) {
        detach_program(ebpf, links, name)?;
    }
    Ok(())
}

/// Attaches probe kind `kind` as at start (fentry first for spin_lock, then its kprobe
/// fallback), saying how, or why it could not. `btf` is the kernel's BTF, for fentry.
pub fn attach_kind(
    ebpf: &mut Ebpf,
    links: &mut Links,
    kind: ProbeKind,
    btf: Result<&Btf, &ProbeError>,
) -> ProbeAttach {
    attach_one(ebpf, links, kind, btf)
}

/// Whether attaching `kind` needs the kernel's BTF: an fentry program (spin_lock's,
/// alloc_fd's), until it (or its kprobe fallback) is loaded.
pub fn needs_btf(ebpf: &Ebpf, kind: ProbeKind) -> bool {
    FentryPair::of(kind).is_some_and(|pair| pair.unloaded(ebpf))
}

fn attach_one(
    ebpf: &mut Ebpf,
    links: &mut Links,
    kind: ProbeKind,
    btf: Result<&Btf, &ProbeError>,
) -> ProbeAttach {
    let mut record = ProbeAttach {
        probe: kind.name().into(),
        target: target(kind).into(),
        method: String::new(),
        note: String::new(),
        attached: false,
    };
    let result = match kind {
        ProbeKind::SpinLock | ProbeKind::AllocFd => {
            let pair = FentryPair::of(kind).expect("spin_lock and alloc_fd have an fentry pair");
            let (method, result) = pair.attach(ebpf, links, btf, &mut record.note);
            record.method = method.into();
            result
        }
        ProbeKind::PageFaultUser => {
            record.method = "tracepoint".into();
            tracepoint(
                ebpf,
                links,
                "page_fault_user",
                "exceptions",
                "page_fault_user",
            )
        }
        ProbeKind::PageFaultKernel => {
            record.method = "tracepoint".into();
            tracepoint(
                ebpf,
                links,
                "page_fault_kernel",
                "exceptions",
                "page_fault_kernel",
            )
        }
        // Attached function by function with the user's list (crate::user_probes).
        ProbeKind::Kprobe | ProbeKind::Kretprobe | ProbeKind::Tracepoint | ProbeKind::Fentry => {
            Err(ProbeError::NotBuiltin(kind.name()))
        }
    };
    match result {
        Ok(()) => record.attached = true,
        Err(e) => {
            let why = chain(&e);
            record.note = if record.note.is_empty() {
                why
            } else {
                format!("{}; {why}", record.note)
            };
            record.method.clear();
        }
    }
    truncate_note(&mut record.note);
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_target() {
        for kind in ProbeKind::ALL {
            assert!(!target(kind).is_empty());
        }
    }

    #[test]
    fn every_kind_has_its_programs_and_they_are_distinct() {
        let mut all: Vec<&str> = ProbeKind::ALL
            .into_iter()
            .flat_map(programs)
            .copied()
            .collect();
        all.push(FORK_FOLLOWER);
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(
            programs(ProbeKind::AllocFd),
            [ALLOC_FD_FENTRY, ALLOC_FD_KPROBE]
        );
    }

    #[test]
    fn missing_functions_are_found_in_kallsyms() {
        let text = "ffffffff81000000 T _raw_spin_lock\nffffffffc0000000 t alloc_fd_helper\t[m]\n";
        assert!(has_symbol(text, "_raw_spin_lock"));
        assert!(!has_symbol(text, "alloc_fd"));
        let e = precheck(ProbeKind::AllocFd, Some(text))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "alloc_fd is not in /proc/kallsyms (inlined, renamed or not built into this kernel)"
        );
        assert!(precheck(ProbeKind::SpinLock, Some(text)).is_ok());
        // Without kallsyms the attach itself decides.
        assert!(precheck(ProbeKind::AllocFd, None).is_ok());
    }
}
