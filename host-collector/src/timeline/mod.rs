//! One time line for guest and host.
//!
//! - [`clock`]: maps guest CLOCK_MONOTONIC onto the host clock from round-trip
//!   samples (offset, drift and an error bound).

pub mod clock;
