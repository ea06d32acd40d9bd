//! The report's "One time line" section: the clock fit, the holds, the snapshots and their cross-check.

use super::*;
use crate::experiments::snapshots::{CrossCheck, SnapshotRun};
use crate::output::summary::SnapshotsReport;

/// The "One time line" section: the clock fit, the holds, then the snapshots.
pub(super) fn render_timeline(md: &mut String, s: &Summary) {
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
    if let Some(sr) = &t.snapshots {
        let tallied = s
            .run
            .stacks
            .is_some_and(guestscope_common::plan::StackMode::tallies);
        render_snapshots(md, sr, tallied);
    }
}

/// The gdbstub snapshots (or the user's stops) in the traced run, and their
/// cross-check against the eBPF events.
fn render_snapshots(md: &mut String, sr: &SnapshotsReport, tallied: bool) {
    let _ = writeln!(md, "\n### gdbstub snapshots in the traced run\n");
    if let Some(e) = &sr.error {
        let _ = writeln!(md, "Not taken: {e}.");
    }
    let Some(run) = &sr.run else { return };
    let user_stops = run.user_stops();
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
        render_stops_cross_check(md, cc);
    } else {
        render_snapshots_cross_check(md, run, cc, tallied);
    }
}

/// How the user's stops agree with the eBPF events nearest them.
fn render_stops_cross_check(md: &mut String, cc: &CrossCheck) {
    let _ = writeln!(
        md,
        "**Cross-check: {} of {} stops agree** with the eBPF event nearest in time on the same CPU (same thread id; a \
         stop far from any event of its own, such as one before the workload's exec, meets another process's); \
         {} had no event on their CPU (distance on the guest clock: median {:.1} µs, largest {:.1} µs).\n",
        cc.agreed, cc.compared, cc.without_event, cc.median_abs_delta_us, cc.max_abs_delta_us
    );
    if cc.same_call_possible > 0 {
        let _ = writeln!(
            md,
            "**{} of the {}** stops at a function the run also probes are followed on their CPU by the same \
             thread's `--probe kprobe:` or `fentry:` event on that function (the same call), a median {:.0} µs of \
             guest time after the stop.{}\n",
            cc.same_call_agreed,
            cc.same_call_possible,
            cc.same_call_median_us,
            ticks_note(cc)
        );
    }
}

/// How many stops the guest's own ticks placed, as a sentence (empty for none).
fn ticks_note(cc: &CrossCheck) -> String {
    if cc.placed_by_ticks == 0 {
        return String::new();
    }
    format!(
        " {} of the stops read the guest's tick bookkeeping (`last_jiffies_update`): the same call is looked for \
         from that tick on, and no stop is placed before it.",
        cc.placed_by_ticks
    )
}

/// How the built-in snapshots agree with the eBPF events nearest them, one row each.
/// With `tallied` (the run's stack mode only counted the hits its cache answered), the
/// text says why a stop's call may have no event of its own.
fn render_snapshots_cross_check(
    md: &mut String,
    run: &SnapshotRun,
    cc: &CrossCheck,
    tallied: bool,
) {
    let _ = writeln!(
        md,
        "**Cross-check: {} of {} snapshots agree** with the eBPF event nearest in time on the same CPU (same thread id); \
         {} had no event on their CPU (distance on the guest clock: median {:.1} µs, largest {:.1} µs). \
         **{} of {}** are followed on their CPU by a `{}` event of the same thread — the same call, seen by both — stamped a \
         median {:.0} µs (largest {:.0} µs) of guest time after the stop.{}{}\n",
        cc.agreed,
        cc.compared,
        cc.without_event,
        cc.median_abs_delta_us,
        cc.max_abs_delta_us,
        cc.same_call_agreed,
        cc.compared,
        cc.same_call_probe,
        cc.same_call_median_us,
        cc.same_call_max_us,
        ticks_note(cc),
        if tallied && cc.same_call_agreed < cc.compared {
            " This run only counted the hits its stack cache answered (`--stacks tallied` or `caller-tallied`): \
             such a call has no event of its own to be found after the stop."
        } else {
            ""
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tallied_run_says_why_a_stops_call_may_have_no_event() {
        let cc = CrossCheck {
            compared: 8,
            same_call_agreed: 0,
            ..Default::default()
        };
        let text = |tallied| {
            let mut md = String::new();
            render_snapshots_cross_check(&mut md, &SnapshotRun::default(), &cc, tallied);
            md
        };
        assert!(text(true).contains("such a call has no event of its own"));
        assert!(!text(false).contains("such a call has no event of its own"));
        let all_found = CrossCheck {
            same_call_agreed: 8,
            ..cc.clone()
        };
        let mut md = String::new();
        render_snapshots_cross_check(&mut md, &SnapshotRun::default(), &all_found, true);
        assert!(!md.contains("such a call has no event of its own"));
    }
}
