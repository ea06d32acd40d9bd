//! Each target of the benchmark issue checked against a run's figures: the probes'
//! cost and the gdb comparison, the stream's capacity, boot and lab times, memory.

use super::{med, percent_spread, target};
use crate::bench::peers::PEER_ROWS;
use crate::bench::results::{
    BenchResults, LoopOverhead, PeerOverhead, PipelineCeiling, StackModeOverhead, TargetCheck,
};
use crate::qemu::command::INSTRUCTIONS_PER_US;

/// Each target of the benchmark issue against `r`.
pub fn targets(r: &BenchResults) -> Vec<TargetCheck> {
    let mut t = Vec::new();
    speed_targets(r, &mut t);
    tallied_targets(r, &mut t);
    caller_targets(r, &mut t);
    caller_tallied_targets(r, &mut t);
    instruction_target(r, &mut t);
    capacity_targets(r, &mut t);
    boot_targets(r, &mut t);
    memory_targets(r, &mut t);
    stack_cache_target(r, &mut t);
    t
}

/// The stack cache gives no stack a walk would not have given.
fn stack_cache_target(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let Some(sc) = &r.stack_cache else {
        return;
    };
    t.push(check(
        "stack cache: cached stacks that differ from a walk of the same event (the lab's workloads; the fopen loop under user probes)",
        "0".into(),
        Some(sc.wrong as f64),
        format!("{} of {} cached", sc.wrong, sc.cached),
        Some(0.0),
        None,
        format!("{} events checked", sc.checked_events),
    ));
}

/// The probes' cost per event, the fopen loop's slowdown, and the gdb comparison.
fn speed_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
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
                parts.push(format!("the stacks {w:.2} µs of it"));
            }
            if let Some(w) =
                fopen.and_then(|f| med(f.without_stacks.as_ref()?.walk_every_us_per_event.as_ref()))
            {
                parts.push(format!(
                    "{w:.2} µs with every stack walked (the stack cache off)"
                ));
            }
            if let Some(a) = fopen.and_then(|f| med(f.agent_cpu_us_per_event.as_ref())) {
                parts.push(format!("the agent {a:.2} µs of CPU per event"));
            }
            if let Some(d) = fopen.and_then(|f| med(f.us_per_event_with_drain.as_ref())) {
                parts.push(format!("{d:.2} µs with the agent's drain after the loop"));
            }
            if let Some(p) = peer_costs(r) {
                parts.push(p);
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
    // What the events cost the agent (paired against the untraced run); results from
    // before that figure have only the gross one.
    let gross = fopen.and_then(|f| med(f.agent_cpu_us_per_event.as_ref()));
    let marginal = fopen.and_then(|f| med(f.agent_cpu_marginal_us_per_event.as_ref()));
    let agent = marginal.or(gross);
    let mut notes = Vec::new();
    if let (Some(_), Some(g)) = (marginal, gross) {
        notes.push(format!(
            "{g:.2} µs with what every workload costs the agent (start, probe switch, report)"
        ));
    }
    if let Some(a) =
        fopen.and_then(|f| med(f.without_stacks.as_ref()?.agent_cpu_us_per_event.as_ref()))
    {
        notes.push(format!("{a:.2} µs without stacks (gross)"));
    }
    if let Some(n) = agent_instructions(r, "all") {
        notes.push(format!(
            "{n:.0} instructions per event, counted (the instruction-counted peers boot, paired)"
        ));
    }
    t.push(check(
        if marginal.is_some() {
            "agent CPU per event (fopen loop, every probe; traced − untraced run, paired)"
        } else {
            "agent CPU per event (fopen loop, every probe)"
        },
        format!("≤ {} µs", target::AGENT_US_PER_EVENT),
        agent,
        agent.map_or("—".into(), |a| format!("{a:.2} µs")),
        Some(target::AGENT_US_PER_EVENT),
        None,
        notes.join("; "),
    ));
    t.push(gdb_target(r));
}

/// The same speed targets with the cached hits only counted per stack in the
/// kernel (`--stacks tallied`): every hit still classified by its stack, no record.
fn tallied_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let Some(tl) = fopen_overhead(r).and_then(|f| f.tallied.as_ref()) else {
        return;
    };
    let mut note = share_note(tl, "tallied, the rest recorded");
    // Where it goes, from the stack-cache boot's programs timed by the kernel.
    let inside = r
        .stack_cache
        .as_ref()
        .and_then(|sc| sc.fopen_program_us.get("Tallied"))
        .and_then(|p| med(p.get("spin_lock_fentry")));
    if let Some(us) = inside {
        note.push_str(&format!(
            "; {us:.2} µs per run inside the spin_lock program (the kernel's clock, stack-cache boot)"
        ));
    }
    mode_targets(
        tl,
        ("cached hits tallied per stack", "`--stacks tallied`"),
        note,
        t,
    );
}

/// The same speed targets with the stacks taken by caller (`--stacks caller`): every
/// hit recorded with the walk of the first hit with its function, caller and way in.
fn caller_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let Some(c) = fopen_overhead(r).and_then(|f| f.by_caller.as_ref()) else {
        return;
    };
    let mut note = share_note(c, "answered by caller, the rest walked");
    if let Some(n) = instructions_per_event(r, "caller") {
        note.push_str(&format!("; {n:.0} instructions per event (icount)"));
    }
    mode_targets(c, ("stacks by caller", "`--stacks caller`"), note, t);
}

/// The same speed targets with the stacks taken by caller and the cached hits only
/// counted per stack (`--stacks caller-tallied`): every hit classified by its stack,
/// the cheapest way; its instructions per event against an ftrace hit's in the note.
fn caller_tallied_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let Some(c) = fopen_overhead(r).and_then(|f| f.caller_tallied.as_ref()) else {
        return;
    };
    let mut note = share_note(c, "tallied by caller, the rest recorded");
    let per_event = |condition| instructions_per_event(r, condition);
    if let (Some(n), Some(f)) = (per_event("caller-tallied"), per_event("ftpeer")) {
        note.push_str(&format!(
            "; {n:.0} instructions per event (icount), {:.2}x an ftrace kprobe hit with no stack ({f:.0})",
            n / f
        ));
    }
    mode_targets(
        c,
        (
            "stacks by caller, the cached hits tallied per stack",
            "`--stacks caller-tallied`",
        ),
        note,
        t,
    );
}

/// The share of the hits a stack mode's cache answered (`how`: what became of them
/// and of the rest) and the hits unaccounted for; empty without a share.
fn share_note(m: &StackModeOverhead, how: &str) -> String {
    med(m.share.as_ref()).map_or_else(String::new, |s| {
        format!(
            "{:.0}% of the hits {how}; {} hits unaccounted for",
            s * 100.0,
            m.unaccounted
        )
    })
}

/// The fopen loop's overhead figures.
fn fopen_overhead(r: &BenchResults) -> Option<&LoopOverhead> {
    r.overhead.iter().find(|o| o.workload == "fopen")
}

/// The per-event, slowdown and agent targets of a stack mode (`what`: its phrase and
/// its option), `note` on the first.
fn mode_targets(
    m: &StackModeOverhead,
    (what, option): (&str, &str),
    note: String,
    t: &mut Vec<TargetCheck>,
) {
    let us = med(m.us_per_event.as_ref());
    t.push(check(
        &format!("probe cost per event, {what} ({option})"),
        format!("≤ {} µs", target::US_PER_EVENT),
        us,
        us.map_or("—".into(), |u| format!("{u:.2} µs")),
        Some(target::US_PER_EVENT),
        None,
        note,
    ));
    let ratio = med(m.ratio.as_ref());
    t.push(check(
        &format!("fopen loop slowdown, {what}"),
        format!("≤ {}x", target::FOPEN_RATIO),
        ratio,
        ratio.map_or("—".into(), |x| format!("{x:.2}x")),
        Some(target::FOPEN_RATIO),
        None,
        String::new(),
    ));
    let agent = med(m.agent_cpu_marginal_us_per_event.as_ref());
    t.push(check(
        &format!("agent CPU per event, {what} (paired)"),
        format!("≤ {} µs", target::AGENT_US_PER_EVENT),
        agent,
        agent.map_or("—".into(), |a| format!("{a:.2} µs")),
        Some(target::AGENT_US_PER_EVENT),
        None,
        String::new(),
    ));
}

/// The instruction-counted peers boot's row of `condition` ([`PEER_ROWS`]).
fn counted_row<'a>(r: &'a BenchResults, condition: &str) -> Option<&'a PeerOverhead> {
    let tracer = PEER_ROWS.iter().find(|(c, _)| *c == condition)?.1;
    r.peers_instructions
        .as_ref()?
        .rows
        .iter()
        .find(|row| row.tracer == tracer)
}

/// The agent's instructions per event in the instruction-counted peers boot's run of
/// `condition` (its CPU there, paired against the untraced run).
fn agent_instructions(r: &BenchResults, condition: &str) -> Option<f64> {
    med(counted_row(r, condition)?.agent_us_per_event.as_ref()).map(|us| us * INSTRUCTIONS_PER_US)
}

/// Instructions per event of `condition` in the instruction-counted peers boot.
fn instructions_per_event(r: &BenchResults, condition: &str) -> Option<f64> {
    med(counted_row(r, condition)?.us_per_event.as_ref()).map(|us| us * INSTRUCTIONS_PER_US)
}

/// guestscope's instructions per event against an ftrace kprobe hit's with no stack,
/// in the instruction-counted peers boot.
fn instruction_target(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    if r.peers_instructions.is_none() {
        return;
    }
    let per_event = |condition: &str| instructions_per_event(r, condition);
    let (all, ftrace) = (per_event("all"), per_event("ftpeer"));
    let over = |v: Option<f64>| match (v, ftrace) {
        (Some(v), Some(f)) if f > 0.0 => Some(v / f),
        _ => None,
    };
    let ratio = over(all);
    let mut notes = Vec::new();
    if let Some(n) = agent_instructions(r, "all") {
        notes.push(format!("the agent's {n:.0} of them"));
    }
    for (condition, what) in [
        ("tallied", "tallied"),
        ("caller", "stacks by caller"),
        ("caller-tallied", "by caller tallied"),
        ("nostack", "no stacks"),
    ] {
        let n = per_event(condition);
        if let (Some(x), Some(n)) = (over(n), n) {
            notes.push(format!("{what} {x:.2}x ({n:.0})"));
        }
    }
    for (condition, what) in [
        ("bpfcount", "bpftrace's count"),
        ("bpfstack", "bpftrace's @[kstack] count"),
        ("ftpeerstk", "ftrace with its stack trace"),
    ] {
        if let Some(n) = per_event(condition) {
            notes.push(format!("{what} {n:.0}"));
        }
    }
    t.push(check(
        "probe cost per event over an ftrace kprobe hit with no stack, counted in instructions (QEMU icount; the peers boot's fopen loop, every probe, stacks cached)",
        format!("≤ {}x", target::INSTRUCTIONS_OVER_FTRACE),
        ratio,
        match (ratio, all, ftrace) {
            (Some(x), Some(a), Some(f)) => {
                format!("{x:.2}x: {a:.0} against {f:.0} instructions per event")
            }
            _ => "—".into(),
        },
        Some(target::INSTRUCTIONS_OVER_FTRACE),
        None,
        if notes.is_empty() {
            String::new()
        } else {
            format!("instructions per event: {}", notes.join(", "))
        },
    ));
}

/// Every tracer's cost per event in the peers boot, in one phrase.
fn peer_costs(r: &BenchResults) -> Option<String> {
    let rows: Vec<String> = r
        .peers
        .as_ref()?
        .rows
        .iter()
        .filter_map(|p| {
            Some(format!(
                "{} {:.2} µs",
                p.tracer,
                med(p.us_per_event.as_ref())?
            ))
        })
        .collect();
    (!rows.is_empty()).then(|| format!("in the peers boot: {}", rows.join(", ")))
}

/// guestscope against the lab's gdb method, as a share of the most any tracer could
/// be faster: the gdb method's time over the untraced time of the same loop.
fn gdb_target(r: &BenchResults) -> TargetCheck {
    let g = r.gdb.as_ref();
    let faster = g.and_then(|g| med(g.guestscope_faster.as_ref()));
    let limit = g.and_then(|g| med(g.gdb_slowdown.as_ref()));
    // Paired run by run (untraced / guestscope); from the medians for older results.
    let share = g
        .and_then(|g| med(g.share_of_limit.as_ref()))
        .or_else(|| faster.zip(limit).map(|(f, l)| f / l));
    let mut row = check(
        "fopen loop traced by guestscope vs by the lab's gdb method (same events: alloc_fd of the pid), as a share of the limit (gdb method / untraced)",
        format!("≥ {:.0}% of the limit", target::GDB_SHARE_OF_LIMIT * 100.0),
        share,
        match (faster, limit, share) {
            (Some(f), Some(l), Some(s)) => format!(
                "{f:.0}x faster (limit {l:.0}x); {:.0}% of the limit, paired: the traced loop at that share of its untraced speed ({} iterations, n={}; {} iterations: {})",
                s * 100.0,
                g.map_or(0, |g| g.long_iterations),
                g.and_then(|g| g.share_of_limit.as_ref()).map_or(0, |s| s.n),
                g.map_or(0, |g| g.iterations),
                g.and_then(|g| med(g.share_of_limit_short.as_ref()))
                    .map_or("—".to_string(), |s| format!("{:.0}%", s * 100.0)),
            ),
            _ => "—".into(),
        },
        None,
        Some(target::GDB_SHARE_OF_LIMIT),
        {
            let mut parts = Vec::new();
            if let Some(h) = g.and_then(|g| med(g.gdb_ms_per_hit.as_ref())) {
                parts.push(format!("gdb method {h:.2} ms per breakpoint hit"));
            }
            if let Some(a) = g.and_then(|g| med(g.guestscope_all_faster.as_ref())) {
                parts.push(format!(
                    "{a:.0}x with every guestscope probe on (6 events per iteration instead of 1)"
                ));
            }
            parts.join("; ")
        },
    );
    // Tracing cannot make the loop faster than untraced: a share past 100% says the
    // untraced runs timed slower than the traced ones, noise larger than the effect.
    if share.is_some_and(|s| s > 1.0) {
        row.met = None;
        row.note = format!(
            "above 100% of the limit: this run's untraced loops timed slower than the traced ones (noise larger than the effect), so the share is not measured; {}",
            row.note
        );
    }
    row
}

/// What one event of the pipeline's runs took, and how much of it each side's CPU
/// was (medians), when measured: which side bounds the ceiling.
fn pipeline_costs(p: &PipelineCeiling) -> String {
    match (
        med(p.events_per_s.as_ref()),
        med(p.agent_cpu_us_per_event.as_ref()),
        med(p.collector_cpu_us_per_event.as_ref()),
    ) {
        (Some(rate), Some(agent), Some(collector)) if rate > 0.0 => format!(
            "{:.2} µs per event, of it the agent's CPU {agent:.2} µs (guest) and the collector's {collector:.2} µs (host); ",
            1e6 / rate
        ),
        _ => String::new(),
    }
}

/// The pipeline's ceiling against raw vsock, and every lost event counted.
fn capacity_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let cap = r.capacity.as_ref();
    let raw = cap.and_then(|c| med(c.raw.host_mb_s.as_ref()));
    let pipeline = cap.and_then(|c| c.pipeline.as_ref());
    t.push(check(
        "the pipeline's own ceiling vs raw vsock (events/s in 64-byte records vs raw MB/s; events the agent makes itself, no eBPF, no workload)",
        format!("≥ {:.0}%", target::FRACTION_OF_RAW * 100.0),
        cap.and_then(|c| c.pipeline_fraction_of_raw),
        match (pipeline, raw) {
            (Some(p), Some(raw)) => format!(
                "{} events/s against {raw:.0} MB/s raw: {} of the blast before it (paired); on the stream, packed, {} MB/s",
                med(p.events_per_s.as_ref()).map_or("—".into(), |v| format!("{v:.0}")),
                percent_spread(p.fraction_of_raw.as_ref(), 1),
                med(p.wire_mb_s.as_ref()).map_or("—".into(), |v| format!("{v:.2}")),
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
                "{}end to end with real probes (alloc_fd and its stack, the flood loop): {e:.0} events/s lossless, {w:.2} MB/s on the stream, packed ({:.1}% of raw){}",
                pipeline.map_or(String::new(), pipeline_costs),
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
}

/// Boot to agent-ready (default and uncompressed kernels) and the warm lab.
fn boot_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let boot = med(r.boot.agent_ready_s.as_ref());
    let banner = med(r.boot.kernel_banner_s.as_ref());
    match &r.boot_uncompressed {
        // The target holds for the boots where KASLR is not what is measured: the
        // default bzImage (KASLR on, decompressed by its own stub, as the lab's
        // boot-time experiment wants it) is told beside it.
        Some(fast) => {
            let b = med(fast.agent_ready_s.as_ref());
            let mut notes = Vec::new();
            if let Some(k) = med(fast.kernel_banner_s.as_ref()) {
                notes.push(format!("kernel's first line at {k:.2} s"));
            }
            if let Some(kaslr) = boot {
                notes.push(format!(
                    "the default bzImage, which the boot-time experiment boots (KASLR on; no target): {kaslr:.2} s{}",
                    banner.map_or(String::new(), |k| format!(", {k:.2} s of it before the kernel's first line"))
                ));
            }
            t.push(check(
                "boot to agent-ready, uncompressed kernel (`--kernel target/guestscope/guest/vmlinux`: PVH entry, no KASLR)",
                format!("≤ {} s", target::BOOT_S),
                b,
                b.map_or("—".into(), |b| format!("{b:.2} s")),
                Some(target::BOOT_S),
                None,
                notes.join("; "),
            ));
        }
        None => t.push(check(
            "boot to agent-ready, default bzImage (KASLR; host wall clock, TCG)",
            format!("≤ {} s", target::BOOT_S),
            boot,
            boot.map_or("—".into(), |b| format!("{b:.2} s")),
            Some(target::BOOT_S),
            None,
            banner.map_or(String::new(), |k| format!("{k:.2} s of it before the kernel's first line (firmware, kernel load and decompression)")),
        )),
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
}

/// The agent's and the collector's peak RSS.
fn memory_targets(r: &BenchResults, t: &mut Vec<TargetCheck>) {
    let mem = r.memory.as_ref();
    let scope = mem.map_or(String::new(), |m| {
        format!("after {} events", m.events_received)
    });
    let agent = mem
        .and_then(|m| m.agent_peak_kib)
        .map(|k| k as f64 / 1024.0);
    t.push(check(
        "agent peak RSS once its probes are loaded (VmHWM, reset then)",
        format!("≤ {} MiB after 10M events", target::AGENT_MIB),
        agent,
        agent.map_or("—".into(), |a| format!("{a:.1} MiB {scope}")),
        Some(target::AGENT_MIB),
        None,
        mem.and_then(|m| Some((m.agent_rss_anon_kib?, m.agent_rss_file_kib?))).map_or(String::new(), |(a, f)| {
            format!("at the end {:.1} MiB of its own (RssAnon), {:.1} MiB mapped files and ring buffer (RssFile)", a as f64 / 1024.0, f as f64 / 1024.0)
        }),
    ));
    let loading = mem
        .and_then(|m| m.agent_load_peak_kib)
        .map(|k| k as f64 / 1024.0);
    t.push(check(
        "agent peak RSS while loading its probes (VmHWM before the reset)",
        format!("≤ {} MiB", target::AGENT_MIB),
        loading,
        loading.map_or("—".into(), |a| format!("{a:.1} MiB")),
        Some(target::AGENT_MIB),
        None,
        "aya's loader and the fentry attach each parse the kernel's BTF (4.4 MB of it) into a passing 15 MB".into(),
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
}

/// One target: `measured` against `at_most` or `at_least`, with how far off it is.
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
        // A target of zero (nothing wrong) has no ratio to it.
        (Some(m), Some(t), _) if t == 0.0 && m <= t => "none".into(),
        (Some(m), Some(0.0), _) => format!("{m}"),
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
