//! The boot-time boots: the guest booted again and again with no workload and no probe,
//! each timed from QEMU's launch to the agent's hello (the lab's "boot time" question).

use super::*;

/// Boots the guest `o.boots` times after the traced run `c`, each to the agent's
/// hello; none when the traced boot never reached the agent (a root file system the
/// guest cannot mount, a kernel without vsock would fail the same way every time).
pub(super) fn boot_time_boots(
    o: &LabOptions,
    v: &Validated,
    c: &Collected,
) -> Result<Vec<experiments::boot::BootSample>, LabError> {
    let mut boots = Vec::new();
    let reached_agent = c.session.hello.is_some();
    if o.boots > 0 && !reached_agent {
        (o.progress)("boot-time boots skipped: the traced boot never reached the agent");
    }
    if o.boots > 0 && reached_agent {
        // Timed to the agent's hello, which comes before any probe is loaded: the
        // probes' verification (seconds under TCG) is not part of booting the kernel.
        let boot_plan = RunPlan {
            workloads: Vec::new(),
            user_probes: Vec::new(),
            without_probes: true,
            ..plan(o, v)
        };
        let logs = o.out_dir.join("boots");
        std::fs::create_dir_all(&logs).map_err(io_step("creating boots/"))?;
        for i in 0..o.boots {
            if crate::interrupt::received().is_some() {
                break;
            }
            (o.progress)(&format!("boot {}/{}", i + 1, o.boots));
            let c = boot_and_collect(
                o,
                v,
                &boot_plan,
                StreamFiles::discard(),
                &logs.join(format!("serial-{}.log", i + 1)),
                &Mode::BootOnly,
            )?;
            boots.push(experiments::boot::BootSample::from_run(
                i + 1,
                &c.marks,
                c.session.hello.as_ref(),
                c.hello_host_s,
                &c.outcome,
            ));
        }
    }

    Ok(boots)
}
