//! `results.md`: the bench's tables, and each target of the benchmark issue checked
//! against this run's figures.

use std::fmt::Write as _;

use super::results::BenchResults;
use super::stats::Spread;

mod peers;
mod sections;
mod targets;

pub use targets::targets;

/// Targets of the benchmark issue.
pub mod target {
    /// µs added per probe event on the fopen loop, at most.
    pub const US_PER_EVENT: f64 = 1.5;
    /// fopen loop with every probe / untraced, at most (the targets say 1.3x,
    /// its table 1.4x: the stricter one).
    pub const FOPEN_RATIO: f64 = 1.3;
    /// Agent CPU per event on the fopen loop, µs, at most.
    pub const AGENT_US_PER_EVENT: f64 = 0.5;
    /// How many times faster than the gdb method, as a share of the limit (the gdb
    /// method's time over the untraced time of the same loop, same run), at least.
    pub const GDB_SHARE_OF_LIMIT: f64 = 0.9;
    /// Lossless stream MB/s over raw vsock MB/s, at least.
    pub const FRACTION_OF_RAW: f64 = 0.5;
    /// Boot to agent-ready, s, at most (TCG).
    pub const BOOT_S: f64 = 3.0;
    /// Warm `cargo xtask lab`, s, at most (TCG).
    pub const LAB_S: f64 = 30.0;
    /// Agent peak RSS after 10M events, MiB, at most.
    pub const AGENT_MIB: f64 = 8.0;
    /// Collector peak RSS after 10M events, MiB, at most.
    pub const COLLECTOR_MIB: f64 = 64.0;
    /// Instructions per event with every probe (stacks cached) over an ftrace kprobe
    /// hit's with no stack, at most: the issue's per-event target ("cheaper than ftrace
    /// with no stack at all") counted in instructions, which the host's noise does not
    /// move.
    pub const INSTRUCTIONS_OVER_FTRACE: f64 = 1.0;
}

/// `median (min–max, n)` with `digits` decimals.
pub fn spread(s: Option<&Spread>, digits: usize) -> String {
    spread_in(s, digits, "")
}

/// A spread of fractions as percentages: `median% (min–max%, n)` with `digits` decimals.
pub fn percent_spread(s: Option<&Spread>, digits: usize) -> String {
    spread_in(s.map(|s| s.scaled(100.0)).as_ref(), digits, "%")
}

/// [`spread`] with `unit` after the median and the range.
fn spread_in(s: Option<&Spread>, digits: usize, unit: &str) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{:.d$}{unit} ({:.d$}–{:.d$}{unit}, n={})",
            s.median,
            s.min,
            s.max,
            s.n,
            d = digits
        ),
        Some(s) => format!("{:.d$}{unit} (n=1)", s.median, d = digits),
        None => "—".into(),
    }
}

/// The median of a spread, if there is one.
fn med(s: Option<&Spread>) -> Option<f64> {
    s.map(|s| s.median)
}

/// The Markdown page.
pub fn render(r: &BenchResults) -> String {
    let mut md = String::new();
    sections::head(&mut md, r);
    sections::overhead(&mut md, r);
    for p in [&r.peers, &r.peers_instructions].into_iter().flatten() {
        peers::peers_boot(&mut md, p);
    }
    if let Some(g) = &r.gdb {
        sections::gdb(&mut md, g);
    }
    if let Some(c) = &r.capacity {
        sections::capacity(&mut md, c);
    }
    sections::boot_and_lab(&mut md, r);
    if let Some(mm) = &r.memory {
        sections::memory(&mut md, mm);
    }
    if let Some(sc) = &r.stack_cache {
        sections::stack_cache(&mut md, sc);
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
    use crate::bench::results::{Capacity, CapacityStep, GdbComparison, LabTiming};

    #[test]
    fn spreads_are_shown_with_their_range() {
        let s = Spread::of(&[1.0, 2.0, 4.0]).unwrap();
        assert_eq!(spread(Some(&s), 1), "2.0 (1.0–4.0, n=3)");
        assert_eq!(spread(Spread::of(&[3.0]).as_ref(), 0), "3 (n=1)");
        assert_eq!(spread(None, 1), "—");
    }

    #[test]
    fn the_boot_target_holds_where_kaslr_is_not_measured() {
        let times = |s: f64| crate::bench::results::BootTimes {
            agent_ready_s: Spread::of(&[s]),
            kernel_banner_s: Spread::of(&[s / 2.0]),
            samples: Vec::new(),
        };
        let boots =
            |t: &[crate::bench::results::TargetCheck]| -> Vec<(String, Option<bool>, String)> {
                t.iter()
                    .filter(|c| c.what.starts_with("boot to agent-ready"))
                    .map(|c| (c.what.clone(), c.met, c.note.clone()))
                    .collect()
            };
        // The KASLR bzImage over the target, the uncompressed kernel under it: one row,
        // the uncompressed kernel's, with the bzImage's figure told beside it.
        let both = boots(&targets(&BenchResults {
            boot: times(5.6),
            boot_uncompressed: Some(times(2.5)),
            ..Default::default()
        }));
        assert_eq!(both.len(), 1, "{both:?}");
        assert!(both[0].0.contains("uncompressed"), "{both:?}");
        assert_eq!(both[0].1, Some(true));
        assert!(
            both[0]
                .2
                .contains("KASLR on; no target): 5.60 s, 2.80 s of it before"),
            "{both:?}"
        );
        // Without an uncompressed kernel the bzImage's boot is held to the target.
        let alone = boots(&targets(&BenchResults {
            boot: times(5.6),
            ..Default::default()
        }));
        assert_eq!(alone.len(), 1, "{alone:?}");
        assert!(alone[0].0.contains("default bzImage"), "{alone:?}");
        assert_eq!(alone[0].1, Some(false));
    }

    #[test]
    fn the_stack_cache_target_is_zero_wrong_stacks() {
        let with = |wrong| BenchResults {
            stack_cache: Some(crate::bench::results::StackCacheCheck {
                checked_events: 100,
                cached: 90,
                wrong,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = targets(&with(0));
        let sc = t.iter().find(|c| c.what.contains("stack cache")).unwrap();
        assert_eq!(sc.met, Some(true));
        assert_eq!(sc.measured, "0 of 90 cached");
        assert!(
            sc.note.starts_with("none; 100 events checked"),
            "{}",
            sc.note
        );
        let t = targets(&with(3));
        let sc = t.iter().find(|c| c.what.contains("stack cache")).unwrap();
        assert_eq!(sc.met, Some(false));
        assert!(sc.note.starts_with("3; "), "{}", sc.note);
        assert!(
            targets(&BenchResults::default())
                .iter()
                .all(|c| !c.what.contains("stack cache"))
        );
    }

    #[test]
    fn the_pipeline_target_says_what_each_side_spent_of_an_event() {
        let with = |collector: Option<f64>| BenchResults {
            capacity: Some(Capacity {
                raw: crate::bench::results::RawThroughput {
                    host_mb_s: Spread::of(&[128.0]),
                    ..Default::default()
                },
                max_lossless_rate: Some(200_000.0),
                max_lossless_wire_mb_s: Some(0.8),
                fraction_of_raw: Some(0.006),
                pipeline: Some(crate::bench::results::PipelineCeiling {
                    events_per_s: Spread::of(&[800_000.0, 1_000_000.0, 1_200_000.0]),
                    agent_cpu_us_per_event: Spread::of(&[0.46]),
                    collector_cpu_us_per_event: collector.and_then(|c| Spread::of(&[c])),
                    ..Default::default()
                }),
                pipeline_fraction_of_raw: Some(0.5),
                ..Default::default()
            }),
            ..Default::default()
        };
        let note = |r: &BenchResults| {
            let t = targets(r);
            t.iter()
                .find(|c| c.what.starts_with("the pipeline's own ceiling"))
                .unwrap()
                .note
                .clone()
        };
        // A million events a second: 1 µs each, of it 0.46 the agent's, 0.25 the host's.
        let measured = note(&with(Some(0.25)));
        assert!(
            measured.contains(
                "the target; 1.00 µs per event, of it the agent's CPU 0.46 µs (guest) and the collector's 0.25 µs (host); end to end"
            ),
            "{measured}"
        );
        // Without the collector's figure the note says only what was measured.
        let without = note(&with(None));
        assert!(
            without.contains("the target; end to end with real probes"),
            "{without}"
        );
    }

    #[test]
    fn the_peers_boot_shows_as_a_table_and_in_the_per_event_target() {
        use crate::bench::results::{PeerOverhead, PeersBoot};
        let row = |tracer: &str, us: f64| PeerOverhead {
            tracer: tracer.into(),
            us_per_event: Spread::of(&[us]),
            ratio: Spread::of(&[1.5]),
            ..Default::default()
        };
        let r = BenchResults {
            peers: Some(PeersBoot {
                rootfs: "debian.ext4".into(),
                iterations: 2000,
                reps: 1,
                rows: vec![row("guestscope, x", 6.5), row("bpftrace kprobes, y", 0.63)],
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = targets(&r);
        let per_event = t.iter().find(|c| c.what.starts_with("probe cost")).unwrap();
        assert!(
            per_event
                .note
                .contains("in the peers boot: guestscope, x 6.50 µs, bpftrace kprobes, y 0.63 µs"),
            "{}",
            per_event.note
        );
        let md = render(&BenchResults { targets: t, ..r });
        assert!(md.contains("## Peers on the same events"), "{md}");
        assert!(
            md.contains("| bpftrace kprobes, y | — | 1.50 (n=1) | 0.63 (n=1) | — | — |"),
            "{md}"
        );
    }

    #[test]
    fn the_instruction_counted_boot_is_held_to_an_ftrace_hit_without_stack() {
        use crate::bench::peers::PEER_ROWS;
        use crate::bench::results::{PeerOverhead, PeersBoot};
        let tracer = |condition: &str| {
            PEER_ROWS
                .iter()
                .find(|(c, _)| *c == condition)
                .unwrap()
                .1
                .to_string()
        };
        let row = |condition: &str, us: f64| PeerOverhead {
            tracer: tracer(condition),
            us_per_event: Spread::of(&[us, us]),
            agent_us_per_event: (condition == "all")
                .then(|| Spread::of(&[0.31, 0.31]))
                .flatten(),
            ..Default::default()
        };
        let boot = |all: f64| PeersBoot {
            instruction_clock: true,
            rows: vec![
                row("all", all),
                row("tallied", 1.66),
                row("ftpeer", 0.95),
                row("bpfcount", 0.57),
            ],
            ..Default::default()
        };
        let find = |r: &BenchResults| {
            targets(r)
                .into_iter()
                .find(|c| c.what.contains("counted in instructions"))
        };
        let over = find(&BenchResults {
            peers_instructions: Some(boot(2.01)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(over.met, Some(false));
        assert_eq!(
            over.measured,
            "2.12x: 2010 against 950 instructions per event"
        );
        assert!(
            over.note.contains(
                "instructions per event: the agent's 310 of them, tallied 1.75x (1660), bpftrace's count 570"
            ),
            "{}",
            over.note
        );
        let agent = targets(&BenchResults {
            peers_instructions: Some(boot(2.01)),
            ..Default::default()
        })
        .into_iter()
        .find(|c| c.what.starts_with("agent CPU per event"))
        .unwrap();
        assert!(
            agent.note.contains("310 instructions per event, counted"),
            "{}",
            agent.note
        );
        let under = find(&BenchResults {
            peers_instructions: Some(boot(0.9)),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(under.met, Some(true));
        // No instruction-counted boot (KVM, or no root file system): no row.
        assert!(find(&BenchResults::default()).is_none());
    }

    #[test]
    fn traced_profiles_show_each_row_against_the_untraced_one() {
        use crate::bench::results::{GuestProfile, PeersBoot, ProfileShare};
        let share = |us: f64, over: Option<f64>| ProfileShare {
            what: "the agent, user space".into(),
            percent: 2.5,
            us_per_event: Some(us),
            over_untraced_us: over,
        };
        let profile = |untraced: bool, condition: &str, s: ProfileShare| GuestProfile {
            condition: condition.into(),
            untraced,
            shares: vec![s],
            ..Default::default()
        };
        let r = BenchResults {
            peers: Some(PeersBoot {
                profiles: vec![
                    profile(true, "untraced", share(0.03, None)),
                    profile(false, "every probe", share(1.11, Some(1.08))),
                    profile(false, "tallied", share(0.2, None)),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let md = render(&r);
        assert!(md.contains("while nothing traced the fopen loop"), "{md}");
        assert!(
            md.contains("| where | share of the samples | µs per loop event |\n|---|---:|---:|\n| the agent, user space | 2.5% | 0.03 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| the agent, user space | 2.5% | 1.11 | +1.08 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| the agent, user space | 2.5% | 0.20 | — |\n"),
            "{md}"
        );
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
        assert!(lab.note.starts_with("3.00x the target"), "{}", lab.note);
        let acc = t.iter().find(|c| c.what.contains("counted")).unwrap();
        assert_eq!(acc.met, Some(true));
        assert!(acc.measured.contains("2 events lost"), "{}", acc.measured);
        let gdb = t.iter().find(|c| c.what.contains("gdb")).unwrap();
        assert_eq!(gdb.met, None);
        let md = render(&BenchResults { targets: t, ..r });
        assert!(
            md.contains("| warm `cargo xtask lab`, end to end (TCG) | ≤ 30 s | 90.0 s | **no** |"),
            "{md}"
        );
    }

    #[test]
    fn the_gdb_target_is_a_share_of_the_limit_measured_in_the_same_run() {
        let with = |faster: f64, slowdown: f64| BenchResults {
            gdb: Some(GdbComparison {
                guestscope_faster: Spread::of(&[faster; 5]),
                gdb_slowdown: Spread::of(&[slowdown; 5]),
                share_of_limit: Spread::of(&[faster / slowdown; 5]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let gdb = |r: &BenchResults| {
            targets(r)
                .into_iter()
                .find(|c| c.what.contains("gdb"))
                .unwrap()
        };
        let short = gdb(&with(400.0, 500.0));
        assert_eq!(short.met, Some(false));
        assert!(
            short
                .measured
                .starts_with("400x faster (limit 500x); 80% of the limit, paired"),
            "{}",
            short.measured
        );
        assert_eq!(gdb(&with(460.0, 500.0)).met, Some(true));
        // Paired shares, not the ratio of the medians.
        let mut paired = with(400.0, 500.0);
        paired.gdb.as_mut().unwrap().share_of_limit = Spread::of(&[0.95; 5]);
        assert_eq!(gdb(&paired).met, Some(true));
        // Faster than untraced is noise, not a met target.
        let noisy = gdb(&with(427.0, 342.0));
        assert_eq!(noisy.met, None);
        assert!(
            noisy.note.starts_with("above 100% of the limit"),
            "{}",
            noisy.note
        );
    }
}
