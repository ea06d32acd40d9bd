//! Boot to agent-ready and the warm lab's wall time.

use super::*;

/// Boot to agent-ready.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BootTimes {
    /// Host seconds from QEMU's launch to the agent's hello, every boot of this run.
    pub agent_ready_s: Option<Spread>,
    /// Host seconds to the kernel's first console line.
    pub kernel_banner_s: Option<Spread>,
    /// Each boot: (what, seconds to hello).
    pub samples: Vec<(String, f64)>,
}

/// The warm `cargo xtask lab`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabTiming {
    /// Wall time of the whole command, s.
    pub wall_s: f64,
    /// Of which `guestscope lab` itself (its summary's `run.wall_s`).
    pub guestscope_lab_s: Option<f64>,
    /// Whether the lab run completed.
    pub complete: Option<bool>,
}
