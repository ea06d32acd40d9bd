//! The watchdog's view of the agent's stream: when a record last arrived, and how long
//! the stream may stay silent now. The agent sends a heartbeat every second, except
//! while a workload runs with a quiet link (the host holds the VM at gdbstub stops
//! meanwhile, and the agent sends nothing until the workload has exited): then the
//! silence may last as long as the workload may run.

use std::cell::Cell;
use std::time::{Duration, Instant};

use guestscope_common::plan::RunPlan;

use crate::stream::receive::LabSession;

/// When the stream was last heard and how long it may be silent.
pub(super) struct Silence {
    /// The limit when no quiet workload runs (`None`: no watchdog).
    watchdog: Option<Duration>,
    /// When the last record arrived (`None` before the first).
    last: Cell<Option<Instant>>,
    /// The limit now.
    limit: Cell<Option<Duration>>,
}

impl Silence {
    /// Nothing heard yet; `watchdog` is the ordinary limit.
    pub(super) fn new(watchdog: Option<Duration>) -> Silence {
        Silence {
            watchdog,
            last: Cell::new(None),
            limit: Cell::new(watchdog),
        }
    }

    /// Something arrived now; `quiet` says whether a workload with a quiet link is
    /// running, and its time limit if it has one.
    pub(super) fn heard(&self, quiet: Option<Option<Duration>>) {
        self.last.set(Some(Instant::now()));
        self.limit.set(limit(self.watchdog, quiet));
    }

    /// When the last record arrived (`None` before the first).
    pub(super) fn last_heard(&self) -> Option<Instant> {
        self.last.get()
    }

    /// How long the stream has been silent, when that is past its limit.
    pub(super) fn overdue(&self) -> Option<Duration> {
        let silent = self.last.get()?.elapsed();
        (silent >= self.limit.get()?).then_some(silent)
    }
}

/// The silence allowed: `watchdog`, or, while a quiet workload runs, that plus the
/// workload's time limit (`None`, no watchdog, when the workload has none: the run's
/// own time limit still applies).
fn limit(watchdog: Option<Duration>, quiet: Option<Option<Duration>>) -> Option<Duration> {
    let watchdog = watchdog?;
    match quiet {
        None => Some(watchdog),
        Some(workload_limit) => workload_limit.map(|t| watchdog + t),
    }
}

/// The running workload's time limit, when it runs with a quiet link (`Some(None)`:
/// quiet, without a limit); `None` when no quiet workload runs.
pub(super) fn quiet_running(plan: &RunPlan, session: &LabSession) -> Option<Option<Duration>> {
    let running = session.workloads.last().filter(|w| w.exited.is_none())?;
    let spec = plan
        .workloads
        .iter()
        .find(|s| s.name == running.started.name)
        .filter(|s| s.quiet_link)?;
    Some(spec.timeout_ms.map(Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_quiet_workload_may_be_silent_for_its_own_time_limit_more() {
        assert_eq!(limit(Some(S(30)), None), Some(S(30)));
        assert_eq!(limit(Some(S(30)), Some(Some(S(300)))), Some(S(330)));
        assert_eq!(limit(Some(S(30)), Some(None)), None, "no workload limit");
        assert_eq!(limit(None, None), None, "no watchdog");
        assert_eq!(limit(None, Some(Some(S(5)))), None);
    }

    #[test]
    fn the_limit_is_the_one_set_by_the_last_record() {
        let s = Silence::new(Some(Duration::ZERO));
        assert_eq!(s.overdue(), None, "nothing heard yet");
        s.heard(Some(Some(S(60))));
        assert_eq!(s.overdue(), None, "a quiet workload runs");
        s.heard(None);
        assert!(s.overdue().is_some(), "silent past a zero watchdog");
    }
}
