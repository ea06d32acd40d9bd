//! `stacks.folded`: every event's kernel stack in Brendan Gregg's folded format, one
//! line per distinct (workload, probe, stack) with its count, for `flamegraph.pl`,
//! inferno, speedscope or Perfetto's own importers:
//!
//! ```text
//! fopen;alloc_fd;entry_SYSCALL_64_after_hwframe;do_syscall_64;...;alloc_fd 200
//! ```
//!
//! The first two frames are the workload and the probe, so one file holds a flame
//! graph per workload and probe; kernel frames follow from the outermost caller to
//! the probed function, without their `+0x..` offsets (so call sites of one function
//! merge). An event without a stack ends in `[no stack]`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use guest_kernel::kallsyms::frame_function;

use crate::session::Session;

/// The frame of an event without a stack.
pub const NO_STACK: &str = "[no stack]";

/// One distinct (workload, probe, stack) of a run with its event count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoldedStack {
    /// The workload's name.
    pub workload: String,
    /// The probe's name.
    pub probe: String,
    /// The stack's functions from the outermost caller to the probed function
    /// (offsets dropped), or [`NO_STACK`] alone.
    pub functions: Vec<String>,
    /// Events with that stack.
    pub count: u64,
}

/// A symbolized stack (innermost first) as folded functions: outermost first,
/// offsets dropped, [`NO_STACK`] for an empty one.
pub fn functions_of(frames: &[String]) -> Vec<String> {
    if frames.is_empty() {
        return vec![NO_STACK.to_string()];
    }
    frames
        .iter()
        .rev()
        .map(|f| frame_function(f).to_string())
        .collect()
}

/// Every workload's stacks of the probes `wanted` picks.
pub fn stacks<W: Write>(session: &Session<W>, wanted: impl Fn(&str) -> bool) -> Vec<FoldedStack> {
    let mut out = Vec::new();
    for w in &session.workloads {
        for ((probe, stack_id), &count) in &w.stack_counts {
            if !wanted(probe) {
                continue;
            }
            out.push(FoldedStack {
                workload: w.started.name.clone(),
                probe: probe.to_string(),
                functions: functions_of(&session.stack_frames(*stack_id)),
                count,
            });
        }
    }
    out
}

/// Writes `stacks` in the folded format to `out`, one line per distinct path;
/// returns the number of lines.
pub fn write<O: Write>(stacks: &[FoldedStack], mut out: O) -> io::Result<u64> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks {
        let mut line = format!("{};{}", fold_name(&s.workload), fold_name(&s.probe));
        for f in &s.functions {
            line.push(';');
            // The marker keeps its space, as the format's readers split at the last one.
            if f == NO_STACK {
                line.push_str(NO_STACK);
            } else {
                line.push_str(&fold_name(f));
            }
        }
        *lines.entry(line).or_default() += s.count;
    }
    for (line, count) in &lines {
        writeln!(out, "{line} {count}")?;
    }
    out.flush()?;
    Ok(lines.len() as u64)
}

/// A frame name the format can carry: no `;` (the separator) and no spaces.
fn fold_name(name: &str) -> String {
    name.replace([';', ' '], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_at_the_offset_and_made_safe() {
        assert_eq!(frame_function("alloc_fd+0x5"), "alloc_fd");
        assert_eq!(frame_function("0xffffffff81000000"), "0xffffffff81000000");
        assert_eq!(fold_name("a b;c"), "a_b_c");
    }
}
