//! The peers sections of `results.md`: guestscope, ftrace and bpftrace on the same
//! events (the overhead boot's ftrace peer, the peers boot, and the peers boot again
//! with the guest's clock counting its instructions), and where the traced loop's time
//! goes.

use std::fmt::Write as _;

use super::spread;
use crate::bench::results::{GuestProfile, LoopOverhead, PeerOverhead, PeersBoot};
use crate::bench::stats::Spread;
use crate::qemu::command::INSTRUCTIONS_PER_US;

/// What a peers boot's loop times count, and how its figures are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// The guest's clock, which follows the host's time.
    Time,
    /// The guest's instructions: a ms of its clock is a million of them.
    Instructions,
}

impl Clock {
    fn of(p: &PeersBoot) -> Self {
        if p.instruction_clock {
            Clock::Instructions
        } else {
            Clock::Time
        }
    }

    /// What a loop's time is given in.
    fn loop_unit(self) -> &'static str {
        match self {
            Clock::Time => "ms",
            Clock::Instructions => "millions of instructions",
        }
    }

    /// What a per-event figure is given in.
    fn per_event_unit(self) -> &'static str {
        match self {
            Clock::Time => "µs",
            Clock::Instructions => "instructions",
        }
    }

    /// A spread of µs per event, as this clock counts it.
    fn per_event(self, s: Option<&Spread>) -> String {
        match self {
            Clock::Time => spread(s, 2),
            Clock::Instructions => spread(s.map(|s| s.scaled(INSTRUCTIONS_PER_US)).as_ref(), 0),
        }
    }

    /// µs per event, as this clock counts it.
    fn per_event_value(self, us: f64) -> String {
        match self {
            Clock::Time => format!("{us:.2}"),
            Clock::Instructions => format!("{:.0}", us * INSTRUCTIONS_PER_US),
        }
    }

    /// A signed difference of µs per event, as this clock counts it.
    fn per_event_difference(self, us: f64) -> String {
        // + 0.0: no "-0.00".
        match self {
            Clock::Time => format!("{:+.2}", us + 0.0),
            Clock::Instructions => format!("{:+.0}", us * INSTRUCTIONS_PER_US + 0.0),
        }
    }
}

/// guestscope and its ftrace peer on the same events in the overhead boot, as a table.
pub(super) fn overhead_peers(md: &mut String, o: &LoopOverhead) {
    if o.peers.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n{} loop, the same events traced by guestscope and by ftrace (kprobe events on `_raw_spin_lock` and `alloc_fd` filtered to the loop's task name, as `trace-cmd record -f 'comm == \"fopen\"'` does), in this boot; each paired with the untraced run of its repetition ({} ms). Per event: the time added over the events guestscope's every-probe run of the same repetition saw.\n",
        o.workload,
        spread(o.untraced_ms.as_ref(), 1)
    );
    peer_table(md, &o.peers, Clock::Time);
}

/// guestscope, ftrace and bpftrace on the same events, in the peers boot (or in its
/// instruction-counted twin).
pub(super) fn peers_boot(md: &mut String, p: &PeersBoot) {
    let clock = Clock::of(p);
    match clock {
        Clock::Time => {
            let _ = writeln!(md, "\n## Peers on the same events\n");
        }
        Clock::Instructions => {
            let _ = writeln!(
                md,
                "\n## Peers on the same events, counted in instructions\n\nThe peers boot again, with QEMU counting the guest's instructions (`-icount shift=0`): while the guest runs, its clock advances one nanosecond per instruction, so a loop's time by its own clock is its instructions (the probes', the agent's and the kernel's threads' that ran meanwhile included), and the host's other work does not move it. What an instruction costs is left out: a cache miss, a TLB flush or a lock's wait counts as the instructions it ran. The figures of a build repeat to within a few per cent from boot to boot, where the time figures above spread by half.\n"
            );
        }
    }
    let _ = writeln!(
        md,
        "The fopen loop ({} iterations, {} events per iteration as guestscope counts them) in a root file system with bpftrace ({}), in one boot: the events of `_raw_spin_lock` and `alloc_fd` in the loop's task, traced by guestscope, by ftrace kprobe events filtered to the task's name, and by bpftrace kprobes with the same filter (Debian's bpftrace; its LLVM compile happens before the loop starts, out of the timing). Each run paired with the untraced run of its repetition ({} {}); per event over the events guestscope's every-probe run of the same repetition saw. Hits per iteration: each tracer's own count of the two functions' hits, the process's start included (ftrace's kprobes every task's; bpftrace the task's from its exec on, by name; guestscope's from its fork on, by pid).\n",
        p.iterations,
        spread(p.events_per_iteration.as_ref(), 2),
        p.rootfs,
        spread(p.untraced_ms.as_ref(), 1),
        clock.loop_unit()
    );
    peer_table(md, &p.rows, clock);
    if !p.profiles.is_empty() {
        let _ = writeln!(
            md,
            "\n### {}",
            match clock {
                Clock::Time => "Where the traced loop's time goes",
                Clock::Instructions => "Where the traced loop's instructions go",
            }
        );
    }
    for profile in &p.profiles {
        guest_profile(md, profile, clock);
    }
}

/// Where the traced loop's time goes, from perf in the peers boot.
fn guest_profile(md: &mut String, p: &GuestProfile, clock: Clock) {
    let _ = writeln!(md, "\n**{}**\n", p.condition);
    let _ = writeln!(
        md,
        "The whole guest sampled by Debian's perf (`perf record -a -g`, cpu-clock at {} Hz{}; {} ms sampled) while {} the fopen loop ({} iterations, {} ms by its own clock, {} events){}; `perf report --children`, grouped. Under TCG a sample is a timer interrupt: time with interrupts off counts where they come back on (the ring buffer's lock at its unlock, under the reservation). The rows marked · are parts of the probes' row.{}\n",
        p.hz,
        match clock {
            Clock::Time => "",
            Clock::Instructions => " of the guest's clock: a sample every million instructions",
        },
        p.sampled_ms.map_or("—".into(), |v| format!("{v:.0}")),
        if p.untraced {
            "nothing traced"
        } else {
            "guestscope traced"
        },
        p.iterations,
        p.loop_ms.map_or("—".into(), |v| format!("{v:.0}")),
        p.events.map_or("—".into(), |v| format!("{v:.0}")),
        if p.untraced {
            " (as many as guestscope counts in it)".to_string()
        } else {
            match p.stack_cache_percent {
                Some(c) => format!(
                    " this way (the stack cache gave the stacks of {c:.1}% of its probes' hits)"
                ),
                None => " this way".to_string(),
            }
        },
        if p.untraced {
            " The traced recordings below are compared with this one, row by row.".to_string()
        } else {
            format!(
                " The last column is this row's {} per loop event less the untraced recording's: what tracing this way added there.",
                clock.per_event_unit()
            )
        },
    );
    let unit = clock.per_event_unit();
    // The traced recordings' last column: the row against the untraced recording's.
    let (head, rule) = if p.untraced {
        (String::new(), "")
    } else {
        (
            format!(" more than untraced, {unit} per loop event |"),
            "---:|",
        )
    };
    let _ = writeln!(
        md,
        "| where | share of the samples | {unit} per loop event |{head}\n|---|---:|---:|{rule}"
    );
    for s in &p.shares {
        let over = match (p.untraced, s.over_untraced_us) {
            (true, _) => String::new(),
            (false, None) => " — |".into(),
            (false, Some(v)) => format!(" {} |", clock.per_event_difference(v)),
        };
        let _ = writeln!(
            md,
            "| {} | {:.1}% | {} |{over}",
            s.what,
            s.percent,
            s.us_per_event
                .map_or("—".into(), |v| clock.per_event_value(v))
        );
    }
}

/// The rows of a peers table.
fn peer_table(md: &mut String, rows: &[PeerOverhead], clock: Clock) {
    let _ = writeln!(
        md,
        "| tracer | loop ({}) | slowdown | {unit} per event | of them the agent's | hits per iteration |\n|---|---:|---:|---:|---:|---:|",
        clock.loop_unit(),
        unit = clock.per_event_unit()
    );
    for p in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            p.tracer,
            spread(p.traced_ms.as_ref(), 1),
            spread(p.ratio.as_ref(), 2),
            clock.per_event(p.us_per_event.as_ref()),
            p.agent_us_per_event
                .as_ref()
                .map_or("—".into(), |a| clock.per_event(Some(a))),
            p.hits_per_iteration
                .as_ref()
                .map_or("—".into(), |_| spread(p.hits_per_iteration.as_ref(), 1)),
        );
    }
    if rows.iter().any(|p| p.agent_us_per_event.is_some()) {
        let _ = writeln!(
            md,
            "\nThe agent's: its CPU (`getrusage`, user and kernel) in the run less in the untraced run of the repetition, over the same events; it runs on the loop's vCPU, so it is part of the row's cost per event."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::results::ProfileShare;

    fn row(tracer: &str, us: &[f64]) -> PeerOverhead {
        PeerOverhead {
            tracer: tracer.into(),
            traced_ms: Spread::of(&[60.1, 60.0, 60.2]),
            ratio: Spread::of(&[1.68, 1.69, 1.68]),
            us_per_event: Spread::of(us),
            hits_per_iteration: Spread::of(&[6.2, 6.2, 6.2]),
            agent_us_per_event: tracer
                .starts_with("guestscope")
                .then(|| Spread::of(&[0.31, 0.3, 0.32]))
                .flatten(),
        }
    }

    fn boot(instruction_clock: bool) -> PeersBoot {
        PeersBoot {
            instruction_clock,
            rootfs: "debian".into(),
            iterations: 2000,
            reps: 3,
            untraced_ms: Spread::of(&[35.8, 35.9, 35.8]),
            events_per_iteration: Spread::of(&[6.2, 6.2, 6.2]),
            rows: vec![
                row("guestscope, every probe", &[2.01, 2.0, 2.03]),
                row("bpftrace, count", &[0.6, 0.6, 0.6]),
            ],
            profiles: vec![GuestProfile {
                condition: "every probe".into(),
                untraced: false,
                iterations: 20000,
                hz: 1000,
                shares: vec![ProfileShare {
                    what: "the probes".into(),
                    percent: 12.5,
                    us_per_event: Some(0.4567),
                    over_untraced_us: Some(0.4),
                }],
                stack_cache_percent: Some(97.26),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn instruction_counted_boots_show_instructions_where_timed_ones_show_time() {
        let mut timed = String::new();
        peers_boot(&mut timed, &boot(false));
        assert!(timed.contains("## Peers on the same events\n"), "{timed}");
        assert!(
            timed
                .contains("| tracer | loop (ms) | slowdown | µs per event | of them the agent's |")
        );
        assert!(
            timed.contains("| 2.01 (2.00–2.03, n=3) | 0.31 (0.30–0.32, n=3) |"),
            "{timed}"
        );
        assert!(timed.contains("| 0.60 (0.60–0.60, n=3) | — |"), "{timed}");
        assert!(
            timed.contains("| the probes | 12.5% | 0.46 | +0.40 |"),
            "{timed}"
        );
        assert!(!timed.contains("instructions"), "{timed}");
        assert!(
            timed.contains(
                "this way (the stack cache gave the stacks of 97.3% of its probes' hits)"
            ),
            "{timed}"
        );

        let mut counted = String::new();
        peers_boot(&mut counted, &boot(true));
        assert!(counted.contains("## Peers on the same events, counted in instructions"));
        assert!(counted.contains(
            "| tracer | loop (millions of instructions) | slowdown | instructions per event | of them the agent's |"
        ));
        // µs of the instruction clock × 1000: instructions.
        assert!(
            counted.contains("| 2010 (2000–2030, n=3) | 310 (300–320, n=3) |"),
            "{counted}"
        );
        assert!(counted.contains("(35.8 (35.8–35.9, n=3) millions of instructions)"));
        assert!(counted.contains("### Where the traced loop's instructions go"));
        assert!(
            counted.contains("| the probes | 12.5% | 457 | +400 |"),
            "{counted}"
        );
    }
}
