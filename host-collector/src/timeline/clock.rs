//! Guest-to-host clock mapping from round trips.
//!
//! Each sample is one exchange: the host stamps a probe when it sends it
//! (`host_send_ns`), the guest stamps its CLOCK_MONOTONIC when it answers
//! (`guest_ns`), the host stamps the answer's arrival (`host_recv_ns`). The guest
//! read its clock somewhere inside that window, so `host = guest + offset` holds
//! for an offset within `[host_send - guest, host_recv - guest]`: the midpoint
//! with half the round trip as its error. Samples with the shortest round trips
//! are the most precise (NTP's and trace-cmd's "keep the tightest"); drift
//! (a rate difference between the clocks) is fitted over the kept samples by
//! least squares, and the bound reported is the worst half-round-trip of a kept
//! sample plus the largest residual of the fit.

use serde::Serialize;

/// One round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
    fn mid_offset(&self) -> f64 {
        (self.host_send_ns as f64 + self.host_recv_ns as f64) / 2.0 - self.guest_ns as f64
    }
}

/// The fitted mapping `host = guest + offset + drift × (guest − guest_ref)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ClockMap {
    /// Offset at `guest_ref_ns`, ns.
    pub offset_ns: f64,
    /// Drift: host ns gained per guest ns (0 = same rate), e.g. 1e-6 = 1 ppm.
    pub drift: f64,
    /// Guest time the offset refers to, ns.
    pub guest_ref_ns: u64,
    /// Worst-case error of a mapped time, ns.
    pub error_bound_ns: f64,
    /// Samples offered.
    pub samples: usize,
    /// Samples kept (the tightest).
    pub kept: usize,
    /// Shortest round trip, ns.
    pub best_rtt_ns: u64,
}

impl ClockMap {
    /// Maps a guest time onto the host clock.
    pub fn to_host(&self, guest_ns: u64) -> f64 {
        let dt = guest_ns as f64 - self.guest_ref_ns as f64;
        guest_ns as f64 + self.offset_ns + self.drift * dt
    }
}

/// Fits a mapping, keeping the `keep_fraction` of samples with the shortest
/// round trips (at least 1). `None` without samples.
pub fn fit(samples: &[Sample], keep_fraction: f64) -> Option<ClockMap> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted: Vec<Sample> = samples.to_vec();
    sorted.sort_by_key(Sample::rtt_ns);
    let keep = ((samples.len() as f64 * keep_fraction).ceil() as usize).clamp(1, samples.len());
    let kept = &sorted[..keep];
    let guest_ref_ns = kept.iter().map(|s| s.guest_ns).min().unwrap_or(0);
    let xs: Vec<f64> = kept.iter().map(|s| s.guest_ns as f64 - guest_ref_ns as f64).collect();
    let ys: Vec<f64> = kept.iter().map(Sample::mid_offset).collect();
    let n = kept.len() as f64;
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    // With one sample, or all at one instant, there is no rate to fit.
    let drift = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    let offset_ns = my - drift * mx;
    let residual = xs.iter().zip(&ys).map(|(x, y)| (y - (offset_ns + drift * x)).abs()).fold(0.0, f64::max);
    let half_rtt = kept.iter().map(|s| s.rtt_ns() as f64 / 2.0).fold(0.0, f64::max);
    Some(ClockMap {
        offset_ns,
        drift,
        guest_ref_ns,
        error_bound_ns: half_rtt + residual,
        samples: samples.len(),
        kept: keep,
        best_rtt_ns: sorted[0].rtt_ns(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples from a known mapping with round trips of `rtts` (the guest
    /// answers at a fraction `at` of each window).
    fn synth(offset: f64, drift: f64, rtts: &[u64], at: f64) -> Vec<Sample> {
        rtts.iter()
            .enumerate()
            .map(|(i, &rtt)| {
                let guest_ns = 1_000_000_000 + i as u64 * 10_000_000;
                let host_at = guest_ns as f64 + offset + drift * (guest_ns - 1_000_000_000) as f64;
                let send = host_at - at * rtt as f64;
                Sample { host_send_ns: send as u64, guest_ns, host_recv_ns: (send + rtt as f64) as u64 }
            })
            .collect()
    }

    #[test]
    fn recovers_offset_and_drift_within_the_bound() {
        let rtts = [40_000, 9_000, 300_000, 8_000, 12_000, 500_000, 7_000, 9_500, 10_000, 8_500];
        let s = synth(3.0e9, 2e-5, &rtts, 0.5);
        let m = fit(&s, 0.5).unwrap();
        assert_eq!(m.kept, 5);
        assert_eq!(m.best_rtt_ns, 7_000);
        assert!((m.drift - 2e-5).abs() < 1e-7, "drift {}", m.drift);
        for x in &s {
            let err = (m.to_host(x.guest_ns) - (x.guest_ns as f64 + 3.0e9 + 2e-5 * (x.guest_ns - 1_000_000_000) as f64)).abs();
            assert!(err <= m.error_bound_ns + 1.0, "error {err} > bound {}", m.error_bound_ns);
        }
        assert!(m.error_bound_ns < 10_000.0, "bound {}", m.error_bound_ns);
    }

    #[test]
    fn asymmetric_answers_stay_inside_the_bound() {
        // The guest answers right after the send: the midpoint is off by rtt/2.
        let s = synth(-5.0e8, 0.0, &[20_000; 6], 0.0);
        let m = fit(&s, 1.0).unwrap();
        let truth = s[0].guest_ns as f64 - 5.0e8;
        assert!((m.to_host(s[0].guest_ns) - truth).abs() <= m.error_bound_ns + 1.0);
    }

    #[test]
    fn one_sample_gives_no_drift_and_none_gives_none() {
        let s = synth(1.0e6, 0.0, &[1_000], 0.5);
        let m = fit(&s, 0.2).unwrap();
        assert_eq!((m.kept, m.drift), (1, 0.0));
        assert!(fit(&[], 0.5).is_none());
    }
}
