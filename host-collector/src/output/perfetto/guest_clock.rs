//! The guest's clock as its own clock domain in the trace: the points at which
//! the trace's `ClockSnapshot`s pair guest CLOCK_MONOTONIC with the host's
//! axis, so trace_processor maps guest timestamps itself.
//!
//! trace_processor maps a time from the latest snapshot at or before it, at
//! the same rate (nearest neighbour, no interpolation). The fit has a drift and
//! the guest's clock stood still while the gdbstub held the VM, so the points
//! are a grid fine enough that the drift moves no mapped time by more than
//! [`MAX_DRIFT_ERROR_NS`], plus a pair at each hold (the last guest nanosecond
//! before the clock stood still, and the next).

use crate::timeline::clock::Timeline;

/// Largest error the drift may add between two grid points, ns.
pub const MAX_DRIFT_ERROR_NS: f64 = 1000.0;

/// Widest grid step, ns (without drift, a point every 100 ms).
const MAX_STEP_NS: u64 = 100_000_000;

/// Snapshot points `(guest ns, host ns on the trace's axis)` covering guest
/// times `first..=last`, in increasing order of both.
pub fn points(timeline: &Timeline, first: u64, last: u64) -> Vec<(u64, u64)> {
    let to_host = |g: u64| timeline.to_host(g).max(0.0).round() as u64;
    let drift = timeline.map.drift.abs();
    let step = if drift > 0.0 {
        ((MAX_DRIFT_ERROR_NS / drift) as u64).clamp(1_000, MAX_STEP_NS)
    } else {
        MAX_STEP_NS
    };
    let mut guest: Vec<u64> = (0..)
        .map(|k| first.saturating_add(k * step))
        .take_while(|&g| g <= last)
        .collect();
    for &(a, _) in timeline.holds.spans() {
        let g = stood_at(timeline, a);
        if (first..=last).contains(&g) {
            guest.extend([g, g + 1]);
        }
    }
    guest.push(last);
    guest.sort_unstable();
    guest.dedup();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(guest.len());
    for g in guest {
        let h = to_host(g);
        // Both clocks must only move forward from one snapshot to the next.
        if out.last().is_none_or(|&(_, ph)| h > ph) {
            out.push((g, h));
        }
    }
    out
}

/// The last guest time that maps at or before the hold starting at host `a`: the
/// time the guest's clock stood at (the line's inverse, then stepped to the exact
/// nanosecond, since the inverse is off by a few tens of ns at a large drift).
fn stood_at(timeline: &Timeline, a: u64) -> u64 {
    let a = a as f64;
    let mut g = timeline.to_guest(a).max(0.0) as u64;
    for _ in 0..100_000 {
        if timeline.to_host(g + 1) <= a {
            g += 1;
        } else if g > 0 && timeline.to_host(g) > a {
            g -= 1;
        } else {
            break;
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::clock::ClockMap;
    use crate::timeline::holds::Holds;

    #[test]
    fn points_follow_the_fit_through_drift_and_holds() {
        let timeline = Timeline {
            map: ClockMap {
                offset_ns: 3e9,
                drift: -2e-4,
                guest_ref_ns: 1_000_000_000,
                error_bound_ns: 0.0,
                consistent: true,
                samples: 2,
                best_rtt_ns: 0,
                span_ns: 0,
            },
            holds: Holds::new(vec![(5_000_000_000, 5_030_000_000)]),
        };
        let (first, last) = (1_000_000_000, 4_000_000_000);
        let p = points(&timeline, first, last);
        assert_eq!(p[0].0, first);
        assert_eq!(p.last().unwrap().0, last);
        assert!(p.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // trace_processor's nearest-neighbour mapping stays within the bound everywhere.
        for g in (first..=last).step_by(777_777) {
            let &(pg, ph) = p.iter().rev().find(|&&(pg, _)| pg <= g).unwrap();
            let mapped = (ph + (g - pg)) as f64;
            assert!(
                (mapped - timeline.to_host(g)).abs() <= MAX_DRIFT_ERROR_NS + 1.0,
                "{g}: {mapped} vs {}",
                timeline.to_host(g)
            );
        }
        // The hold: the mapping jumps by its 30 ms across the pair of points.
        let g = timeline.to_guest(5_000_000_000.0) as u64;
        let jump = p
            .windows(2)
            .filter(|w| w[0].0 + 100 >= g && w[1].0 <= g + 100)
            .map(|w| (w[1].1 - w[0].1) - (w[1].0 - w[0].0))
            .max()
            .unwrap();
        assert!(jump >= 29_999_000, "{jump}");
    }
}
