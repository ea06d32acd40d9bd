//! The run plan: what the host collector asks the agent to do (host → guest).
//!
//! The collector writes it as JSON into the guest at [`PLAN_PATH`]; the agent
//! reads it at start.

use serde::{Deserialize, Serialize};

/// Where the plan is placed in the guest.
pub const PLAN_PATH: &str = "/etc/guestscope/plan.json";
/// Where guestscope's own workloads live in the guest.
pub const BUILTIN_WORKLOAD_DIR: &str = "/usr/lib/guestscope/workloads";
/// Where user-supplied `--workload` binaries are placed in the guest.
pub const USER_WORKLOAD_DIR: &str = "/usr/lib/guestscope/user";
/// The vsock CID of the host, as seen from the guest.
pub const HOST_CID: u32 = 2;

/// Everything the agent needs for one run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// vsock port on the host (CID [`HOST_CID`]) the agent connects to.
    pub vsock_port: u32,
    /// Probes to attach, by [`crate::ProbeKind::name`]; empty means all.
    pub probes: Vec<String>,
    /// Workloads to run one after another, each traced with its children.
    pub workloads: Vec<WorkloadSpec>,
    /// Milliseconds to keep tracing the idle agent-less guest before the first
    /// workload (0 = none); not used by the default lab.
    pub settle_ms: u64,
    /// Size of the `EVENTS` ring buffer in bytes, set when the probes are loaded (a power
    /// of two, at least one page); `None` keeps [`crate::maps::EVENTS_BYTES`]. A small
    /// ring makes overflows (counted as `ring_full`) easy to provoke.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_bytes: Option<u32>,
    /// Bound of the agent's spool of records the collector has not acknowledged, bytes
    /// (what survives a dropped link); `None`: the agent's default (64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_bytes: Option<u64>,
    /// The run's secret: the agent presents it on every connection, and the collector
    /// refuses connections without it. The plan file is readable by root only in the
    /// guest. `None`: the collector accepts any agent (a plan written by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// A fresh secret for a run: 32 random bytes from the operating system, in hex.
pub fn new_secret() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `given` equals `expected`, in time that does not depend on where they differ.
pub fn secret_matches(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_hex_and_compared_whole() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert!(secret_matches(&a, &a.clone()));
        assert!(!secret_matches(&a, &b));
        assert!(!secret_matches("", &a));
        assert!(!secret_matches(&a[..63], &a));
    }
}

/// Smallest `EVENTS` ring the agent accepts ([`RunPlan::events_bytes`]): one page.
pub const MIN_EVENTS_BYTES: u32 = 4096;

/// Whether `bytes` is a usable `EVENTS` ring size: a power of two of at least
/// [`MIN_EVENTS_BYTES`] (the kernel wants a power-of-two multiple of the page size).
pub fn valid_events_bytes(bytes: u32) -> bool {
    bytes >= MIN_EVENTS_BYTES && bytes.is_power_of_two()
}

/// One program to run and trace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// Name shown in the report (unique within a plan).
    pub name: String,
    /// Absolute path of the executable inside the guest.
    pub path: String,
    /// Arguments (not including argv\[0\]).
    pub args: Vec<String>,
    /// Whether this is a guestscope workload or one the user supplied.
    pub origin: WorkloadOrigin,
}

/// Where a workload came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkloadOrigin {
    /// One of guestscope's own workloads.
    Builtin,
    /// A static binary the user gave with `--workload`.
    User,
}
