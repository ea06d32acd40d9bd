//! One run of the plan, in the order the host expects:
//! Hello → ProbeAttach × n → Artifacts kallsyms, btf → per workload (WorkloadStarted, Stack and
//! Events records, WorkloadExited) → the rest of the ring buffer → end artifacts →
//! Finished.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use guestscope_common::{
    ProbeKind,
    plan::RunPlan,
    wire::{Body, Hello, ProbeAttach},
};

use crate::{
    artifacts,
    clock::monotonic_ns,
    plan::{selected_probes, user_probes},
    probes,
    resume::RunState,
    stream::{Sink, Stream, StreamError},
    tracer::Tracer,
    user_probes, workloads,
};

/// What the run did, for the console.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Probes attached.
    pub attached: usize,
    /// Workloads run.
    pub workloads: usize,
    /// Workloads that exited non-zero or never ran.
    pub failed_workloads: usize,
    /// Events sent.
    pub events: u64,
    /// Records sent.
    pub records: u64,
}

/// Runs `plan`, writing every record to `stream`. Only a broken stream is an error.
/// With `state_dir`, the run's progress is kept there so that an agent restarted
/// after this one died resumes after the workloads already started ([`resume`]).
pub fn run<W: Sink>(
    plan: &RunPlan,
    stream: &mut Stream<W>,
    agent_start_ns: u64,
    state_dir: Option<&Path>,
) -> Result<Summary, StreamError> {
    // The plan was checked when loaded; an unknown name cannot reach here.
    let selected = selected_probes(plan).unwrap_or_else(|_| ProbeKind::BUILTIN.to_vec());
    let user = user_probes(plan).unwrap_or_default();
    // Why the user's probes cannot be attached: the run stops before any workload.
    let mut refused: Vec<String> = Vec::new();
    // The user's tracepoints by slot, sent for the host to name their events.
    let mut tracepoint_slots = std::collections::BTreeMap::new();
    // The user's fentry attachments, handed to the tracer, which holds them for the run.
    let mut fentry_links = Vec::new();
    // What the kernel offers for probing, read once (1 s under TCG) when needed.
    let mut probe_list = None;
    let mut logs: Vec<(&str, String)> = Vec::new();
    let state = state_dir.map(|dir| RunState::open(dir, plan));
    let already = state.as_ref().map_or(0, |(_, n)| *n);
    if already > 0 {
        logs.push((
            "warn",
            format!(
                "restarted after an agent of this run died: the {already} workload(s) it started are not run again"
            ),
        ));
    }
    let (mut tracer, attach) = match probes::load_with(plan.events_bytes) {
        Ok(mut loaded) => {
            // Parsed once for the built-in fentry and the user's; dropped after the attach.
            let btf = probes::kernel_btf();
            let mut attach = probes::attach_all(&mut loaded.ebpf, &selected, btf.as_ref());
            if !user.is_empty() || !plan.stop_functions.is_empty() {
                let kernel = probe_list.insert(user_probes::read_probe_list());
                refused.extend(
                    plan.stop_functions
                        .iter()
                        .filter_map(|f| kernel.check_stop(f).err()),
                );
                if refused.is_empty() && !user.is_empty() {
                    match user_probes::attach(&mut loaded.ebpf, &user, kernel, btf.as_ref()) {
                        Ok(attached) => {
                            tracepoint_slots = attached.tracepoint_slots;
                            fentry_links = attached.fentry_links;
                            attach.extend(attached.records);
                        }
                        Err(errors) => refused = errors,
                    }
                }
            }
            match probes::attach_fork_follower(&mut loaded.ebpf) {
                Ok(()) => logs.push((
                    "info",
                    "fork follower attached to sched:sched_process_fork".into(),
                )),
                Err(e) => {
                    let message = format!(
                        "fork follower not attached, children of workloads are not traced: {}",
                        probes::chain(&e)
                    );
                    tracing::warn!("{message}");
                    logs.push(("warn", message));
                }
            }
            let mut tracer = Tracer::new(loaded);
            tracer.keep_user_links(std::mem::take(&mut fentry_links));
            (tracer, attach)
        }
        Err(e) => {
            let why = probes::chain(&e);
            tracing::error!("no probes: {why}");
            logs.push((
                "error",
                format!("eBPF probes not loaded, workloads run untraced: {why}"),
            ));
            if !user.is_empty() {
                refused.push(format!("the probes you named cannot be attached: {why}"));
            }
            let attach = ProbeKind::BUILTIN
                .into_iter()
                .map(|kind| ProbeAttach {
                    probe: kind.name().into(),
                    target: probes::target(kind).into(),
                    method: String::new(),
                    note: format!("eBPF object not loaded: {why}"),
                    attached: false,
                })
                .collect();
            (Tracer::inactive(), attach)
        }
    };

    stream.send(Body::Hello(hello(agent_start_ns)))?;
    let attached = attach.iter().filter(|a| a.attached).count();
    for record in attach {
        stream.send(Body::ProbeAttach(record))?;
    }
    // Each probe the user named that cannot be attached, as an unattached user probe:
    // the collector reports them and no workload runs.
    for why in &refused {
        tracing::error!("{why}");
        stream.send(Body::ProbeAttach(ProbeAttach {
            probe: ProbeKind::Kprobe.name().into(),
            target: probes::target(ProbeKind::Kprobe).into(),
            method: String::new(),
            note: why.clone(),
            attached: false,
        }))?;
    }
    if !refused.is_empty() {
        logs.push((
            "error",
            "no workload runs: a probe or stop you named cannot be used".into(),
        ));
    }
    for (level, message) in logs {
        stream.send(Body::Log {
            level: level.into(),
            message,
        })?;
    }
    println!("guestscope-agent: ready");

    for (name, path) in artifacts::START_FILES {
        artifacts::send_file(stream, name, path)?;
    }
    if !tracepoint_slots.is_empty() {
        let ids = serde_json::to_vec(&tracepoint_slots).unwrap_or_default();
        artifacts::send_bytes(stream, guestscope_common::probe_list::TRACEPOINT_IDS, &ids)?;
    }
    if plan.send_probe_list {
        let list = probe_list
            .take()
            .unwrap_or_else(user_probes::read_probe_list);
        let list = serde_json::to_vec(&list).unwrap_or_default();
        artifacts::send_bytes(stream, guestscope_common::probe_list::ARTIFACT, &list)?;
    }

    if plan.settle_ms > 0 {
        settle(&mut tracer, stream, Duration::from_millis(plan.settle_ms))?;
    }
    let mut failed_workloads = 0;
    let skip = if refused.is_empty() {
        already
    } else {
        plan.workloads.len()
    };
    for (i, spec) in plan.workloads.iter().enumerate().skip(skip) {
        if let Some((state, _)) = &state {
            state.started(i + 1);
        }
        let status = workloads::run(spec, &mut tracer, stream)?;
        if status != 0 {
            failed_workloads += 1;
        }
    }
    tracer.drain(stream)?;

    artifacts::send_end_artifacts(stream)?;
    let totals = tracer.totals();
    let events = totals.events_sent;
    stream.send(Body::Finished(totals))?;
    if let Some((state, _)) = state {
        state.finish();
    }
    Ok(Summary {
        attached,
        workloads: plan.workloads.len(),
        failed_workloads,
        events,
        records: stream.records(),
    })
}

fn hello(agent_start_ns: u64) -> Hello {
    let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpus = aya::util::online_cpus()
        .map(|c| c.len() as u32)
        .unwrap_or(0);
    Hello {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        kernel_release,
        cpus,
        agent_start_ns,
        monotonic_ns: monotonic_ns(),
        agent_pid: std::process::id(),
    }
}

/// Keeps pumping events for `duration` before the first workload.
fn settle<W: Sink>(
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
    duration: Duration,
) -> Result<(), StreamError> {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::thread::sleep(
            tracer
                .poll_timeout(Instant::now())
                .min(until.saturating_duration_since(Instant::now())),
        );
        tracer.pump(stream)?;
    }
    Ok(())
}
