//! The part of the summary about the probes the user named (`--probe`): per probed
//! function, its hits per workload, the values it saw when they were few, and its
//! most frequent kernel stack.

use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::ProbeKind;

use super::summary::WorkloadSummary;
pub use super::summary::{ArgSummary, UserProbeSummary};
use crate::session::Session;

/// The probed functions that were hit, by name, from the per-workload summaries.
pub fn collect<W: Write>(
    session: &Session<W>,
    workloads: &[WorkloadSummary],
) -> Vec<UserProbeSummary> {
    let mut by_name: BTreeMap<String, UserProbeSummary> = BTreeMap::new();
    for w in workloads {
        for (name, &hits) in w
            .events
            .iter()
            .filter(|(n, _)| ProbeKind::of_event(n).is_some_and(ProbeKind::is_user))
        {
            let p = by_name
                .entry(name.clone())
                .or_insert_with(|| UserProbeSummary {
                    name: name.clone(),
                    hits: 0,
                    by_workload: BTreeMap::new(),
                    arg: String::new(),
                    values: None,
                    more_args: Vec::new(),
                    top_stack: Vec::new(),
                    top_stack_hits: 0,
                });
            p.hits += hits;
            *p.by_workload.entry(w.name.clone()).or_default() += hits;
            if let Some(top) = w.top_stacks.get(name).and_then(|s| s.first())
                && top.count > p.top_stack_hits
            {
                p.top_stack = top.frames.clone();
                p.top_stack_hits = top.count;
            }
        }
    }
    // Parsing the guest's BTF (megabytes) is only worth it for a function's probe.
    let functions = by_name.keys().any(|n| {
        matches!(
            ProbeKind::of_event(n),
            Some(ProbeKind::Kprobe | ProbeKind::Kretprobe | ProbeKind::Fentry)
        )
    });
    let btf = functions
        .then(|| session.btf())
        .flatten()
        .and_then(Result::ok);
    for p in by_name.values_mut() {
        p.arg = btf
            .as_ref()
            .and_then(|b| arg_meaning(b, &p.name))
            .unwrap_or_default();
        let seen = session.user_probe_values.get(&p.name);
        p.values = seen.and_then(|v| v.first()).and_then(few);
        let rest = seen.map_or(&[][..], |v| v.get(1..).unwrap_or(&[]));
        if !rest.is_empty() {
            let names = btf.as_ref().and_then(|b| more_arg_names(b, &p.name));
            p.more_args = rest
                .iter()
                .enumerate()
                .filter_map(|(i, values)| {
                    let name = match &names {
                        Some(names) => names.get(i)?.clone(),
                        None => REGISTERS[i].to_string(),
                    };
                    Some(ArgSummary {
                        name,
                        values: few(values),
                    })
                })
                .collect();
        }
    }
    by_name.into_values().collect()
}

/// The registers of arguments 1 to 5 (x86-64 calling convention).
const REGISTERS: [&str; 5] = ["rsi", "rdx", "rcx", "r8", "r9"];

/// `values` in hex with their hits, if few.
fn few(values: &crate::session::ArgValues) -> Option<BTreeMap<String, u64>> {
    (!values.many).then(|| {
        values
            .counts
            .iter()
            .map(|(value, n)| (format!("{value:#x}"), *n))
            .collect()
    })
}

/// Arguments 1 to 5 of the function of probe `name` as its BTF prototype declares
/// them (as many as it has); `None` at a kprobe past the entry, or without a prototype.
fn more_arg_names(btf: &guest_kernel::btf::Btf, name: &str) -> Option<Vec<String>> {
    let f = name
        .strip_prefix("fentry:")
        .or_else(|| name.strip_prefix("kprobe:").filter(|f| !f.contains('+')))?;
    let sig = btf.signature(f)?;
    Some((1..=REGISTERS.len()).map_while(|n| sig.param(n)).collect())
}

/// What a user probe's `arg` is for probe `name` (`kprobe:FUNC`, `kretprobe:FUNC`),
/// from FUNC's BTF prototype.
fn arg_meaning(btf: &guest_kernel::btf::Btf, name: &str) -> Option<String> {
    if let Some(f) = name.strip_prefix("kprobe:") {
        return match f.split_once('+') {
            // Inside the function rdi may hold anything by now.
            Some((_, offset)) => Some(format!("rdi at +{offset}")),
            None => btf.signature(f)?.param(0),
        };
    }
    if let Some(f) = name.strip_prefix("fentry:") {
        return btf.signature(f)?.param(0);
    }
    let f = name.strip_prefix("kretprobe:")?;
    Some(format!("returns {}", btf.signature(f)?.returns))
}
