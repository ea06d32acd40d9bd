//! The memory figures: the agent's and the collector's peaks under a long stream.

use super::*;

pub(in crate::bench) fn memory(
    events: u64,
    b: &Booted,
    runs: &BTreeMap<String, Ran>,
    points: &[(String, u64, u64)],
    collector_peak: Option<u64>,
    reset: bool,
    jsonl_bytes: u64,
) -> Memory {
    let status = b.session.artifact_text("agent_status").unwrap_or_default();
    let loaded = b
        .session
        .artifact_text("agent_status_loaded")
        .unwrap_or_default();
    let pts: Vec<MemoryPoint> = points
        .iter()
        .map(|(name, received, collector)| MemoryPoint {
            events: *received,
            agent_peak_kib: runs
                .get(name)
                .and_then(|r| r.tracing.as_ref())
                .map_or(0, |t| t.agent_peak_rss_kib),
            collector_peak_kib: *collector,
        })
        .collect();
    let slope = match pts.as_slice() {
        [a, .., z] if z.events > a.events => {
            let m = (z.events - a.events) as f64 / 1e6;
            Some((
                (z.agent_peak_kib as f64 - a.agent_peak_kib as f64) / m,
                (z.collector_peak_kib as f64 - a.collector_peak_kib as f64) / m,
            ))
        }
        _ => None,
    };
    Memory {
        events_planned: events,
        events_received: b.session.events_received,
        ring_full: runs
            .values()
            .map(|r| r.counters(ProbeKind::AllocFd.name()).ring_full)
            .sum(),
        points: pts,
        agent_peak_kib: status_kib(&status, "VmHWM"),
        agent_load_peak_kib: status_kib(&loaded, "VmHWM"),
        agent_rss_anon_kib: status_kib(&status, "RssAnon"),
        agent_rss_file_kib: status_kib(&status, "RssFile"),
        collector_peak_kib: collector_peak,
        collector_peak_reset: reset,
        kib_per_million_events: slope,
        events_jsonl_bytes: jsonl_bytes,
        wall_s: b.wall_s,
    }
}
