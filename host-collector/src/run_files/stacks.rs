//! `stacks.jsonl`: each kernel stack of a run once, by the id `events.jsonl` gives it,
//! frames innermost first, with the subsystem the spin_lock analysis put it in, so a
//! query joins events to stacks instead of reading the frames on every line.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// One line of `stacks.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackLine {
    /// The run the stack belongs to.
    pub run_id: String,
    /// The id events refer to (`events.jsonl`'s `stack_id`).
    pub stack_id: i32,
    /// The symbolized frames, innermost first (`alloc_fd+0x5`, with ` (file:line)` when
    /// the guest's vmlinux had DWARF).
    pub frames: Vec<String>,
    /// For a stack spin_lock events had: the subsystem that took the lock, as the
    /// report's "spin_lock by subsystem" counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spin_lock_class: Option<String>,
}

/// A run's stacks by id: from their lines (the session's, when a run ends), or read
/// back from `stacks.jsonl`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stacks {
    by_id: BTreeMap<i32, StackLine>,
}

impl Stacks {
    /// Stacks from their lines (the last line of an id wins).
    pub fn from_lines(lines: impl IntoIterator<Item = StackLine>) -> Stacks {
        Stacks {
            by_id: lines.into_iter().map(|s| (s.stack_id, s)).collect(),
        }
    }

    /// Reads `stacks.jsonl`; a line that does not parse (cut off by a crash) is
    /// skipped, an I/O error ends the reading.
    pub fn read<R: BufRead>(reader: R) -> io::Result<Stacks> {
        let mut lines = Vec::new();
        for line in reader.lines() {
            if let Ok(s) = serde_json::from_str::<StackLine>(&line?) {
                lines.push(s);
            }
        }
        Ok(Stacks::from_lines(lines))
    }

    /// The frames of stack `id`, innermost first (empty for no stack or an unknown id).
    pub fn frames(&self, id: i32) -> &[String] {
        self.by_id.get(&id).map_or(&[], |s| s.frames.as_slice())
    }

    /// How many stacks there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Writes `stacks.jsonl`, one stack per line in id order.
    pub fn write<W: Write>(&self, mut out: W) -> io::Result<()> {
        for line in self.by_id.values() {
            serde_json::to_writer(&mut out, line)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let stacks = Stacks::from_lines([StackLine {
            run_id: "r".into(),
            stack_id: 4,
            frames: vec!["_raw_spin_lock+0x5".into(), "alloc_fd+0x3a".into()],
            spin_lock_class: Some("file system".into()),
        }]);
        let mut text = Vec::new();
        stacks.write(&mut text).unwrap();
        text.extend_from_slice(b"{\"run_id\":\"r\",\"stack_");
        let back = Stacks::read(text.as_slice()).unwrap();
        assert_eq!(back, stacks);
        assert_eq!(back.frames(4)[1], "alloc_fd+0x3a");
        assert!(back.frames(-1).is_empty() && back.frames(5).is_empty());
    }
}
