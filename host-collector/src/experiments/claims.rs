//! The claims check: each conclusion of the seed lab, marked confirmed,
//! contradicted or not tested, with the figure or stack from this run that
//! decides it. Nothing here is asserted without a measurement; a claim this run
//! could not test says so.

use serde::Serialize;

use crate::output::summary::Summary;

/// A verdict on one claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    /// Section of the lab report.
    pub section: &'static str,
    /// The claim, paraphrased.
    pub claim: &'static str,
    /// The verdict.
    pub verdict: Verdict,
    /// The figures or stack that decide it.
    pub evidence: String,
}

fn claim(section: &'static str, claim: &'static str, verdict: Verdict, evidence: String) -> Claim {
    Claim {
        section,
        claim,
        verdict,
        evidence,
    }
}

/// Checks every claim against a summary.
pub fn check(s: &Summary) -> Vec<Claim> {
    let mut out = Vec::new();
    let e = &s.experiments;

    // §3.4: boot-time gap.
    out.push(match &e.boot {
        Some(b) => match (b.gap, b.before_kernel_clock, b.drift_to_init) {
            (Some(gap), Some(pre), Some(drift)) => {
                let contradicted = pre.mean >= 0.5 * gap.mean && drift.mean.abs() < 0.5 * gap.mean;
                claim(
                    "3.4",
                    "The kernel reports a shorter boot than the wall clock because the guest's virtual clock falls behind (missed timer interrupts).",
                    if contradicted { Verdict::Contradicted } else { Verdict::Confirmed },
                    format!(
                        "Over {} boots the gap was {:.2} ± {:.2} s; {:.2} ± {:.2} s of it passed before the kernel's clock started \
                         (firmware, loading and decompressing the kernel), while the kernel clock lagged the host by only {:.2} s \
                         from banner to init.",
                        gap.n, gap.mean, gap.sd, pre.mean, pre.sd, drift.mean
                    ),
                )
            }
            _ => claim("3.4", "Boot-time gap comes from the virtual clock falling behind.", Verdict::NotTested, "No boot reached the agent.".into()),
        },
        None => claim("3.4", "Boot-time gap comes from the virtual clock falling behind.", Verdict::NotTested, "Run with --boots N to measure.".into()),
    });

    // §3.5: devices and classes.
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
    out.push(match host_bridge {
        Some(hb) => claim(
            "3.5",
            "The VM's PCI devices and classes are those of Table 2 (8086:1237 host bridge, PIIX3 ISA/IDE, ...).",
            if hb.class_code >> 8 == 0x0600 { Verdict::Confirmed } else { Verdict::Contradicted },
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
        None => claim("3.5", "The VM's PCI devices are those of Table 2.", Verdict::NotTested, "The guest sent no PCI list.".into()),
    });

    // §5: spin_lock call paths.
    let through = |class: &str, func: &str, workload: Option<&str>| {
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
    };
    let short = |stack: &[String], n: usize| {
        stack
            .iter()
            .take(n)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ← ")
    };
    let jiffies: u64 = e
        .spin_lock
        .iter()
        .flat_map(|w| &w.classes)
        .filter(|c| c.class == "timers")
        .map(|c| c.named_locks.get("jiffies_lock").copied().unwrap_or(0))
        .sum();
    let (tick_hits, tick_ex) = through("timers", "tick_do_update_jiffies64", None);
    out.push(match tick_ex {
        Some((w, st)) => claim(
            "5 (timers)",
            "Timer interrupts take jiffies_lock through tick_do_update_jiffies64 (Listing 9).",
            if jiffies > 0 { Verdict::Confirmed } else { Verdict::Contradicted },
            format!("{tick_hits} timer-class hits through tick_do_update_jiffies64, {jiffies} of them on `jiffies_lock` (lock address resolved in the guest's kallsyms); e.g. in {w}: {}", short(&st, 5)),
        ),
        None => claim("5 (timers)", "Timer interrupts take jiffies_lock through tick_do_update_jiffies64 (Listing 9).", Verdict::NotTested, "No timer-interrupt spin_lock hit landed on a traced process.".into()),
    });
    let (fd_hits, fd_ex) = through("file system", "alloc_fd", None);
    out.push(match fd_ex {
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
    });
    let (sched_fault, sched_ex) = through("scheduler", "exc_page_fault", Some("malloc"));
    let (sched_pte, _) = through("scheduler", "pte_alloc_one", Some("malloc"));
    let (sched_all, _) = through("scheduler", "__schedule", Some("malloc"));
    out.push(match sched_ex {
        Some((_, st)) => claim(
            "5 (scheduler)",
            "malloc's page faults lead to a context switch that takes the runqueue lock in __schedule, via pte_alloc_one (Listing 13).",
            if sched_pte > 0 { Verdict::Confirmed } else { Verdict::Contradicted },
            format!(
                "malloc took scheduler locks inside page faults {sched_fault} times ({sched_pte} of them via pte_alloc_one; \
                 {sched_all} scheduler-lock hits of malloc were in __schedule, inside a fault or not). The most frequent such stack: {}{}",
                short(&st, 8),
                if sched_pte == 0 { ". The switch happens, but not where the lab placed it: the fault path reschedules at cond_resched or on return to user mode, not in pte_alloc_one." } else { "." }
            ),
        ),
        None => claim("5 (scheduler)", "malloc's page faults lead to __schedule taking the runqueue lock (Listing 13).", Verdict::NotTested, "No scheduler-class spin_lock hit inside a malloc page fault.".into()),
    });

    // §6: CR3 and PTI.
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
    out.push(match (on, off) {
        (Some((ron, con)), Some((roff, coff))) => claim(
            "6",
            claim6,
            if con.cr3_changed && !coff.cr3_changed { Verdict::Contradicted } else { Verdict::Confirmed },
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
                e.syscall_cr3.iter().filter_map(|r| r.error.clone()).collect::<Vec<_>>().join("; ")
            ),
        ),
    });

    // §7: /dev/random.
    out.push(match &e.random {
        Some(r) => {
            let random = r.sources.iter().find(|x| x.method == "/dev/random");
            let urandom_blocked = r.sources.iter().find(|x| x.method == "/dev/urandom" && x.blocked);
            let ev = format!(
                "/dev/random: {} reads, longest {:.1} µs{}; CRNG ready at {} s (kernel clock); entropy_avail {}.{}",
                random.map(|x| x.reads).unwrap_or(0),
                random.and_then(|x| x.max_us).unwrap_or(0.0),
                if random.is_some_and(|x| x.blocked) { " (blocked)" } else { ", never blocked" },
                r.crng_ready_s.map(|c| format!("{c:.3}")).unwrap_or_else(|| "?".into()),
                r.entropy_avail.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
                urandom_blocked.map(|u| format!(" /dev/urandom, read before that, waited {:.0} ms while seeding the CRNG itself ({} events under try_to_generate_entropy).", u.max_us.unwrap_or(0.0) / 1e3, u.jitter_events)).unwrap_or_default()
            );
            claim(
                "7",
                "/dev/random blocks when the entropy pool is exhausted; it did not block here because the VM lacks a hardware RNG / has little entropy.",
                if random.is_some_and(|x| !x.blocked) && r.crng_ready_s.is_some() { Verdict::Contradicted } else { Verdict::NotTested },
                ev,
            )
        }
        None => claim("7", "/dev/random blocks when entropy is exhausted.", Verdict::NotTested, "The random workloads did not run.".into()),
    });
    out
}
