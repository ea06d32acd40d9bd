//! The fopen loop traced by the lab's gdb method (a gdbstub breakpoint on
//! [`GDB_SYMBOL`], the pid decided on the host) against guestscope on the same events
//! and untraced: how much faster guestscope is, and its share of the limit (the gdb
//! method's time over the untraced time), from the short loop the gdb method can run
//! and from the overhead part's long loop.

use super::*;

/// The gdb comparison from the overhead boot's runs and the gdb method's traces; a
/// gdb run that missed calls is a problem and has no figures.
pub(super) fn gdb_comparison(
    o: &BenchOptions,
    runs: &BTreeMap<String, Ran>,
    traces: &BTreeMap<String, FunctionTrace>,
    problems: &mut Vec<String>,
) -> GdbComparison {
    let n = o.gdb_iterations.max(2);
    let per_iter = |r: &Ran| r.elapsed_s().map(|s| s * 1e3 / n as f64);
    let gs = series(runs, "short-fd", o.gdb_reps, per_iter);
    let gs_all = series(runs, "short-all", o.gdb_reps, per_iter);
    let off = series(runs, "short-off", o.gdb_reps, per_iter);
    let gdb: Vec<Option<f64>> = (0..o.gdb_reps)
        .map(|rep| {
            let name = format!("gdb-{rep}");
            let t = traces.get(&name)?;
            if t.matching != n {
                problems.push(format!(
                    "{name}: the gdb method saw {} of the loop's {n} {GDB_SYMBOL} calls ({})",
                    t.matching, t.ended
                ));
                return None;
            }
            // n hits span n - 1 iterations.
            Some(t.matching_span_s * 1e3 / (n - 1) as f64)
        })
        .collect();
    let per_hit: Vec<Option<f64>> = vec![Some(1.0); o.gdb_reps];
    // The same loop, the same events, over many more iterations (the overhead part's
    // runs): the share of the limit from them, once the gdb method gave a limit.
    let long_n = o.fopen_iterations.max(1) as f64;
    let long_per_iter = |r: &Ran| r.elapsed_s().map(|s| s * 1e3 / long_n);
    let long_fd = series(runs, "fopen-fd", o.reps, long_per_iter);
    let long_off = series(runs, "fopen-off", o.reps, long_per_iter);
    let short_share = Spread::of(&stats::paired_ratios(
        &off,
        &gs.iter()
            .zip(&gdb)
            .map(|(g, d)| d.and(*g))
            .collect::<Vec<_>>(),
    ));
    let long_share = if gdb.iter().any(Option::is_some) {
        Spread::of(&stats::paired_ratios(&long_off, &long_fd))
    } else {
        None
    };
    GdbComparison {
        symbol: GDB_SYMBOL.into(),
        iterations: n,
        reps: o.gdb_reps,
        gdb_ms_per_iteration: Spread::of(&present(&gdb)),
        guestscope_ms_per_iteration: Spread::of(&present(&gs)),
        guestscope_all_ms_per_iteration: Spread::of(&present(&gs_all)),
        guestscope_all_faster: Spread::of(&stats::paired_ratios(&gdb, &gs_all)),
        untraced_ms_per_iteration: Spread::of(&present(&off)),
        guestscope_faster: Spread::of(&stats::paired_ratios(&gdb, &gs)),
        gdb_slowdown: Spread::of(&stats::paired_ratios(&gdb, &off)),
        // Only the repetitions the gdb method completed have a limit.
        long_iterations: if long_share.is_some() {
            o.fopen_iterations
        } else {
            0
        },
        share_of_limit: long_share.or_else(|| short_share.clone()),
        share_of_limit_short: short_share,
        long_untraced_ms_per_iteration: Spread::of(&present(&long_off)),
        long_guestscope_ms_per_iteration: Spread::of(&present(&long_fd)),
        gdb_ms_per_hit: Spread::of(&stats::paired_cost_per(&gdb, &off, &per_hit)),
        traces: traces.values().cloned().collect(),
    }
}
