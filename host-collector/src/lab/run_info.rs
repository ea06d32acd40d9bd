//! What `summary.json`'s `run` says about how the lab ran: the machine, the kernel,
//! the QEMU line, who ran the workloads, how it ended.

use super::*;

/// The run's description, for the traced run `c` of a lab that started at
/// `started_unix_s` and has taken `wall_s` so far.
pub(super) fn run_info(
    o: &LabOptions,
    v: &Validated,
    c: &Collected,
    started_unix_s: u64,
    wall_s: f64,
) -> summary::RunInfo {
    summary::RunInfo {
        started_unix_s,
        wall_s,
        accel: c.accel.as_str().into(),
        accel_reason: if o.accel.is_some() {
            "forced by --accel".into()
        } else {
            v.accel.reason.clone()
        },
        qemu_command: c.qemu_command.clone(),
        kernel: o
            .fast_kernel
            .as_ref()
            .unwrap_or(&o.kernel)
            .display()
            .to_string(),
        boot_time_kernel: (o.fast_kernel.is_some() && o.boots > 0)
            .then(|| o.kernel.display().to_string()),
        kernel_release: None,
        kernel_cmdline: crate::qemu::kernel_cmdline::for_boot(false, &v.append),
        cpus: o.cpus,
        memory_mb: o.memory_mb,
        gdb_port: v.gdb_port,
        workload_user: if o.workloads_as_root {
            "root (--workload-user root)".into()
        } else {
            format!("nobody (uid {})", guestscope_common::plan::UNPRIVILEGED_ID)
        },
        workload_timeout_s: o.workload_timeout.map(|t| t.as_secs_f64()),
        host_files_cwd: v.host.as_ref().map(|h| h.cwd.display().to_string()),
        events_ring_bytes: o
            .events_bytes
            .unwrap_or(guestscope_common::maps::EVENTS_BYTES),
        stacks: Some(o.stacks),
        outcome: c.outcome.clone(),
    }
}
