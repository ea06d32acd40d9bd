//! The plan the agent is given: the workloads, probes and stops of a run.

use super::*;

/// The plan of a run of `o`: the built-in workloads, the user's, the host program,
/// the probes and stops.
pub(crate) fn plan(o: &LabOptions, v: &Validated) -> RunPlan {
    let mut workloads = Vec::new();
    if o.builtin_workloads {
        for (name, program, args) in BUILTIN_WORKLOADS {
            let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            if question_checks::builtin_snapshots(o) && name == SNAPSHOT_WORKLOAD {
                // Time for the host to see the pid and set its breakpoint (outside the
                // workload's timed loop).
                args.extend([
                    "--start-delay-ms".to_string(),
                    SNAPSHOT_START_DELAY_MS.to_string(),
                ]);
            }
            workloads.push(WorkloadSpec {
                name: name.into(),
                path: format!("{BUILTIN_WORKLOAD_DIR}/{program}"),
                args,
                origin: WorkloadOrigin::Builtin,
                tracing: Default::default(),
                // The host holds the VM while it runs.
                quiet_link: (question_checks::builtin_snapshots(o) && name == SNAPSHOT_WORKLOAD)
                    || !o.stop_at.is_empty(),
                as_root: o.workloads_as_root,
                timeout_ms: timeout_ms(o),
                hold_before_exec_ms: question_checks::hold_ms(o),
                cwd: None,
            });
        }
    }
    for u in &v.user {
        workloads.push(WorkloadSpec {
            name: u.name.clone(),
            path: format!("{USER_WORKLOAD_DIR}/{}", u.guest_file),
            args: u.args.clone(),
            origin: WorkloadOrigin::User,
            tracing: Default::default(),
            // The host holds the VM at the stops while it runs.
            quiet_link: !o.stop_at.is_empty(),
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: question_checks::hold_ms(o),
            cwd: None,
        });
    }
    if let Some(h) = &v.host {
        let taken = |n: &str| workloads.iter().any(|w| w.name == n);
        let name = (1..)
            .map(|i| match i {
                1 => h.name.clone(),
                i => format!("{}#{i}", h.name),
            })
            .find(|n| !taken(n))
            .expect("a free name");
        workloads.push(WorkloadSpec {
            name,
            path: h.path.display().to_string(),
            args: h.args.clone(),
            origin: WorkloadOrigin::User,
            tracing: Default::default(),
            quiet_link: !o.stop_at.is_empty(),
            as_root: o.workloads_as_root,
            timeout_ms: timeout_ms(o),
            hold_before_exec_ms: question_checks::hold_ms(o),
            cwd: Some(h.cwd.display().to_string()),
        });
    }
    RunPlan {
        probes: v.probes.clone(),
        user_probes: o.user_probes.clone(),
        // The agent reads the list to attach them anyway; the host caches it.
        send_probe_list: !o.user_probes.is_empty() || !o.stop_at.is_empty(),
        stop_functions: o.stop_at.clone(),
        events_bytes: o.events_bytes,
        spool_bytes: o.spool_bytes,
        stacks: o.stacks,
        program_stats: o.program_stats,
        ..RunPlan::new(VSOCK_PORT, workloads)
    }
}

/// The plan's per-workload bound, from [`LabOptions::workload_timeout`].
pub(super) fn timeout_ms(o: &LabOptions) -> Option<u64> {
    o.workload_timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}
