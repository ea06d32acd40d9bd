//! The boot-time boots: the guest booted again and again with no workload and no probe,
//! each timed from QEMU's launch to the agent's hello (the lab's "boot time" question).

use super::*;

/// How many boot-time boots to run after the traced run `c`: `o.boots`, or none when
/// the traced boot never reached the agent (a root file system the guest cannot
/// mount, a kernel without vsock would fail the same way every time).
pub(super) fn boot_time_count(o: &LabOptions, c: &Collected) -> u32 {
    let reached_agent = c.session.hello.is_some();
    if o.boots > 0 && !reached_agent {
        (o.progress)("boot-time boots skipped: the traced boot never reached the agent");
        return 0;
    }
    o.boots
}

/// The plan of a boot-time boot: no workload, no probe. Timed to the agent's hello,
/// which then comes before any probe is loaded: the probes' verification (seconds
/// under TCG) is not part of booting the kernel.
pub(super) fn boot_time_plan(o: &LabOptions, v: &Validated) -> RunPlan {
    RunPlan {
        workloads: Vec::new(),
        user_probes: Vec::new(),
        without_probes: true,
        ..plan(o, v)
    }
}

/// Boot-time boot `i` (from 1) of `o.boots`, its console in `boots/serial-{i}.log`.
pub(super) fn boot_time_boot(
    o: &LabOptions,
    v: &Validated,
    plan: &RunPlan,
    i: u32,
) -> Result<experiments::boot::BootSample, LabError> {
    let logs = o.out_dir.join("boots");
    std::fs::create_dir_all(&logs).map_err(io_step("creating boots/"))?;
    (o.progress)(&format!("boot {i}/{}", o.boots));
    let c = boot_and_collect(
        o,
        v,
        plan,
        StreamFiles::discard(),
        &logs.join(format!("serial-{i}.log")),
        &Mode::BootOnly,
    )?;
    Ok(experiments::boot::BootSample::from_run(
        i,
        &c.marks,
        c.session.hello.as_ref(),
        c.hello_host_s,
        &c.outcome,
    ))
}
