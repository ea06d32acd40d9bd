//! `report.md`, rendered from the [`Summary`] alone, so every number in the
//! report is one in `summary.json`.

use std::fmt::Write;

use super::summary::Summary;
use guestscope_common::ProbeKind;

fn opt_s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3} s")).unwrap_or_else(|| "—".into())
}

/// Renders the report.
pub fn render(s: &Summary) -> String {
    let mut md = String::new();
    let r = &s.run;
    let _ = writeln!(md, "# guestscope report\n");
    let _ = writeln!(
        md,
        "Guest kernel **{}** under QEMU ({}: {}), {} vCPU, {} MiB. Run took {:.1} s of host wall time. \
         Outcome: **{}**{}.\n",
        r.kernel_release.as_deref().unwrap_or("unknown"),
        r.accel.to_uppercase(),
        r.accel_reason,
        r.cpus,
        r.memory_mb,
        r.wall_s,
        r.outcome.how,
        r.outcome
            .detail
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default()
    );

    if !r.outcome.complete {
        let _ = writeln!(md, "## How the run ended\n");
        let _ = writeln!(
            md,
            "The run ended before the agent's final record: **{}**{}. Everything received until then is in this report and in `events.jsonl`.\n",
            r.outcome.how,
            r.outcome
                .detail
                .as_deref()
                .map(|d| format!(": `{}`", d.replace('`', "'")))
                .unwrap_or_default()
        );
        if !r.outcome.console.is_empty() {
            let _ = writeln!(
                md,
                "The guest console at the end (`serial.log` has all of it):\n\n```"
            );
            for l in &r.outcome.console {
                let _ = writeln!(md, "{l}");
            }
            let _ = writeln!(md, "```\n");
        }
    }
    if !s.claims.is_empty() {
        let _ = writeln!(md, "## Claims check\n");
        let _ = writeln!(
            md,
            "Each conclusion of the seed lab, decided by this run's measurements.\n"
        );
        let _ = writeln!(
            md,
            "| § | the lab's claim | verdict | evidence from this run |\n|---|---|---|---|"
        );
        for c in &s.claims {
            let _ = writeln!(
                md,
                "| {} | {} | **{}** | {} |",
                c.section,
                c.claim,
                c.verdict.as_str(),
                c.evidence.replace('|', "\\|")
            );
        }
        let _ = writeln!(md);
    }
    render_support(&mut md, s);
    render_experiments(&mut md, s);
    render_timeline(&mut md, s);
    let _ = writeln!(md, "\n## The traced run: boot\n");
    let b = &s.boot;
    let _ = writeln!(md, "| milestone | host time since QEMU launch |\n|---|---|");
    for (name, v) in [
        ("first console byte", b.first_byte_s),
        ("kernel banner (`Linux version`)", b.kernel_banner_s),
        ("init started", b.init_start_s),
        ("agent ready (probes attached, stream up)", b.agent_ready_s),
    ] {
        let _ = writeln!(md, "| {name} | {} |", opt_s(v));
    }
    if let Some(k) = b.init_start_kernel_s {
        let _ = writeln!(
            md,
            "\nThe kernel's own clock read {k:.3} s when init started."
        );
    }
    if let Some(f) = &b.fatal {
        let _ = writeln!(md, "\n**Fatal console message:** `{f}`");
    }

    let _ = writeln!(md, "\n## Probes\n");
    let _ = writeln!(
        md,
        "| probe | attached to | method | matched | emitted | lost (ring full) | no stack | skipped (nested) | note |\n|---|---|---|---:|---:|---:|---:|---:|---|"
    );
    for p in &s.probes {
        let c = p.counters.unwrap_or_default();
        let n = |v: u64| {
            if p.counters.is_some() {
                v.to_string()
            } else {
                "—".into()
            }
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} |",
            p.name,
            p.attach.target,
            if p.attach.attached {
                p.attach.method.as_str()
            } else {
                "not attached"
            },
            n(c.matched),
            n(c.emitted),
            n(c.ring_full),
            n(c.stack_failed),
            n(c.nested),
            p.attach.note
        );
    }

    let l = &s.losses;
    let st = &s.stream;
    let _ = writeln!(md, "\n## Coverage and losses\n");
    let _ = writeln!(md, "| what | count |\n|---|---:|");
    let _ = writeln!(
        md,
        "| events received by the collector | {} |",
        st.events_received
    );
    if let Some(sent) = l.events_sent {
        let _ = writeln!(md, "| events sent by the agent | {sent} |");
    }
    if let Some(m) = l.events_missing {
        let _ = writeln!(md, "| events sent but not received | {m} |");
    }
    let _ = writeln!(
        md,
        "| events lost in the kernel (ring buffer full) | {} |",
        l.ring_full
    );
    let _ = writeln!(
        md,
        "| events without a stack (stack walk failed) | {} |",
        l.stack_failed
    );
    let _ = writeln!(
        md,
        "| probe hits skipped (another probe running on the CPU) | {} |",
        l.nested
    );
    let _ = writeln!(
        md,
        "| stream records missing (sequence gaps) | {} in {} gaps |",
        st.seq.missing, st.seq.gaps
    );
    let _ = writeln!(
        md,
        "| duplicate records dropped (resent after a reconnection) | {} |",
        st.seq.duplicates
    );
    let link = &st.link;
    let _ = writeln!(
        md,
        "| link outages (the agent reconnected and resent what was not acknowledged) | {} ({:.1} s without the link) |",
        link.outages.len(),
        link.total_gap_s()
    );
    let _ = writeln!(
        md,
        "| events dropped by the agent (link down past its spool bound) | {} in {} records |",
        l.spool_dropped_events, l.spool_dropped_records
    );
    let _ = writeln!(
        md,
        "| connections refused (not this run's agent) | {} |",
        link.refused.len()
    );
    let _ = writeln!(
        md,
        "| events attributed to no workload | {} |",
        st.events_unattributed
    );
    let counted: Vec<_> = s
        .probes
        .iter()
        .filter(|p| p.counters.is_some_and(|c| c.matched > 0))
        .collect();
    if !counted.is_empty() {
        let ring = if r.events_ring_bytes > 0 {
            format!(" (ring buffer: {} KiB)", r.events_ring_bytes / 1024)
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "\nPer probe, every hit of a traced process is received, counted as lost in the kernel{ring}, or counted as dropped by the agent:\n"
        );
        let _ = writeln!(
            md,
            "| probe | hits (matched) | received | lost (ring full) | dropped (link down) | unaccounted |\n|---|---:|---:|---:|---:|---:|"
        );
        for p in counted {
            let c = p.counters.unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                p.name,
                c.matched,
                p.received,
                c.ring_full,
                p.spool_dropped,
                p.unaccounted.unwrap_or(0)
            );
        }
    }
    for (i, r) in st.agent_restarts.iter().enumerate() {
        let before: Vec<String> = r
            .events_before
            .iter()
            .map(|(probe, n)| format!("{n} {probe}"))
            .collect();
        let _ = writeln!(
            md,
            "\nThe agent died and the guest restarted it ({}): events before it were kept ({}); \
             nothing was traced for {} between the last its predecessor was heard from and its start{}. \
             After a restart the losses above account for the new agent's events only: the counters died with the old one.",
            i + 1,
            if before.is_empty() {
                "none".into()
            } else {
                before.join(", ")
            },
            r.gap_s
                .map(|g| format!("{g:.3} s"))
                .unwrap_or_else(|| "an unknown time".into()),
            r.interrupted_workload
                .as_ref()
                .map(|w| format!("; workload {w} was running and its exit was never seen"))
                .unwrap_or_default()
        );
    }
    if !link.outages.is_empty() {
        let _ = writeln!(
            md,
            "\nThe link to the agent was lost {} time(s):\n",
            link.outages.len()
        );
        for o in &link.outages {
            let restored = match (o.restored_host_s, o.gap_s) {
                (Some(r), Some(g)) => format!("restored at {r:.2} s ({g:.2} s without the link)"),
                _ => "never restored".into(),
            };
            let resumed = match (o.restarted_agent, o.resumed_from) {
                (Some(pid), _) => format!("; a restarted agent (pid {pid}) took over"),
                (None, Some(s)) => format!("; the agent resent from record {s}"),
                (None, None) => String::new(),
            };
            let agent = o
                .agent
                .as_ref()
                .map(|a| {
                    format!(
                        "; the agent saw it break at {:.3} s guest time ({}) and reconnected after {} attempt(s), {:.2} s later",
                        a.lost_ns as f64 / 1e9,
                        a.why,
                        a.attempts,
                        a.restored_ns.saturating_sub(a.lost_ns) as f64 / 1e9
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "- lost at {:.2} s host time after {} records ({}), {restored}{resumed}{agent}.",
                o.lost_host_s, o.records_before, o.why
            );
        }
    }
    for why in &link.refused {
        let _ = writeln!(md, "\nRefused: {why}.");
    }
    if let Some(e) = &st.decode_error {
        let _ = writeln!(md, "\nThe stream ended with an error: `{e}`.");
    }
    if let Some(rate) = st.events_per_s {
        let _ = writeln!(
            md,
            "\n{} records, {} bytes; {:.0} events/s while workloads ran (guest clock).",
            st.records, st.bytes, rate
        );
    }

    let _ = writeln!(md, "\n## Workloads\n");
    if !s.run.workload_user.is_empty() {
        let _ = writeln!(md, "Workloads ran as {}.\n", s.run.workload_user);
    }
    if let Some(cwd) = &s.run.host_files_cwd {
        let _ = writeln!(
            md,
            "The guest ran the host's program from the host's files, read-only over virtio-9p, \
             starting in `{cwd}`; what it wrote went to a tmpfs in the guest, not to the host.\n"
        );
    }
    let _ = writeln!(
        md,
        "| workload | pid | exit | duration (guest) | spin_lock | alloc_fd | page_fault_user | page_fault_kernel |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for w in &s.workloads {
        let e = |k: &str| w.events.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            w.name,
            w.pid,
            match (w.status, w.timed_out) {
                (Some(code), true) => format!("{code}, timed out"),
                (Some(code), false) => code.to_string(),
                (None, _) => "—".into(),
            },
            w.duration_ms
                .map(|d| format!("{d:.1} ms"))
                .unwrap_or_else(|| "—".into()),
            e("spin_lock"),
            e("alloc_fd"),
            e("page_fault_user"),
            e("page_fault_kernel")
        );
    }
    timed_out_paragraph(&mut md, s);
    render_user_probes(&mut md, s);
    render_user_stops(&mut md, s);
    let _ = writeln!(
        md,
        "\n## Workload details\n\nThe most frequent kernel stacks of each workload, per probe; every event is in `events.jsonl`."
    );
    for w in &s.workloads {
        let _ = writeln!(md, "\n### {} (`{}`)\n", w.name, w.argv.join(" "));
        if w.pids.len() > 1 {
            let _ = writeln!(
                md,
                "Events came from pids {:?} (the workload and its children).\n",
                w.pids
            );
        }
        if !w.named_locks.is_empty() {
            let locks: Vec<String> = w
                .named_locks
                .iter()
                .map(|(k, v)| format!("`{k}` ×{v}"))
                .collect();
            let _ = writeln!(md, "Named locks taken: {}.\n", locks.join(", "));
        }
        for (probe, stacks) in &w.top_stacks {
            let total = w.events.get(probe).copied().unwrap_or(0);
            let _ = writeln!(
                md,
                "**{probe}**: top {} of {} events' stacks\n",
                stacks.len(),
                total
            );
            for st in stacks {
                let _ = writeln!(md, "{} events:\n```", st.count);
                if st.frames.is_empty() {
                    let _ = writeln!(md, "(no stack: id {})", st.stack_id);
                }
                for f in st.frames.iter().take(16) {
                    let _ = writeln!(md, "  {f}");
                }
                if st.frames.len() > 16 {
                    let _ = writeln!(md, "  … {} more frames", st.frames.len() - 16);
                }
                let _ = writeln!(md, "```");
            }
        }
        if !w.output.is_empty() {
            let _ = writeln!(md, "Output:\n```\n{}\n```", w.output);
        }
    }
    if !s.agent_messages.is_empty() {
        let _ = writeln!(md, "\n## Agent messages\n");
        for m in &s.agent_messages {
            let _ = writeln!(md, "- {m}");
        }
    }
    if let Some(t) = &s.trace {
        let _ = writeln!(
            md,
            "\n## Trace\n\n`{}` ({} packets, {} probe events, {} gdbstub snapshots, {} holds) opens in https://ui.perfetto.dev: \
             boot phases and the gdbstub's holds and snapshots on the host clock, workloads and every probe event on per-thread \
             and per-CPU tracks, placed on the same axis as described in *One time line*.",
            t.file, t.packets, t.events, t.snapshots, t.holds
        );
    }
    let _ = writeln!(md, "\n---\nQEMU: `{}`", r.qemu_command);
    md
}

fn render_experiments(md: &mut String, s: &Summary) {
    if let Some(b) = &s.experiments.boot {
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
            "\nAll times in seconds; host times from QEMU's launch; the agent's hello is its first record on the stream, stamped with the guest's CLOCK_MONOTONIC.\n"
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
    if !s.experiments.pci.is_empty() {
        let _ = writeln!(md, "\n## PCI devices (seed §3.5)\n");
        let _ = writeln!(
            md,
            "| slot | vendor:device | class | class name | vendor | device | discovered by the kernel |\n|---|---|---|---|---|---|---|"
        );
        for d in &s.experiments.pci {
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
    if let Some(r) = &s.experiments.random {
        render_random(md, r);
    }
    if !s.experiments.syscall_cr3.is_empty() {
        render_cr3(md, &s.experiments.syscall_cr3);
    }
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
    for w in &s.experiments.spin_lock {
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
    for w in &s.experiments.spin_lock {
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
    for w in &s.experiments.spin_lock {
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
    let _ = writeln!(md, "\n## Page faults (seed §5.3)\n");
    let _ = writeln!(
        md,
        "| workload | user faults | kernel faults | paths |\n|---|---:|---:|---|"
    );
    for f in &s.experiments.page_faults {
        let paths: Vec<String> = f.paths.iter().map(|(k, v)| format!("{k} ×{v}")).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            f.workload,
            f.user,
            f.kernel,
            paths.join(", ")
        );
    }
}

fn render_random(md: &mut String, r: &crate::experiments::random::RandomExperiment) {
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

fn render_cr3(md: &mut String, runs: &[crate::output::summary::Cr3Run]) {
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
                    "| {} | {} | {} | `{:#x}` | `{:#x}` | `{:#x}`{} | {} | {} / {} | {} | {:.2} ms |",
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
                    c.per_hit.median
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

/// What the guest kernel offered, and the experiments that did not run.
fn render_support(md: &mut String, s: &Summary) {
    let k = &s.kernel;
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not tried",
    };
    let _ = writeln!(
        md,
        "## Guest kernel support
"
    );
    let _ = writeln!(md, "| feature | available |\n|---|---|");
    let _ = writeln!(
        md,
        "| BTF (`/sys/kernel/btf/vmlinux`) | {} |",
        if k.btf { "yes" } else { "no" }
    );
    let _ = writeln!(md, "| fentry (spin_lock probe) | {} |", yes_no(k.fentry));
    let _ = writeln!(md, "| kprobes | {} |", yes_no(k.kprobes));
    let _ = writeln!(
        md,
        "| tracepoints (exceptions:page_fault_*) | {} |",
        yes_no(k.tracepoints)
    );
    for c in &k.symbols {
        let _ = writeln!(
            md,
            "| symbol `{}` ({}) | {} |",
            c.symbol,
            c.needed_by,
            yes_no(c.present)
        );
    }
    let _ = writeln!(
        md,
        "\nProbes: {}.\n",
        k.probes.join("; ").replace('|', "\\|")
    );
    if s.skipped.is_empty() {
        let _ = writeln!(md, "Every experiment ran.\n");
    } else {
        let _ = writeln!(md, "### Skipped\n");
        let _ = writeln!(md, "| experiment | why |\n|---|---|");
        for x in &s.skipped {
            let _ = writeln!(
                md,
                "| {} | {} |",
                x.experiment,
                x.reason.replace('|', "\\|")
            );
        }
        let _ = writeln!(md);
    }
}

fn render_timeline(md: &mut String, s: &Summary) {
    let t = &s.timeline;
    let _ = writeln!(md, "\n## One time line: guest clock, host clock, gdbstub\n");
    let _ = writeln!(
        md,
        "Guest times (every probe event's CLOCK_MONOTONIC stamp) are put on the host's axis (ns since QEMU's launch) by {}.\n",
        t.method
    );
    let p = &t.probes;
    let _ = writeln!(md, "| clock sync | value |\n|---|---:|");
    let _ = writeln!(
        md,
        "| probes sent / answered / given up | {} / {} / {} |",
        p.sent, p.answered, p.unanswered
    );
    if let Some(f) = &t.fit {
        let _ = writeln!(
            md,
            "| round trips, over guest time | {} over {:.2} s |",
            f.samples,
            f.span_ns as f64 / 1e9
        );
        let _ = writeln!(
            md,
            "| shortest round trip | {:.1} µs |",
            f.best_rtt_ns as f64 / 1e3
        );
        let _ = writeln!(
            md,
            "| one line through every window | {} |",
            if f.consistent {
                "yes"
            } else {
                "**no**: the samples contradict one offset and drift"
            }
        );
        let _ = writeln!(md, "| offset (host − guest) | {:.6} s |", f.offset_ns / 1e9);
        let _ = writeln!(md, "| drift | {:+.2} ppm |", f.drift * 1e6);
        let _ = writeln!(
            md,
            "| error bound of a mapped time | ±{:.1} µs |",
            f.error_bound_ns / 1e3
        );
    }
    if t.holds > 0 {
        let _ = writeln!(
            md,
            "| gdbstub holds (guest clock stopped) | {} holds, {:.1} ms |",
            t.holds, t.held_ms
        );
        if let Some(naive) = t.error_bound_ignoring_holds_ns {
            let _ = writeln!(
                md,
                "| the same fit with the holds ignored | ±{:.1} µs |",
                naive / 1e3
            );
        }
    }
    let Some(sr) = &t.snapshots else { return };
    let _ = writeln!(md, "\n### gdbstub snapshots in the traced run\n");
    if let Some(e) = &sr.error {
        let _ = writeln!(md, "Not taken: {e}.");
    }
    let Some(run) = &sr.run else { return };
    let user_stops = run.snapshots.iter().any(|s| !s.site.is_empty());
    if user_stops {
        let _ = writeln!(
            md,
            "Hardware breakpoints on `{}` (`--snapshot-at`) while each workload ran ({} stops, {} hits of other tasks \
             stepped over; {}); what was read at each stop is under \"Your stops\". While held, the guest's clock stands \
             still, so each hold is taken out of the time line.\n",
            run.symbol,
            run.snapshots.len(),
            run.other_hits,
            run.ended
        );
    } else {
        let _ = writeln!(
            md,
            "A hardware breakpoint on `{}` ({:#x}) while workload pid {} ran; at each of its hits the collector read the registers \
         and `current` through the gdbstub ({} snapshots, {} other-process hits stepped over; ended: {}). While held, the guest's \
         clock stands still, so each hold is taken out of the time line.\n",
            run.symbol,
            run.address,
            run.target_tgid,
            run.snapshots.len(),
            run.other_hits,
            run.ended
        );
    }
    let Some(cc) = &sr.cross_check else { return };
    if user_stops {
        let _ = writeln!(
            md,
            "**Cross-check: {} of {} stops agree** with the eBPF event nearest in time on the same CPU (same thread id; a \
             stop far from any event of its own, such as one before the workload's exec, meets another process's); \
             {} had no event on their CPU (distance on the guest clock: median {:.1} µs, largest {:.1} µs).\n",
            cc.agreed, cc.compared, cc.without_event, cc.median_abs_delta_us, cc.max_abs_delta_us
        );
        let followed = cc.matches.iter().filter(|m| m.same_call.is_some()).count();
        if followed > 0 {
            let _ = writeln!(
                md,
                "**{} of {}** are followed on their CPU by a `--probe kprobe:` event of the same thread (the same \
                 call, where the function is probed too), a median {:.0} µs of guest time after the stop.\n",
                cc.same_call_agreed, cc.compared, cc.same_call_median_us
            );
        }
        return;
    }
    let _ = writeln!(
        md,
        "**Cross-check: {} of {} snapshots agree** with the eBPF event nearest in time on the same CPU (same thread id); \
         {} had no event on their CPU (distance on the guest clock: median {:.1} µs, largest {:.1} µs). \
         **{} of {}** are followed on their CPU by a `{}` event of the same thread — the same call, seen by both — stamped a \
         median {:.0} µs (largest {:.0} µs) of guest time after the stop.\n",
        cc.agreed,
        cc.compared,
        cc.without_event,
        cc.median_abs_delta_us,
        cc.max_abs_delta_us,
        cc.same_call_agreed,
        cc.compared,
        cc.same_call_probe,
        cc.same_call_median_us,
        cc.same_call_max_us
    );
    let _ = writeln!(
        md,
        "| # | host time (s) | cpu | pid (gdbstub) | comm | rip | rsp | cr3 | nearest eBPF event (tid, Δt µs) | next `{}` (tid, Δt µs) | agree |\n|---:|---:|---:|---:|---|---|---|---|---|---|---|",
        cc.same_call_probe
    );
    for m in &cc.matches {
        let Some(snap) = run.snapshots.get(m.snapshot) else {
            continue;
        };
        let reg = |n: &str| {
            snap.registers
                .iter()
                .find(|(r, _)| r == n)
                .map(|(_, v)| format!("{v:#x}"))
                .unwrap_or_default()
        };
        let _ = writeln!(
            md,
            "| {} | {:.6} | {} | {} | {} | {} | {} | {} | {} ({}, {:+.1}) | {} | {} |",
            m.snapshot + 1,
            snap.host_ns as f64 / 1e9,
            snap.cpu.map_or_else(|| "?".into(), |c| c.to_string()),
            m.pids.0,
            snap.comm,
            reg("rip"),
            reg("rsp"),
            reg("cr3"),
            m.probe,
            m.pids.1,
            m.delta_us,
            m.same_call
                .map_or_else(|| "—".into(), |(tid, d)| format!("{tid}, {d:+.1}")),
            if m.agree && m.same_call.is_some_and(|(tid, _)| tid == m.pids.0) {
                "yes"
            } else {
                "**no**"
            }
        );
    }
}

/// Names the workloads the agent ended for running past `--workload-timeout`.
fn timed_out_paragraph(md: &mut String, s: &Summary) {
    let names: Vec<String> = s
        .workloads
        .iter()
        .filter(|w| w.timed_out)
        .map(|w| format!("`{}`", w.name))
        .collect();
    if names.is_empty() {
        return;
    }
    let limit = s
        .run
        .workload_timeout_s
        .map(|t| format!(" ({t:.0} s, `--workload-timeout`)"))
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "\n**Timed out:** {} ran past the per-workload limit{limit} and {} ended by the \
         agent: SIGTERM to its process group, SIGKILL {} s later if still running. Its events \
         up to then are kept; the workloads after it ran as planned.",
        names.join(", "),
        if names.len() == 1 { "was" } else { "were" },
        guestscope_common::plan::TIMEOUT_GRACE_MS / 1000,
    );
}

/// Frames of a user probe's top stack shown in the report (all are in summary.json).
const USER_PROBE_FRAMES: usize = 12;

/// "Your probes": each function the user's `--probe`s hit.
fn render_user_probes(md: &mut String, s: &Summary) {
    let asked: Vec<&str> = s
        .probes
        .iter()
        .filter(|p| {
            p.attach.attached
                && ProbeKind::ALL
                    .iter()
                    .any(|k| k.is_user() && k.name() == p.name)
        })
        .map(|p| p.attach.note.as_str())
        .collect();
    if asked.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Your probes\n");
    let _ = writeln!(
        md,
        "Asked for with `--probe`: {}. Filtered in the kernel to the workloads and their \
         children; `arg` is the first argument (fentry, kprobe; past a kprobe's entry, `rdi`), \
         the return value (kretprobe), or the first 8 bytes of the event's fields (tracepoint).\n",
        asked.join("; ")
    );
    if s.user_probes.is_empty() {
        let _ = writeln!(md, "None of these functions ran in a workload.");
        return;
    }
    let _ = writeln!(
        md,
        "| probe | hits | by workload | arg | arg values |\n|---|---:|---|---|---|"
    );
    for p in &s.user_probes {
        let by: Vec<String> = p
            .by_workload
            .iter()
            .map(|(w, n)| format!("{w} {n}"))
            .collect();
        let values = match &p.values {
            Some(v) => v
                .iter()
                .map(|(value, n)| format!("`{value}` ×{n}"))
                .collect::<Vec<_>>()
                .join(", "),
            None => "many".into(),
        };
        let arg = if p.arg.is_empty() {
            "—".to_string()
        } else {
            format!("`{}`", p.arg)
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {arg} | {} |",
            p.name,
            p.hits,
            by.join(", "),
            values
        );
    }
    for p in s.user_probes.iter().filter(|p| !p.more_args.is_empty()) {
        let args: Vec<String> = p
            .more_args
            .iter()
            .map(|a| {
                let values = match &a.values {
                    Some(v) => v
                        .iter()
                        .map(|(value, n)| format!("`{value}` ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    None => "many values".into(),
                };
                format!("`{}`: {values}", a.name)
            })
            .collect();
        let _ = writeln!(
            md,
            "\n`{}`, the arguments after the first: {}.",
            p.name,
            args.join("; ")
        );
    }
    for p in &s.user_probes {
        if p.top_stack.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "\n`{}`: most frequent stack ({} of {} hits)\n\n```",
            p.name, p.top_stack_hits, p.hits
        );
        for f in p.top_stack.iter().take(USER_PROBE_FRAMES) {
            let _ = writeln!(md, "{f}");
        }
        if p.top_stack.len() > USER_PROBE_FRAMES {
            let _ = writeln!(md, "... {} more", p.top_stack.len() - USER_PROBE_FRAMES);
        }
        let _ = writeln!(md, "```");
    }
}

/// "Your stops": what `--read` gave at each `--snapshot-at` stop, a table per function.
fn render_user_stops(md: &mut String, s: &Summary) {
    let Some(sr) = &s.timeline.snapshots else {
        return;
    };
    let Some(run) = &sr.run else {
        if let Some(e) = &sr.error {
            let _ = writeln!(md, "\n## Your stops\n\nNot taken: {e}.");
        }
        return;
    };
    if !run.snapshots.iter().any(|x| !x.site.is_empty()) {
        return;
    }
    let _ = writeln!(md, "\n## Your stops\n");
    let _ = writeln!(
        md,
        "Stops at `{}` through QEMU's gdbstub; the condition (which task) decided on the host; ended: {}.",
        run.symbol, run.ended
    );
    for site in run.symbol.split(", ") {
        let stops: Vec<_> = run.snapshots.iter().filter(|x| x.site == site).collect();
        let _ = writeln!(md, "\n### `{site}`: {} stops\n", stops.len());
        let Some(first) = stops.first() else {
            continue;
        };
        let exprs: Vec<&str> = first.reads.iter().map(|r| r.expr.as_str()).collect();
        let mut header = "| # | host time (s) | cpu | pid | comm |".to_string();
        let mut rule = "|---:|---:|---:|---:|---|".to_string();
        for e in &exprs {
            header.push_str(&format!(" `{}` |", e.replace('|', "\\|")));
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{header}\n{rule}");
        for (i, x) in stops.iter().enumerate() {
            let mut row = format!(
                "| {} | {:.6} | {} | {} | {} |",
                i + 1,
                x.host_ns as f64 / 1e9,
                x.cpu.map_or_else(|| "?".into(), |c| c.to_string()),
                x.pid,
                x.comm
            );
            for r in &x.reads {
                let cell = match (&r.value, &r.error) {
                    (Some(v), _) => format!("`{}`", v.replace('|', "\\|")),
                    (None, Some(e)) => format!("*{}*", e.replace('|', "\\|")),
                    _ => "—".into(),
                };
                row.push_str(&format!(" {cell} |"));
            }
            let _ = writeln!(md, "{row}");
        }
    }
}
