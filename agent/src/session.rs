//! One run of the plan, in the order the host expects:
//! Hello → ProbeAttach × n → Artifacts kallsyms, btf → per workload (WorkloadStarted, Stack and
//! Events records, WorkloadExited) → the rest of the ring buffer → end artifacts →
//! Finished.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use guestscope_common::{
    ProbeKind,
    plan::RunPlan,
    probe_list::ProbeList,
    user_probe::UserProbe,
    wire::{Body, Hello, ProbeAttach},
};

use crate::memory_use::{self, MemoryUse};
use crate::{
    artifacts,
    clock::monotonic_ns,
    plan::{selected_probes, user_probes},
    probes::{self, Loaded, ProbeError},
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
/// after this one died resumes after the workloads already started ([`crate::resume`]).
pub fn run<W: Sink>(
    plan: &RunPlan,
    stream: &mut Stream<W>,
    agent_start_ns: u64,
    state_dir: Option<&Path>,
) -> Result<Summary, StreamError> {
    let state = state_dir.map(|dir| RunState::open(dir, plan));
    let already = state.as_ref().map_or(0, |(_, n)| *n);
    let mut logs: Vec<(&str, String)> = Vec::new();
    if already > 0 {
        logs.push((
            "warn",
            format!(
                "restarted after an agent of this run died: the {already} workload(s) it started are not run again"
            ),
        ));
    }
    let mut setup = Setup::new(logs);
    let loading = std::time::Instant::now();
    let mut tracer = if plan.without_probes {
        let message = "no probe loaded: the plan asks for none";
        tracing::info!("{message}");
        setup.logs.push(("info", message.into()));
        Tracer::inactive()
    } else {
        load_probes(plan, &mut setup)
    };
    setup.loaded_status = memory_use::settled();
    if !plan.without_probes {
        let memory = setup
            .loaded_status
            .as_deref()
            .map(MemoryUse::parse)
            .unwrap_or_default();
        tracing::info!(ms = loading.elapsed().as_millis() as u64, %memory, "probes loaded and attached");
    }
    let attached = setup.announce(stream, agent_start_ns)?;
    setup.send_start_artifacts(stream, plan)?;
    let refused = setup.refused;

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

/// What loading and attaching the probes leaves for the host to be told before any
/// workload runs.
struct Setup {
    /// One record per probe, attached or not.
    attach: Vec<ProbeAttach>,
    /// Why the user's probes cannot be attached: the run stops before any workload.
    refused: Vec<String>,
    /// The user's tracepoints by slot, sent for the host to name their events.
    tracepoint_slots: BTreeMap<u32, String>,
    /// What the kernel offers for probing, read once (1 s under TCG) when needed.
    probe_list: Option<ProbeList>,
    /// Log records for the host: level and message.
    logs: Vec<(&'static str, String)>,
    /// The agent's `/proc/self/status` once the probes were loaded, before its peak
    /// was reset ([`memory_use::settled`]).
    loaded_status: Option<String>,
}

impl Setup {
    /// Nothing attached yet; `logs` go first.
    fn new(logs: Vec<(&'static str, String)>) -> Setup {
        Setup {
            attach: Vec::new(),
            refused: Vec::new(),
            tracepoint_slots: BTreeMap::new(),
            probe_list: None,
            logs,
            loaded_status: None,
        }
    }

    /// Attaches the fork follower, logging whether it could be.
    fn attach_fork_follower(
        &mut self,
        ebpf: &mut aya::Ebpf,
        links: &mut crate::probe_links::Links,
    ) {
        match probes::attach_fork_follower(ebpf, links) {
            Ok(()) => self.logs.push((
                "info",
                "fork follower attached to sched:sched_process_fork".into(),
            )),
            Err(e) => {
                let message = format!(
                    "fork follower not attached, children of workloads are not traced: {}",
                    probes::chain(&e)
                );
                tracing::warn!("{message}");
                self.logs.push(("warn", message));
            }
        }
    }

    /// The eBPF object did not load: every built-in probe is reported unattached, and
    /// probes the user named are refused.
    fn not_loaded(&mut self, e: &ProbeError, user_named: bool) {
        let why = probes::chain(e);
        tracing::error!("no probes: {why}");
        self.logs.push((
            "error",
            format!("eBPF probes not loaded, workloads run untraced: {why}"),
        ));
        if user_named {
            self.refused
                .push(format!("the probes you named cannot be attached: {why}"));
        }
        self.attach = ProbeKind::BUILTIN
            .into_iter()
            .map(|kind| ProbeAttach {
                probe: kind.name().into(),
                target: probes::target(kind).into(),
                method: String::new(),
                note: format!("eBPF object not loaded: {why}"),
                attached: false,
            })
            .collect();
    }

    /// Sends the hello, a `ProbeAttach` per probe (and per refused probe of the user's)
    /// and the logs; returns how many probes are attached.
    fn announce<W: Sink>(
        &mut self,
        stream: &mut Stream<W>,
        agent_start_ns: u64,
    ) -> Result<usize, StreamError> {
        stream.send(Body::Hello(hello(agent_start_ns)))?;
        let attach = std::mem::take(&mut self.attach);
        let attached = attach.iter().filter(|a| a.attached).count();
        for record in attach {
            stream.send(Body::ProbeAttach(record))?;
        }
        // Each probe the user named that cannot be attached, as an unattached user probe:
        // the collector reports them and no workload runs.
        for why in &self.refused {
            tracing::error!("{why}");
            stream.send(Body::ProbeAttach(ProbeAttach {
                probe: ProbeKind::Kprobe.name().into(),
                target: probes::target(ProbeKind::Kprobe).into(),
                method: String::new(),
                note: why.clone(),
                attached: false,
            }))?;
        }
        if !self.refused.is_empty() {
            self.logs.push((
                "error",
                "no workload runs: a probe or stop you named cannot be used".into(),
            ));
        }
        for (level, message) in std::mem::take(&mut self.logs) {
            stream.send(Body::Log {
                level: level.into(),
                message,
            })?;
        }
        println!("guestscope-agent: ready");
        Ok(attached)
    }

    /// Sends the start artifacts, the user's tracepoint slots and, if the plan asks,
    /// the kernel's probe list.
    fn send_start_artifacts<W: Sink>(
        &mut self,
        stream: &mut Stream<W>,
        plan: &RunPlan,
    ) -> Result<(), StreamError> {
        if let Some(status) = self.loaded_status.take() {
            artifacts::send_bytes(stream, artifacts::LOADED_STATUS, status.as_bytes())?;
        }
        for (name, path) in artifacts::START_FILES {
            artifacts::send_file(stream, name, path)?;
        }
        if !self.tracepoint_slots.is_empty() {
            let ids = serde_json::to_vec(&self.tracepoint_slots).unwrap_or_default();
            artifacts::send_bytes(stream, guestscope_common::probe_list::TRACEPOINT_IDS, &ids)?;
        }
        if plan.send_probe_list {
            let list = self
                .probe_list
                .take()
                .unwrap_or_else(user_probes::read_probe_list);
            let list = serde_json::to_vec(&list).unwrap_or_default();
            artifacts::send_bytes(stream, guestscope_common::probe_list::ARTIFACT, &list)?;
        }
        Ok(())
    }
}

/// Loads the eBPF object and attaches the plan's probes; without the object, the
/// tracer is inactive and `setup` says why.
fn load_probes(plan: &RunPlan, setup: &mut Setup) -> Tracer {
    // The plan was checked when loaded; an unknown name cannot reach here.
    let selected = selected_probes(plan).unwrap_or_else(|_| ProbeKind::BUILTIN.to_vec());
    let user = user_probes(plan).unwrap_or_default();
    match probes::load_with(plan.events_bytes) {
        Ok(loaded) => attach_probes(plan, &selected, &user, loaded, setup),
        Err(e) => {
            setup.not_loaded(&e, !user.is_empty());
            Tracer::inactive()
        }
    }
}

/// Attaches the `selected` built-in probes, the user's (unless a probe or stop of the
/// plan is refused) and the fork follower, and makes the tracer.
fn attach_probes(
    plan: &RunPlan,
    selected: &[ProbeKind],
    user: &[UserProbe],
    mut loaded: Loaded,
    setup: &mut Setup,
) -> Tracer {
    // Parsed once for the built-in fentry and the user's; dropped after the attach.
    let btf = probes::kernel_btf();
    setup.attach = probes::attach_all(&mut loaded.ebpf, &mut loaded.links, selected, btf.as_ref());
    // The user's fentry attachments, handed to the tracer, which holds them for the run.
    let mut fentry_links = Vec::new();
    if !user.is_empty() || !plan.stop_functions.is_empty() {
        let kernel = setup.probe_list.insert(user_probes::read_probe_list());
        setup.refused.extend(
            plan.stop_functions
                .iter()
                .filter_map(|f| kernel.check_stop(f).err()),
        );
        if setup.refused.is_empty() && !user.is_empty() {
            match user_probes::attach(&mut loaded.ebpf, user, kernel, btf.as_ref()) {
                Ok(attached) => {
                    setup.tracepoint_slots = attached.tracepoint_slots;
                    fentry_links = attached.fentry_links;
                    setup.attach.extend(attached.records);
                }
                Err(errors) => setup.refused = errors,
            }
        }
    }
    setup.attach_fork_follower(&mut loaded.ebpf, &mut loaded.links);
    let mut tracer = Tracer::new(loaded);
    tracer.keep_user_links(fentry_links);
    if let Err(e) = tracer.set_plan_stack_mode(plan.stacks) {
        tracing::warn!("setting the stack mode {:?}: {e}", plan.stacks);
    }
    if plan.program_stats {
        match tracer.enable_program_stats() {
            Ok(()) => setup.logs.push((
                "info",
                "the kernel times every run of the eBPF programs (--program-stats)".into(),
            )),
            Err(e) => {
                let message = format!("no program statistics: {e}");
                tracing::warn!("{message}");
                setup.logs.push(("warn", message));
            }
        }
    }
    tracer
}

/// The first record: the agent, the kernel and the clocks.
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
