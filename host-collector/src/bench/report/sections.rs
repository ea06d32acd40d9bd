//! The sections of `results.md`: the heading and the targets, the probes' overhead,
//! the gdb comparison, the stream's capacity, boot and lab times, memory, the stack
//! cache (the peers on the same events are `peers.rs`'s).

use std::fmt::Write as _;

use super::{percent_spread, spread};
use crate::bench::results::{
    AgentActivity, BenchResults, Capacity, GdbComparison, LoopOverhead, Memory, StackCacheCheck,
};

/// The title, the machine, and the targets table.
pub(super) fn head(md: &mut String, r: &BenchResults) {
    let m = &r.machine;
    let _ = writeln!(md, "# guestscope benchmarks\n");
    let _ = writeln!(
        md,
        "{} · machine: {}, {} cores ({}) · guest kernel {}, {} vCPU, {} MiB · {} · {} · host load before/after: {} / {} · `guestscope bench` took {:.0} s\n",
        r.date,
        m.accel.to_uppercase(),
        m.host_cpus,
        m.host_cpu_model,
        m.guest_kernel,
        m.guest_vcpus,
        m.guest_memory_mb,
        m.qemu,
        m.firmware,
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
}

/// The probe-overhead table, then each loop's notes.
pub(super) fn overhead(md: &mut String, r: &BenchResults) {
    let _ = writeln!(md, "\n## Probe overhead\n");
    let _ = writeln!(
        md,
        "Loop time from the workload's own clock; \"every probe\" = spin_lock and alloc_fd (fentry), page_fault_user and page_fault_kernel (tracepoints), each event with its kernel stack; \"untraced\" = no program attached at all.\n"
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
        overhead_notes(md, o);
    }
}

/// The loop with the cheaper stack modes: the cached hits tallied, the stacks taken
/// by caller, both.
fn stack_mode_notes(md: &mut String, o: &LoopOverhead) {
    if let Some(t) = &o.tallied {
        mode_note(
            md,
            &o.workload,
            "the cached hits only counted per stack in the kernel (`--stacks tallied`; {share} of the hits had no record)",
            t,
        );
    }
    if let Some(c) = &o.by_caller {
        mode_note(
            md,
            &o.workload,
            "the stacks taken by caller (`--stacks caller`: a hit gets the walk of the first hit with the same function, caller and way into the kernel, nothing of its stack read in a system call, its outermost frame outside one; {share} of the hits)",
            c,
        );
    }
    if let Some(c) = &o.caller_tallied {
        mode_note(
            md,
            &o.workload,
            "the stacks taken by caller and the cached hits only counted per stack in the kernel (`--stacks caller-tallied`; {share} of the hits had no record)",
            c,
        );
    }
}

/// One stack mode's paragraph: `how` says what the mode did, its `{share}` replaced by
/// the share of the hits its cache answered.
fn mode_note(
    md: &mut String,
    workload: &str,
    how: &str,
    m: &crate::bench::results::StackModeOverhead,
) {
    let how = how.replace("{share}", &spread(m.share.as_ref(), 3));
    let _ = writeln!(
        md,
        "\n{workload} with every probe and {how}: {} ms, ratio {}, {} µs per event; the agent {} µs of CPU per event (paired against the untraced run); {} hits unaccounted for.",
        spread(m.traced_ms.as_ref(), 1),
        spread(m.ratio.as_ref(), 3),
        spread(m.us_per_event.as_ref(), 2),
        spread(m.agent_cpu_marginal_us_per_event.as_ref(), 2),
        m.unaccounted
    );
}

/// One loop's notes: events per probe, nesting and losses, the agent's CPU, and the user-probe, no-stack and ftrace comparisons.
fn overhead_notes(md: &mut String, o: &LoopOverhead) {
    let per: Vec<String> = o
        .events_per_iteration_by_probe
        .iter()
        .filter(|(_, v)| v.is_finite() && *v > 0.0)
        .map(|(p, v)| format!("{p} {v:.2}"))
        .collect();
    let _ = writeln!(
        md,
        "\n{}: per iteration {} (process start and exit subtracted); {:.2} nested hits skipped per iteration; {} stack walks failed, {} events lost to a full ring. The agent used {} µs of CPU per event ({} µs more than in the untraced run, paired: what the events cost it); after the loop it drained the rest in {} ms, which makes {} µs per event in all.",
        o.workload,
        per.join(", "),
        o.nested_per_iteration,
        o.stack_failed,
        o.ring_full,
        spread(o.agent_cpu_us_per_event.as_ref(), 2),
        spread(o.agent_cpu_marginal_us_per_event.as_ref(), 2),
        spread(o.drain_ms.as_ref(), 1),
        spread(o.us_per_event_with_drain.as_ref(), 2)
    );
    agent_activity(md, &o.agent_activity);
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
            "\n{} with every probe but no stack walks: {} ms, ratio {}, {} µs per event; the stacks add {} µs per event with the stack cache ({} of the stacks came from it), {} µs with every stack walked ({} ms loop, the cache off).",
            o.workload,
            spread(n.traced_ms.as_ref(), 1),
            spread(n.ratio.as_ref(), 3),
            spread(n.us_per_event.as_ref(), 2),
            spread(n.walk_us_per_event.as_ref(), 2),
            spread(n.cached_share.as_ref(), 3),
            spread(n.walk_every_us_per_event.as_ref(), 2),
            spread(n.walk_every_ms.as_ref(), 1)
        );
        let _ = writeln!(
            md,
            "The agent's CPU per event, same runs: {} µs with every probe and the stack cache (above), {} µs without stacks, {} µs with every stack walked (each record's frames hashed by the agent).",
            spread(o.agent_cpu_us_per_event.as_ref(), 2),
            spread(n.agent_cpu_us_per_event.as_ref(), 2),
            spread(n.agent_cpu_walk_every_us_per_event.as_ref(), 2)
        );
    }
    stack_mode_notes(md, o);
    if let Some(g) = &o.staging {
        let _ = writeln!(
            md,
            "\n{} with every probe and each cached hit written to the ring buffer on its own, not staged with its CPU's others: {} ms, {} times the staged loop's time (paired); staging saves {} µs per event, and the agent {} µs of CPU per event (paired with the every-probe run of the same repetition).",
            o.workload,
            spread(g.unstaged_ms.as_ref(), 1),
            spread(g.ratio.as_ref(), 3),
            spread(g.saved_us_per_event.as_ref(), 2),
            spread(g.agent_cpu_saved_us_per_event.as_ref(), 2)
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
    super::peers::overhead_peers(md, o);
}

/// guestscope against the lab's gdb method.
pub(super) fn gdb(md: &mut String, g: &GdbComparison) {
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
    if g.long_iterations > 0 && g.long_guestscope_ms_per_iteration.is_some() {
        let _ = writeln!(
            md,
            "| untraced, {} iterations | {} |",
            g.long_iterations,
            spread(g.long_untraced_ms_per_iteration.as_ref(), 4)
        );
        let _ = writeln!(
            md,
            "| guestscope, alloc_fd probe, {} iterations | {} |",
            g.long_iterations,
            spread(g.long_guestscope_ms_per_iteration.as_ref(), 4)
        );
    }
    let _ = writeln!(
        md,
        "\nguestscope is {} times faster; the gdb method slows the loop {} times, {} ms per breakpoint hit.",
        spread(g.guestscope_faster.as_ref(), 0),
        spread(g.gdb_slowdown.as_ref(), 0),
        spread(g.gdb_ms_per_hit.as_ref(), 2)
    );
    let _ = writeln!(
        md,
        "Share of the limit (untraced / traced, paired): {} on the {}-iteration loop (what the target row uses; the same loop and events, timed long enough that a timer tick or an agent wakeup does not move a run by tens of percent), {} on the {}-iteration loop.",
        spread(g.share_of_limit.as_ref(), 3),
        g.long_iterations,
        spread(g.share_of_limit_short.as_ref(), 3),
        g.iterations
    );
    if let Some(t) = g.traces.first() {
        let _ = writeln!(
            md,
            "Per hit on the host: {:.2} ms handling (condition + step-over, {:.1} round trips), {:.2} ms from resume to the next stop (medians of the first run).",
            t.handling.median, t.round_trips_per_hit, t.run_to_hit.median
        );
    }
}

/// The stream's capacity: raw vsock, events at rising rates, then the pipeline alone.
pub(super) fn capacity(md: &mut String, c: &Capacity) {
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
        let received: u64 = p.runs.iter().map(|r| r.received).sum();
        let _ = writeln!(
            md,
            "\nThe pipeline alone (the agent makes {} spin_lock-like events with {} distinct {}-frame stacks itself, as many as one blast's bytes hold in 64-byte records, one in {} with its walked stack and the others naming the stack-cache entry that holds it, staged in runs of up to {}, as the probes' records come with the cache on, and sends them through its stack table, batches, stream and link; the collector writes them to disk), {} runs, each after a blast: {} events/s, which in 64-byte records is {} of the blast before it (paired); on the stream {} MB/s ({:.1} bytes an event, packed: {} of the blast), {} of {} events taken; the agent's CPU {} µs per event (the guest's vCPU), the collector's {} µs (the host: reading, decoding, counting and writing `events.jsonl`).",
            p.events,
            guestscope_common::plan::SYNTHETIC_STACKS,
            guestscope_common::plan::SYNTHETIC_FRAMES,
            guestscope_common::plan::SYNTHETIC_WALK_EVERY,
            guestscope_common::STAGED_EVENTS,
            p.runs.len(),
            spread(p.events_per_s.as_ref(), 0),
            percent_spread(p.fraction_of_raw.as_ref(), 1),
            spread(p.wire_mb_s.as_ref(), 2),
            p.runs.iter().map(|r| r.wire_bytes).sum::<u64>() as f64 / received.max(1) as f64,
            percent_spread(p.stream_fraction_of_raw.as_ref(), 1),
            received,
            p.events * p.runs.len() as u64,
            spread(p.agent_cpu_us_per_event.as_ref(), 2),
            spread(p.collector_cpu_us_per_event.as_ref(), 2),
        );
        agent_activity(md, &p.agent_activity);
    }
}

/// The agent's page faults, waits and preemptions per thousand events, if measured.
fn agent_activity(md: &mut String, a: &AgentActivity) {
    if a.faults.is_some() {
        let _ = writeln!(
            md,
            "\nPer thousand events the agent took {} page faults, waited {} times (voluntary context switches) and was preempted {} times.",
            spread(a.faults.as_ref(), 2),
            spread(a.waits.as_ref(), 2),
            spread(a.preemptions.as_ref(), 2),
        );
    }
}

/// Boot to agent-ready and the warm lab.
pub(super) fn boot_and_lab(md: &mut String, r: &BenchResults) {
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
}

/// Peak memory as events arrive.
pub(super) fn memory(md: &mut String, mm: &Memory) {
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

pub(super) fn stack_cache(md: &mut String, sc: &StackCacheCheck) {
    let _ = writeln!(md, "\n## Stack cache\n");
    let _ = writeln!(
        md,
        "The lab's workloads with every probe, each event's stack walked and compared with what the probes' stack cache would have given; then the fopen loop with the cache off (`WalkEvery`), on (`Cached`), and on with the cached hits only tallied per stack (`Tallied`). Checked: {} events, the cache answered {} ({:.1}%), {} answers differed from the walk.\n",
        sc.checked_events,
        sc.cached,
        if sc.checked_events > 0 {
            sc.cached as f64 * 100.0 / sc.checked_events as f64
        } else {
            0.0
        },
        sc.wrong
    );
    if sc.caller_answers > 0 {
        let _ = writeln!(
            md,
            "The same workloads by caller (`CallerChecked`: the cache keyed by the probed function, its caller and the task's way into the kernel answers with nothing of the stack read in a system call and the outermost frame outside one, as `--stacks caller` does, and every hit is walked too): {} answers, {} ({:.1}%) differed from the walk between the caller and the way in.\n",
            sc.caller_answers,
            sc.caller_differed,
            sc.caller_differed as f64 * 100.0 / sc.caller_answers as f64
        );
    }
    if let Some(d) = sc.fopen_stack_distance {
        let _ = writeln!(
            md,
            "The stacks the host received for the fopen loop, cache on against cache off: {:.1}% of the events would have to change stack to make the two runs' shares per probe and stack equal (total variation distance).\n",
            d * 100.0
        );
    }
    if let Some(d) = sc.fopen_tallied_distance {
        let _ = writeln!(
            md,
            "The same distance between the fopen loop with every hit recorded and with the cached hits only tallied per stack: {:.1}%.\n",
            d * 100.0
        );
    }
    program_time(md, sc);
    let _ = writeln!(
        md,
        "| workload | stacks | hits | records | tallied | received | from the cache | differed from the walk | hits skipped (nested) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for run in &sc.runs {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            run.workload,
            run.mode,
            run.matched,
            run.emitted,
            run.tallied,
            run.received,
            run.cached,
            run.wrong,
            run.nested
        );
    }
}

/// The fopen loop's time inside each program per run, by stack mode.
fn program_time(md: &mut String, sc: &StackCacheCheck) {
    const MODES: [(&str, &str); 3] = [
        ("WalkEvery", "every stack walked"),
        ("Cached", "a record per hit (cached stacks)"),
        ("Tallied", "cached hits tallied"),
    ];
    let programs: std::collections::BTreeSet<&String> = sc
        .fopen_program_us
        .values()
        .flat_map(|p| p.keys())
        .collect();
    if programs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "Where a hit's time goes: the kernel's own clock inside each program (`BPF_ENABLE_STATS`, as `--program-stats`), µs per run over the fopen runs of this boot, every run counted whichever process hit the probe; the trampoline or kprobe around a program is outside it.\n"
    );
    let _ = writeln!(
        md,
        "| program | {} |\n|---|{}",
        MODES.map(|(_, label)| label).join(" | "),
        "---:|".repeat(MODES.len())
    );
    for program in programs {
        let cells: Vec<String> = MODES
            .iter()
            .map(|(mode, _)| {
                sc.fopen_program_us
                    .get(*mode)
                    .and_then(|p| p.get(program))
                    .map_or("—".into(), |s| spread(Some(s), 2))
            })
            .collect();
        let _ = writeln!(md, "| `{program}` | {} |", cells.join(" | "));
    }
    let _ = writeln!(md);
}
