//! What the guest kernel offered this run, and which experiments could not run and
//! why — so a kernel without BTF, without a probe target or without a tracepoint
//! gives a report that says so instead of a crash or an empty section.
//!
//! The facts come from the run itself: the agent's attach record for every probe
//! (it checks `/proc/kallsyms` and tracefs before attaching, and falls back from
//! fentry to a kprobe), the guest's `/proc/kallsyms` for the symbols each
//! experiment needs, and whether the guest's BTF (`/sys/kernel/btf/vmlinux`)
//! arrived.

use guestscope_common::ProbeKind;
use guestscope_common::wire::ProbeAttach;
use serde::{Deserialize, Serialize};

use super::Experiments;
use guest_kernel::{kallsyms::Kallsyms, unwinder::Unwinder};

/// A kernel symbol an experiment needs, and whether the guest has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymbolCheck {
    /// The symbol.
    pub symbol: String,
    /// What needs it.
    pub needed_by: String,
    /// Whether the guest's `/proc/kallsyms` lists it (None: no kallsyms arrived).
    pub present: Option<bool>,
}

/// What the guest kernel offered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelSupport {
    /// The kernel's BTF arrived (`/sys/kernel/btf/vmlinux`): fentry and the gdbstub
    /// experiment's struct offsets need it.
    pub btf: bool,
    /// The spin-lock probe attached as fentry (None: not attached at all).
    pub fentry: Option<bool>,
    /// Some probe attached as a kprobe (None: no kprobe was tried).
    pub kprobes: Option<bool>,
    /// The page-fault tracepoints attached (None: not requested).
    pub tracepoints: Option<bool>,
    /// Symbols the experiments need, from the guest's kallsyms.
    pub symbols: Vec<SymbolCheck>,
    /// How each probe attached, or why it did not: `probe: method (note)`.
    pub probes: Vec<String>,
    /// The kernel's stack unwinder, from its kallsyms (None: unknown).
    pub unwinder: Option<Unwinder>,
    /// Events whose stack walk lacked the probed function's immediate caller (the
    /// frame-pointer unwinder at a function's entry) and got it back from the return
    /// address the probe read (None: the agent's totals did not arrive).
    pub callers_recovered: Option<u64>,
}

/// An experiment that did not run, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The experiment (its report section).
    pub experiment: String,
    /// Why, in one line.
    pub reason: String,
}

/// Symbols each experiment needs: (symbol, needed by).
pub const NEEDED_SYMBOLS: &[(&str, &str)] = &[
    ("_raw_spin_lock", "spin_lock by subsystem (spin_lock probe)"),
    ("alloc_fd", "file-descriptor allocation (alloc_fd probe)"),
    (
        "entry_SYSCALL_64",
        "CR3 at system-call entry (breakpoint address)",
    ),
];

/// The experiments of a run, in report order.
pub const EXPERIMENTS: &[&str] = &[
    "Boot time (seed §3.4)",
    "PCI devices (seed §3.5)",
    "spin_lock by subsystem (seed §5)",
    "Page faults (seed §5.3)",
    "CR3 at system-call entry (seed §6)",
    "/dev/random versus /dev/urandom (seed §7)",
];

/// What the kernel offered: from the probes' attach records, whether the guest's
/// BTF arrived, and the guest's kallsyms (None when it did not arrive).
pub fn kernel_support(
    probes: &[ProbeAttach],
    btf: bool,
    kallsyms: Option<&Kallsyms>,
) -> KernelSupport {
    let attach = |kind: ProbeKind| probes.iter().find(|p| p.probe == kind.name());
    let requested = |kind: ProbeKind| attach(kind).is_some_and(|a| a.note != NOT_REQUESTED);
    let fentry = attach(ProbeKind::SpinLock)
        .filter(|a| a.attached)
        .map(|a| a.method == "fentry");
    // spin_lock and alloc_fd are kprobes only when fentry fell back; the user's
    // `kprobe:` probes are kprobes.
    let kprobe_tried: Vec<bool> = probes
        .iter()
        .filter(|p| p.method == "kprobe")
        .map(|p| p.attached)
        .collect();
    let tracepoints = [ProbeKind::PageFaultUser, ProbeKind::PageFaultKernel]
        .into_iter()
        .filter(|k| requested(*k))
        .map(|k| attach(k).is_some_and(|a| a.attached))
        .reduce(|a, b| a && b);
    KernelSupport {
        btf,
        fentry,
        kprobes: (!kprobe_tried.is_empty()).then(|| kprobe_tried.iter().any(|ok| *ok)),
        tracepoints,
        unwinder: kallsyms.and_then(Unwinder::of),
        callers_recovered: None,
        symbols: NEEDED_SYMBOLS
            .iter()
            .map(|(sym, by)| SymbolCheck {
                symbol: sym.to_string(),
                needed_by: by.to_string(),
                present: kallsyms.map(|k| k.by_name(sym).is_some()),
            })
            .collect(),
        probes: probes
            .iter()
            .map(|p| {
                let how = if p.attached {
                    p.method.clone()
                } else {
                    "not attached".to_string()
                };
                let note = first_line(&p.note);
                if note.is_empty() {
                    format!("{}: {how}", p.probe)
                } else {
                    format!("{}: {how} ({note})", p.probe)
                }
            })
            .collect(),
    }
}

/// The agent's note for a probe the plan did not ask for.
const NOT_REQUESTED: &str = "not requested by the plan";

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Why a probe gave no events: its attach note, or None when it is attached.
fn probe_reason(probes: &[ProbeAttach], kind: ProbeKind) -> Option<String> {
    let p = probes.iter().find(|p| p.probe == kind.name())?;
    (!p.attached).then(|| not_attached(p))
}

/// "the P probe was not attached", with the first line of its note if it has one.
fn not_attached(p: &ProbeAttach) -> String {
    let note = first_line(&p.note);
    if note.is_empty() {
        format!("the {} probe was not attached", p.probe)
    } else {
        format!("the {} probe was not attached: {note}", p.probe)
    }
}

/// Why each built-in probe the plan asked for was not attached (its attach note's first
/// line): said on the terminal at the end of a run, since every experiment that needs
/// the probe's events runs short without them.
pub fn unattached_builtins<'a>(probes: impl IntoIterator<Item = &'a ProbeAttach>) -> Vec<String> {
    probes
        .into_iter()
        .filter(|p| !p.attached && p.note != NOT_REQUESTED)
        .filter(|p| ProbeKind::BUILTIN.iter().any(|k| k.name() == p.probe))
        .map(not_attached)
        .collect()
}

/// The experiments that did not run, each with its reason; `ran_workloads` says
/// whether any workload finished.
pub fn skipped(probes: &[ProbeAttach], e: &Experiments, ran_workloads: bool) -> Vec<Skipped> {
    let mut out = Vec::new();
    let mut skip = |experiment: &str, reason: String| {
        out.push(Skipped {
            experiment: experiment.into(),
            reason,
        })
    };
    let no_events = |what: &str| {
        if ran_workloads {
            format!("no {what} events from any workload")
        } else {
            "no workload ran".into()
        }
    };
    if e.boot.is_none() {
        skip(
            EXPERIMENTS[0],
            "no boot-time boots in this run (`lab --boots N` makes them; none are made when the traced boot never reached the agent)".into(),
        );
    }
    if e.pci.is_empty() {
        skip(
            EXPERIMENTS[1],
            "the guest sent no PCI device list (/sys/bus/pci/devices)".into(),
        );
    }
    if e.spin_lock.iter().all(|w| w.hits == 0) {
        skip(
            EXPERIMENTS[2],
            probe_reason(probes, ProbeKind::SpinLock).unwrap_or_else(|| no_events("spin_lock")),
        );
    }
    if e.page_faults.iter().all(|w| w.user + w.kernel == 0) {
        let reason = probe_reason(probes, ProbeKind::PageFaultUser)
            .or_else(|| probe_reason(probes, ProbeKind::PageFaultKernel))
            .unwrap_or_else(|| no_events("page-fault"));
        skip(EXPERIMENTS[3], reason);
    }
    if !e.syscall_cr3.iter().any(|r| r.report.is_some()) {
        let reason = e
            .syscall_cr3
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_else(|| {
                "not run (it needs `lab` without --no-cr3: two boots under the gdbstub)".into()
            });
        skip(EXPERIMENTS[4], first_line(&reason).to_string());
    }
    if e.random.is_none() {
        skip(
            EXPERIMENTS[5],
            "the /dev/random workloads did not run (they are built-in workloads)".into(),
        );
    }
    out
}

/// How many of the [`EXPERIMENTS`] ran.
pub fn ran(skipped: &[Skipped]) -> usize {
    EXPERIMENTS.len() - skipped.len().min(EXPERIMENTS.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::Cr3Run;

    fn probe(name: &str, method: &str, note: &str, attached: bool) -> ProbeAttach {
        ProbeAttach {
            probe: name.into(),
            target: String::new(),
            method: method.into(),
            note: note.into(),
            attached,
        }
    }

    #[test]
    fn every_requested_builtin_probe_left_unattached_is_named_with_its_reason() {
        let probes = [
            probe("spin_lock", "kprobe", "fentry unavailable; fell back", true),
            probe(
                "alloc_fd",
                "",
                "fentry unavailable (alloc_fd_fentry: refused)\nverifier log line",
                false,
            ),
            probe("page_fault_user", "", NOT_REQUESTED, false),
            probe("page_fault_kernel", "tracepoint", "", true),
            // A user's probe is refused elsewhere (`refusals`), not here.
            probe("kprobe", "", "kprobe:nope: not in this kernel", false),
        ];
        assert_eq!(
            unattached_builtins(&probes),
            ["the alloc_fd probe was not attached: fentry unavailable (alloc_fd_fentry: refused)"]
        );
        assert!(unattached_builtins(&probes[..1]).is_empty());
    }

    #[test]
    fn a_kernel_without_btf_or_tracepoints_gets_reasons_not_silence() {
        let probes = [
            probe(
                "spin_lock",
                "kprobe",
                "fentry unavailable (reading kernel BTF (/sys/kernel/btf/vmlinux): not found); fell back to kprobe",
                true,
            ),
            probe("alloc_fd", "", "alloc_fd is not in /proc/kallsyms", false),
            probe(
                "page_fault_user",
                "",
                "tracepoint exceptions:page_fault_user is not in this kernel",
                false,
            ),
            probe(
                "page_fault_kernel",
                "",
                "tracepoint exceptions:page_fault_kernel is not in this kernel",
                false,
            ),
        ];
        let e = Experiments {
            syscall_cr3: vec![Cr3Run::skipped(
                "no task_struct layout from the guest's BTF: no BTF",
            )],
            ..Default::default()
        };
        let skipped = skipped(&probes, &e, false);
        let reason = |x: &str| {
            skipped
                .iter()
                .find(|s| s.experiment.starts_with(x))
                .map(|s| s.reason.clone())
        };
        assert!(
            reason("Page faults")
                .unwrap()
                .contains("tracepoint exceptions:page_fault_user is not in this kernel")
        );
        assert!(reason("CR3").unwrap().contains("BTF"));
        assert!(reason("Boot time").unwrap().contains("--boots"));
        assert!(reason("/dev/random").is_some());
        assert!(reason("PCI").is_some());
        // spin_lock attached (as a kprobe) but no workload ran.
        assert_eq!(reason("spin_lock").as_deref(), Some("no workload ran"));
        assert!(skipped.iter().all(|s| !s.reason.contains('\n')));
        assert_eq!(ran(&skipped), 0);

        let k = kernel_support(&probes, false, None);
        assert_eq!(k.fentry, Some(false), "spin_lock attached, as a kprobe");
        assert_eq!(k.kprobes, Some(true));
        assert_eq!(k.tracepoints, Some(false));
        assert!(!k.btf);
        assert!(
            k.symbols.iter().all(|c| c.present.is_none()),
            "no kallsyms: unknown, not absent"
        );
        assert!(
            k.probes[1].starts_with("alloc_fd: not attached (alloc_fd is not in /proc/kallsyms)"),
            "{:?}",
            k.probes
        );
    }

    #[test]
    fn a_full_kernel_skips_nothing_it_was_asked_for() {
        let probes = [
            probe("spin_lock", "fentry", "", true),
            probe("alloc_fd", "kprobe", "", true),
            probe("page_fault_user", "tracepoint", "", true),
            probe("page_fault_kernel", "", NOT_REQUESTED, false),
        ];
        let kallsyms =
            Kallsyms::parse("ffffffff81000000 T _raw_spin_lock\nffffffff81000100 T alloc_fd\n")
                .unwrap();
        let k = kernel_support(&probes, true, Some(&kallsyms));
        assert_eq!(
            (k.fentry, k.kprobes, k.tracepoints),
            (Some(true), Some(true), Some(true))
        );
        let present: Vec<Option<bool>> = k.symbols.iter().map(|c| c.present).collect();
        assert_eq!(present, [Some(true), Some(true), Some(false)]);
        assert_eq!(k.unwinder, None, "no unwinder's symbols in these kallsyms");
        let fp = Kallsyms::parse("ffffffff81000000 t update_stack_state\n").unwrap();
        let k = kernel_support(&probes, true, Some(&fp));
        assert_eq!(k.unwinder, Some(Unwinder::FramePointer));
        assert_eq!(
            serde_json::to_value(&k).unwrap()["unwinder"],
            "frame_pointer"
        );
    }
}
