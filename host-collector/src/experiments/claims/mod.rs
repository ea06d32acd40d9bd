//! The claims check: each conclusion of the seed lab, marked confirmed,
//! contradicted or not tested, with the figure or stack from this run that
//! decides it. Nothing here is asserted without a measurement; a claim this run
//! could not test says so.

use serde::{Deserialize, Serialize};

use guestscope_common::plan::StackMode;

use super::Experiments;

/// A verdict on one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// This run's data agree with the claim.
    Confirmed,
    /// This run's data disagree.
    Contradicted,
    /// This run did not measure what would decide it.
    NotTested,
}

impl Verdict {
    /// The word shown in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Confirmed => "confirmed",
            Verdict::Contradicted => "contradicted",
            Verdict::NotTested => "not tested",
        }
    }
}

/// One claim of the lab.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claim {
    /// Section of the lab report.
    pub section: String,
    /// The claim, paraphrased.
    pub claim: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The figures or stack that decide it.
    pub evidence: String,
}

fn claim(section: &'static str, claim: &'static str, verdict: Verdict, evidence: String) -> Claim {
    Claim {
        section: section.to_string(),
        claim: claim.to_string(),
        verdict,
        evidence,
    }
}

/// The spin_lock hits of `workload` (every workload if `None`) in
/// `class` whose stack passes through `func` (a [`LANDMARKS`] function or an
/// `"OUTER>INNER"` [`LANDMARK_PATHS`] key), and the most frequent such stack with its
/// workload.
///
/// [`LANDMARKS`]: super::spinlock::LANDMARKS
/// [`LANDMARK_PATHS`]: super::spinlock::LANDMARK_PATHS
fn through(
    e: &Experiments,
    class: &str,
    func: &str,
    workload: Option<&str>,
) -> (u64, Option<(String, Vec<String>)>) {
    let mut hits = 0;
    let mut example: Option<(String, Vec<String>)> = None;
    for w in e
        .spin_lock
        .iter()
        .filter(|w| workload.is_none_or(|n| w.workload == n))
    {
        for c in w.classes.iter().filter(|c| c.class == class) {
            if let Some(t) = c.through.get(func) {
                hits += t.hits;
                example.get_or_insert_with(|| (w.workload.clone(), t.stack.clone()));
            }
        }
    }
    (hits, example)
}

/// A stack's innermost `n` frames, joined with arrows.
fn short(stack: &[String], n: usize) -> String {
    stack
        .iter()
        .take(n)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ← ")
}

/// Listing 13: a context switch (`__schedule` taking the runqueue lock) inside
/// malloc's page faults, which the lab caught in `pte_alloc_one`.
///
/// The switch is the claim; `pte_alloc_one` is where the lab's gdb session caught it.
/// A page-table allocation reaches a preemption point only when a reschedule is
/// pending, which stepping through it in gdb makes likely and which a free-running
/// workload meets rarely (more often on a kernel with transparent huge pages, which
/// allocates a page table with every huge page): how many of the switches went
/// through it is evidence, not the verdict.
fn scheduler_claim(e: &Experiments) -> Claim {
    const CLAIM: &str = "malloc's page faults lead to a context switch that takes the runqueue lock in __schedule, via pte_alloc_one (Listing 13).";
    let (in_fault, _) = through(e, "scheduler", "exc_page_fault", Some("malloc"));
    let (switches, switch_ex) =
        through(e, "scheduler", "exc_page_fault>__schedule", Some("malloc"));
    let (via_pte, _) = through(e, "scheduler", "pte_alloc_one", Some("malloc"));
    if in_fault == 0 {
        return claim(
            "5 (scheduler)",
            CLAIM,
            Verdict::NotTested,
            "No scheduler-class spin_lock hit inside a malloc page fault.".into(),
        );
    }
    let where_ = if via_pte > 0 {
        format!("{via_pte} of the scheduler-lock hits were in pte_alloc_one, the lab's path")
    } else {
        "none in pte_alloc_one, the lab's path: a page-table allocation reschedules only when a reschedule is already pending, which stepping through it in gdb makes likely".to_string()
    };
    match switch_ex {
        Some((_, st)) => claim(
            "5 (scheduler)",
            CLAIM,
            Verdict::Confirmed,
            format!(
                "{switches} context switches inside malloc's page faults took the runqueue lock in __schedule \
                 ({in_fault} scheduler-lock hits inside its faults; {where_}). The most frequent: {}.",
                short(&st, 8)
            ),
        ),
        None => claim(
            "5 (scheduler)",
            CLAIM,
            Verdict::Contradicted,
            format!(
                "malloc took scheduler locks inside page faults {in_fault} times, none of them in __schedule: \
                 no context switch happened inside a fault ({where_})."
            ),
        ),
    }
}

/// Checks every claim against the experiments' results, from a run whose probes got
/// stacks as `stacks` says (`None`: not known). With stacks off no spin_lock hit is
/// classified, so the claims decided by stacks say that, not that no hit came. With
/// stacks taken by caller a hit's frames between its caller and its way into the
/// kernel are another hit's: the claims decided by the caller (the timers' and the
/// file system's) stand, the scheduler's (a lock taken inside a page fault, frames
/// further out) is not tested.
pub fn check(e: &Experiments, stacks: Option<StackMode>) -> Vec<Claim> {
    let by_stack = |c: Claim| {
        if stacks == Some(StackMode::Off) {
            untested(c, NO_STACKS)
        } else {
            c
        }
    };
    let past_the_caller = |c: Claim| match (stacks, c.verdict) {
        (Some(mode), Verdict::Confirmed | Verdict::Contradicted) if mode.by_caller() => {
            untested(c, BY_CALLER)
        }
        _ => by_stack(c),
    };
    vec![
        boot_claim(e),
        pci_claim(e),
        by_stack(timers_claim(e)),
        by_stack(file_system_claim(e)),
        past_the_caller(scheduler_claim(e)),
        cr3_claim(e),
        random_claim(e, stacks),
    ]
}

/// Why a claim decided by the spin_lock hits' stacks is not tested in a run without
/// stacks.
const NO_STACKS: &str = "This run recorded no stacks (`--stacks off`), and the spin_lock hits are told apart by their stacks.";

/// Why a claim decided by frames past a hit's caller is not tested in a run whose
/// stacks were taken by caller.
const BY_CALLER: &str = "This run took stacks by caller (`--stacks caller` or `caller-tallied`): a hit's frames between its caller and its way into the kernel are those of the first hit with the same key, and whether a scheduler lock was taken inside a page fault lies in those frames. Run with `--stacks cached` (the default) to decide it.";

/// `c`, a claim decided by stacks, as not tested, and `why`.
fn untested(c: Claim, why: &str) -> Claim {
    Claim {
        verdict: Verdict::NotTested,
        evidence: why.into(),
        ..c
    }
}

/// §3.4: the boot-time gap comes from the virtual clock falling behind.
fn boot_claim(e: &Experiments) -> Claim {
    match &e.boot {
        Some(b) => match (b.gap, b.before_kernel_clock, b.drift_to_init) {
            (Some(gap), Some(pre), Some(drift)) => {
                let contradicted = pre.mean >= 0.5 * gap.mean && drift.mean.abs() < 0.5 * gap.mean;
                claim(
                    "3.4",
                    "The kernel reports a shorter boot than the wall clock because the guest's virtual clock falls behind (missed timer interrupts).",
                    if contradicted {
                        Verdict::Contradicted
                    } else {
                        Verdict::Confirmed
                    },
                    format!(
                        "Over {} boots the gap was {:.2} ± {:.2} s; {:.2} ± {:.2} s of it passed before the kernel's clock started \
                         (firmware, loading and decompressing the kernel), while the kernel clock {} from banner to init.",
                        gap.n,
                        gap.mean,
                        gap.sd,
                        pre.mean,
                        pre.sd,
                        kernel_clock_pace(drift.mean)
                    ),
                )
            }
            _ => claim(
                "3.4",
                "Boot-time gap comes from the virtual clock falling behind.",
                Verdict::NotTested,
                "No boot reached the agent.".into(),
            ),
        },
        None => claim(
            "3.4",
            "Boot-time gap comes from the virtual clock falling behind.",
            Verdict::NotTested,
            "Run with --boots N to measure.".into(),
        ),
    }
}

/// How the kernel's clock kept up with the host's while the kernel booted, in words:
/// `drift_s` is host minus kernel time from banner to init (negative: the kernel's
/// clock ran ahead).
fn kernel_clock_pace(drift_s: f64) -> String {
    if drift_s >= 0.005 {
        format!("lagged the host by only {drift_s:.2} s")
    } else if drift_s <= -0.005 {
        format!("ran ahead of the host by {:.2} s", -drift_s)
    } else {
        "kept pace with the host to within 0.01 s".into()
    }
}

/// §3.5: the VM's PCI devices and classes are those of Table 2.
fn pci_claim(e: &Experiments) -> Claim {
    let host_bridge = e.pci.iter().find(|d| d.ids == "8086:1237");
    let seed_rows = [
        "8086:1237",
        "8086:7000",
        "8086:7010",
        "8086:7113",
        "8086:100e",
        "1b36:0100",
        "8086:2934",
        "8086:2935",
        "8086:2936",
        "1af4:1002",
    ];
    let present: Vec<&str> = seed_rows
        .iter()
        .copied()
        .filter(|id| e.pci.iter().any(|d| d.ids == *id))
        .collect();
    match host_bridge {
        Some(hb) => claim(
            "3.5",
            "The VM's PCI devices and classes are those of Table 2 (8086:1237 host bridge, PIIX3 ISA/IDE, ...).",
            if hb.class_code >> 8 == 0x0600 {
                Verdict::Confirmed
            } else {
                Verdict::Contradicted
            },
            format!(
                "{} of Table 2's {} rows are present in this VM ({}); 8086:1237 has class 0x{:06x} ({}), found by the kernel in `{}`.{}",
                present.len(),
                seed_rows.len(),
                present.join(", "),
                hb.class_code,
                hb.subclass_name.as_deref().unwrap_or("?"),
                hb.dmesg.as_deref().unwrap_or("(no dmesg line)"),
                if present.len() < seed_rows.len() {
                    " The missing rows are devices virt-manager adds: `--machine-profile seed` reproduces them."
                } else {
                    ""
                }
            ),
        ),
        None => claim(
            "3.5",
            "The VM's PCI devices are those of Table 2.",
            Verdict::NotTested,
            "The guest sent no PCI list.".into(),
        ),
    }
}

/// §5 (timers): timer interrupts take `jiffies_lock` through tick_do_update_jiffies64.
fn timers_claim(e: &Experiments) -> Claim {
    let jiffies: u64 = e
        .spin_lock
        .iter()
        .flat_map(|w| &w.classes)
        .filter(|c| c.class == "timers")
        .map(|c| c.named_locks.get("jiffies_lock").copied().unwrap_or(0))
        .sum();
    let (tick_hits, tick_ex) = through(e, "timers", "tick_do_update_jiffies64", None);
    match tick_ex {
        Some((w, st)) => claim(
            "5 (timers)",
            "Timer interrupts take jiffies_lock through tick_do_update_jiffies64 (Listing 9).",
            if jiffies > 0 {
                Verdict::Confirmed
            } else {
                Verdict::Contradicted
            },
            format!(
                "{tick_hits} timer-class hits through tick_do_update_jiffies64, {jiffies} of them on `jiffies_lock` (lock address resolved in the guest's kallsyms); e.g. in {w}: {}",
                short(&st, 5)
            ),
        ),
        None => claim(
            "5 (timers)",
            "Timer interrupts take jiffies_lock through tick_do_update_jiffies64 (Listing 9).",
            Verdict::NotTested,
            "No timer-interrupt spin_lock hit landed on a traced process.".into(),
        ),
    }
}

/// §5 (file system): open() takes the files_struct lock in alloc_fd.
fn file_system_claim(e: &Experiments) -> Claim {
    let (fd_hits, fd_ex) = through(e, "file system", "alloc_fd", None);
    match fd_ex {
        Some((w, st)) => claim(
            "5 (file system)",
            "open() takes the files_struct lock in alloc_fd (Listing 11).",
            Verdict::Confirmed,
            format!(
                "{fd_hits} spin_lock hits through alloc_fd; e.g. in {w}: {}",
                short(&st, 5)
            ),
        ),
        None => claim(
            "5 (file system)",
            "open() takes the files_struct lock in alloc_fd (Listing 11).",
            Verdict::NotTested,
            "No spin_lock stack through alloc_fd was recorded.".into(),
        ),
    }
}

/// §6: CR3 does not change at system-call entry, PTI on or off.
fn cr3_claim(e: &Experiments) -> Claim {
    let on = e
        .syscall_cr3
        .iter()
        .find(|r| r.label == "PTI on")
        .and_then(|r| r.report.as_ref().map(|c| (r, c)));
    let off = e
        .syscall_cr3
        .iter()
        .find(|r| r.label == "PTI off")
        .and_then(|r| r.report.as_ref().map(|c| (r, c)));
    let claim6 = "CR3 does not change at system-call entry whether PTI is on or off, because GDB in a VM cannot see the guest's CR3 updates.";
    match (on, off) {
        (Some((ron, con)), Some((roff, coff))) => claim(
            "6",
            claim6,
            if con.cr3_changed && !coff.cr3_changed {
                Verdict::Contradicted
            } else {
                Verdict::Confirmed
            },
            format!(
                "PTI on ({}, guest says \"{}\"): CR3 {:#x} → {:#x} at {}, bit 12 flipped, `current` unreadable before the switch. \
                 PTI off ({}, \"{}\"): CR3 {:#x} unchanged over {} steps, `current` readable. The gdbstub sees every CR3 write; \
                 the lab's VM simply ran without PTI (its CPU model was not Meltdown-affected).",
                ron.cpu_model,
                ron.meltdown.as_deref().unwrap_or("?"),
                con.cr3_user,
                con.cr3_kernel,
                con.switch_at.as_deref().unwrap_or("?"),
                roff.cpu_model,
                roff.meltdown.as_deref().unwrap_or("?"),
                coff.cr3_user,
                coff.steps
            ),
        ),
        _ => claim(
            "6",
            claim6,
            Verdict::NotTested,
            format!(
                "The gdbstub CR3 experiment gave no result ({}).",
                e.syscall_cr3
                    .iter()
                    .filter_map(|r| r.error.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
    }
}

/// §7: /dev/random blocks when the entropy pool is exhausted.
fn random_claim(e: &Experiments, stacks: Option<StackMode>) -> Claim {
    match &e.random {
        Some(r) => {
            let random = r.sources.iter().find(|x| x.method == "/dev/random");
            let urandom_blocked = r
                .sources
                .iter()
                .find(|x| x.method == "/dev/urandom" && x.blocked);
            let ev = format!(
                "/dev/random: {} reads, longest {:.1} µs{}; CRNG ready at {} s (kernel clock); entropy_avail {}.{}",
                random.map(|x| x.reads).unwrap_or(0),
                random.and_then(|x| x.max_us).unwrap_or(0.0),
                if random.is_some_and(|x| x.blocked) { " (blocked)" } else { ", never blocked" },
                r.crng_ready_s.map(|c| format!("{c:.3}")).unwrap_or_else(|| "?".into()),
                r.entropy_avail.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
                urandom_blocked.map(|u| format!(
                    " /dev/urandom, read before that, waited {:.0} ms while seeding the CRNG itself ({}).",
                    u.max_us.unwrap_or(0.0) / 1e3,
                    match stacks {
                        Some(StackMode::Off) => {
                            "no stacks recorded to find try_to_generate_entropy on".to_string()
                        }
                        Some(mode) if mode.by_caller() => format!(
                            "{} events under try_to_generate_entropy, by stacks taken by caller",
                            u.jitter_events
                        ),
                        _ => format!("{} events under try_to_generate_entropy", u.jitter_events),
                    }
                )).unwrap_or_default()
            );
            claim(
                "7",
                "/dev/random blocks when the entropy pool is exhausted; it did not block here because the VM lacks a hardware RNG / has little entropy.",
                if random.is_some_and(|x| !x.blocked) && r.crng_ready_s.is_some() {
                    Verdict::Contradicted
                } else {
                    Verdict::NotTested
                },
                ev,
            )
        }
        None => claim(
            "7",
            "/dev/random blocks when entropy is exhausted.",
            Verdict::NotTested,
            "The random workloads did not run.".into(),
        ),
    }
}

#[cfg(test)]
mod tests;
