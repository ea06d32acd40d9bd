//! What `guestscope bench` measured, as written to `results.json`: every figure from
//! this run, with the runs it came from.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::stats::Spread;
use crate::experiments::syscall_cr3::FunctionTrace;

mod capacity;
mod memory;
mod overhead;
mod peers;
mod stack_cache;
mod times;

pub use capacity::*;
pub use memory::*;
pub use overhead::*;
pub use peers::*;
pub use stack_cache::*;
pub use times::*;

/// Everything one bench run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchResults {
    /// guestscope version.
    pub guestscope_version: String,
    /// Day of the run (UTC, `YYYY-MM-DD`).
    pub date: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Wall time of `guestscope bench` (the warm lab, run before it, excluded).
    pub wall_s: f64,
    /// Host and guest.
    pub machine: MachineInfo,
    /// Probe overhead on the workload loops (fopen, cpuinfo).
    pub overhead: Vec<LoopOverhead>,
    /// guestscope, ftrace and bpftrace on the same events, in a root file system with
    /// bpftrace (the `peers` part, with `--peer-rootfs`).
    pub peers: Option<PeersBoot>,
    /// The peers boot again, the guest's clock counting its instructions (the
    /// `instructions` part; TCG only): its loop times are millions of instructions.
    pub peers_instructions: Option<PeersBoot>,
    /// guestscope against the lab's gdbstub method.
    pub gdb: Option<GdbComparison>,
    /// Stream capacity against raw vsock.
    pub capacity: Option<Capacity>,
    /// Boot to agent-ready (the default bzImage: decompressed by its own stub, KASLR on).
    pub boot: BootTimes,
    /// Boot to agent-ready with the uncompressed kernel (QEMU's PVH entry; no KASLR).
    pub boot_uncompressed: Option<BootTimes>,
    /// The warm `cargo xtask lab`, if it was timed.
    pub lab: Option<LabTiming>,
    /// Agent and collector memory under a long event stream.
    pub memory: Option<Memory>,
    /// The stack cache checked against a walk of every event.
    pub stack_cache: Option<StackCacheCheck>,
    /// Each target of the benchmark issue: met or not, by how much.
    pub targets: Vec<TargetCheck>,
    /// Runs that failed and checks that did not add up.
    pub problems: Vec<String>,
}

/// Where the figures were measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MachineInfo {
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Why that accelerator.
    pub accel_reason: String,
    /// Host CPUs.
    pub host_cpus: usize,
    /// Host CPU model (`/proc/cpuinfo`).
    pub host_cpu_model: String,
    /// QEMU's version line.
    pub qemu: String,
    /// The guest's firmware: `qboot`, or QEMU's default (SeaBIOS).
    #[serde(default)]
    pub firmware: String,
    /// Guest kernel release.
    pub guest_kernel: String,
    /// Guest vCPUs.
    pub guest_vcpus: u32,
    /// Guest memory, MiB.
    pub guest_memory_mb: u32,
    /// Host `/proc/loadavg` when the bench started.
    pub load_before: String,
    /// Host `/proc/loadavg` when it ended.
    pub load_after: String,
}

/// A target of the benchmark issue against what this run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TargetCheck {
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// The measured figure.
    pub measured: String,
    /// Met, not met, or not measured (`None`).
    pub met: Option<bool>,
    /// By how much, and what bounds it.
    pub note: String,
}
