//! The checks of the user's own questions before any boot (`--snapshot-at`,
//! `--read`, `--snapshot-comm`: the symbols in the cached probe list, the fields in
//! the cached BTF), and what they change in the plan (the hold before each
//! workload's exec, the built-in snapshots left out).

use guest_kernel::read_expr::ReadExpr;

use super::options::LabOptions;
use crate::experiments;
use crate::inputs::InputError;

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
