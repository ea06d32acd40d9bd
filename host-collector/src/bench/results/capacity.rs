//! The stream's capacity: raw vsock, the pipeline's own ceiling and the lossless
//! rate with real probes.

use super::*;

/// One step of the stream-capacity ladder.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CapacityStep {
    /// Rate the workload was paced to, events/s (0: as fast as it could).
    pub requested_rate: u64,
    /// Probe hits (`matched`).
    pub matched: u64,
    /// Records the probe wrote (`emitted`).
    pub emitted: u64,
    /// Lost to a full ring buffer.
    pub ring_full: u64,
    /// Events the collector received for the workload.
    pub received: u64,
    /// The workload's loop time, s.
    pub seconds: f64,
    /// `matched / seconds`.
    pub rate: f64,
    /// Nothing lost.
    pub lossless: bool,
    /// `received + ring_full == matched` and `emitted == received`.
    pub accounted: bool,
    /// Stream bytes between the workload's start and exit records.
    pub wire_bytes: u64,
    /// Stream MB/s over the loop (`wire_bytes / seconds`).
    pub wire_mb_s: f64,
    /// Ring-buffer MB/s the agent read (600-byte records: `StackedEvent`).
    pub ring_mb_s: f64,
}

/// Raw guest → host vsock throughput (no framing, probes or agent).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RawThroughput {
    /// Transfers.
    pub reps: usize,
    /// Bytes per transfer.
    pub bytes: u64,
    /// MB/s as the host received them (first byte to end).
    pub host_mb_s: Option<Spread>,
    /// MB/s of the guest's write loop.
    pub guest_mb_s: Option<Spread>,
}

/// Stream capacity.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Capacity {
    /// Raw vsock, same boot.
    pub raw: RawThroughput,
    /// The ladder, in the order run.
    pub steps: Vec<CapacityStep>,
    /// Highest rate with no loss at it and at every lower step, events/s.
    pub max_lossless_rate: Option<f64>,
    /// Stream MB/s at that step.
    pub max_lossless_wire_mb_s: Option<f64>,
    /// Ring-buffer MB/s at that step.
    pub max_lossless_ring_mb_s: Option<f64>,
    /// Stream bytes per event at that step (events, stacks, framing).
    pub wire_bytes_per_event: Option<f64>,
    /// Stream MB/s at that step over raw MB/s.
    pub fraction_of_raw: Option<f64>,
    /// Every step's counts add up.
    pub accounting_ok: bool,
    /// The pipeline's own ceiling (agent → vsock → collector → disk), from events the
    /// agent makes itself: no eBPF, no workload.
    pub pipeline: Option<PipelineCeiling>,
    /// The pipeline's events per second in their 64-byte records (MB/s) over raw vsock
    /// MB/s, same boot: the median of the paired runs' fractions
    /// ([`PipelineCeiling::fraction_of_raw`]).
    pub pipeline_fraction_of_raw: Option<f64>,
}

/// The synthetic producer's runs: what the pipeline carries when nothing else bounds
/// it, each paired with the raw blast just before it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PipelineCeiling {
    /// Events the agent made in each run.
    pub events: u64,
    /// Every run, in order (run `i` after blast `i`).
    pub runs: Vec<PipelineRun>,
    /// Events per second over the runs.
    pub events_per_s: Option<Spread>,
    /// Stream MB/s over the runs.
    pub wire_mb_s: Option<Spread>,
    /// Each run's events per second in their 64-byte records (MB/s) over its blast's
    /// raw MB/s (host clock), paired: how much of what raw vsock carries the pipeline
    /// delivers as events.
    pub fraction_of_raw: Option<Spread>,
    /// Each run's stream MB/s (the events packed, stacks and framing) over its blast's,
    /// paired.
    pub stream_fraction_of_raw: Option<Spread>,
    /// The agent's CPU per event over the runs, µs.
    pub agent_cpu_us_per_event: Option<Spread>,
    /// The collector's CPU per event over the runs, µs (host).
    #[serde(default)]
    pub collector_cpu_us_per_event: Option<Spread>,
    /// The agent's page faults, waits and preemptions per thousand events over the
    /// runs.
    pub agent_activity: AgentActivity,
}

/// What the agent's kernel side did per thousand events over the runs of one
/// condition (its own resource usage, `getrusage`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct AgentActivity {
    /// Minor page faults.
    pub faults: Option<Spread>,
    /// Waits: voluntary context switches (for events, for the link).
    pub waits: Option<Spread>,
    /// Preemptions: involuntary context switches (a kernel worker woken by its
    /// sends, an interrupt's work).
    pub preemptions: Option<Spread>,
}

/// One synthetic run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PipelineRun {
    /// Events the collector took.
    pub received: u64,
    /// From the first event until the link had taken the last, s (agent clock).
    pub seconds: f64,
    /// `received / seconds`.
    pub events_per_s: f64,
    /// Stream bytes between the run's start and exit records.
    pub wire_bytes: u64,
    /// `wire_bytes / seconds`, MB/s.
    pub wire_mb_s: f64,
    /// `events_per_s` in 64-byte records over the raw MB/s of the blast before it, if
    /// that blast delivered.
    pub fraction_of_raw: Option<f64>,
    /// `wire_mb_s` over the raw MB/s of the blast before it.
    pub stream_fraction_of_raw: Option<f64>,
    /// The agent's CPU time per event over the run (its own clock), µs: how much of
    /// the time per event (`1 / events_per_s`) the agent spent.
    pub agent_cpu_us_per_event: Option<f64>,
    /// The collector's CPU time per event over the run (the host process that reads,
    /// decodes, counts and writes the events: from the run's start record to its exit
    /// record), µs.
    #[serde(default)]
    pub collector_cpu_us_per_event: Option<f64>,
    /// The agent's minor page faults over the run.
    pub agent_minor_faults: Option<u64>,
    /// The agent's voluntary context switches (waits) over the run.
    pub agent_voluntary_switches: Option<u64>,
    /// The agent's involuntary context switches (preemptions) over the run.
    pub agent_involuntary_switches: Option<u64>,
}
