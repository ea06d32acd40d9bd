//! The report's "Coverage and losses" section: events received against sent, every
//! loss by kind and by probe, agent restarts, and the link's outages.

use guestscope_common::{ProbeCounters, plan::StackMode};

use super::*;

/// Events received against sent, every loss by kind, and the link's outages.
pub(super) fn render_coverage(md: &mut String, s: &Summary) {
    let l = &s.losses;
    let st = &s.stream;
    let _ = writeln!(md, "\n## Coverage and losses\n");
    let _ = writeln!(md, "| what | count |\n|---|---:|");
    let _ = writeln!(
        md,
        "| events received by the collector | {} |",
        st.events_received
    );
    render_stack_modes(md, s);
    if st.events_tallied > 0 {
        let _ = writeln!(
            md,
            "| hits only counted per stack in the kernel (`--stacks tallied` or `caller-tallied`: classified, no event line) | {} |",
            st.events_tallied
        );
    }
    if let Some(sent) = l.events_sent {
        let _ = writeln!(md, "| events sent by the agent | {sent} |");
    }
    if let Some(m) = l.events_missing {
        let _ = writeln!(md, "| events sent but not received | {m} |");
    }
    let _ = writeln!(
        md,
        "| events lost in the kernel (ring buffer full) | {} |",
        l.ring_full
    );
    let _ = writeln!(
        md,
        "| events without a stack (stack walk failed) | {} |",
        l.stack_failed
    );
    let _ = writeln!(
        md,
        "| probe hits skipped (another probe running on the CPU) | {} |",
        l.nested
    );
    let _ = writeln!(
        md,
        "| stream records missing (sequence gaps) | {} in {} gaps |",
        st.seq.missing, st.seq.gaps
    );
    let _ = writeln!(
        md,
        "| duplicate records dropped (resent after a reconnection) | {} |",
        st.seq.duplicates
    );
    let link = &st.link;
    let _ = writeln!(
        md,
        "| link outages (the agent reconnected and resent what was not acknowledged) | {} ({:.1} s without the link) |",
        link.outages.len(),
        link.total_gap_s()
    );
    let _ = writeln!(
        md,
        "| events dropped by the agent (link down past its spool bound) | {} in {} records |",
        l.spool_dropped_events, l.spool_dropped_records
    );
    let _ = writeln!(
        md,
        "| connections refused (not this run's agent) | {} |",
        link.refused.len()
    );
    if link.vm_restarts > 0 {
        let _ = writeln!(
            md,
            "| VM restarted for a link silent after a gdbstub hold (its vsock device set up again) | {} ({} silences ended after one) |",
            link.vm_restarts, link.vm_restarts_revived
        );
    }
    let _ = writeln!(
        md,
        "| events attributed to no workload | {} |",
        st.events_unattributed
    );
    render_probe_accounting(md, s);
    render_agent_restarts(md, &st.agent_restarts);
    if !link.outages.is_empty() {
        render_outages(md, link);
    }
    for why in &link.refused {
        let _ = writeln!(md, "\nRefused: {why}.");
    }
    if let Some(e) = &st.decode_error {
        let _ = writeln!(md, "\nThe stream ended with an error: `{e}`.");
    }
    if let Some(rate) = st.events_per_s {
        let _ = writeln!(
            md,
            "\n{} records, {} bytes; {:.0} events/s while workloads ran (guest clock).",
            st.records, st.bytes, rate
        );
    }
}

/// Per probe, every hit of a traced process received, lost in the kernel, or dropped
/// by the agent.
fn render_probe_accounting(md: &mut String, s: &Summary) {
    let r = &s.run;
    let counted: Vec<_> = s
        .probes
        .iter()
        .filter(|p| p.counters.is_some_and(|c| c.matched > 0))
        .collect();
    if !counted.is_empty() {
        let ring = if r.events_ring_bytes > 0 {
            format!(" (ring buffer: {} KiB)", r.events_ring_bytes / 1024)
        } else {
            String::new()
        };
        let _ = writeln!(
            md,
            "\nPer probe, every hit of a traced process is received, counted as lost in the kernel{ring}, or counted as dropped by the agent:\n"
        );
        let _ = writeln!(
            md,
            "| probe | hits (matched) | received | lost (ring full) | dropped (link down) | unaccounted |\n|---|---:|---:|---:|---:|---:|"
        );
        for p in counted {
            let c = p.counters.unwrap_or_default();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                p.name,
                c.matched,
                p.received,
                c.ring_full,
                p.spool_dropped,
                p.unaccounted.unwrap_or(0)
            );
        }
    }
}

/// Each time the agent died and the guest restarted it.
fn render_agent_restarts(md: &mut String, agent_restarts: &[crate::session::AgentRestart]) {
    for (i, r) in agent_restarts.iter().enumerate() {
        let before: Vec<String> = r
            .events_before
            .iter()
            .map(|(probe, n)| format!("{n} {probe}"))
            .collect();
        let _ = writeln!(
            md,
            "\nThe agent died and the guest restarted it ({}): events before it were kept ({}); \
             nothing was traced for {} between the last its predecessor was heard from and its start{}. \
             After a restart the losses above account for the new agent's events only: the counters died with the old one.",
            i + 1,
            if before.is_empty() {
                "none".into()
            } else {
                before.join(", ")
            },
            r.gap_s
                .map(|g| format!("{g:.3} s"))
                .unwrap_or_else(|| "an unknown time".into()),
            r.interrupted_workload
                .as_ref()
                .map(|w| format!("; workload {w} was running and its exit was never seen"))
                .unwrap_or_default()
        );
    }
}

/// Each time the link to the agent was lost, and how it came back.
fn render_outages(md: &mut String, link: &crate::stream::receive::LinkReport) {
    let _ = writeln!(
        md,
        "\nThe link to the agent was lost {} time(s):\n",
        link.outages.len()
    );
    for o in &link.outages {
        let restored = match (o.restored_host_s, o.gap_s) {
            (Some(r), Some(g)) => format!("restored at {r:.2} s ({g:.2} s without the link)"),
            _ => "never restored".into(),
        };
        let resumed = match (o.restarted_agent, o.resumed_from) {
            (Some(pid), _) => format!("; a restarted agent (pid {pid}) took over"),
            (None, Some(s)) => format!("; the agent resent from record {s}"),
            (None, None) => String::new(),
        };
        let agent = o
            .agent
            .as_ref()
            .map(|a| {
                format!(
                    "; the agent saw it break at {:.3} s guest time ({}) and reconnected after {} attempt(s), {:.2} s later",
                    a.lost_ns as f64 / 1e9,
                    a.why,
                    a.attempts,
                    a.restored_ns.saturating_sub(a.lost_ns) as f64 / 1e9
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "- lost at {:.2} s host time after {} records ({}), {restored}{resumed}{agent}.",
            o.lost_host_s, o.records_before, o.why
        );
    }
}

/// The rows of the stack modes that record hits without their own stacks, or check
/// the ones taken by caller: how many hits were recorded that way.
fn render_stack_modes(md: &mut String, s: &Summary) {
    let st = &s.stream;
    if s.run.stacks_off() {
        let _ = writeln!(
            md,
            "| of them, recorded without reading their stacks (`--stacks off`) | {} |",
            st.events_received
        );
    }
    let counted = |f: fn(&ProbeCounters) -> u64| -> u64 {
        s.probes
            .iter()
            .filter_map(|p| p.counters.as_ref())
            .map(f)
            .sum()
    };
    if s.run.stacks_by_caller() {
        let _ = writeln!(
            md,
            "| of them, with the walk of the first hit with their function, caller and way into the kernel (`--stacks caller` or `caller-tallied`: the frames between were not compared) | {} |",
            counted(|c| c.stack_cached)
        );
    }
    if s.run.stacks == Some(StackMode::CallerChecked) {
        let _ = writeln!(
            md,
            "| hits whose caller's first walk differs from their own walk (`--stacks caller-checked`) | {} of {} |",
            counted(|c| c.stack_cache_wrong),
            counted(|c| c.stack_cached)
        );
    }
}
