//! The report's "eBPF programs' own time" table (`--program-stats`): per workload, each
//! program's runs and the time the kernel measured inside it.

use super::*;

/// One row per workload and program that ran; nothing when the run had no statistics.
pub(super) fn render_program_time(md: &mut String, s: &Summary) {
    if s.workloads.iter().all(|w| w.programs.is_empty()) {
        return;
    }
    let _ = writeln!(md, "\n### eBPF programs' own time\n");
    let _ = writeln!(
        md,
        "What the kernel timed inside each program while the workload ran (`--program-stats`, \
         `BPF_ENABLE_STATS`): every run, whichever process hit the probe, since the pid filter \
         is inside the program. The trampoline or kprobe that calls a program is outside its time.\n"
    );
    let _ = writeln!(
        md,
        "| workload | program | runs | ns per run | time inside (ms) |\n|---|---|---:|---:|---:|"
    );
    for w in &s.workloads {
        for p in &w.programs {
            let _ = writeln!(
                md,
                "| {} | `{}` | {} | {:.0} | {:.2} |",
                w.name,
                p.program,
                p.runs,
                p.ns_per_run,
                p.run_ns as f64 / 1e6
            );
        }
    }
}
