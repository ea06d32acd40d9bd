//! `run.json`: who and what a run was, for the queries that span runs. Each run's
//! `events.jsonl` and `stacks.jsonl` carry its `run_id`; this file maps the id to
//! the machine, the kernel and the clock fit, so one join answers "spin_lock hits per
//! class per kernel release" across a fleet's runs.

use serde::{Deserialize, Serialize};

use crate::run_files::host_time::HostClock;

/// The run header, one JSON object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    /// The layout of the run's files ([`super::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The id on every line of `events.jsonl` and `stacks.jsonl`.
    pub run_id: String,
    /// guestscope's version.
    pub guestscope_version: String,
    /// When the run started, s since the Unix epoch (host clock).
    pub started_unix_s: u64,
    /// The host that ran the VM (its node name).
    pub host_name: String,
    /// How the VM ran: `kvm` or `tcg`.
    pub accel: String,
    /// The guest's virtual CPUs.
    pub cpus: u32,
    /// The guest's memory, MiB.
    pub memory_mb: u32,
    /// The guest kernel's release (`uname -r`), when the agent reported it.
    pub kernel_release: Option<String>,
    /// The guest kernel's stack unwinder (`orc`, `frame_pointer`, `guess`), when known.
    pub unwinder: Option<String>,
    /// Lines of `events.jsonl`.
    pub events: u64,
    /// Lines of `stacks.jsonl`.
    pub stacks: u64,
    /// How `host_unix_ns` was computed from `ts_ns`; absent when no event has it.
    pub clock: Option<ClockFit>,
}

/// The guest-to-host clock mapping behind `events.jsonl`'s `host_unix_ns`:
/// `launch_unix_ns + ts_ns + offset_ns + drift × (ts_ns − guest_ref_ns)`, plus the
/// time the gdbstub held the VM before that moment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockFit {
    /// The host's wall clock at QEMU's launch, ns since the Unix epoch.
    pub launch_unix_ns: i64,
    /// Host ns since launch minus guest ns, at `guest_ref_ns`.
    pub offset_ns: f64,
    /// Host ns gained per guest ns.
    pub drift: f64,
    /// The guest time the offset refers to, ns.
    pub guest_ref_ns: u64,
    /// The largest error of a mapped time within the sampled span, ns (NaN when the
    /// mapping came from the agent's hello alone: written as null).
    pub error_bound_ns: Option<f64>,
    /// The clock-sync round trips fitted.
    pub samples: usize,
    /// The gdbstub's holds put back (the guest's clock stood still in each).
    pub holds: usize,
}

impl ClockFit {
    /// The fit behind `clock`.
    pub fn of(clock: &HostClock) -> ClockFit {
        let map = &clock.timeline.map;
        ClockFit {
            launch_unix_ns: clock.launch_unix_ns,
            offset_ns: map.offset_ns,
            drift: map.drift,
            guest_ref_ns: map.guest_ref_ns,
            error_bound_ns: Some(map.error_bound_ns).filter(|b| b.is_finite()),
            samples: map.samples,
            holds: clock.timeline.holds.len(),
        }
    }
}

/// The host's node name (`uname -n`), or "" when it cannot be read.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|n| n.trim().to_string())
        .unwrap_or_default()
}
