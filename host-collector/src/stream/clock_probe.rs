//! The host's side of the clock-sync exchange: clock probes sent on the agent's
//! connection, one at a time, and the round trips they make.
//!
//! A probe is stamped on the host clock when it is written; the agent answers with its
//! CLOCK_MONOTONIC as soon as it reads the probe; the answer's arrival is stamped
//! again. One probe is in flight at a time (two in flight would queue behind each
//! other and widen both windows); a probe unanswered after [`ECHO_TIMEOUT`] is given up
//! and counted. The samples go to [`crate::timeline::clock::fit`].

use std::time::{Duration, Instant};

use guestscope_common::wire::{ClockEcho, Reply, encode_reply};
use serde::{Deserialize, Serialize};

use crate::timeline::clock::Sample;

/// Pause between one answered probe and the next.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// A probe unanswered this long is given up (the guest may be held by the gdbstub, or
/// the link lost).
pub const ECHO_TIMEOUT: Duration = Duration::from_secs(2);

/// Counters of the exchange, for the report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCounts {
    /// Probes written.
    pub sent: u64,
    /// Echoes matched to their probe.
    pub answered: u64,
    /// Probes given up (no echo within [`ECHO_TIMEOUT`], or the connection ended).
    pub unanswered: u64,
    /// Echoes whose id matched no probe in flight (late answers to given-up probes).
    pub stray: u64,
}

/// Paces probes on one run (across the agent's connections) and collects samples.
#[derive(Debug)]
pub struct ClockProber {
    t0: Instant,
    next_id: u32,
    in_flight: Option<(u32, u64, Instant)>,
    last_answer: Option<Instant>,
    samples: Vec<Sample>,
    counts: ProbeCounts,
}

impl ClockProber {
    /// A prober whose host times are nanoseconds since `t0` (QEMU's launch).
    pub fn new(t0: Instant) -> ClockProber {
        ClockProber {
            t0,
            next_id: 1,
            in_flight: None,
            last_answer: None,
            samples: Vec::new(),
            counts: ProbeCounts::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// The next probe's frame, if one is due now; the probe counts as sent from this
    /// call (the caller writes the frame at once, and calls [`ClockProber::write_failed`]
    /// if it could not).
    pub fn due(&mut self) -> Option<Vec<u8>> {
        if let Some((_, _, since)) = self.in_flight {
            if since.elapsed() < ECHO_TIMEOUT {
                return None;
            }
            self.in_flight = None;
            self.counts.unanswered += 1;
        }
        if self.last_answer.is_some_and(|t| t.elapsed() < PROBE_EVERY) {
            return None;
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let frame = encode_reply(&Reply::ClockProbe { id }).expect("a clock probe encodes");
        self.in_flight = Some((id, self.now_ns(), Instant::now()));
        self.counts.sent += 1;
        Some(frame)
    }

    /// The probe from the last [`ClockProber::due`] was not written.
    pub fn write_failed(&mut self) {
        if self.in_flight.take().is_some() {
            self.counts.sent -= 1;
        }
    }

    /// The connection ended: a probe in flight will not be answered.
    pub fn connection_ended(&mut self) {
        if self.in_flight.take().is_some() {
            self.counts.unanswered += 1;
        }
    }

    /// An echo arrived (call at once when it is read).
    pub fn echo(&mut self, echo: &ClockEcho) {
        let host_recv_ns = self.now_ns();
        match self.in_flight {
            Some((id, host_send_ns, _)) if id == echo.id => {
                self.in_flight = None;
                self.last_answer = Some(Instant::now());
                self.counts.answered += 1;
                self.samples.push(Sample {
                    host_send_ns,
                    guest_ns: echo.guest_ns,
                    host_recv_ns,
                });
            }
            _ => self.counts.stray += 1,
        }
    }

    /// The round trips so far.
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The counters so far.
    pub fn counts(&self) -> &ProbeCounts {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use guestscope_common::wire::FrameReader;

    use super::*;

    fn id_of(frame: &[u8]) -> u32 {
        match FrameReader::new(frame).next_reply().unwrap() {
            Reply::ClockProbe { id } => id,
            other => panic!("not a probe: {other:?}"),
        }
    }

    #[test]
    fn one_probe_in_flight_and_a_matching_echo_makes_a_sample() {
        let mut p = ClockProber::new(Instant::now());
        let id = id_of(&p.due().expect("the first probe is due at once"));
        assert!(p.due().is_none(), "a second probe while one is in flight");
        p.echo(&ClockEcho {
            id: id + 7,
            guest_ns: 5,
        });
        assert_eq!(p.counts().stray, 1);
        p.echo(&ClockEcho { id, guest_ns: 123 });
        let s = p.samples()[0];
        assert_eq!(s.guest_ns, 123);
        assert!(s.host_send_ns <= s.host_recv_ns);
        assert!(p.due().is_none(), "the next probe waits {PROBE_EVERY:?}");
        std::thread::sleep(PROBE_EVERY);
        assert_eq!(id_of(&p.due().unwrap()), id + 1);
        assert_eq!(
            p.counts(),
            &ProbeCounts {
                sent: 2,
                answered: 1,
                unanswered: 0,
                stray: 1
            }
        );
    }

    #[test]
    fn lost_probes_are_counted_and_unwritten_ones_are_not_sent() {
        let mut p = ClockProber::new(Instant::now());
        p.due().unwrap();
        p.write_failed();
        assert_eq!(p.counts().sent, 0);
        p.due().unwrap();
        p.connection_ended();
        assert_eq!(p.counts().unanswered, 1);
        assert!(
            p.due().is_some(),
            "after a lost probe the next is due at once"
        );
    }
}
