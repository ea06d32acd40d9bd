//! Facts about the host and this process for the results: the date, the load, the
//! CPU model, QEMU's version, and this process's peak memory.

use super::*;
use crate::qemu::accel::AccelChoice;
/// The value in KiB of `field` (e.g. `VmHWM`) in the text of `/proc/<pid>/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// This process's peak resident set, KiB.
pub(super) fn own_peak_kib() -> Option<u64> {
    status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM")
}

/// Resets this process's peak resident set to its current one (Linux ≥ 4.0).
pub(super) fn reset_own_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `YYYY-MM-DD` of a Unix time (UTC).
pub fn utc_date(unix_s: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = (unix_s / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

pub(super) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default()
}

pub(super) fn qemu_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// What the results say of the host and the guest's machine (the guest's kernel and
/// the load afterwards are filled in later).
pub(super) fn machine_info(choice: &AccelChoice, machine: &Machine) -> MachineInfo {
    MachineInfo {
        accel: choice.accel.as_str().into(),
        accel_reason: choice.reason.clone(),
        host_cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        host_cpu_model: cpu_model(),
        qemu: qemu_version(&machine.qemu),
        firmware: match &machine.bios {
            Some(bios) => format!("firmware {}", bios.display()),
            None => "QEMU's default firmware (SeaBIOS)".into(),
        },
        guest_kernel: String::new(),
        guest_vcpus: machine.cpus,
        guest_memory_mb: machine.memory_mb,
        load_before: load(),
        load_after: String::new(),
    }
}
