//! The lab's experiments, each answered from this run's measurements.
//!
//! - [`boot`]: wall-clock versus kernel boot time over several boots (seed §3.4).
//! - [`claims`]: each of the lab's conclusions, confirmed or contradicted by this run's data.
//! - [`classify`]: stack → class rule tables (data, not code).
//! - [`spinlock`]: which subsystems take `_raw_spin_lock` (seed §5).
//! - [`pci`]: the guest's PCI devices, named from pci.ids, with their dmesg lines (seed §3.5).
//! - [`random`]: /dev/random versus /dev/urandom, and when the CRNG became ready (seed §7).
//! - [`faults`]: page faults of the malloc workload and their path (seed §5.3).
//! - [`snapshots`]: gdbstub snapshots of the workload at a probed function, checked against the eBPF events.
//! - [`stops`]: the user's stops (`--snapshot-at`, `--read`), through the gdbstub.
//! - [`support`]: what the guest kernel offered, and the experiments it could not run.
//! - [`results`]: every experiment's result together ([`Experiments`]).

pub mod boot;
pub mod claims;
pub mod classify;
pub mod faults;
pub mod guest_ticks;
pub mod pci;
pub mod random;
pub mod results;
pub mod snapshots;
pub mod spinlock;
pub mod stops;
pub mod support;
pub mod syscall_cr3;

pub use self::results::{Cr3Run, Experiments};
