//! The host end of the guest's event stream.
//!
//! - [`listener`]: the hybrid-vsock Unix socket the guest's connection arrives on.
//! - [`receive`]: connections, acknowledgements and reconnections of the agent's stream.
//! - [`clock_probe`]: the host's side of the clock-sync exchange on that connection.

pub mod clock_probe;
pub mod listener;
pub mod receive;
