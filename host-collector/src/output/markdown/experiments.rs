//! The report's experiments: each lab claim with its evidence, the random/urandom runs, CR3 with PTI on and off.

use super::*;

/// The experiments' sections: boot time, PCI devices, /dev/random, CR3, spin_lock
/// call paths and page faults.
pub(super) fn render_experiments(md: &mut String, s: &Summary) {
    if let Some(b) = &s.experiments.boot {
        render_boot(md, b);
    }
    if !s.experiments.pci.is_empty() {
        render_pci(md, &s.experiments.pci);
    }
    if let Some(r) = &s.experiments.random {
        render_random(md, r);
    }
    if !s.experiments.syscall_cr3.is_empty() {
        render_cr3(md, &s.experiments.syscall_cr3);
    }
    render_spin_lock(md, &s.experiments.spin_lock);
    render_page_faults(md, &s.experiments.page_faults);
}

/// Boot time: wall clock against kernel clock, per boot and per phase (seed §3.4).
fn render_boot(md: &mut String, b: &crate::experiments::boot::BootExperiment) {
    let _ = writeln!(
        md,
        "\n## Boot time: wall clock versus kernel clock (seed §3.4)\n"
    );
    let _ = writeln!(
        md,
        "| boot | first byte | kernel banner | init | init (kernel clock) | agent hello | agent hello (kernel clock) |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    let f = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "—".into());
    for x in &b.samples {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            x.boot,
            f(x.first_byte_s),
            f(x.kernel_banner_s),
            f(x.init_s),
            f(x.init_kernel_s),
            f(x.agent_hello_s),
            f(x.agent_hello_kernel_s)
        );
    }
    let st = |s: Option<crate::experiments::boot::Stat>| {
        s.map(|s| format!("{:.3} ± {:.3} s", s.mean, s.sd))
            .unwrap_or_else(|| "—".into())
    };
    let _ = writeln!(
        md,
        "\nAll times in seconds; host times from QEMU's launch; the agent's hello is its first record on the stream, stamped with the guest's CLOCK_MONOTONIC.{}\n",
        if b.at_once > 1 {
            format!(
                " The boots ran {} at a time, each QEMU on a host core of its own.",
                b.at_once
            )
        } else {
            String::new()
        }
    );
    let _ = writeln!(md, "| phase | mean ± sd |\n|---|---:|");
    let _ = writeln!(
        md,
        "| wall clock to agent hello | {} |",
        st(b.wall_to_hello)
    );
    let _ = writeln!(
        md,
        "| kernel clock at agent hello | {} |",
        st(b.kernel_at_hello)
    );
    let _ = writeln!(md, "| gap (wall − kernel) | {} |", st(b.gap));
    let _ = writeln!(
        md,
        "| before the kernel clock starts (firmware, load, decompress) | {} |",
        st(b.before_kernel_clock)
    );
    let _ = writeln!(
        md,
        "| clock drift from banner to init (host − kernel) | {} |",
        st(b.drift_to_init)
    );
    let _ = writeln!(
        md,
        "| user space, init → agent hello | {} |",
        st(b.userspace)
    );
    if let (Some(x), Some(pre), Some(gap), Some(drift)) = (
        b.explained_by_pre_kernel,
        b.before_kernel_clock,
        b.gap,
        b.drift_to_init,
    ) {
        let _ = writeln!(
            md,
            "\nThe {:.2} s that pass before the kernel's clock starts account for {:.0}% of the {:.2} s gap; while the kernel \
             runs, its clock stays within {:.2} s of the host's.",
            pre.mean,
            x * 100.0,
            gap.mean,
            drift.mean.abs()
        );
    }
}

/// The VM's PCI devices (seed §3.5).
fn render_pci(md: &mut String, pci: &[crate::experiments::pci::PciDevice]) {
    let _ = writeln!(md, "\n## PCI devices (seed §3.5)\n");
    let _ = writeln!(
        md,
        "| slot | vendor:device | class | class name | vendor | device | discovered by the kernel |\n|---|---|---|---|---|---|---|"
    );
    for d in pci {
        let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
        let _ = writeln!(
            md,
            "| {} | {} | 0x{:06x} | {} | {} | {} | {} |",
            d.slot,
            d.ids,
            d.class_code,
            o(&d.subclass_name.clone().or_else(|| d.class_name.clone())),
            o(&d.vendor_name),
            o(&d.device_name),
            d.dmesg
                .as_deref()
                .map(|l| format!("`{l}`"))
                .unwrap_or_else(|| "—".into())
        );
    }
}

/// spin_lock hits by subsystem, the named global locks, and a representative stack
/// per class (seed §5).
fn render_spin_lock(
    md: &mut String,
    spin_lock: &[crate::experiments::spinlock::WorkloadSpinLocks],
) {
    let _ = writeln!(md, "\n## spin_lock by subsystem (seed §5)\n");
    let _ = writeln!(
        md,
        "Each `_raw_spin_lock` hit by a workload, classified by the first frame of its kernel stack that a rule \
         names (the rule table is in `host-collector/src/experiments/classify.rs`).\n"
    );
    let classes = crate::experiments::classify::SPIN_LOCK_RULES.classes();
    let _ = writeln!(
        md,
        "| workload | hits | {} |\n|---|---:|{}",
        classes.join(" | "),
        "---:|".repeat(classes.len())
    );
    for w in spin_lock {
        let cells: Vec<String> = classes
            .iter()
            .map(|c| {
                w.classes
                    .iter()
                    .find(|x| x.class == *c)
                    .map(|x| x.hits.to_string())
                    .unwrap_or_else(|| "0".into())
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            w.workload,
            w.hits,
            cells.join(" | ")
        );
    }
    let mut locks: std::collections::BTreeMap<(&str, &str), u64> =
        std::collections::BTreeMap::new();
    for w in spin_lock {
        for c in &w.classes {
            for (l, n) in &c.named_locks {
                *locks.entry((l.as_str(), c.class.as_str())).or_default() += n;
            }
        }
    }
    if !locks.is_empty() {
        let _ = writeln!(
            md,
            "\nNamed global locks among those hits (the lock address matched a symbol in the guest's kallsyms), all workloads:\n"
        );
        let _ = writeln!(md, "| lock | class | hits |\n|---|---|---:|");
        for ((l, c), n) in &locks {
            let _ = writeln!(md, "| `{l}` | {c} | {n} |");
        }
    }
    let mut shown: Vec<&str> = Vec::new();
    for w in spin_lock {
        for c in &w.classes {
            if shown.contains(&c.class.as_str()) || c.class == "other" {
                continue;
            }
            shown.push(&c.class);
            let _ = writeln!(
                md,
                "\n**{}** — representative stack ({} hits, workload {}, decided by `{}`):\n```",
                c.class,
                c.representative_hits,
                w.workload,
                c.decided_by.as_deref().unwrap_or("?")
            );
            for f in c.representative.iter().take(14) {
                let _ = writeln!(md, "  {f}");
            }
            let _ = writeln!(md, "```");
        }
    }
}

/// Page faults per workload, with what the accesses were (seed §5.3).
fn render_page_faults(md: &mut String, page_faults: &[crate::experiments::faults::WorkloadFaults]) {
    let _ = writeln!(md, "\n## Page faults (seed §5.3)\n");
    let _ = writeln!(
        md,
        "| workload | user faults | kernel faults | what the access was (x86 error code) |\n|---|---:|---:|---|"
    );
    for f in page_faults {
        let mut accesses: Vec<(&String, &u64)> = f.accesses.iter().collect();
        accesses.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let accesses: Vec<String> = accesses.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            f.workload,
            f.user,
            f.kernel,
            accesses.join(", ")
        );
    }
}

pub(super) fn render_random(md: &mut String, r: &crate::experiments::random::RandomExperiment) {
    let _ = writeln!(md, "\n## /dev/random versus /dev/urandom (seed §7)\n");
    let us = |v: Option<f64>| {
        v.map(|v| format!("{v:.1} µs"))
            .unwrap_or_else(|| "—".into())
    };
    let _ = writeln!(
        md,
        "| workload | source | reads | errors | median | p99 | max | blocked (> 100 ms) |\n|---|---|---:|---:|---:|---:|---:|---|"
    );
    for x in &r.sources {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} |",
            x.workload,
            x.method,
            x.reads,
            x.errors,
            us(x.p50_us),
            us(x.p99_us),
            us(x.max_us),
            if x.blocked { "yes" } else { "no" }
        );
    }
    match (&r.crng_ready_line, r.crng_ready_s) {
        (Some(l), _) => {
            let _ = writeln!(md, "\nThe kernel's CRNG became ready during boot: `{l}`.");
        }
        _ => {
            let _ = writeln!(
                md,
                "\nNo CRNG-ready message was found in this boot's dmesg."
            );
        }
    }
    if let (Some(c), Some(i)) = (r.crng_ready_s, r.init_kernel_s) {
        let when = if c <= i { "before" } else { "after" };
        let _ = writeln!(
            md,
            "That was at {c:.3} s on the kernel clock, {when} the first user-space process started ({i:.3} s)."
        );
    }
    if let Some(e) = r.entropy_avail {
        let _ = writeln!(md, "`entropy_avail` read {e} at the end of the run.");
    }
    let _ = writeln!(md, "\n{}", crate::experiments::random::explain(r));
    if let Some(s) = r.sources.iter().find(|s| !s.jitter_stack.is_empty()) {
        let _ = writeln!(md, "\nA stack from inside that read ({}):\n```", s.workload);
        let upto = s
            .jitter_stack
            .iter()
            .position(|f| f.starts_with(crate::experiments::random::JITTER_FN))
            .map_or(12, |i| i + 4);
        for f in s.jitter_stack.iter().take(upto) {
            let _ = writeln!(md, "  {f}");
        }
        let _ = writeln!(md, "```");
    }
}

pub(super) fn render_cr3(md: &mut String, runs: &[crate::output::summary::Cr3Run]) {
    let _ = writeln!(
        md,
        "\n## CR3 at system-call entry, PTI on and off (seed §6)\n"
    );
    let _ = writeln!(
        md,
        "A hardware breakpoint on `entry_SYSCALL_64` through QEMU's gdbstub; at each hit the host reads `current` \
         (per-cpu `current_task`, offsets from the guest's BTF) and resumes unless it is the workload's process; at the \
         workload's hit it records CR3, then single-steps until CR3 changes.\n"
    );
    let _ = writeln!(
        md,
        "| boot | CPU model | guest's meltdown line | CR3 at entry | CR3 after | differing bits | switched at | `current` readable before / after | other-process hits resumed | per hit |\n|---|---|---|---|---|---|---|---|---:|---:|"
    );
    for r in runs {
        match &r.report {
            Some(c) => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | `{:#x}` | `{:#x}` | `{:#x}`{} | {} | {} / {} | {} | {} |",
                    r.label,
                    r.cpu_model,
                    r.meltdown.as_deref().unwrap_or("—"),
                    c.cr3_user,
                    c.cr3_kernel,
                    c.differing_bits,
                    if c.pgd_switch_bit12 {
                        " (bit 12: PTI's user/kernel PGD)"
                    } else {
                        ""
                    },
                    c.switch_at
                        .as_deref()
                        .map(|x| format!("`{x}` after {} steps", c.steps))
                        .unwrap_or_else(|| format!("no change in {} steps", c.steps)),
                    if c.current_readable_before {
                        "yes"
                    } else {
                        "no"
                    },
                    if c.current_readable_after {
                        "yes"
                    } else {
                        "no"
                    },
                    c.resumes_other,
                    // A median of no hits is not a time.
                    if c.resumes_other == 0 {
                        "—".to_string()
                    } else {
                        format!("{:.2} ms", c.per_hit.median)
                    }
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | — | — | — | {} | — | — | — |",
                    r.label,
                    r.cpu_model,
                    r.meltdown.as_deref().unwrap_or("—"),
                    r.error.as_deref().unwrap_or("no result")
                );
            }
        }
    }
    if let Some(c) = runs
        .iter()
        .filter_map(|r| r.report.as_ref())
        .find(|c| !c.current_readable_before)
    {
        let _ = writeln!(
            md,
            "\nUnder PTI the user page tables do not map the kernel's per-cpu data, so reading `current` at the entry fails{} — \
             the memory error the lab saw before `SWITCH_TO_KERNEL_CR3`. It is not the MMU \"updating permissions\": the CR3 switch \
             installs page tables that map the kernel.",
            c.current_error_before
                .as_deref()
                .map(|e| format!(" (`{e}`)"))
                .unwrap_or_default()
        );
    }
}
