//! The lab's side of the user's own questions while the run goes on (`--probe`,
//! `--snapshot-at`, `--read`): the probe list the agent sent kept in the host's
//! cache, the agent's refusals, and the stops taken through the gdbstub while each
//! workload runs ([`crate::experiments::stops`]), merged into one run. Their checks
//! before the boot are [`super::question_checks`].

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guestscope_common::event::ProbeKind;
use guestscope_common::wire::ProbeAttach;
use qemu_gdb_client::GdbEndpoint;

use super::holds_thread::{Snapshotter, spawn_holding};
use super::options::LabOptions;
use super::validate::Validated;
use crate::experiments;
use crate::experiments::snapshots::SnapshotRun;
use crate::session::Session;

/// Keeps the probe list the agent sent (runs with `--probe`) in the host's cache, so
/// the next run with this kernel checks names before booting.
pub(crate) fn cache_probe_list<W: io::Write>(o: &LabOptions, session: &Session<W>) {
    let Some(artifact) = session
        .artifacts
        .get(guestscope_common::probe_list::ARTIFACT)
        .filter(|a| a.complete)
    else {
        return;
    };
    match serde_json::from_slice(&artifact.data) {
        Ok(list) => {
            let list = crate::probe_catalog::with_btf_functions(list, session);
            let dir = o.probe_cache.as_deref();
            if let Err(e) = crate::probe_catalog::store(dir, &o.kernel, &list) {
                tracing::warn!("caching the guest's probe list: {e}");
            }
            if let Some(btf) = session.btf_blob()
                && let Err(e) = crate::probe_catalog::store_btf(dir, &o.kernel, btf)
            {
                tracing::warn!("caching the guest's BTF: {e}");
            }
        }
        Err(e) => tracing::warn!("the guest's probe list does not parse: {e}"),
    }
}

/// Why each probe the user named could not be attached (the agent said so and ran no
/// workload); empty when all were.
pub fn refused_user_probes<W: io::Write>(session: &Session<W>) -> Vec<String> {
    refusals(&session.probes)
}

/// The agent's refusals among its attach records: each probe or stop of the user's it
/// could not use is sent as an unattached `kprobe` record whose note says why.
pub fn refusals<'a>(attach: impl IntoIterator<Item = &'a ProbeAttach>) -> Vec<String> {
    attach
        .into_iter()
        .filter(|a| !a.attached && ProbeKind::Kprobe.name() == a.probe)
        .map(|a| a.note.clone())
        .collect()
}

/// The host times a workload's stops are measured against.
#[derive(Clone, Copy)]
pub(crate) struct StopTimes {
    /// QEMU's launch: the zero of the run's host times.
    pub(crate) launched: Instant,
    /// When the workload's start record arrived.
    pub(crate) arrived: Instant,
}

/// Starts the user's stops (`--snapshot-at`) for the workload that has just started.
/// `paused` is set while the thread runs (nothing is written to the guest meanwhile).
pub(crate) fn start_stops<W: io::Write>(
    session: &Session<W>,
    o: &LabOptions,
    v: &Validated,
    gdb: GdbEndpoint,
    times: StopTimes,
    paused: &Arc<std::sync::atomic::AtomicBool>,
    types: Option<&Result<Arc<GuestTypes>, String>>,
) -> Option<Snapshotter> {
    let w = session.workloads.last().filter(|w| w.exited.is_none())?;
    let tgid = w.started.pid;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (kallsyms, types) = match (session.kallsyms.clone(), types) {
        (Some(k), Some(Ok(t))) => (k, t.clone()),
        (_, Some(Err(e))) => {
            let why = e.clone();
            let thread = std::thread::spawn(move || Err(why));
            return Some(Snapshotter::new(session, tgid, done, thread));
        }
        _ => {
            let why = "the guest's kallsyms or BTF did not arrive before the workload".to_string();
            let thread = std::thread::spawn(move || Err(why));
            return Some(Snapshotter::new(session, tgid, done, thread));
        }
    };
    let req = experiments::stops::StopsRequest {
        sites: o.stop_at.clone(),
        reads: v.reads.clone(),
        per_site: o.stops_per_site,
        condition: match &o.stop_comm {
            Some(c) => experiments::stops::Condition::Comm(c.clone()),
            None => experiments::stops::Condition::Tgid(tgid),
        },
        max_other_hits: 1000,
        hit_timeout: Duration::from_millis(250),
        hold: super::question_checks::hold_ms(o)
            .map(|ms| (times.arrived, Duration::from_millis(ms))),
    };
    let flag = done.clone();
    tracing::debug!(tgid, sites = ?req.sites, "starting the user's stops");
    let thread = spawn_holding(paused, move || {
        experiments::stops::take(
            gdb,
            &kallsyms,
            &types.btf,
            &types.offsets,
            &req,
            times.launched,
            &flag,
        )
        .map_err(|e| e.to_string())
    });
    Some(Snapshotter::new(session, tgid, done, thread))
}

/// The guest's types, parsed once a run for every workload's stops (the parse takes
/// longer than a workload's hold before exec).
pub struct GuestTypes {
    /// The guest's BTF.
    pub btf: Arc<guest_kernel::btf::Btf>,
    /// `task_struct`'s layout in it.
    pub offsets: guest_kernel::btf::TaskOffsets,
}

/// The guest's types once its BTF has arrived (`None` before).
pub(crate) fn guest_types<W: io::Write>(
    session: &Session<W>,
) -> Option<Result<Arc<GuestTypes>, String>> {
    Some(
        session
            .btf()?
            .map_err(|e| format!("the guest's BTF: {e}"))
            .and_then(|btf| {
                let offsets = btf
                    .task_offsets()
                    .map_err(|e| format!("no task_struct layout from the guest's BTF: {e}"))?;
                Ok(Arc::new(GuestTypes { btf, offsets }))
            }),
    )
}

/// The user's stops of every workload as one run (holds and stops in order); the
/// workloads whose stops failed are named in its `ended`.
pub(crate) fn merge_stops(runs: Vec<Result<SnapshotRun, String>>) -> Result<SnapshotRun, String> {
    if runs.is_empty() {
        return Err("no workload ran".into());
    }
    let mut merged: Option<SnapshotRun> = None;
    let mut ended = Vec::new();
    let mut errors = Vec::new();
    for run in runs {
        match run {
            Ok(r) => {
                ended.push(format!("pid {}: {}", r.target_tgid, r.ended));
                match merged.as_mut() {
                    None => merged = Some(r),
                    Some(m) => {
                        m.snapshots.extend(r.snapshots);
                        m.holds.extend(r.holds);
                        m.other_hits += r.other_hits;
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let Some(mut m) = merged else {
        errors.dedup();
        return Err(errors.join("; "));
    };
    ended.extend(errors.into_iter().map(|e| format!("failed: {e}")));
    m.ended = ended.join("; ");
    Ok(m)
}
