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

use crate::session::Session;

/// Writes the folded stacks of every workload in `session` to `out`; returns the
/// number of lines.
pub fn write<W: Write, O: Write>(session: &Session<W>, mut out: O) -> io::Result<u64> {
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for w in &session.workloads {
        for ((probe, stack_id), &count) in &w.stack_counts {
            let frames = session.stack_frames(*stack_id);
            let mut line = format!("{};{}", fold_name(&w.started.name), fold_name(probe));
            if frames.is_empty() {
                line.push_str(";[no stack]");
            }
            for f in frames.iter().rev() {
                line.push(';');
                line.push_str(&fold_name(function_of(f)));
            }
            *lines.entry(line).or_default() += count;
        }
    }
    for (line, count) in &lines {
        writeln!(out, "{line} {count}")?;
    }
    out.flush()?;
    Ok(lines.len() as u64)
}

/// `alloc_fd+0x5` → `alloc_fd`.
fn function_of(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
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
        assert_eq!(function_of("alloc_fd+0x5"), "alloc_fd");
        assert_eq!(function_of("0xffffffff81000000"), "0xffffffff81000000");
        assert_eq!(fold_name("a b;c"), "a_b_c");
    }
}
