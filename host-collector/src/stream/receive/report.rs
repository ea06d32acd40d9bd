//! What receiving a stream reports: how it ended, the link's outages and
//! acknowledgements, and the clock-sync exchange's round trips.

use guestscope_common::wire::LinkLoss;
use serde::{Deserialize, Serialize};

use crate::run_end::Outcome;
use crate::stream::clock_probe::ProbeCounts;
use crate::timeline::clock::Sample;
/// One time the link was lost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outage {
    /// Host seconds (since launch) when the collector saw the connection end.
    pub lost_host_s: f64,
    /// Host seconds when the agent's next connection was accepted (None: never).
    pub restored_host_s: Option<f64>,
    /// Time without the link on the host clock, s.
    pub gap_s: Option<f64>,
    /// How the connection ended, as the collector saw it.
    pub why: String,
    /// The first sequence number the new connection carried (resent records included).
    pub resumed_from: Option<u64>,
    /// Records the collector had applied when the link was lost.
    pub records_before: u64,
    /// The agent's view: when it found the link broken and restored it (guest clock),
    /// how many attempts it took, why.
    pub agent: Option<LinkLoss>,
    /// When a new agent took over (the guest restarted a dead agent): its pid. The
    /// events before and after are kept; what happened in between was not traced.
    pub restarted_agent: Option<u32>,
}

/// Everything about the connections of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkReport {
    /// Connections accepted from the agent.
    pub connections: u32,
    /// Connections refused (not this run's agent), with why.
    pub refused: Vec<String>,
    /// Times the link was lost (and restored, or not).
    pub outages: Vec<Outage>,
    /// Acknowledgements sent.
    pub acks_sent: u64,
    /// Acknowledgements that could not be written.
    pub ack_errors: u64,
    /// Times the agent was told that a hold of the VM had ended (its quiet workload may
    /// stream again).
    #[serde(default)]
    pub releases_sent: u64,
    /// Times the VM was stopped and started again because the link stayed silent
    /// after a gdbstub hold (its vsock device restarted), and of them those after
    /// which records came again.
    #[serde(default)]
    pub vm_restarts: u32,
    /// See `vm_restarts`.
    #[serde(default)]
    pub vm_restarts_revived: u32,
}

impl LinkReport {
    /// Total time without the link, s (outages never restored not included).
    pub fn total_gap_s(&self) -> f64 {
        self.outages.iter().filter_map(|o| o.gap_s).sum()
    }
}

/// What [`receive`](super::receive) saw of a stream.
pub struct Received {
    /// How the stream ended.
    pub outcome: Outcome,
    /// Bytes read.
    pub bytes: u64,
    /// The decode error that ended it, if any.
    pub decode_error: Option<String>,
    /// Seconds since `t0` when the agent's hello arrived.
    pub hello_host_s: Option<f64>,
    /// The connections.
    pub link: LinkReport,
    /// The clock-sync exchange's round trips.
    pub clock: ClockExchange,
}

/// What the clock-sync exchange of a run measured.
#[derive(Clone, Debug, Default)]
pub struct ClockExchange {
    /// Every answered round trip, in order (host times since QEMU's launch).
    pub samples: Vec<Sample>,
    /// Probes sent, answered, given up.
    pub counts: ProbeCounts,
}
