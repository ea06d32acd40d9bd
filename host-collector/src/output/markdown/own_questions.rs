//! The report's "Your probes" and "Your stops" sections (`--probe`, `--snapshot-at`).

use super::*;
use crate::output::summary::SnapshotsReport;

/// Frames of a user probe's top stack shown in the report (all are in summary.json).
pub(super) const USER_PROBE_FRAMES: usize = 12;

/// "Your probes": each function the user's `--probe`s hit.
pub(super) fn render_user_probes(md: &mut String, s: &Summary) {
    let asked: Vec<String> = s
        .probes
        .iter()
        .filter(|p| p.attach.attached && ProbeKind::user_from_name(&p.name).is_some())
        // Each `SPEC: N function(s)` with the spec as code: a glob's `*` is Markdown.
        .flat_map(|p| p.attach.note.split("; "))
        .map(|note| match note.split_once(": ") {
            Some((spec, rest)) => format!("`{spec}`: {rest}"),
            None => note.to_string(),
        })
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
pub(super) fn render_user_stops(md: &mut String, snapshots: Option<&SnapshotsReport>) {
    let Some(sr) = snapshots else {
        return;
    };
    let Some(run) = &sr.run else {
        if let Some(e) = &sr.error {
            let _ = writeln!(md, "\n## Your stops\n\nNot taken: {e}.");
        }
        return;
    };
    // The section is written when none was taken too: it says why.
    if !run.user_stops() {
        return;
    }
    let _ = writeln!(md, "\n## Your stops\n");
    let _ = writeln!(
        md,
        "Stops at `{}` through QEMU's gdbstub; the condition (which task) decided on the host; ended: {}.",
        run.symbol, run.ended
    );
    for site in &run.sites {
        let stops: Vec<_> = run.snapshots.iter().filter(|x| x.site == *site).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::snapshots::SnapshotRun;

    #[test]
    fn stops_of_which_none_was_taken_still_say_what_ended_them() {
        let run = SnapshotRun {
            symbol: "show_cpuinfo, do_sys_openat2".into(),
            sites: vec!["show_cpuinfo".into(), "do_sys_openat2".into()],
            ended: "pid 101: the workload ended (the gdbstub held the VM late)".into(),
            ..SnapshotRun::default()
        };
        let report = SnapshotsReport {
            run: Some(run.clone()),
            ..SnapshotsReport::default()
        };
        let mut md = String::new();
        render_user_stops(&mut md, Some(&report));
        assert!(md.contains("## Your stops"), "{md}");
        assert!(
            md.contains("ended: pid 101: the workload ended (the gdbstub held the VM late)"),
            "{md}"
        );
        assert!(md.contains("### `show_cpuinfo`: 0 stops"), "{md}");
        assert!(md.contains("### `do_sys_openat2`: 0 stops"), "{md}");

        // The built-in snapshots are not the user's stops: no section.
        let builtin = SnapshotsReport {
            run: Some(SnapshotRun {
                sites: Vec::new(),
                ..run
            }),
            ..SnapshotsReport::default()
        };
        let mut none = String::new();
        render_user_stops(&mut none, Some(&builtin));
        assert!(none.is_empty(), "{none}");
    }
}
