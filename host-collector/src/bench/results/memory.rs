//! The agent's and the collector's memory under a long event stream.

use super::*;

/// One reading of the memory run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Events received so far.
    pub events: u64,
    /// Agent peak RSS so far, KiB.
    pub agent_peak_kib: u64,
    /// Collector peak RSS so far (since the memory run began), KiB.
    pub collector_peak_kib: u64,
}

/// Memory under a long event stream.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    /// Events asked for.
    pub events_planned: u64,
    /// Events received.
    pub events_received: u64,
    /// Events lost (ring full).
    pub ring_full: u64,
    /// Readings after each part.
    pub points: Vec<MemoryPoint>,
    /// Agent `VmHWM` at the end, KiB: the peak since its probes were loaded (the agent
    /// resets it then).
    pub agent_peak_kib: Option<u64>,
    /// Agent `VmHWM` once its probes were loaded, KiB: the peak of loading them.
    #[serde(default)]
    pub agent_load_peak_kib: Option<u64>,
    /// Agent `RssAnon` at the end (its own heap and stacks), KiB.
    pub agent_rss_anon_kib: Option<u64>,
    /// Agent `RssFile` at the end (its binary and the mapped ring buffer), KiB.
    pub agent_rss_file_kib: Option<u64>,
    /// Collector peak RSS over the memory run, KiB.
    pub collector_peak_kib: Option<u64>,
    /// Whether the collector's peak was reset before the run (`clear_refs`); if not,
    /// its figure is the whole process's peak.
    pub collector_peak_reset: bool,
    /// Growth between the readings, KiB per million events (agent, collector).
    pub kib_per_million_events: Option<(f64, f64)>,
    /// Size of the `events.jsonl` written (then deleted), bytes.
    pub events_jsonl_bytes: u64,
    /// Seconds the run took (boot included).
    pub wall_s: f64,
}

impl Memory {
    /// Why the run's memory figures are not "after `events_planned` events": the
    /// events that neither arrived nor were counted lost to a full ring (a probe that
    /// did not attach, a workload that failed). `None` when every event is accounted
    /// for.
    pub fn shortfall(&self) -> Option<String> {
        let accounted = self.events_received + self.ring_full;
        (accounted < self.events_planned).then(|| {
            format!(
                "memory: {} of {} planned events arrived ({} lost to a full ring): its peaks are not after {} events",
                self.events_received, self.events_planned, self.ring_full, self.events_planned
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_run_short_of_its_events_is_a_problem() {
        let run = |received, ring_full| Memory {
            events_planned: 1000,
            events_received: received,
            ring_full,
            ..Memory::default()
        };
        assert_eq!(
            run(1002, 0).shortfall(),
            None,
            "the workload's own start adds a few"
        );
        assert_eq!(
            run(900, 100).shortfall(),
            None,
            "counted losses are accounted for"
        );
        assert_eq!(
            run(0, 0).shortfall().as_deref(),
            Some(
                "memory: 0 of 1000 planned events arrived (0 lost to a full ring): its peaks are not after 1000 events"
            )
        );
    }
}
