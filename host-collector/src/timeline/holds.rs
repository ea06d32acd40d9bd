//! Times the guest's clock stood still while the host's ran on.
//!
//! While QEMU's gdbstub holds the VM (at a breakpoint, a single step, or from the
//! moment a debugger connects), QEMU stops the guest's virtual clock and CPU tick
//! count with it: CLOCK_MONOTONIC in the guest does not advance. Each hold therefore
//! moves the guest clock back against the host's by the hold's length, and a mapping
//! of one onto the other is a straight line only in *running* time: host time with the
//! holds before it taken out.

use serde::{Deserialize, Serialize};

/// Host-clock intervals (ns since QEMU's launch) during which the guest was held.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Holds {
    /// Sorted, non-overlapping `[from, to)` intervals.
    spans: Vec<(u64, u64)>,
    /// Per span: how much shorter it may have been for the guest's clock, ns (the time
    /// single steps inside it ran the VM).
    slack: Vec<u64>,
}

impl Holds {
    /// Holds from intervals in any order; overlapping or touching ones are merged and
    /// empty ones dropped.
    pub fn new(spans: Vec<(u64, u64)>) -> Holds {
        Holds::with_slack(spans.into_iter().map(|(a, b)| (a, b, 0)).collect())
    }

    /// Holds from `(from, to, slack)`: each may have been up to `slack` ns shorter for
    /// the guest's clock.
    pub fn with_slack(mut spans: Vec<(u64, u64, u64)>) -> Holds {
        spans.retain(|(a, b, _)| b > a);
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        let mut slack: Vec<u64> = Vec::with_capacity(spans.len());
        for (a, b, s) in spans {
            match (merged.last_mut(), slack.last_mut()) {
                (Some(last), Some(ls)) if a <= last.1 => {
                    last.1 = last.1.max(b);
                    *ls += s;
                }
                _ => {
                    merged.push((a, b));
                    slack.push(s);
                }
            }
        }
        Holds {
            spans: merged,
            slack,
        }
    }

    /// Total slack, ns.
    pub fn slack_total_ns(&self) -> u64 {
        self.slack.iter().sum()
    }

    /// How much less held time than the spans say may lie before `host_ns`, ns.
    pub fn uncertainty_before(&self, host_ns: f64) -> f64 {
        let n = self.spans.partition_point(|&(a, _)| (a as f64) < host_ns);
        self.slack[..n].iter().sum::<u64>() as f64
    }

    /// The intervals, sorted.
    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// Number of holds.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there was no hold.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Total held time, ns.
    pub fn total_ns(&self) -> u64 {
        self.spans.iter().map(|(a, b)| b - a).sum()
    }

    /// Host time `host_ns` in running time: the held time before it taken out (a time
    /// inside a hold maps to the hold's start).
    pub fn running(&self, host_ns: f64) -> f64 {
        let mut held = 0.0;
        for &(a, b) in &self.spans {
            let (a, b) = (a as f64, b as f64);
            if host_ns <= a {
                break;
            }
            held += host_ns.min(b) - a;
        }
        host_ns - held
    }

    /// The host time at which running time `running_ns` was reached: after every hold
    /// that started before it (a time exactly at a hold's start maps to that start).
    pub fn host(&self, running_ns: f64) -> f64 {
        let mut host = running_ns;
        for &(a, b) in &self.spans {
            // `a` in running time is `a` minus what was held before it, i.e. `host`'s
            // shift so far.
            if (a as f64) - (host - running_ns) >= running_ns {
                break;
            }
            host += (b - a) as f64;
        }
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_sorted_and_merged() {
        let h = Holds::new(vec![(50, 60), (10, 20), (15, 30), (70, 70)]);
        assert_eq!(h.spans(), &[(10, 30), (50, 60)]);
        assert_eq!((h.len(), h.total_ns()), (2, 30));
    }

    #[test]
    fn running_time_leaves_out_holds_and_host_inverts_it() {
        let h = Holds::new(vec![(100, 150), (300, 400)]);
        assert_eq!(h.running(50.0), 50.0);
        assert_eq!(h.running(120.0), 100.0, "inside a hold: its start");
        assert_eq!(h.running(200.0), 150.0);
        assert_eq!(h.running(500.0), 350.0);
        for host in [0.0, 99.0, 151.0, 299.0, 401.0, 1000.0] {
            assert_eq!(h.host(h.running(host)), host, "host {host}");
        }
        // A guest instant at a hold's start is the stop, not the resume.
        assert_eq!(h.host(100.0), 100.0);
        assert_eq!(h.host(100.5), 150.5);
    }

    #[test]
    fn no_holds_is_the_identity() {
        let h = Holds::default();
        assert_eq!((h.running(123.0), h.host(123.0)), (123.0, 123.0));
    }
}
