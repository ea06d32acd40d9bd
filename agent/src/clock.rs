//! The guest's CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns` reads.

use nix::time::{ClockId, clock_gettime};

/// CLOCK_MONOTONIC in nanoseconds (0 if the clock cannot be read, which Linux never does).
pub fn monotonic_ns() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        Err(_) => 0,
    }
}
