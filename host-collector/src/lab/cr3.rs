//! The CR3 experiment's two boots (PTI on and off).

use super::*;

/// The CR3 experiment's boots: (label, QEMU `-cpu` model). A Haswell without TSX is
/// vulnerable to Meltdown, so the guest turns PTI on; QEMU's default model is not.
pub(crate) const CR3_BOOTS: [(&str, Option<&str>); 2] =
    [("PTI on", Some("Haswell-noTSX")), ("PTI off", None)];

/// What the CR3 boots need, or why they cannot run.
pub(super) enum Cr3Setup {
    /// The boots can run with this plan and `task_struct` layout.
    Ready {
        /// A system-call-heavy workload, no probes.
        plan: RunPlan,
        /// Where the pid is in `task_struct`.
        offsets: TaskOffsets,
    },
    /// They cannot: the one entry the experiment reports instead.
    Skipped(Box<summary::Cr3Run>),
}

/// The CR3 boots' plan and the `task_struct` layout they read the pid with, from the
/// guest's BTF that the main run brought back.
pub(super) fn cr3_setup<W: io::Write>(
    o: &LabOptions,
    v: &Validated,
    main: &Session<W>,
) -> Cr3Setup {
    let btf = main
        .artifacts
        .get("btf")
        .map(|a| a.data.clone())
        .unwrap_or_default();
    if btf.is_empty() {
        return Cr3Setup::Skipped(Box::new(summary::Cr3Run::skipped(
            "the guest kernel offers no BTF (/sys/kernel/btf/vmlinux): no task_struct layout to read the pid with",
        )));
    }
    let offsets = match guest_kernel::btf::task_offsets(&btf) {
        Ok(off) => off,
        Err(e) => {
            return Cr3Setup::Skipped(Box::new(summary::Cr3Run::skipped(&format!(
                "no task_struct layout from the guest's BTF: {e}"
            ))));
        }
    };
    let plan = RunPlan {
        workloads: vec![WorkloadSpec {
            name: "syscalls".into(),
            path: format!("{BUILTIN_WORKLOAD_DIR}/cpuinfo"),
            args: vec!["--iterations".into(), "3000".into()],
            origin: WorkloadOrigin::Builtin,
            tracing: Default::default(),
            // The CR3 experiment holds the VM at every system call until it finds this
            // workload's.
            quiet_link: true,
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: None,
            cwd: None,
        }],
        // The experiment reads CR3 through the gdbstub; eBPF probes would only add
        // their loading time to the boot.
        without_probes: true,
        ..plan(o, v)
    };
    Cr3Setup::Ready { plan, offsets }
}

/// One CR3 boot: `label` with QEMU's `-cpu cpu` (its default when `None`), running
/// the system-call workload of `plan` under the gdbstub experiment.
pub(super) fn cr3_boot(
    o: &LabOptions,
    v: &Validated,
    plan: &RunPlan,
    offsets: &TaskOffsets,
    (label, cpu): (&str, Option<&str>),
) -> summary::Cr3Run {
    (o.progress)(&format!("CR3 at system-call entry: {label}"));
    let log = o.out_dir.join(format!(
        "serial-cr3-{}.log",
        if cpu.is_some() { "pti" } else { "nopti" }
    ));
    let mode = Mode::Cr3 {
        cpu_model: cpu.map(str::to_string),
        offsets: offsets.clone(),
    };
    match boot_and_collect(o, v, plan, StreamFiles::discard(), &log, &mode) {
        Ok(c) => summary::Cr3Run {
            label: label.into(),
            cpu_model: cpu.unwrap_or("QEMU default (qemu64)").into(),
            meltdown: c
                .session
                .artifact_text("meltdown")
                .map(|m| m.trim().to_string()),
            report: c.cr3.as_ref().and_then(|r| r.as_ref().ok()).cloned(),
            error: match c.cr3 {
                Some(Err(e)) => Some(e),
                None => Some(format!("the workload never started ({})", c.outcome.how)),
                Some(Ok(_)) => None,
            },
        },
        Err(e) => summary::Cr3Run {
            label: label.into(),
            cpu_model: cpu.unwrap_or("default").into(),
            meltdown: None,
            report: None,
            error: Some(e.to_string()),
        },
    }
}
