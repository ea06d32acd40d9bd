//! `results.md`: the bench's tables, and each target of the benchmark issue checked
//! against this run's figures.

use std::fmt::Write as _;

use super::results::{BenchResults, TargetCheck};
use super::stats::Spread;

/// Targets of the benchmark issue.
pub mod target {
    /// µs added per probe event on the fopen loop, at most.
    pub const US_PER_EVENT: f64 = 1.5;
    /// fopen loop with every probe / untraced, at most.
    pub const FOPEN_RATIO: f64 = 1.4;
    /// How many times faster than the gdb method, at least.
    pub const GDB_FASTER: f64 = 400.0;
    /// Lossless stream MB/s over raw vsock MB/s, at least.
    pub const FRACTION_OF_RAW: f64 = 0.5;
    /// Boot to agent-ready, s, at most (TCG).
    pub const BOOT_S: f64 = 3.0;
    /// Warm `cargo xtask lab`, s, at most (TCG).
    pub const LAB_S: f64 = 60.0;
    /// Agent peak RSS after 10M events, MiB, at most.
    pub const AGENT_MIB: f64 = 8.0;
    /// Collector peak RSS after 10M events, MiB, at most.
    pub const COLLECTOR_MIB: f64 = 64.0;
}

/// `median (min–max, n)` with `digits` decimals.
pub fn spread(s: Option<&Spread>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{:.d$} ({:.d$}–{:.d$}, n={})",
            s.median,
            s.min,
            s.max,
            s.n,
            d = digits
        ),
        Some(s) => format!("{:.d$} (n=1)", s.median, d = digits),
        None => "—".into(),
    }
}

fn med(s: Option<&Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

fn check(
    what: &str,
    target: String,
    measured: Option<f64>,
    shown: String,
    at_most: Option<f64>,
    at_least: Option<f64>,
    note: String,
) -> TargetCheck {
    let met = measured.map(|m| at_most.is_none_or(|t| m <= t) && at_least.is_none_or(|t| m >= t));
    let by = match (measured, at_most, at_least) {
        (Some(m), Some(t), _) if m <= t => {
            format!("{:.0}% under the target", (1.0 - m / t) * 100.0)
        }
        (Some(m), Some(t), _) => format!("{:.2}x the target", m / t),
        (Some(m), _, Some(t)) if m >= t => format!("{:.2}x the target", m / t),
        (Some(m), _, Some(t)) => format!("{:.0}% of the target", m / t * 100.0),
        _ => "not measured".into(),
    };
    TargetCheck {
        what: what.into(),
        target,
        measured: shown,
        met,
        note: if note.is_empty() {
            by
        } else {
            format!("{by}; {note}")
        },
    }
}

/// Each target of the benchmark issue against `r`.
pub fn targets(r: &BenchResults) -> Vec<TargetCheck> {
    let mut t = Vec::new();
    let fopen = r.overhead.iter().find(|o| o.workload == "fopen");
    let us = fopen.and_then(|f| med(f.us_per_event.as_ref()));
    let per_it = fopen.and_then(|f| med(f.events_per_iteration.as_ref()));
    t.push(check(
        "probe cost per event (fopen loop, every probe, stacks on every event)",
        format!("≤ {} µs", target::US_PER_EVENT),
        us,
        us.map_or("—".into(), |u| format!("{u:.2} µs")),
        Some(target::US_PER_EVENT),
        None,
        {
            let mut parts = Vec::new();
            if let Some(e) = per_it {
                parts.push(format!("{e:.1} events per iteration"));
            }
            if let Some(w) =
                fopen.and_then(|f| med(f.without_stacks.as_ref()?.walk_us_per_event.as_ref()))
            {
                parts.push(format!("the stack walk {w:.2} µs of it"));
            }
            if let Some(a) = fopen.and_then(|f| med(f.agent_cpu_us_per_event.as_ref())) {
                parts.push(format!("the agent {a:.2} µs of CPU per event"));
            }
            if let Some(d) = fopen.and_then(|f| med(f.us_per_event_with_drain.as_ref())) {
                parts.push(format!("{d:.2} µs with the agent's drain after the loop"));
            }
            parts.join("; ")
        },
    ));
    let ratio = fopen.and_then(|f| med(f.ratio.as_ref()));
    t.push(check(
        "fopen loop slowdown, every probe on",
        format!("≤ {}x", target::FOPEN_RATIO),
        ratio,
        ratio.map_or("—".into(), |x| format!("{x:.2}x")),
        Some(target::FOPEN_RATIO),
        None,
        String::new(),
    ));
    let faster = r
        .gdb
        .as_ref()
        .and_then(|g| med(g.guestscope_faster.as_ref()));
    let gdb_hit = r.gdb.as_ref().and_then(|g| med(g.gdb_ms_per_hit.as_ref()));
    t.push(check(
        "fopen loop traced by guestscope vs by the lab's gdb method (same events: alloc_fd of the pid)",
        format!("≥ {}x faster", target::GDB_FASTER),
        faster,
        faster.map_or("—".into(), |x| format!("{x:.0}x faster")),
        None,
        Some(target::GDB_FASTER),
        {
            let mut parts = Vec::new();
            if let Some(h) = gdb_hit {
                parts.push(format!("gdb method {h:.2} ms per breakpoint hit"));
            }
            if let Some(a) = r.gdb.as_ref().and_then(|g| med(g.guestscope_all_faster.as_ref())) {
                parts.push(format!("{a:.0}x with every guestscope probe on (6 events per iteration instead of 1)"));
            }
            parts.join("; ")
        },
    ));
    let cap = r.capacity.as_ref();
    let raw = cap.and_then(|c| med(c.raw.host_mb_s.as_ref()));
    let pipeline = cap.and_then(|c| c.pipeline.as_ref());
    t.push(check(
        "the pipeline's own ceiling vs raw vsock (MB/s; events the agent makes itself, no eBPF, no workload)",
        format!("≥ {:.0}%", target::FRACTION_OF_RAW * 100.0),
        cap.and_then(|c| c.pipeline_fraction_of_raw),
        match (pipeline, raw) {
            (Some(p), Some(raw)) => format!(
                "{:.0} events/s = {:.2} MB/s of {raw:.0} MB/s raw ({:.1}%)",
                p.events_per_s,
                p.wire_mb_s,
                p.wire_mb_s / raw * 100.0
            ),
            _ => "—".into(),
        },
        None,
        Some(target::FRACTION_OF_RAW),
        match (
            cap.and_then(|c| c.max_lossless_rate),
            cap.and_then(|c| c.max_lossless_wire_mb_s),
            cap.and_then(|c| c.fraction_of_raw),
        ) {
            (Some(e), Some(w), Some(f)) => format!(
                "end to end with real probes (alloc_fd and its stack, the flood loop): {e:.0} events/s lossless = {w:.2} MB/s ({:.1}% of raw){}",
                f * 100.0,
                cap.and_then(|c| c.max_lossless_ring_mb_s)
                    .map_or(String::new(), |m| format!(
                        "; the agent read {m:.1} MB/s of ring-buffer records at that rate"
                    ))
            ),
            _ => String::new(),
        },
    ));
    t.push(TargetCheck {
        what: "past the limit, every lost event counted (received + ring_full = matched)".into(),
        target: "exact".into(),
        measured: cap.map_or("—".into(), |c| {
            let lost: u64 = c.steps.iter().map(|s| s.ring_full).sum();
            format!(
                "{} steps, {lost} events lost, {}",
                c.steps.len(),
                if c.accounting_ok {
                    "all add up"
                } else {
                    "NOT all add up"
                }
            )
        }),
        met: cap.map(|c| c.accounting_ok),
        note: String::new(),
    });
    let boot = med(r.boot.agent_ready_s.as_ref());
    t.push(check(
        "boot to agent-ready, default bzImage (KASLR; host wall clock, TCG)",
        format!("≤ {} s", target::BOOT_S),
        boot,
        boot.map_or("—".into(), |b| format!("{b:.2} s")),
        Some(target::BOOT_S),
        None,
        med(r.boot.kernel_banner_s.as_ref()).map_or(String::new(), |k| format!("{k:.2} s of it before the kernel's first line (firmware, kernel load and decompression)")),
    ));
    if let Some(fast) = &r.boot_uncompressed {
        let b = med(fast.agent_ready_s.as_ref());
        t.push(check(
            "boot to agent-ready, uncompressed kernel (`--kernel target/guestscope/guest/vmlinux`: PVH entry, no KASLR)",
            format!("≤ {} s", target::BOOT_S),
            b,
            b.map_or("—".into(), |b| format!("{b:.2} s")),
            Some(target::BOOT_S),
            None,
            med(fast.kernel_banner_s.as_ref()).map_or(String::new(), |k| format!("kernel's first line at {k:.2} s")),
        ));
    }
    let lab = r.lab.as_ref().map(|l| l.wall_s);
    t.push(check(
        "warm `cargo xtask lab`, end to end (TCG)",
        format!("≤ {} s", target::LAB_S),
        lab,
        lab.map_or("—".into(), |s| format!("{s:.1} s")),
        Some(target::LAB_S),
        None,
        r.lab
            .as_ref()
            .and_then(|l| l.guestscope_lab_s)
            .map_or(String::new(), |g| {
                format!("{g:.1} s of it in `guestscope lab`")
            }),
    ));
    let mem = r.memory.as_ref();
    let scope = mem.map_or(String::new(), |m| {
        format!("after {} events", m.events_received)
    });
    let agent = mem
        .and_then(|m| m.agent_peak_kib)
        .map(|k| k as f64 / 1024.0);
    t.push(check(
        "agent peak RSS (VmHWM)",
        format!("≤ {} MiB after 10M events", target::AGENT_MIB),
        agent,
        agent.map_or("—".into(), |a| format!("{a:.1} MiB {scope}")),
        Some(target::AGENT_MIB),
        None,
        mem.and_then(|m| Some((m.agent_rss_anon_kib?, m.agent_rss_file_kib?))).map_or(String::new(), |(a, f)| {
            format!("{:.1} MiB of its own (RssAnon), {:.1} MiB mapped files and ring buffer (RssFile)", a as f64 / 1024.0, f as f64 / 1024.0)
        }),
    ));
    let coll = mem
        .and_then(|m| m.collector_peak_kib)
        .map(|k| k as f64 / 1024.0);
    t.push(check(
        "collector peak RSS",
        format!("≤ {} MiB after 10M events", target::COLLECTOR_MIB),
        coll,
        coll.map_or("—".into(), |c| format!("{c:.1} MiB {scope}")),
        Some(target::COLLECTOR_MIB),
        None,
        mem.and_then(|m| m.kib_per_million_events)
            .map_or(String::new(), |(a, c)| {
                format!("growth per million events: agent {a:.0} KiB, collector {c:.0} KiB")
            }),
    ));
    t
}

/// The Markdown page.
pub fn render(r: &BenchResults) -> String {
    let mut md = String::new();
    let m = &r.machine;
    let _ = writeln!(md, "# guestscope benchmarks\n");
    let _ = writeln!(
        md,
        "{} · machine: {}, {} cores ({}) · guest kernel {}, {} vCPU, {} MiB · {} · host load before/after: {} / {} · `guestscope bench` took {:.0} s\n",
        r.date,
        m.accel.to_uppercase(),
        m.host_cpus,
        m.host_cpu_model,
        m.guest_kernel,
        m.guest_vcpus,
        m.guest_memory_mb,
        m.qemu,
        m.load_before,
        m.load_after,
        r.wall_s
    );
    let _ = writeln!(
        md,
        "Every figure is from this run: medians (min–max, n) of paired, alternated runs in one boot. Written by `cargo xtask bench`.\n"
    );
    let _ = writeln!(
        md,
        "## Targets\n\n| what | target | measured | met | note |\n|---|---|---|---|---|"
    );
    for t in &r.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {met} | {} |",
            t.what, t.target, t.measured, t.note
        );
    }

    let _ = writeln!(md, "\n## Probe overhead\n");
    let _ = writeln!(
        md,
        "Loop time from the workload's own clock; \"every probe\" = spin_lock (fentry), alloc_fd (kprobe), page_fault_user and page_fault_kernel (tracepoints), each event with its kernel stack; \"untraced\" = no program attached at all.\n"
    );
    let _ = writeln!(
        md,
        "| loop | iterations | untraced (ms) | every probe (ms) | ratio | events per iteration | µs per event |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for o in &r.overhead {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            o.workload,
            o.iterations,
            spread(o.untraced_ms.as_ref(), 1),
            spread(o.traced_ms.as_ref(), 1),
            spread(o.ratio.as_ref(), 3),
            spread(o.events_per_iteration.as_ref(), 2),
            spread(o.us_per_event.as_ref(), 2)
        );
    }
    for o in &r.overhead {
        let per: Vec<String> = o
            .events_per_iteration_by_probe
            .iter()
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .map(|(p, v)| format!("{p} {v:.2}"))
            .collect();
        let _ = writeln!(
            md,
            "\n{}: per iteration {} (process start and exit subtracted); {:.2} nested hits skipped per iteration; {} stack walks failed, {} events lost to a full ring. The agent used {} µs of CPU per event; after the loop it drained the rest in {} ms, which makes {} µs per event in all.",
            o.workload,
            per.join(", "),
            o.nested_per_iteration,
            o.stack_failed,
            o.ring_full,
            spread(o.agent_cpu_us_per_event.as_ref(), 2),
            spread(o.drain_ms.as_ref(), 1),
            spread(o.us_per_event_with_drain.as_ref(), 2)
        );
        if let Some(u) = &o.user_probe {
            let _ = writeln!(
                md,
                "\n{} with one probe on `{}`, stacks on: built in {} ms ({} events), as a user probe (`--probe kprobe:{}`) {} ms ({} events), as `--probe fentry:{}` {} ms ({} events); per event the built-in probe adds {} µs, the user kprobe {} µs ({} times the built-in's), the user fentry {} µs ({} times the user kprobe's; all paired).\n",
                o.workload,
                u.function,
                spread(u.builtin_ms.as_ref(), 1),
                spread(u.builtin_events.as_ref(), 0),
                u.function,
                spread(u.user_ms.as_ref(), 1),
                spread(u.user_events.as_ref(), 0),
                u.function,
                spread(u.fentry_ms.as_ref(), 1),
                spread(u.fentry_events.as_ref(), 0),
                spread(u.builtin_us_per_event.as_ref(), 2),
                spread(u.user_us_per_event.as_ref(), 2),
                spread(u.user_vs_builtin.as_ref(), 2),
                spread(u.fentry_us_per_event.as_ref(), 2),
                spread(u.fentry_vs_kprobe.as_ref(), 2)
            );
        }
        if let Some(n) = &o.without_stacks {
            let _ = writeln!(
                md,
                "\n{} with every probe but no stack walks: {} ms, ratio {}, {} µs per event; the stack walk adds {} µs per event.",
                o.workload,
                spread(n.traced_ms.as_ref(), 1),
                spread(n.ratio.as_ref(), 3),
                spread(n.us_per_event.as_ref(), 2),
                spread(n.walk_us_per_event.as_ref(), 2)
            );
        }
        if let Some(f) = &o.ftrace {
            let _ = writeln!(
                md,
                "\n{} under an ftrace kprobe on `{}` (what trace-cmd uses; no stacks, no pid filter): {} ms, ratio {}, {} hits per iteration, {} µs per hit.",
                o.workload,
                f.function,
                spread(f.traced_ms.as_ref(), 1),
                spread(f.ratio.as_ref(), 3),
                spread(f.hits_per_iteration.as_ref(), 2),
                spread(f.us_per_hit.as_ref(), 2)
            );
        }
    }

    if let Some(g) = &r.gdb {
        let _ = writeln!(md, "\n## guestscope vs the lab's gdb method\n");
        let _ = writeln!(
            md,
            "The fopen loop ({} iterations), traced by a gdbstub hardware breakpoint on `{}` with the pid condition decided on the host (as gdb does it: remove, step, insert, continue), timed on the host clock from the first hit to the last; paired with guestscope runs of the same loop tracing the same events (the alloc_fd probe, stacks included) and with every probe.\n",
            g.iterations, g.symbol
        );
        let _ = writeln!(md, "| | ms per iteration |\n|---|---:|");
        let _ = writeln!(
            md,
            "| untraced | {} |",
            spread(g.untraced_ms_per_iteration.as_ref(), 4)
        );
        let _ = writeln!(
            md,
            "| guestscope, alloc_fd probe (the same events) | {} |",
            spread(g.guestscope_ms_per_iteration.as_ref(), 4)
        );
        let _ = writeln!(
            md,
            "| guestscope, every probe | {} |",
            spread(g.guestscope_all_ms_per_iteration.as_ref(), 4)
        );
        let _ = writeln!(
            md,
            "| gdb method | {} |",
            spread(g.gdb_ms_per_iteration.as_ref(), 2)
        );
        let _ = writeln!(
            md,
            "\nguestscope is {} times faster; the gdb method slows the loop {} times, {} ms per breakpoint hit.",
            spread(g.guestscope_faster.as_ref(), 0),
            spread(g.gdb_slowdown.as_ref(), 0),
            spread(g.gdb_ms_per_hit.as_ref(), 2)
        );
        if let Some(t) = g.traces.first() {
            let _ = writeln!(
                md,
                "Per hit on the host: {:.2} ms handling (condition + step-over, {:.1} round trips), {:.2} ms from resume to the next stop (medians of the first run).",
                t.handling.median, t.round_trips_per_hit, t.run_to_hit.median
            );
        }
    }

    if let Some(c) = &r.capacity {
        let _ = writeln!(md, "\n## Stream capacity\n");
        let _ = writeln!(
            md,
            "Raw vsock (a plain {} MiB byte blast from a guest process, same boot): {} MB/s on the host ({} MB/s by the guest's write loop).\n",
            c.raw.bytes >> 20,
            spread(c.raw.host_mb_s.as_ref(), 0),
            spread(c.raw.guest_mb_s.as_ref(), 0)
        );
        let _ = writeln!(
            md,
            "Events: `flood` (dup+close, one alloc_fd event with its stack per iteration), paced at rising rates, then unpaced:\n"
        );
        let _ = writeln!(
            md,
            "| paced at (/s) | achieved (events/s) | matched | received | lost (ring full) | adds up | stream MB/s | ring MB/s |\n|---:|---:|---:|---:|---:|---|---:|---:|"
        );
        for s in &c.steps {
            let paced = if s.requested_rate == 0 {
                "unpaced".to_string()
            } else {
                s.requested_rate.to_string()
            };
            let _ = writeln!(
                md,
                "| {paced} | {:.0} | {} | {} | {} | {} | {:.2} | {:.1} |",
                s.rate,
                s.matched,
                s.received,
                s.ring_full,
                if s.accounted { "yes" } else { "**no**" },
                s.wire_mb_s,
                s.ring_mb_s
            );
        }
        if let (Some(rate), Some(bpe)) = (c.max_lossless_rate, c.wire_bytes_per_event) {
            let _ = writeln!(
                md,
                "\nHighest lossless rate: {rate:.0} events/s ({bpe:.0} stream bytes per event, stacks and framing included)."
            );
        }
        if let Some(p) = &c.pipeline {
            let _ = writeln!(
                md,
                "\nThe pipeline alone (the agent makes {} spin_lock-like events with {} distinct {}-frame stacks itself and sends them through its stack table, batches, stream and link; the collector writes them to disk): {:.0} events/s, {:.2} MB/s of stream, {} of {} events taken, {:.2} s until the link had the last; the agent's CPU {} µs per event.",
                p.events,
                guestscope_common::plan::SYNTHETIC_STACKS,
                guestscope_common::plan::SYNTHETIC_FRAMES,
                p.events_per_s,
                p.wire_mb_s,
                p.received,
                p.events,
                p.seconds,
                p.agent_cpu_us_per_event
                    .map_or("—".to_string(), |us| format!("{us:.2}"))
            );
        }
    }

    let _ = writeln!(md, "\n## Boot and lab\n");
    let _ = writeln!(
        md,
        "Boot to agent-ready (QEMU launch to the agent's hello on the host), default bzImage: {} s over {} boots; kernel's first console line at {} s.",
        spread(r.boot.agent_ready_s.as_ref(), 2),
        r.boot.samples.len(),
        spread(r.boot.kernel_banner_s.as_ref(), 2)
    );
    if let Some(f) = &r.boot_uncompressed {
        let _ = writeln!(
            md,
            "\nUncompressed kernel (QEMU's PVH entry: no decompression under TCG, and so no KASLR): {} s over {} boots; kernel's first console line at {} s.",
            spread(f.agent_ready_s.as_ref(), 2),
            f.samples.len(),
            spread(f.kernel_banner_s.as_ref(), 2)
        );
    }
    if let Some(l) = &r.lab {
        let _ = writeln!(
            md,
            "\nWarm `cargo xtask lab` (everything built): {:.1} s end to end{}.",
            l.wall_s,
            l.guestscope_lab_s.map_or(String::new(), |g| format!(
                ", {g:.1} s of it in `guestscope lab`"
            ))
        );
    }

    if let Some(mm) = &r.memory {
        let _ = writeln!(md, "\n## Memory\n");
        let _ = writeln!(
            md,
            "{} events planned, {} received ({} lost to a full ring), {:.0} s; `events.jsonl` written: {:.0} MB.\n",
            mm.events_planned,
            mm.events_received,
            mm.ring_full,
            mm.wall_s,
            mm.events_jsonl_bytes as f64 / 1e6
        );
        let _ = writeln!(
            md,
            "| after events | agent peak RSS (MiB) | collector peak RSS (MiB) |\n|---:|---:|---:|"
        );
        for p in &mm.points {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} |",
                p.events,
                p.agent_peak_kib as f64 / 1024.0,
                p.collector_peak_kib as f64 / 1024.0
            );
        }
        if !mm.collector_peak_reset {
            let _ = writeln!(
                md,
                "\nThe collector's peak could not be reset before this run: its figure is the whole bench process's peak."
            );
        }
    }

    if !r.problems.is_empty() {
        let _ = writeln!(md, "\n## Problems in this run\n");
        for p in &r.problems {
            let _ = writeln!(md, "- {p}");
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::{Capacity, CapacityStep, LabTiming};

    #[test]
    fn spreads_are_shown_with_their_range() {
        let s = Spread::of(&[1.0, 2.0, 4.0]).unwrap();
        assert_eq!(spread(Some(&s), 1), "2.0 (1.0–4.0, n=3)");
        assert_eq!(spread(Spread::of(&[3.0]).as_ref(), 0), "3 (n=1)");
        assert_eq!(spread(None, 1), "—");
    }

    #[test]
    fn targets_say_met_or_not_and_by_how_much() {
        let r = BenchResults {
            lab: Some(LabTiming {
                wall_s: 90.0,
                guestscope_lab_s: Some(70.0),
                complete: Some(true),
            }),
            capacity: Some(Capacity {
                steps: vec![CapacityStep {
                    matched: 10,
                    received: 8,
                    ring_full: 2,
                    emitted: 8,
                    accounted: true,
                    ..Default::default()
                }],
                accounting_ok: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = targets(&r);
        let lab = t.iter().find(|c| c.what.contains("xtask lab")).unwrap();
        assert_eq!(lab.met, Some(false));
        assert!(lab.note.starts_with("1.50x the target"), "{}", lab.note);
        let acc = t.iter().find(|c| c.what.contains("counted")).unwrap();
        assert_eq!(acc.met, Some(true));
        assert!(acc.measured.contains("2 events lost"), "{}", acc.measured);
        let gdb = t.iter().find(|c| c.what.contains("gdb")).unwrap();
        assert_eq!(gdb.met, None);
        let md = render(&BenchResults { targets: t, ..r });
        assert!(
            md.contains("| warm `cargo xtask lab`, end to end (TCG) | ≤ 60 s | 90.0 s | **no** |"),
            "{md}"
        );
    }
}
