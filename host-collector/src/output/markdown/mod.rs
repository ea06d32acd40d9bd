//! `report.md`, rendered from the [`Summary`] alone, so every number in the
//! report is one in `summary.json`. [`render`] writes the sections in order; the
//! longer ones have files of their own: `coverage.rs`, `experiments.rs`,
//! `support.rs`, `timeline.rs`, `own_questions.rs` (your probes and stops),
//! `program_time.rs` (the programs' own time).

use std::fmt::Write;

use super::summary::Summary;
use guestscope_common::ProbeKind;

mod coverage;
mod experiments;
mod own_questions;
mod program_time;
mod support;
mod timeline;

use self::coverage::*;
use self::experiments::*;
use self::own_questions::*;
use self::program_time::*;
use self::support::*;
use self::timeline::*;

fn opt_s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3} s")).unwrap_or_else(|| "—".into())
}

/// Renders the report.
pub fn render(s: &Summary) -> String {
    let mut md = String::new();
    render_header(&mut md, s);
    render_how_it_ended(&mut md, s);
    render_claims(&mut md, s);
    render_support(&mut md, s);
    render_experiments(&mut md, s);
    render_timeline(&mut md, s);
    render_boot(&mut md, s);
    render_probes(&mut md, s);
    render_coverage(&mut md, s);
    render_workloads(&mut md, s);
    render_user_probes(&mut md, s);
    render_user_stops(&mut md, s.timeline.snapshots.as_ref());
    render_details(&mut md, s);
    render_footer(&mut md, s);
    md
}

/// The title and the run's one-paragraph identity: kernel, accelerator, time, outcome.
fn render_header(md: &mut String, s: &Summary) {
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
}

/// Why a run that ended early ended, with the console's last lines.
fn render_how_it_ended(md: &mut String, s: &Summary) {
    let r = &s.run;
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
}

/// The claims check: each conclusion of the lab with its verdict and evidence.
fn render_claims(md: &mut String, s: &Summary) {
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
}

/// The traced boot's milestones.
fn render_boot(md: &mut String, s: &Summary) {
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
}

/// How each probe attached and what it counted.
fn render_probes(md: &mut String, s: &Summary) {
    let _ = writeln!(md, "\n## Probes\n");
    let _ = writeln!(
        md,
        "| probe | attached to | method | matched | emitted | lost (ring full) | no stack | stack from the cache | skipped (nested) | note |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|"
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
        // Only hits at a function's entry have a key into the stack cache.
        let cacheable = matches!(p.attach.method.as_str(), "fentry" | "kprobe");
        let cached = if s.run.stacks_off() {
            "off (`--stacks off`)".to_string()
        } else if !cacheable && c.stack_cached == 0 {
            "—".to_string()
        } else if p.counters.is_some() && c.emitted + c.tallied > 0 {
            // Of the hits with a stack: the records and the hits only tallied.
            format!(
                "{} ({:.1}%)",
                c.stack_cached,
                c.stack_cached as f64 * 100.0 / (c.emitted + c.tallied) as f64
            )
        } else {
            n(c.stack_cached)
        };
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} |",
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
            cached,
            n(c.nested),
            p.attach.note
        );
    }
    if s.probes
        .iter()
        .any(|p| p.counters.is_some_and(|c| c.stack_cached > 0))
    {
        let _ = writeln!(
            md,
            "\nA stack from the cache is the walk of an earlier hit with the same call chain, taken once the probe has found each of its return addresses again in this hit's own stack; `guestscope bench` checks every cached stack of the lab's workloads against a walk of the same event. Probes that are not at a function's entry (—) walk every stack."
        );
    }
}

/// One row per workload: pid, exit, duration and events per built-in probe.
fn render_workloads(md: &mut String, s: &Summary) {
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
    timed_out_paragraph(md, s);
    render_program_time(md, s);
}

/// Each workload's most frequent stacks per probe, named locks and output.
fn render_details(md: &mut String, s: &Summary) {
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
        render_output(md, &w.output);
    }
}

/// Lines of a workload's output the report shows; summary.json has all of it.
pub const OUTPUT_LINES: usize = 20;

/// A workload's output: its first [`OUTPUT_LINES`] lines, and how many more
/// summary.json holds.
fn render_output(md: &mut String, output: &str) {
    if output.is_empty() {
        return;
    }
    let lines: Vec<&str> = output.lines().collect();
    let shown = lines.len().min(OUTPUT_LINES);
    let _ = writeln!(md, "Output:\n```\n{}\n```", lines[..shown].join("\n"));
    if lines.len() > shown {
        let _ = writeln!(
            md,
            "… {} more lines: the whole output is in summary.json (`workloads[].output`).",
            lines.len() - shown
        );
    }
}

/// The agent's messages, the trace's description and the QEMU command line.
fn render_footer(md: &mut String, s: &Summary) {
    let r = &s.run;
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
             boot phases and the gdbstub's holds and snapshots on the host clock, workloads and every probe event once on its thread's \
             track with its kernel stack as an interned callstack; the guest is a machine of its own, its clock tied to the host's \
             by clock snapshots at the fit's points (*One time line*).",
            t.file, t.packets, t.events, t.snapshots, t.holds
        );
    }
    let _ = writeln!(md, "\n---\nQEMU: `{}`", r.qemu_command);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_output_shows_its_first_lines_and_counts_the_rest() {
        let output: String = (1..=25).map(|i| format!("line {i}\n")).collect();
        let mut md = String::new();
        render_output(&mut md, &output);
        assert!(md.contains("line 1\n"), "{md}");
        assert!(md.contains(&format!("line {OUTPUT_LINES}\n")), "{md}");
        assert!(
            !md.contains(&format!("line {}\n", OUTPUT_LINES + 1)),
            "{md}"
        );
        assert!(md.contains("… 5 more lines"), "{md}");

        let mut short = String::new();
        render_output(&mut short, "one\ntwo\n");
        assert_eq!(short, "Output:\n```\none\ntwo\n```\n");
        let mut none = String::new();
        render_output(&mut none, "");
        assert!(none.is_empty());
    }
}
