//! Exact instruction counts of the guest kernel, summed per function: what the
//! instruction-counting plugin (`xtask/plugins/insn_count.c`) wrote, named with the
//! guest's `/proc/kallsyms`, and what tracing added per event over an untraced run.
//!
//! The counts of a boot include its boot and its process starts. Two runs of each
//! condition, one of the loop's iterations and one of twice as many, differ by the
//! iterations alone: the traced difference less the untraced one is what tracing
//! added to that many iterations, to the instruction.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use guest_kernel::kallsyms::Kallsyms;

/// A kallsyms name as the table shows it: a BPF program (`bpf_prog_<tag>_<name>`) by
/// its name, and every BPF trampoline (`bpf_trampoline_<btf id>`) as one, since its id
/// differs between kernels.
fn function_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("bpf_prog_") {
        let program = rest.split_once('_').map_or(rest, |(_tag, program)| program);
        return format!("BPF program {program}");
    }
    if name.starts_with("bpf_trampoline_") {
        return "BPF trampolines".to_string();
    }
    name.to_string()
}

/// Instructions run per function, from the plugin's lines (`ADDRESS COUNT DISASSEMBLY`;
/// an address translated more than once has several lines), named with the boot's
/// kallsyms. Instructions no symbol covers count as `(unknown)`.
pub fn per_function(counts: &str, symbols: &Kallsyms) -> Result<BTreeMap<String, u64>> {
    let mut totals: BTreeMap<String, u64> = BTreeMap::new();
    for (number, line) in counts.lines().enumerate() {
        let mut fields = line.splitn(3, ' ');
        let (Some(address), Some(count)) = (fields.next(), fields.next()) else {
            bail!("line {}: not `ADDRESS COUNT ...`: {line:?}", number + 1);
        };
        let address = u64::from_str_radix(address, 16)
            .with_context(|| format!("line {}: address {address:?}", number + 1))?;
        let count: u64 = count
            .parse()
            .with_context(|| format!("line {}: count {count:?}", number + 1))?;
        let function = symbols.resolve(address).map_or_else(
            || "(unknown)".to_string(),
            |r| function_name(&r.symbol.name),
        );
        *totals.entry(function).or_default() += count;
    }
    Ok(totals)
}

/// One condition's two runs: per function, of `iterations` and of twice as many.
#[derive(Debug)]
pub struct Pair<'a> {
    /// The run of `iterations`.
    pub short: &'a BTreeMap<String, u64>,
    /// The run of twice as many.
    pub long: &'a BTreeMap<String, u64>,
}

impl Pair<'_> {
    /// Instructions of `function` the extra iterations took (negative: fewer, which
    /// timer ticks and background work can make).
    fn difference(&self, function: &str) -> i128 {
        let get = |m: &BTreeMap<String, u64>| i128::from(m.get(function).copied().unwrap_or(0));
        get(self.long) - get(self.short)
    }
}

/// One function's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The function (or BPF program).
    pub function: String,
    /// Instructions tracing added there, per traced event.
    pub added_per_event: f64,
    /// Instructions per loop iteration there, traced.
    pub traced_per_iteration: f64,
    /// Instructions per loop iteration there, untraced.
    pub untraced_per_iteration: f64,
}

/// Every function's row, the largest addition first: `iterations` is how many more the
/// long runs made, `events` how many more events the traced long run recorded.
pub fn added_per_event(traced: &Pair, untraced: &Pair, iterations: u64, events: u64) -> Vec<Row> {
    let functions: std::collections::BTreeSet<&String> =
        [traced.short, traced.long, untraced.short, untraced.long]
            .into_iter()
            .flat_map(|m| m.keys())
            .collect();
    let iterations = iterations.max(1) as f64;
    let events = events.max(1) as f64;
    let mut rows: Vec<Row> = functions
        .into_iter()
        .map(|f| {
            let t = traced.difference(f) as f64;
            let u = untraced.difference(f) as f64;
            Row {
                function: f.clone(),
                added_per_event: (t - u) / events,
                traced_per_iteration: t / iterations,
                untraced_per_iteration: u / iterations,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.added_per_event.total_cmp(&a.added_per_event));
    rows
}

/// Below this many instructions per iteration a function counts as not run by a loop:
/// what background work and timer ticks leave in a difference of two boots.
const NOT_RUN_PER_ITERATION: f64 = 0.5;

/// What tracing added per event, in two parts: in the functions only the traced loop
/// ran (the probes' own path: programs, helpers, trampolines, stack walks), and in the
/// functions the untraced loop runs too (more of the loop's own work, scheduling, and
/// boot-time loops whose length follows the host's timing, which differ from boot to
/// boot).
pub fn split(rows: &[Row]) -> (f64, f64) {
    rows.iter().fold((0.0, 0.0), |(own, shared), r| {
        if r.untraced_per_iteration.abs() < NOT_RUN_PER_ITERATION
            && r.traced_per_iteration >= NOT_RUN_PER_ITERATION
        {
            (own + r.added_per_event, shared)
        } else {
            (own, shared + r.added_per_event)
        }
    })
}

/// The table: the `shown` largest rows, the rest summed, and the total.
pub fn markdown(rows: &[Row], shown: usize) -> String {
    let mut out = String::from(
        "| kernel function | added per event | per iteration, traced | per iteration, untraced |\n|---|---:|---:|---:|\n",
    );
    let line = |name: &str, added: f64, traced: f64, untraced: f64| {
        format!("| {name} | {added:.1} | {traced:.1} | {untraced:.1} |\n")
    };
    for r in rows.iter().take(shown) {
        out += &line(
            &format!("`{}`", r.function),
            r.added_per_event,
            r.traced_per_iteration,
            r.untraced_per_iteration,
        );
    }
    let sum = |rows: &[Row]| {
        rows.iter().fold((0.0, 0.0, 0.0), |(a, t, u), r| {
            (
                a + r.added_per_event,
                t + r.traced_per_iteration,
                u + r.untraced_per_iteration,
            )
        })
    };
    if rows.len() > shown {
        let (a, t, u) = sum(&rows[shown..]);
        out += &line(
            &format!("the other {} functions", rows.len() - shown),
            a,
            t,
            u,
        );
    }
    let (a, t, u) = sum(rows);
    out += &line("**all of the kernel**", a, t, u);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
0000000000000000 T hidden
ffffffff81000000 T _text
ffffffff81288cb0 T copy_from_kernel_nofault
ffffffff81288e00 T next_function
ffffffffc0000c7c t bpf_prog_c98f91082567a239_spin_lock_fentry\t[bpf]
ffffffffc0002000 t bpf_trampoline_6442479278\t[bpf]
ffffffffc0003000 t bpf_trampoline_6442485274\t[bpf]
";

    #[test]
    fn programs_and_trampolines_are_named_as_the_table_shows_them() {
        assert_eq!(
            function_name("bpf_prog_c98f91082567a239_spin_lock_fentry"),
            "BPF program spin_lock_fentry"
        );
        assert_eq!(
            function_name("bpf_trampoline_6442479278"),
            "BPF trampolines"
        );
        assert_eq!(function_name("alloc_fd"), "alloc_fd");
    }

    #[test]
    fn counts_are_summed_per_function_and_bad_lines_are_refused() {
        let s = Kallsyms::parse(KALLSYMS).unwrap();
        let counts = "ffffffff81288cb0 10 nopl (%rax, %rax)\n\
                      ffffffff81288cb5 10 pushq %r12\n\
                      ffffffff81288cb0 5 nopl (%rax, %rax)\n\
                      ffffffffc0002004 7 pushq %rbp\n\
                      ffffffffc0003004 1 pushq %rbp\n\
                      ffffffff80000000 2 ud2\n\
                      ffffffffc0003008 1 ret\n";
        let totals = per_function(counts, &s).unwrap();
        assert_eq!(totals["copy_from_kernel_nofault"], 25);
        assert_eq!(totals["BPF trampolines"], 9, "both trampolines, one row");
        assert_eq!(totals["(unknown)"], 2);
        assert!(per_function("zz 1 x\n", &s).is_err());
        assert!(per_function("ffffffff81288cb0 many x\n", &s).is_err());
        assert!(per_function("ffffffff81288cb0\n", &s).is_err());
    }

    #[test]
    fn tracing_adds_the_traced_difference_less_the_untraced_one_per_event() {
        let m = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // 100 more iterations; 600 more events traced.
        let (ts, tl) = (
            m(&[("loop", 1_000), ("probe", 500), ("boot", 9_000)]),
            m(&[("loop", 2_050), ("probe", 60_500), ("boot", 9_000)]),
        );
        let (us, ul) = (
            m(&[("loop", 990), ("boot", 8_000)]),
            m(&[("loop", 1_990), ("boot", 8_000)]),
        );
        let rows = added_per_event(
            &Pair {
                short: &ts,
                long: &tl,
            },
            &Pair {
                short: &us,
                long: &ul,
            },
            100,
            600,
        );
        assert_eq!(rows[0].function, "probe");
        assert_eq!(rows[0].added_per_event, 100.0);
        assert_eq!(rows[0].traced_per_iteration, 600.0);
        let looped = rows.iter().find(|r| r.function == "loop").unwrap();
        assert!((looped.added_per_event - 50.0 / 600.0).abs() < 1e-9);
        assert_eq!(looped.untraced_per_iteration, 10.0);
        let boot = rows.iter().find(|r| r.function == "boot").unwrap();
        assert_eq!(boot.added_per_event, 0.0, "the boot cancels out");
        let (own, shared) = split(&rows);
        assert_eq!(own, 100.0, "the probe ran only traced");
        assert!(
            (shared - 50.0 / 600.0).abs() < 1e-9,
            "the loop ran both ways"
        );
        let table = markdown(&rows, 1);
        assert!(
            table.contains("| `probe` | 100.0 | 600.0 | 0.0 |"),
            "{table}"
        );
        assert!(table.contains("| the other 2 functions |"), "{table}");
        assert!(
            table.contains("| **all of the kernel** | 100.1 |"),
            "{table}"
        );
    }
}
