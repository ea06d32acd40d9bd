//! The lab's experiments, each answered from this run's measurements.
//!
//! - [`classify`]: stack → class rule tables (data, not code).
//! - [`spinlock`]: which subsystems take `_raw_spin_lock` (seed §5).
//! - [`faults`]: page faults of the malloc workload and their path (seed §5.3).

pub mod classify;
pub mod faults;
pub mod spinlock;
