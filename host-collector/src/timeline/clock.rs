//! Guest-to-host clock mapping from round trips.
//!
//! Each sample is one exchange: the host stamps a probe when it sends it
//! (`host_send_ns`), the guest stamps its CLOCK_MONOTONIC when it answers
//! (`guest_ns`), the host stamps the answer's arrival (`host_recv_ns`). The guest
//! read its clock somewhere inside that window, so the offset `host − guest` at that
//! moment lies in `[host_send − guest, host_recv − guest]`. Nothing says where: the
//! two directions of the link need not be equally fast (measured here, the host →
//! guest direction waits for the agent to wake, the way back does not), so the
//! midpoint of a window is no estimate.
//!
//! The fit therefore intersects the windows (as NTP's and PTP's interval methods do):
//! the mapping `offset + drift × (guest − guest_ref)` must pass through every
//! window; of the lines that do, it takes the drift with the widest band of offsets
//! and the middle of that band. The error bound is the largest distance, over the
//! sampled guest times, between that line and any other line through every window:
//! tight windows anywhere narrow it, loose ones cost nothing. When no line passes
//! through every window the samples contradict the model (a hold not accounted, a
//! clock step), and the fit says so.
//!
//! The line is fitted in running time ([`Holds`]): while the gdbstub held the VM the
//! guest's clock stood still, so host time spent in holds is taken out before the fit
//! and put back when mapping ([`Timeline`]). The host sees a hold from the stop reply's
//! arrival to the resume's sending; the guest's clock stood still for about that long
//! (give or take the stub's latency at each end, a few tens of µs): no clock sample
//! can be taken inside a hold, so how well the holds are placed is checked against the
//! eBPF events instead (`experiments::snapshots::cross_check`).

use serde::{Deserialize, Serialize};

use super::holds::Holds;

/// One round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Host clock when the probe was sent, ns.
    pub host_send_ns: u64,
    /// Guest CLOCK_MONOTONIC when the guest answered, ns.
    pub guest_ns: u64,
    /// Host clock when the answer arrived, ns.
    pub host_recv_ns: u64,
}

impl Sample {
    /// Round-trip time, ns.
    pub fn rtt_ns(&self) -> u64 {
        self.host_recv_ns.saturating_sub(self.host_send_ns)
    }
}

/// The fitted mapping `running host time = guest + offset + drift × (guest − guest_ref)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockMap {
    /// Offset at `guest_ref_ns`, ns.
    pub offset_ns: f64,
    /// Drift: host ns gained per guest ns (0 = same rate), e.g. 1e-6 = 1 ppm.
    pub drift: f64,
    /// Guest time the offset refers to (the first sample's), ns.
    pub guest_ref_ns: u64,
    /// Largest error of a mapped time within the sampled span, ns (for a time after
    /// holds, add up to their slack, [`Holds::uncertainty_before`]). NaN when unknown,
    /// which JSON writes as null.
    #[serde(deserialize_with = "null_as_nan")]
    pub error_bound_ns: f64,
    /// Whether one line passes through every sample's window. When not, the bound is
    /// how far the best line misses the worst window plus half the tightest window.
    pub consistent: bool,
    /// Samples used.
    pub samples: usize,
    /// Shortest round trip, ns (running time).
    pub best_rtt_ns: u64,
    /// Guest time spanned by the samples, ns.
    pub span_ns: u64,
}

/// A number JSON may hold as null (how serde_json writes NaN), read back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl ClockMap {
    /// Maps a guest time onto the host's running time (holds left out).
    pub fn to_running(&self, guest_ns: u64) -> f64 {
        let dt = guest_ns as f64 - self.guest_ref_ns as f64;
        guest_ns as f64 + self.offset_ns + self.drift * dt
    }
}

/// Guest time onto host time: the fitted line, with the holds put back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// The fit, in running time.
    pub map: ClockMap,
    /// When the guest's clock stood still.
    pub holds: Holds,
}

impl Timeline {
    /// Maps a guest CLOCK_MONOTONIC time onto host ns since QEMU's launch.
    pub fn to_host(&self, guest_ns: u64) -> f64 {
        self.holds.host(self.map.to_running(guest_ns))
    }

    /// Maps a host time onto the guest clock (a time inside a hold maps to the guest
    /// time at which the hold began: the clock stood there).
    pub fn to_guest(&self, host_ns: f64) -> f64 {
        let r = self.holds.running(host_ns);
        // Invert the line (drift is tiny: one fixed-point step is exact to well below 1 ns).
        let m = &self.map;
        let g = r - m.offset_ns;
        r - m.offset_ns - m.drift * (g - m.guest_ref_ns as f64)
    }
}

/// Largest drift considered, either way (1%: far beyond any clock, TSC calibration
/// under TCG included).
const MAX_DRIFT: f64 = 0.01;

/// One sample's window in running time: (guest − guest_ref, lowest offset, highest).
struct Window {
    x: f64,
    lo: f64,
    hi: f64,
}

/// The band of offsets at `drift` that every window allows: (lowest, highest); empty
/// when lowest > highest.
fn band(w: &[Window], drift: f64) -> (f64, f64) {
    let lo = w
        .iter()
        .map(|w| w.lo - drift * w.x)
        .fold(f64::NEG_INFINITY, f64::max);
    let hi = w
        .iter()
        .map(|w| w.hi - drift * w.x)
        .fold(f64::INFINITY, f64::min);
    (lo, hi)
}

fn width(w: &[Window], drift: f64) -> f64 {
    let (lo, hi) = band(w, drift);
    hi - lo
}

/// The maximum of a concave function on `[a, b]` (ternary search).
fn argmax_concave(f: impl Fn(f64) -> f64, mut a: f64, mut b: f64) -> f64 {
    for _ in 0..200 {
        let (m1, m2) = (a + (b - a) / 3.0, b - (b - a) / 3.0);
        if f(m1) < f(m2) {
            a = m1;
        } else {
            b = m2;
        }
    }
    (a + b) / 2.0
}

/// The edge of `{drift: width(drift) ≥ 0}` between `inside` and `outside` (bisection).
fn edge(w: &[Window], mut inside: f64, mut outside: f64) -> f64 {
    for _ in 0..100 {
        let mid = (inside + outside) / 2.0;
        if width(w, mid) >= 0.0 {
            inside = mid;
        } else {
            outside = mid;
        }
    }
    inside
}

/// Fits a mapping through every sample's window, in running time (`holds` taken
/// out). `None` without samples.
pub fn fit(samples: &[Sample], holds: &Holds) -> Option<ClockMap> {
    let guest_ref_ns = samples.iter().map(|s| s.guest_ns).min()?;
    let windows: Vec<Window> = samples
        .iter()
        .map(|s| {
            let g = s.guest_ns as f64;
            Window {
                x: g - guest_ref_ns as f64,
                lo: holds.running(s.host_send_ns as f64) - g,
                // Holds shorter for the guest than seen (single steps ran it) would put
                // the truth higher, never lower.
                hi: holds.running(s.host_recv_ns as f64) - g
                    + holds.uncertainty_before(s.host_recv_ns as f64),
            }
        })
        .collect();
    let best_rtt_ns = windows
        .iter()
        .map(|w| w.hi - w.lo)
        .fold(f64::INFINITY, f64::min)
        .max(0.0) as u64;
    let span = windows.iter().map(|w| w.x).fold(0.0, f64::max);
    // With all samples at one guest instant there is no rate to fit.
    let drift = if span > 0.0 {
        argmax_concave(|d| width(&windows, d), -MAX_DRIFT, MAX_DRIFT)
    } else {
        0.0
    };
    let (lo, hi) = band(&windows, drift);
    let offset_ns = (lo + hi) / 2.0;
    let consistent = hi >= lo;
    let error_bound_ns = if !consistent {
        // No line fits: the best one misses the worst window by this much, and is no
        // better than the tightest window where it fits.
        (lo - hi) / 2.0 + best_rtt_ns as f64 / 2.0
    } else if span == 0.0 {
        (hi - lo) / 2.0
    } else {
        // Every line through every window: drifts between the two edges, each with its
        // band of offsets. The extremes of a line's value are at the span's ends.
        let (d_lo, d_hi) = (
            edge(&windows, drift, -MAX_DRIFT),
            edge(&windows, drift, MAX_DRIFT),
        );
        let mut worst: f64 = (hi - lo) / 2.0;
        for i in 0..=64 {
            let d = d_lo + (d_hi - d_lo) * i as f64 / 64.0;
            let (l, h) = band(&windows, d);
            for x in [0.0, span] {
                let ours = offset_ns + drift * x;
                worst = worst
                    .max((l + d * x - ours).abs())
                    .max((h + d * x - ours).abs());
            }
        }
        worst
    };
    Some(ClockMap {
        offset_ns,
        drift,
        guest_ref_ns,
        error_bound_ns,
        consistent,
        samples: samples.len(),
        best_rtt_ns,
        span_ns: span as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples from a known mapping: round trips of `rtts`, one every 50 ms of guest
    /// time; the guest answers at a fraction `at` of each window.
    fn synth(offset: f64, drift: f64, rtts: &[u64], at: f64) -> Vec<Sample> {
        rtts.iter()
            .enumerate()
            .map(|(i, &rtt)| {
                let guest_ns = 1_000_000_000 + i as u64 * 50_000_000;
                let host_at = truth(offset, drift, guest_ns);
                let send = host_at - at * rtt as f64;
                Sample {
                    host_send_ns: send as u64,
                    guest_ns,
                    host_recv_ns: (send + rtt as f64) as u64,
                }
            })
            .collect()
    }

    fn truth(offset: f64, drift: f64, guest_ns: u64) -> f64 {
        guest_ns as f64 + offset + drift * (guest_ns - 1_000_000_000) as f64
    }

    fn rtts(n: usize) -> Vec<u64> {
        // A spread like the vsock link's: mostly 0.5–3 ms, a few far longer.
        (0..n)
            .map(|i| {
                [
                    600_000, 2_500_000, 900_000, 12_000_000, 1_400_000, 700_000, 3_300_000,
                ][i % 7]
            })
            .collect()
    }

    #[test]
    fn the_truth_is_within_the_bound_wherever_the_guest_answers() {
        for at in [0.0, 0.2, 0.5, 0.9, 1.0] {
            for drift in [0.0, 2e-5, -3e-4] {
                let s = synth(3.0e9, drift, &rtts(40), at);
                let m = fit(&s, &Holds::default()).unwrap();
                assert!(m.consistent);
                for x in &s {
                    let err = (m.to_running(x.guest_ns) - truth(3.0e9, drift, x.guest_ns)).abs();
                    assert!(
                        err <= m.error_bound_ns + 1.0,
                        "at {at}, drift {drift}: error {err} > bound {}",
                        m.error_bound_ns
                    );
                }
                assert!(
                    m.error_bound_ns < 600_000.0,
                    "at {at}, drift {drift}: bound {}",
                    m.error_bound_ns
                );
            }
        }
    }

    #[test]
    fn one_sided_delay_does_not_bias_the_fit() {
        // The guest always answers at the end of its window (the probe waited, the
        // echo did not): a midpoint would be off by half of each round trip.
        let s = synth(-5.0e8, 0.0, &rtts(30), 1.0);
        let m = fit(&s, &Holds::default()).unwrap();
        assert!(
            (m.to_running(s[3].guest_ns) - truth(-5.0e8, 0.0, s[3].guest_ns)).abs() < 310_000.0
        );
        assert!(m.drift.abs() < 1e-5, "drift {}", m.drift);
    }

    #[test]
    fn one_sample_gives_no_drift_and_none_gives_none() {
        let s = synth(1.0e6, 0.0, &[1_000], 0.5);
        let m = fit(&s, &Holds::default()).unwrap();
        assert_eq!((m.samples, m.drift, m.error_bound_ns), (1, 0.0, 500.0));
        assert!(fit(&[], &Holds::default()).is_none());
    }

    #[test]
    fn contradicting_samples_are_reported() {
        let mut s = synth(1.0e6, 0.0, &rtts(10), 0.5);
        // A clock step of 20 ms in the middle.
        for x in &mut s[5..] {
            x.host_send_ns += 20_000_000;
            x.host_recv_ns += 20_000_000;
        }
        let m = fit(&s, &Holds::default()).unwrap();
        assert!(!m.consistent);
    }

    /// A guest whose clock stands still during holds: host = guest + offset + held so far.
    #[test]
    fn holds_are_taken_out_and_put_back() {
        let offset = 2.0e9;
        let holds = Holds::new(vec![
            (3_050_000_000, 3_250_000_000),
            (3_500_000_000, 3_900_000_000),
        ]);
        let host_of = |g: f64| holds.host(g + offset);
        // A sample every 40 ms of guest time, 20 µs round trips, answered mid-window.
        let samples: Vec<Sample> = (0..60)
            .map(|i| {
                let g = 1.0e9 + i as f64 * 40.0e6;
                let h = host_of(g);
                Sample {
                    host_send_ns: (h - 10_000.0) as u64,
                    guest_ns: g as u64,
                    host_recv_ns: (h + 10_000.0) as u64,
                }
            })
            .filter(|s| {
                holds.running(s.host_send_ns as f64) + 20_000.0
                    >= holds.running(s.host_recv_ns as f64)
            })
            .collect();
        let m = fit(&samples, &holds).unwrap();
        assert!(m.consistent);
        assert!(m.error_bound_ns < 20_000.0, "bound {}", m.error_bound_ns);
        let t = Timeline {
            map: m,
            holds: holds.clone(),
        };
        for g in [1.2e9, 1.06e9, 1.3e9, 2.0e9, 3.0e9] {
            let err = (t.to_host(g as u64) - host_of(g)).abs();
            assert!(err <= m.error_bound_ns + 1.0, "guest {g}: error {err}");
            assert!((t.to_guest(t.to_host(g as u64)) - g).abs() < 1.0);
        }
        // Ignoring the holds, no line fits.
        let naive = fit(&samples, &Holds::default()).unwrap();
        assert!(!naive.consistent);
        assert!(
            naive.error_bound_ns > 100.0e6,
            "naive bound {}",
            naive.error_bound_ns
        );
    }

    /// Holds the guest lived 60 µs shorter each than the host saw (a step ran it):
    /// inconsistent as seen, consistent once each may be up to 100 µs shorter.
    #[test]
    fn hold_slack_absorbs_holds_seen_long() {
        let lived: Vec<(u64, u64)> = (0..10)
            .map(|i| {
                (
                    3_000_000_000 + i * 20_000_000,
                    3_005_000_000 + i * 20_000_000,
                )
            })
            .collect();
        let seen: Vec<(u64, u64)> = lived
            .iter()
            .map(|&(a, z)| (a - 30_000, z + 30_000))
            .collect();
        let truth = Holds::new(lived);
        let samples: Vec<Sample> = (0..80)
            .map(|i| {
                let h = truth.host(1.0e9 + i as f64 * 50.0e6 + 1.0e9);
                Sample {
                    host_send_ns: (h - 20_000.0) as u64,
                    guest_ns: (1.0e9 + i as f64 * 50.0e6) as u64,
                    host_recv_ns: (h + 20_000.0) as u64,
                }
            })
            .filter(|s| {
                truth.running(s.host_send_ns as f64) + 40_000.0
                    >= truth.running(s.host_recv_ns as f64)
            })
            .collect();
        assert!(!fit(&samples, &Holds::new(seen.clone())).unwrap().consistent);
        let m = fit(
            &samples,
            &Holds::with_slack(seen.into_iter().map(|(a, b)| (a, b, 100_000)).collect()),
        )
        .unwrap();
        assert!(m.consistent, "{m:?}");
    }
}
