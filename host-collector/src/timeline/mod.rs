//! One time line for guest and host.
//!
//! - [`clock`]: maps guest CLOCK_MONOTONIC onto the host clock from round-trip
//!   samples (offset, drift and an error bound).
//! - [`holds`]: the times the gdbstub held the VM, when the guest's clock stood still.

pub mod clock;
pub mod holds;
