//! A run's id: when it started (UTC, to the second, so ids sort by time and a person
//! can read them) and 32 random bits, so two runs started in the same second on two
//! hosts of a fleet still differ: `20261204T133106Z-0a1b2c3d`.

use std::time::SystemTime;

/// A fresh run id for a run starting at `now`.
pub fn new_run_id(now: SystemTime) -> String {
    let started = jiff::Timestamp::try_from(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // 32 random bits; a host without /dev/urandom falls back to the process id,
    // still distinct between the runs of one host.
    let random = guestscope_common::plan::new_secret()
        .map(|hex| hex[..8].to_string())
        .unwrap_or_else(|_| format!("{:08x}", std::process::id()));
    format!("{}-{random}", started.strftime("%Y%m%dT%H%M%SZ"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn names_the_utc_second_and_differs_between_runs() {
        // 2026-12-04 13:31:06 UTC.
        let t = UNIX_EPOCH + Duration::from_secs(1_796_391_066);
        let (a, b) = (new_run_id(t), new_run_id(t));
        assert!(a.starts_with("20261204T133106Z-"), "{a}");
        assert_eq!(a.len(), "20261204T133106Z-".len() + 8, "{a}");
        assert!(a[17..].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b, "two runs in the same second get two ids");
    }
}
