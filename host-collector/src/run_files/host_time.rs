//! The host-time column of `events.jsonl`. The session writes each event as it
//! arrives, when only its guest time is known; the clock fit that maps guest time to
//! the host's is made at the end of the run, from every round trip. This pass then
//! adds each event's host wall-clock time, rewriting the file whole (a sibling,
//! renamed over it), so a crash during the pass leaves the file as it was.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

use super::events::EventLine;
use crate::timeline::clock::Timeline;

/// Guest CLOCK_MONOTONIC onto the host's wall clock: the run's [`Timeline`] (host ns
/// since QEMU's launch) plus the wall-clock time of the launch.
#[derive(Clone, Debug)]
pub struct HostClock<'a> {
    /// The clock fit, with the gdbstub's holds.
    pub timeline: &'a Timeline,
    /// The host's CLOCK_REALTIME at QEMU's launch, ns since the Unix epoch.
    pub launch_unix_ns: i64,
}

impl HostClock<'_> {
    /// The host wall-clock time of guest time `guest_ns`, ns since the Unix epoch.
    pub fn unix_ns(&self, guest_ns: u64) -> i64 {
        self.launch_unix_ns + self.timeline.to_host(guest_ns).round() as i64
    }
}

/// The host's wall clock now, ns since the Unix epoch (0 if it is set before 1970).
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Adds `host_unix_ns` to every event of the `events.jsonl` at `path`; a line that is
/// not an event is kept as it was. Returns the events given a host time.
pub fn add_host_time(path: &Path, clock: &HostClock) -> io::Result<u64> {
    let input = BufReader::new(File::open(path)?);
    crate::output::atomic::write_with(path, |out| {
        let mut n = 0;
        for line in input.lines() {
            let line = line?;
            match serde_json::from_str::<EventLine>(&line) {
                Ok(mut e) => {
                    e.host_unix_ns = Some(clock.unix_ns(e.ts_ns));
                    serde_json::to_writer(&mut *out, &e)?;
                    n += 1;
                }
                Err(_) => out.write_all(line.as_bytes())?,
            }
            out.write_all(b"\n")?;
        }
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::clock::ClockMap;
    use crate::timeline::holds::Holds;

    fn timeline(offset_ns: f64) -> Timeline {
        Timeline {
            map: ClockMap {
                offset_ns,
                drift: 0.0,
                guest_ref_ns: 0,
                error_bound_ns: 0.0,
                consistent: true,
                samples: 2,
                best_rtt_ns: 0,
                span_ns: 0,
            },
            holds: Holds::default(),
        }
    }

    #[test]
    fn every_event_gets_its_host_time_and_other_lines_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let event = |ts: u64| {
            format!(
                r#"{{"run_id":"r","ts_ns":{ts},"probe":"alloc_fd","cpu":0,"pid":1,"tid":1,"comm":"c","workload":null,"arg":"0x0","stack_id":-1}}"#
            )
        };
        std::fs::write(
            &path,
            format!("{}\nnot an event\n{}\n", event(1_000), event(3_000)),
        )
        .unwrap();
        let t = timeline(500.0);
        let clock = HostClock {
            timeline: &t,
            launch_unix_ns: 1_796_391_066_000_000_000,
        };
        assert_eq!(add_host_time(&path, &clock).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "not an event");
        let first: EventLine = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(first.host_unix_ns, Some(1_796_391_066_000_001_500));
        let last: EventLine = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last.host_unix_ns, Some(1_796_391_066_000_003_500));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }
}
