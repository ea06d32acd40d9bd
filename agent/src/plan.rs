//! Loading and checking the run plan.

use std::{collections::HashSet, fs, io, path::Path};

use guestscope_common::{
    ProbeKind,
    plan::{RunPlan, Tracing, WorkloadSpec, valid_events_bytes},
    user_probe::{UserProbe, UserProbeError},
};

/// Why the plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The plan file could not be read.
    #[error("reading plan {path}: {source}")]
    Read {
        /// The plan's path.
        path: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The plan is not valid JSON for a `RunPlan`.
    #[error("parsing plan {path}: {source}")]
    Parse {
        /// The plan's path.
        path: String,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The plan names a probe this agent does not have.
    #[error(
        "plan asks for unknown probe {0:?} (known: spin_lock, alloc_fd, page_fault_user, page_fault_kernel)"
    )]
    UnknownProbe(String),
    /// Two workloads share a name.
    #[error("plan has two workloads named {0:?}")]
    DuplicateWorkload(String),
    /// A workload's path is not absolute.
    #[error("workload {name:?}: path {path:?} is not absolute")]
    RelativePath {
        /// The workload's name.
        name: String,
        /// Its path.
        path: String,
    },
    /// A workload's path or argument contains a NUL byte.
    #[error("workload {0:?}: path or argument contains a NUL byte")]
    NulByte(String),
    /// The ring-buffer size is not a power of two of at least a page.
    #[error(
        "plan asks for an EVENTS ring of {0} bytes (a power of two of at least 4096 is needed)"
    )]
    EventsBytes(u32),
    /// A workload's tracing names a probe this agent does not have.
    #[error("workload {workload:?}: unknown probe {probe:?}")]
    UnknownWorkloadProbe {
        /// The workload's name.
        workload: String,
        /// The probe name.
        probe: String,
    },
    /// A `--probe` value that does not parse.
    #[error(transparent)]
    UserProbe(UserProbeError),
    /// A workload's ftrace kprobe target is not a kernel symbol name.
    #[error("workload {workload:?}: {function:?} is not a kernel function name")]
    BadKprobeTarget {
        /// The workload's name.
        workload: String,
        /// The function asked for.
        function: String,
    },
    /// An ftrace peer's task name cannot go into an event filter.
    #[error(
        "workload {workload:?}: ftrace filter comm {comm:?} is not a task name (1 to 15 bytes, no quotes, backslashes or control characters)"
    )]
    BadFtraceComm {
        /// The workload's name.
        workload: String,
        /// The name asked for.
        comm: String,
    },
}

/// Whether `function` is a plain symbol name, as tracefs `kprobe_events` takes one.
fn is_symbol(function: &str) -> bool {
    !function.is_empty()
        && function.len() <= 128
        && !function.starts_with(|c: char| c.is_ascii_digit())
        && function
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Whether `comm` can be a task name in an ftrace event filter (`comm == "…"`).
fn is_filter_comm(comm: &str) -> bool {
    (1..=15).contains(&comm.len())
        && !comm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
}

/// Reads and checks the plan at `path`.
pub fn load(path: &Path) -> Result<RunPlan, PlanError> {
    let display = path.display().to_string();
    let text = fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: display.clone(),
        source,
    })?;
    let plan: RunPlan = serde_json::from_str(&text).map_err(|source| PlanError::Parse {
        path: display,
        source,
    })?;
    check(&plan)?;
    Ok(plan)
}

/// Checks what serde cannot: probe names, unique workload names, usable paths.
pub fn check(plan: &RunPlan) -> Result<(), PlanError> {
    selected_probes(plan)?;
    user_probes(plan)?;
    if let Some(bytes) = plan.events_bytes.filter(|&b| !valid_events_bytes(b)) {
        return Err(PlanError::EventsBytes(bytes));
    }
    let mut names = HashSet::new();
    for WorkloadSpec {
        name,
        path,
        args,
        tracing,
        ..
    } in &plan.workloads
    {
        if !names.insert(name.as_str()) {
            return Err(PlanError::DuplicateWorkload(name.clone()));
        }
        if !path.starts_with('/') {
            return Err(PlanError::RelativePath {
                name: name.clone(),
                path: path.clone(),
            });
        }
        if path.contains('\0') || args.iter().any(|a| a.contains('\0')) {
            return Err(PlanError::NulByte(name.clone()));
        }
        check_tracing(name, tracing)?;
    }
    Ok(())
}

/// Checks a workload's [`Tracing`]: known probe names, and a kprobe target that is a plain
/// symbol name (it is written into tracefs `kprobe_events`).
fn check_tracing(workload: &str, tracing: &Tracing) -> Result<(), PlanError> {
    match tracing {
        Tracing::Plan => Ok(()),
        Tracing::Probes(names) | Tracing::ProbesWith(names, _) => {
            match names.iter().find(|n| ProbeKind::from_name(n).is_none()) {
                Some(probe) => Err(PlanError::UnknownWorkloadProbe {
                    workload: workload.into(),
                    probe: probe.clone(),
                }),
                None => Ok(()),
            }
        }
        Tracing::UserProbes(specs) => specs
            .iter()
            .try_for_each(|s| s.parse::<UserProbe>().map(drop))
            .map_err(PlanError::UserProbe),
        Tracing::Synthetic(_) => Ok(()),
        Tracing::FtraceKprobe(function) => check_symbol(workload, function),
        Tracing::FtracePeer {
            functions, comm, ..
        } => {
            functions
                .iter()
                .try_for_each(|f| check_symbol(workload, f))?;
            if is_filter_comm(comm) {
                Ok(())
            } else {
                Err(PlanError::BadFtraceComm {
                    workload: workload.into(),
                    comm: comm.clone(),
                })
            }
        }
    }
}

/// `Ok` if `function` is a plain symbol name.
fn check_symbol(workload: &str, function: &str) -> Result<(), PlanError> {
    if is_symbol(function) {
        Ok(())
    } else {
        Err(PlanError::BadKprobeTarget {
            workload: workload.into(),
            function: function.to_string(),
        })
    }
}

/// The probes the user named in the plan, parsed.
pub fn user_probes(plan: &RunPlan) -> Result<Vec<UserProbe>, PlanError> {
    plan.user_probes
        .iter()
        .map(|s| s.parse().map_err(PlanError::UserProbe))
        .collect()
}

/// The built-in probes the plan asks for (all of them when its list is empty), in id order.
pub fn selected_probes(plan: &RunPlan) -> Result<Vec<ProbeKind>, PlanError> {
    if plan.probes.is_empty() {
        return Ok(ProbeKind::BUILTIN.to_vec());
    }
    let mut kinds = plan
        .probes
        .iter()
        .map(|name| ProbeKind::from_name(name).ok_or_else(|| PlanError::UnknownProbe(name.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use guestscope_common::plan::{Tracing, WorkloadOrigin};

    use super::*;

    fn plan(probes: &[&str], workloads: &[(&str, &str)]) -> RunPlan {
        RunPlan {
            vsock_port: 7000,
            probes: probes.iter().map(|s| s.to_string()).collect(),
            workloads: workloads
                .iter()
                .map(|(name, path)| WorkloadSpec {
                    name: name.to_string(),
                    path: path.to_string(),
                    args: vec!["--iterations".into(), "10".into()],
                    origin: WorkloadOrigin::Builtin,
                    tracing: Tracing::Plan,
                    quiet_link: false,
                    as_root: false,
                    timeout_ms: None,
                    hold_before_exec_ms: None,
                    cwd: None,
                })
                .collect(),
            settle_ms: 0,
            events_bytes: None,
            spool_bytes: None,
            secret: None,
            stacks: Default::default(),
            user_probes: Vec::new(),
            send_probe_list: false,
            stop_functions: Vec::new(),
            without_probes: false,
            program_stats: false,
        }
    }

    #[test]
    fn empty_probe_list_means_all() {
        assert_eq!(
            selected_probes(&plan(&[], &[])).unwrap(),
            ProbeKind::BUILTIN.to_vec()
        );
    }

    #[test]
    fn probe_names_are_checked_and_deduplicated() {
        let p = plan(&["alloc_fd", "spin_lock", "alloc_fd"], &[]);
        assert_eq!(
            selected_probes(&p).unwrap(),
            vec![ProbeKind::SpinLock, ProbeKind::AllocFd]
        );
        assert!(
            matches!(check(&plan(&["nope"], &[])), Err(PlanError::UnknownProbe(n)) if n == "nope")
        );
    }

    #[test]
    fn workloads_are_checked() {
        assert!(check(&plan(&[], &[("a", "/bin/a"), ("b", "/bin/b")])).is_ok());
        assert!(matches!(
            check(&plan(&[], &[("a", "/bin/a"), ("a", "/bin/b")])),
            Err(PlanError::DuplicateWorkload(_))
        ));
        assert!(matches!(
            check(&plan(&[], &[("a", "bin/a")])),
            Err(PlanError::RelativePath { .. })
        ));
        assert!(matches!(
            check(&plan(&[], &[("a", "/bin/a\0")])),
            Err(PlanError::NulByte(_))
        ));
    }

    #[test]
    fn ring_size_is_checked() {
        let sized = |b| RunPlan {
            events_bytes: Some(b),
            ..plan(&[], &[])
        };
        assert!(check(&sized(4096)).is_ok());
        assert!(check(&sized(1 << 20)).is_ok());
        for bad in [0, 2048, 12288, 4097] {
            assert!(
                matches!(check(&sized(bad)), Err(PlanError::EventsBytes(b)) if b == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn workload_tracing_is_checked() {
        let with = |tracing: Tracing| {
            let mut p = plan(&[], &[("a", "/bin/a")]);
            p.workloads[0].tracing = tracing;
            check(&p)
        };
        assert!(with(Tracing::Probes(vec![])).is_ok());
        assert!(with(Tracing::Probes(vec!["alloc_fd".into(), "spin_lock".into()])).is_ok());
        assert!(matches!(
            with(Tracing::Probes(vec!["nope".into()])),
            Err(PlanError::UnknownWorkloadProbe { probe, .. }) if probe == "nope"
        ));
        assert!(with(Tracing::FtraceKprobe("alloc_fd".into())).is_ok());
        assert!(with(Tracing::FtraceKprobe("do_sys_openat2.isra.0".into())).is_ok());
        for bad in ["", "alloc_fd\n-:x", "a b", "p:x/y alloc_fd", "0abc"] {
            assert!(
                matches!(
                    with(Tracing::FtraceKprobe(bad.into())),
                    Err(PlanError::BadKprobeTarget { .. })
                ),
                "{bad:?}"
            );
        }
        let peer = |functions: &[&str], comm: &str| Tracing::FtracePeer {
            functions: functions.iter().map(|f| f.to_string()).collect(),
            comm: comm.into(),
            stacktrace: true,
        };
        assert!(with(peer(&["_raw_spin_lock", "alloc_fd"], "fopen")).is_ok());
        assert!(matches!(
            with(peer(&["_raw_spin_lock", "a b"], "fopen")),
            Err(PlanError::BadKprobeTarget { function, .. }) if function == "a b"
        ));
        for bad in ["", "a\"b", "x\\", "line\n", "sixteen-bytes-xx"] {
            assert!(
                matches!(
                    with(peer(&["alloc_fd"], bad)),
                    Err(PlanError::BadFtraceComm { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn workload_tracing_round_trips_and_defaults_to_the_plan() {
        let mut p = plan(&[], &[("a", "/bin/a"), ("b", "/bin/b")]);
        p.workloads[1].tracing = Tracing::FtraceKprobe("alloc_fd".into());
        let json = serde_json::to_string(&p).unwrap();
        assert!(
            !json.contains("\"Plan\""),
            "the default is left out: {json}"
        );
        assert_eq!(serde_json::from_str::<RunPlan>(&json).unwrap(), p);
    }

    #[test]
    fn plan_json_parses() {
        let json = r#"{"vsock_port":7000,"probes":[],"settle_ms":0,
            "workloads":[{"name":"fopen","path":"/usr/lib/guestscope/workloads/fopen",
            "args":["--iterations","100"],"origin":"Builtin"}]}"#;
        let p: RunPlan = serde_json::from_str(json).unwrap();
        check(&p).unwrap();
        assert_eq!(p.workloads[0].name, "fopen");
        assert_eq!(
            p.workloads[0].tracing,
            Tracing::Plan,
            "a plan without tracing fields"
        );
    }
}
