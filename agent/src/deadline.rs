//! A workload's time limit: when to ask it to stop (SIGTERM to its process group) and,
//! if it does not, when to make it (SIGKILL), as `timeout --kill-after` does.

use std::time::{Duration, Instant};

/// What supervision should do to the workload now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing: within its time (or already signalled and waiting).
    Wait,
    /// Its time is up: send SIGTERM.
    Terminate,
    /// The grace after SIGTERM is over: send SIGKILL.
    Kill,
}

/// The limit of one workload's run.
#[derive(Debug)]
pub struct Deadline {
    term_at: Instant,
    grace: Duration,
    /// Set when SIGTERM is asked for: the grace counts from the signal, not the limit.
    kill_at: Option<Instant>,
    terminated: bool,
    killed: bool,
}

impl Deadline {
    /// A limit of `limit` from `start`, then `grace` until SIGKILL.
    pub fn new(start: Instant, limit: Duration, grace: Duration) -> Self {
        Deadline {
            term_at: start + limit,
            grace,
            kill_at: None,
            terminated: false,
            killed: false,
        }
    }

    /// What to do at `now`; each signal is asked for once.
    pub fn check(&mut self, now: Instant) -> Action {
        if !self.terminated && now >= self.term_at {
            self.terminated = true;
            self.kill_at = Some(now + self.grace);
            return Action::Terminate;
        }
        if !self.killed && self.kill_at.is_some_and(|at| now >= at) {
            self.killed = true;
            return Action::Kill;
        }
        Action::Wait
    }

    /// Whether the limit was reached (the workload was or is being ended).
    pub fn expired(&self) -> bool {
        self.terminated
    }

    /// How long until the next signal is due (zero if due; `None` once both were sent).
    pub fn until_next(&self, now: Instant) -> Option<Duration> {
        let next = match self.kill_at {
            None => self.term_at,
            Some(at) if !self.killed => at,
            Some(_) => return None,
        };
        Some(next.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminates_at_the_limit_then_kills_after_the_grace() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadline::new(t0, s(10), s(2));
        assert_eq!(d.check(t0 + s(9)), Action::Wait);
        assert!(!d.expired());
        assert_eq!(d.until_next(t0 + s(9)), Some(s(1)));
        assert_eq!(d.check(t0 + s(10)), Action::Terminate);
        assert!(d.expired());
        assert_eq!(d.check(t0 + s(11)), Action::Wait, "SIGTERM twice");
        assert_eq!(d.until_next(t0 + s(11)), Some(s(1)));
        assert_eq!(d.check(t0 + s(12)), Action::Kill);
        assert_eq!(d.check(t0 + s(13)), Action::Wait, "SIGKILL twice");
        assert_eq!(d.until_next(t0 + s(13)), None);
    }

    #[test]
    fn the_grace_counts_from_the_signal_not_the_limit() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Deadline::new(t0, s(1), s(1));
        // Looked at late (a long drain): SIGTERM now, SIGKILL a full grace later.
        assert_eq!(d.check(t0 + s(5)), Action::Terminate);
        assert_eq!(d.check(t0 + s(5)), Action::Wait);
        assert_eq!(d.check(t0 + s(6)), Action::Kill);
    }
}
