//! The arithmetic of the benchmarks: medians and spread of repeated runs, ratios of
//! paired runs, and the order conditions are run in so that each one takes every
//! position equally often. These machines are noisy (other work shares the two cores),
//! so every speed figure is a median of paired ratios, never one run's time.

use std::collections::HashSet;

use serde::Serialize;

use crate::session::StackCounts;

/// Median and spread of a set of samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// First quartile (linear interpolation between closest ranks).
    pub q1: f64,
    /// Third quartile.
    pub q3: f64,
}

impl Spread {
    /// The spread of `samples` (non-finite samples are left out); `None` when none is left.
    pub fn of(samples: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Spread {
            n: v.len(),
            median: quantile(&v, 0.5),
            min: v[0],
            max: v[v.len() - 1],
            q1: quantile(&v, 0.25),
            q3: quantile(&v, 0.75),
        })
    }

    /// The same spread with every figure multiplied by `k` (`k` ≥ 0: unit changes).
    pub fn scaled(&self, k: f64) -> Spread {
        Spread {
            n: self.n,
            median: self.median * k,
            min: self.min * k,
            max: self.max * k,
            q1: self.q1 * k,
            q3: self.q3 * k,
        }
    }
}

/// The `q`-quantile (0..=1) of sorted `v`, interpolating linearly between closest ranks.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        }
    }
}

/// The median of `samples` (non-finite ones left out); NaN when none is left.
pub fn median(samples: &[f64]) -> f64 {
    Spread::of(samples).map_or(f64::NAN, |s| s.median)
}

/// Ratios `a[i] / b[i]` of runs paired by index (pairs with a missing, non-finite or
/// non-positive member are skipped).
pub fn paired_ratios(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter_map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) if x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0 => {
                Some(x / y)
            }
            _ => None,
        })
        .collect()
}

/// Differences `a[i] - b[i]` of runs paired by index (`None` where either is missing).
pub fn paired_differences(a: &[Option<f64>], b: &[Option<f64>]) -> Vec<Option<f64>> {
    a.iter().zip(b).map(|(x, y)| Some((*x)? - (*y)?)).collect()
}

/// Differences `a[i] - b[i]` of runs paired by index, each divided by `per[i]` (the
/// count the difference is shared by, e.g. probe hits); pairs with a missing member or
/// a zero count are skipped.
pub fn paired_cost_per(a: &[Option<f64>], b: &[Option<f64>], per: &[Option<f64>]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .zip(per)
        .filter_map(|((x, y), n)| match (x, y, n) {
            (Some(x), Some(y), Some(n)) if *n > 0.0 => Some((x - y) / n),
            _ => None,
        })
        .collect()
}

/// The order in which `conditions` conditions run in repetition `rep`: a rotation by
/// `rep`, so over any `conditions` consecutive repetitions each condition runs once in
/// every position (and drift or warm-up cannot favour one of them).
pub fn rotation(conditions: usize, rep: usize) -> Vec<usize> {
    (0..conditions)
        .map(|i| (i + rep) % conditions.max(1))
        .collect()
}

/// The highest rate among `steps` (rate, lossless) such that it and every lower rate
/// lost nothing; `None` if the lowest already lost events.
pub fn highest_lossless(steps: &[(f64, bool)]) -> Option<f64> {
    let mut sorted: Vec<(f64, bool)> = steps.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut best = None;
    for (rate, lossless) in sorted {
        if !lossless {
            break;
        }
        best = Some(rate);
    }
    best
}

/// Total variation distance between two runs' shares of events per (probe, stack id):
/// half the sum of the share differences, 0 (the same shares) to 1 (nothing shared);
/// `None` if either run has no event.
pub(super) fn stack_distance(a: &StackCounts, b: &StackCounts) -> Option<f64> {
    let (ta, tb) = (a.values().sum::<u64>(), b.values().sum::<u64>());
    if ta == 0 || tb == 0 {
        return None;
    }
    let share = |m: &StackCounts, t: u64, k| m.get(k).copied().unwrap_or(0) as f64 / t as f64;
    let keys: HashSet<_> = a.keys().chain(b.keys()).collect();
    Some(
        keys.into_iter()
            .map(|k| (share(a, ta, k) - share(b, tb, k)).abs())
            .sum::<f64>()
            / 2.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_distance_is_the_share_of_events_that_would_have_to_move() {
        let m = |pairs: &[(i32, u64)]| {
            pairs
                .iter()
                .map(|&(id, n)| (("spin_lock".into(), id), n))
                .collect::<StackCounts>()
        };
        let d = |a, b| stack_distance(&m(a), &m(b));
        assert_eq!(d(&[(1, 10), (2, 30)], &[(1, 100), (2, 300)]), Some(0.0));
        assert_eq!(d(&[(1, 10)], &[(2, 7)]), Some(1.0));
        assert_eq!(d(&[(1, 3), (2, 1)], &[(1, 1), (2, 1)]), Some(0.25));
        assert_eq!(d(&[], &[(2, 7)]), None);
        // The probe is part of the key.
        let mut other = m(&[(1, 10)]);
        other.insert(("alloc_fd".into(), 1), 10);
        assert_eq!(stack_distance(&m(&[(1, 10)]), &other), Some(0.5));
    }

    #[test]
    fn spread_of_odd_and_even_counts() {
        let s = Spread::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 3.0, 1.0, 5.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!((s.q1, s.q3), (1.75, 3.25));
        let s = Spread::of(&[7.0]).unwrap();
        assert_eq!((s.median, s.q1, s.q3), (7.0, 7.0, 7.0));
    }

    #[test]
    fn spread_skips_non_finite_and_empty_is_none() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN, f64::INFINITY]), None);
        assert_eq!(Spread::of(&[f64::NAN, 2.0, 4.0]).unwrap().median, 3.0);
        assert!(median(&[]).is_nan());
        assert_eq!(
            Spread::of(&[1.0, 3.0]).unwrap().scaled(1000.0).median,
            2000.0
        );
    }

    #[test]
    fn ratios_pair_by_index_and_skip_holes() {
        let a = [Some(10.0), None, Some(9.0), Some(8.0), Some(1.0)];
        let b = [Some(5.0), Some(1.0), Some(3.0), Some(0.0), Some(f64::NAN)];
        assert_eq!(paired_ratios(&a, &b), vec![2.0, 3.0]);
        // Pairing matters: the median of ratios is not the ratio of medians.
        let a = [Some(2.0), Some(30.0), Some(4.0)];
        let b = [Some(1.0), Some(20.0), Some(1.0)];
        assert_eq!(median(&paired_ratios(&a, &b)), 2.0);
        assert_eq!(median(&[2.0, 30.0, 4.0]) / median(&[1.0, 20.0, 1.0]), 4.0);
    }

    #[test]
    fn cost_per_hit_from_paired_differences() {
        let with = [Some(130.0), Some(125.0), None];
        let without = [Some(100.0), Some(105.0), Some(1.0)];
        let hits = [Some(10.0), Some(0.0), Some(5.0)];
        assert_eq!(paired_cost_per(&with, &without, &hits), vec![3.0]);
    }

    #[test]
    fn rotations_put_each_condition_in_each_position_once() {
        assert_eq!(rotation(3, 0), [0, 1, 2]);
        assert_eq!(rotation(3, 1), [1, 2, 0]);
        assert_eq!(rotation(3, 2), [2, 0, 1]);
        assert_eq!(rotation(3, 3), [0, 1, 2]);
        assert_eq!(rotation(2, 1), [1, 0]);
        for n in 1..5 {
            for pos in 0..n {
                let mut seen: Vec<usize> = (0..n).map(|rep| rotation(n, rep)[pos]).collect();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} position {pos}");
            }
        }
        assert!(rotation(0, 3).is_empty());
    }

    #[test]
    fn highest_lossless_stops_at_the_first_loss() {
        let steps = [
            (40e3, true),
            (10e3, true),
            (80e3, false),
            (20e3, true),
            (160e3, true),
        ];
        assert_eq!(highest_lossless(&steps), Some(40e3));
        assert_eq!(highest_lossless(&[(10.0, false), (20.0, true)]), None);
        assert_eq!(highest_lossless(&[]), None);
    }
}
