//! `events.jsonl`: one probe event per line, the type the session writes and every
//! reader (the host-time pass, the snapshot cross-check, the Perfetto writer) parses,
//! so the file has one schema.

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::{Deserialize, Serialize};

/// One probe event as `events.jsonl` holds it. Borrowed when written (no copy of the
/// session's strings and stacks), owned when read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine<'a> {
    /// The run the event belongs to (`run.json` has its machine and kernel).
    pub run_id: Cow<'a, str>,
    /// Guest CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    /// The host's wall clock (CLOCK_REALTIME, ns since the Unix epoch) at the event,
    /// from the run's clock fit: one axis for the events of every VM and host. Absent
    /// when the run had no clock fit (it ended before the agent's hello).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_unix_ns: Option<i64>,
    /// The probe's name (`spin_lock`, `alloc_fd`, ...).
    pub probe: Cow<'a, str>,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's `comm`.
    pub comm: Cow<'a, str>,
    /// The workload the event belongs to, if any.
    pub workload: Option<Cow<'a, str>>,
    /// The probe's argument, in hex.
    pub arg: String,
    /// All six argument registers at a user probe that carries them (fentry, kprobe),
    /// in hex: `arg` first, then `rsi` … `r9` (fentry: 0 past the prototype's count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The lock's symbol, for spin_lock events on a named lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<Cow<'a, str>>,
    /// The faulting instruction, in hex (page faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The page fault's error code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<u32>,
    /// The kernel stack's id in `stacks.jsonl` (-1: none, other negatives: the walk's
    /// error).
    pub stack_id: i32,
}

/// Reads the events of an `events.jsonl`, one per line; a line that is not an event
/// (a cut-off last line after a crash) is skipped, an I/O error ends the reading.
pub fn read_events<R: BufRead>(reader: R) -> impl Iterator<Item = io::Result<EventLine<'static>>> {
    reader.lines().filter_map(|line| match line {
        Ok(text) => serde_json::from_str::<EventLine<'static>>(&text)
            .ok()
            .map(Ok),
        Err(e) => Some(Err(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let line = EventLine {
            run_id: "20261204T133106Z-0a1b2c3d".into(),
            ts_ns: 42,
            host_unix_ns: Some(1_796_371_254_000_000_042),
            probe: "alloc_fd".into(),
            cpu: 1,
            pid: 7,
            tid: 8,
            comm: "fopen".into(),
            workload: Some("fopen".into()),
            arg: "0x10".into(),
            args: Some(vec!["0x10".into(), "0x0".into()]),
            lock: None,
            ip: None,
            error_code: None,
            stack_id: 3,
        };
        let mut text = serde_json::to_string(&line).unwrap();
        assert!(!text.contains("lock"), "absent fields are left out: {text}");
        text.push_str("\n{\"cut off");
        let back: Vec<EventLine<'static>> = read_events(text.as_bytes())
            .collect::<io::Result<_>>()
            .unwrap();
        assert_eq!(back, [line]);
    }
}
