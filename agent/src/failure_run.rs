//! A repeated failure logged once: the first failure of a run of them, and how many
//! there were when the operation works again. For work retried on a timer (the
//! staged hits are written out every 20 ms), where a warning per attempt would flood
//! the log with one message.

/// Counts the failures of one repeated operation since it last succeeded.
#[derive(Debug, Default)]
pub struct FailureRun {
    failures: u64,
}

impl FailureRun {
    /// Notes a failure; true for the first of a run (the one to log).
    pub fn failed(&mut self) -> bool {
        self.failures += 1;
        self.failures == 1
    }

    /// Notes a success; the number of failures in the run it ends, if one does.
    pub fn succeeded(&mut self) -> Option<u64> {
        match std::mem::take(&mut self.failures) {
            0 => None,
            n => Some(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_of_a_run_is_to_be_logged() {
        let mut run = FailureRun::default();
        assert_eq!(run.succeeded(), None, "no run to end yet");
        assert!(run.failed());
        assert!(!run.failed());
        assert!(!run.failed());
        assert_eq!(run.succeeded(), Some(3));
        assert_eq!(run.succeeded(), None);
        assert!(run.failed(), "a new run starts with a logged failure");
    }
}
