//! `cargo xtask bench`: not written yet; says so and exits with status 2.

use std::fmt;

use anyhow::Result;

/// Options of `cargo xtask bench` (none yet).
#[derive(Debug, clap::Args)]
pub struct Options {}

/// The error `bench` returns until it exists; `main` exits with status 2 on it.
#[derive(Debug)]
pub struct NotImplemented;

impl fmt::Display for NotImplemented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("`cargo xtask bench` is not implemented yet")
    }
}

impl std::error::Error for NotImplemented {}

/// Entry point of `cargo xtask bench`.
pub fn bench(_options: &Options) -> Result<()> {
    Err(NotImplemented.into())
}
