//! The report's "Guest kernel support" section: what the kernel offered, what was skipped and why.

use super::*;

/// What the guest kernel offered, and the experiments that did not run.
pub(super) fn render_support(md: &mut String, s: &Summary) {
    let k = &s.kernel;
    let yes_no = |v: Option<bool>| match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "not tried",
    };
    let _ = writeln!(
        md,
        "## Guest kernel support
"
    );
    let _ = writeln!(md, "| feature | available |\n|---|---|");
    let _ = writeln!(
        md,
        "| BTF (`/sys/kernel/btf/vmlinux`) | {} |",
        if k.btf { "yes" } else { "no" }
    );
    let _ = writeln!(md, "| fentry (spin_lock probe) | {} |", yes_no(k.fentry));
    let _ = writeln!(md, "| kprobes | {} |", yes_no(k.kprobes));
    let _ = writeln!(
        md,
        "| tracepoints (exceptions:page_fault_*) | {} |",
        yes_no(k.tracepoints)
    );
    let _ = writeln!(md, "| stack unwinder | {} |", unwinder_line(k));
    for c in &k.symbols {
        let _ = writeln!(
            md,
            "| symbol `{}` ({}) | {} |",
            c.symbol,
            c.needed_by,
            yes_no(c.present)
        );
    }
    let _ = writeln!(
        md,
        "\nProbes: {}.\n",
        k.probes.join("; ").replace('|', "\\|")
    );
    if s.skipped.is_empty() {
        let _ = writeln!(md, "Every experiment ran.\n");
    } else {
        let _ = writeln!(md, "### Skipped\n");
        let _ = writeln!(md, "| experiment | why |\n|---|---|");
        for x in &s.skipped {
            let _ = writeln!(
                md,
                "| {} | {} |",
                x.experiment,
                x.reason.replace('|', "\\|")
            );
        }
        let _ = writeln!(md);
    }
}

/// The unwinder row: which one, and what the agent did for it.
fn unwinder_line(k: &crate::experiments::support::KernelSupport) -> String {
    use guest_kernel::unwinder::Unwinder;
    let name = match k.unwinder {
        Some(Unwinder::Orc) => "ORC",
        Some(Unwinder::FramePointer) => "frame pointers",
        Some(Unwinder::Guess) => "guess",
        None => return "unknown (no kallsyms)".to_string(),
    };
    match k.callers_recovered {
        Some(n) if n > 0 => format!(
            "{name}: {n} events' stacks lacked the probed function's caller at its entry; \
             it was put back from the return address the probe read"
        ),
        Some(_) if k.unwinder.is_some_and(Unwinder::misses_entry_caller) => {
            format!("{name}: no stack needed its caller put back")
        }
        _ => name.to_string(),
    }
}
