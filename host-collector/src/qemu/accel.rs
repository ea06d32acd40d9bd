//! Choosing QEMU's accelerator.
//!
//! `/dev/kvm` existing is not enough: on a host whose CPU does not expose
//! `vmx`/`svm` to it (a nested VM without nested virtualization), KVM starts, shows
//! the firmware, then never runs the kernel. So KVM is chosen only when the CPU
//! flags allow it and `/dev/kvm` opens read-write; the runner keeps a watchdog
//! that falls back to TCG if the kernel prints nothing in time.

use std::fs::OpenOptions;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The accelerator a guest ran with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// The `-accel` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Why KVM was or was not chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// The accelerator to try first.
    pub accel: Accel,
    /// One-line reason.
    pub reason: String,
}

/// Decides from `/proc/cpuinfo`'s text and whether `/dev/kvm` opens.
pub fn choose(cpuinfo: &str, kvm_opens: bool) -> AccelChoice {
    let has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    match (has_virt, kvm_opens) {
        (true, true) => AccelChoice {
            accel: Accel::Kvm,
            reason: "CPU has vmx/svm and /dev/kvm is usable".into(),
        },
        (false, true) => AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm exists but the CPU exposes no vmx/svm (KVM would hang): using TCG"
                .into(),
        },
        (_, false) => AccelChoice {
            accel: Accel::Tcg,
            reason: "/dev/kvm is not usable: using TCG".into(),
        },
    }
}

/// Decides for this host.
pub fn detect() -> AccelChoice {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm = Path::new("/dev/kvm");
    let opens = OpenOptions::new().read(true).write(true).open(kvm).is_ok();
    choose(&cpuinfo, opens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_needs_both_cpu_flags_and_device() {
        let vmx = "processor : 0\nflags : fpu vme vmx sse\n";
        let none = "processor : 0\nflags : fpu vme sse\n";
        assert_eq!(choose(vmx, true).accel, Accel::Kvm);
        assert_eq!(choose(none, true).accel, Accel::Tcg);
        assert!(choose(none, true).reason.contains("vmx/svm"));
        assert_eq!(choose(vmx, false).accel, Accel::Tcg);
        assert_eq!(choose("flags : svm\n", true).accel, Accel::Kvm);
    }

    #[test]
    fn flag_match_is_whole_word() {
        assert_eq!(choose("flags : vmxfoo svmbar\n", true).accel, Accel::Tcg);
    }
}
