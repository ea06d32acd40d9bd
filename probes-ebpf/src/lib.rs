//! Library target of the probes crate.
//!
//! It exists only so the agent can name this crate as a build-dependency (cargo then
//! rebuilds the agent when the probes change). The programs themselves are the
//! `guestscope-probes` binary, built for `bpfel-unknown-none` by the agent's build script.
#![no_std]
