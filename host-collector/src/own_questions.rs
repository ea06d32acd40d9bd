//! The lab's side of the user's own questions (`--probe`, `--snapshot-at`, `--read`):
//! their checks before the boot, the probe list the agent sent kept in the host's
//! cache, the agent's refusals, and the stops taken through the gdbstub while each
//! workload runs ([`crate::experiments::stops`]), merged into one run.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guest_kernel::read_expr::ReadExpr;
use guestscope_common::event::ProbeKind;
use guestscope_common::wire::ProbeAttach;
use qemu_gdb_client::GdbEndpoint;

use crate::experiments;
use crate::experiments::snapshots::SnapshotRun;
use crate::inputs::InputError;
use crate::lab::{LabOptions, Snapshotter, Validated, spawn_holding};
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

/// Checks `--snapshot-at`, `--read` and `--snapshot-comm`; the parsed reads.
pub(crate) fn check_stops(o: &LabOptions) -> Result<Vec<ReadExpr>, InputError> {
    let bad = |m: String| Err(InputError::Stops(m));
    if o.stop_at.is_empty() {
        if !o.reads.is_empty() {
            return bad("--read needs --snapshot-at FUNCTION: where to read".into());
        }
        if o.stop_comm.is_some() {
            return bad("--snapshot-comm needs --snapshot-at FUNCTION".into());
        }
        return Ok(Vec::new());
    }
    if o.stop_at.len() > experiments::stops::MAX_SITES {
        return bad(format!(
            "--snapshot-at given {} times; at most {} (x86 has {} hardware breakpoints)",
            o.stop_at.len(),
            experiments::stops::MAX_SITES,
            experiments::stops::MAX_SITES
        ));
    }
    for f in &o.stop_at {
        if f.is_empty()
            || !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return bad(format!("--snapshot-at {f:?}: not a kernel function name"));
        }
    }
    if o.stops_per_site == 0 {
        return bad("--snapshots 0: at least one stop per site".into());
    }
    if let Some(list) = crate::probe_catalog::cached(o.probe_cache.as_deref(), &o.kernel) {
        let refused: Vec<String> = o
            .stop_at
            .iter()
            .filter_map(|f| list.check_stop(f).err())
            .collect();
        if !refused.is_empty() {
            return Err(InputError::ProbesRefused(refused.join("; ")));
        }
    }
    let reads: Vec<ReadExpr> = o
        .reads
        .iter()
        .map(|r| r.parse::<ReadExpr>().map_err(InputError::Read))
        .collect::<Result<_, _>>()?;
    check_read_types(o, &reads)?;
    Ok(reads)
}

/// Refuses a `--read` that fails on the types alone at every `--snapshot-at` site, by
/// the kernel's cached BTF (kept by an earlier run or `guestscope probes`); without
/// one, such a read shows its error at each stop.
fn check_read_types(o: &LabOptions, reads: &[ReadExpr]) -> Result<(), InputError> {
    if reads.is_empty() {
        return Ok(());
    }
    let Some(blob) = crate::probe_catalog::cached_btf(o.probe_cache.as_deref(), &o.kernel) else {
        return Ok(());
    };
    let btf = match guest_kernel::btf::Btf::parse(&blob) {
        Ok(btf) => btf,
        Err(e) => {
            tracing::warn!("the cached BTF does not parse, --read is not checked before boot: {e}");
            return Ok(());
        }
    };
    let refused: Vec<String> = reads
        .iter()
        .filter_map(|r| {
            let mut errors = o
                .stop_at
                .iter()
                .map(|f| guest_kernel::read_expr::check(&btf, Some(f), r));
            let first = errors.next()?.err()?;
            errors
                .all(|e| e.is_err())
                .then(|| format!("--read {:?}: {first}", r.text))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(InputError::ReadsRefused(refused.join("; ")))
    }
}

/// How long each workload waits before its exec when there are stops: time for the
/// host to connect to the gdbstub and put the breakpoints in (measured: about 0.1 s
/// on an idle host; a loaded one takes several times that).
pub const STOP_HOLD_MS: u64 = 1000;

/// The hold before each workload's exec: time to put the stop breakpoints in.
pub(crate) fn hold_ms(o: &LabOptions) -> Option<u64> {
    (!o.stop_at.is_empty()).then_some(STOP_HOLD_MS)
}

/// Whether the built-in `alloc_fd` snapshots are taken (the user's stops replace them:
/// the gdbstub takes one client at a time).
pub(crate) fn builtin_snapshots(o: &LabOptions) -> bool {
    o.snapshots && o.stop_at.is_empty()
}

/// Starts the user's stops (`--snapshot-at`) for the workload that has just started.
/// `paused` is set while the thread runs (nothing is written to the guest meanwhile).
pub(crate) fn start_stops<W: io::Write>(
    session: &Session<W>,
    o: &LabOptions,
    v: &Validated,
    gdb: GdbEndpoint,
    launched: Instant,
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
            return Some(Snapshotter { tgid, done, thread });
        }
        _ => {
            let why = "the guest's kallsyms or BTF did not arrive before the workload".to_string();
            let thread = std::thread::spawn(move || Err(why));
            return Some(Snapshotter { tgid, done, thread });
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
        hit_timeout: Duration::from_secs(2),
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
            launched,
            &flag,
        )
        .map_err(|e| e.to_string())
    });
    Some(Snapshotter { tgid, done, thread })
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
