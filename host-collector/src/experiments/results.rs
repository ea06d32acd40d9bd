//! The lab's experiments' results, together: what `summary.json` keeps under
//! `experiments`, and what the claims are checked against.

use serde::{Deserialize, Serialize};

/// Results of the lab's experiments.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Experiments {
    /// Boot time over several boots (seed §3.4).
    pub boot: Option<super::boot::BootExperiment>,
    /// PCI devices (seed §3.5).
    pub pci: Vec<super::pci::PciDevice>,
    /// /dev/random versus /dev/urandom (seed §7).
    pub random: Option<super::random::RandomExperiment>,
    /// CR3 at system-call entry with PTI on and off (seed §6).
    pub syscall_cr3: Vec<Cr3Run>,
    /// spin_lock hits per subsystem per workload.
    pub spin_lock: Vec<super::spinlock::WorkloadSpinLocks>,
    /// Page faults per workload.
    pub page_faults: Vec<super::faults::WorkloadFaults>,
}

/// One boot of the CR3 experiment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cr3Run {
    /// `PTI on` or `PTI off`.
    pub label: String,
    /// QEMU CPU model.
    pub cpu_model: String,
    /// The guest's own /sys/devices/system/cpu/vulnerabilities/meltdown line.
    pub meltdown: Option<String>,
    /// The experiment's findings.
    pub report: Option<super::syscall_cr3::Cr3Report>,
    /// Why there are none.
    pub error: Option<String>,
}

impl Cr3Run {
    /// A run that could not be attempted.
    pub fn skipped(why: &str) -> Cr3Run {
        Cr3Run {
            label: "skipped".into(),
            cpu_model: String::new(),
            meltdown: None,
            report: None,
            error: Some(why.into()),
        }
    }
}
