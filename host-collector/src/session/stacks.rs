//! A session's kernel stacks: the raw addresses each agent sent, symbolized once
//! against the guest's kallsyms (with file:line when a vmlinux with DWARF was given),
//! counted per workload and probe, and written to `stacks.jsonl` as events first
//! have them.

use std::io::Write;

use guest_kernel::kallsyms::Kallsyms;
use guestscope_common::event::ProbeKind;

use super::Session;

static EMPTY: Vec<String> = Vec::new();

impl<W: Write> Session<W> {
    /// The symbolized frames of stack `id` (empty if unknown).
    pub fn stack(&mut self, id: i32) -> &[String] {
        if id < 0 {
            return &EMPTY;
        }
        let id = id as u32;
        if !self.stacks_sym.contains_key(&id) {
            let Some(ips) = self.stacks_raw.get(&id) else {
                return &EMPTY;
            };
            let frames = match &self.kallsyms {
                Some(k) => symbolize(k, self.lines.as_ref(), ips),
                None => ips.iter().map(|ip| format!("{ip:#x}")).collect(),
            };
            self.stacks_sym.insert(id, frames);
        }
        &self.stacks_sym[&id]
    }

    /// Every stack id received, in order (the ids of `stacks.jsonl`).
    pub fn stack_ids(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.stacks_raw.keys().map(|&id| id as i32).collect();
        ids.sort_unstable();
        ids
    }

    /// The symbolized frames of stack `id`, innermost first (empty if unknown), from
    /// the cache when [`Session::stack`] filled it, else symbolized now.
    pub fn stack_frames(&self, id: i32) -> Vec<String> {
        if id < 0 {
            return Vec::new();
        }
        let id = id as u32;
        if let Some(frames) = self.stacks_sym.get(&id) {
            return frames.clone();
        }
        match (self.stacks_raw.get(&id), &self.kallsyms) {
            (Some(ips), Some(k)) => symbolize(k, self.lines.as_ref(), ips),
            (Some(ips), None) => ips.iter().map(|ip| format!("{ip:#x}")).collect(),
            (None, _) => Vec::new(),
        }
    }

    /// Sends `stacks.jsonl`'s lines, each stack once, to `out` as events first have
    /// them (the end of the run writes the file again whole, with the spin_lock
    /// classes).
    pub fn write_stacks_to(&mut self, out: Box<dyn Write + Send>) {
        self.stacks_out = Some(out);
    }

    /// Writes stack `id` to `stacks_out` if it is known and not written yet.
    pub(super) fn write_stack_once(&mut self, id: i32) -> std::io::Result<()> {
        if self.stacks_out.is_none()
            || id < 0
            || !self.stacks_raw.contains_key(&(id as u32))
            || !self.stacks_written.insert(id as u32)
        {
            return Ok(());
        }
        let line = crate::run_files::stacks::StackLine {
            run_id: self.run_id.clone(),
            stack_id: id,
            frames: self.stack(id).to_vec(),
            spin_lock_class: None,
        };
        let out = self.stacks_out.as_mut().expect("checked above");
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")
    }

    /// The `n` most frequent stacks of `probe` in workload `idx`: (count, frames).
    pub fn top_stacks(
        &mut self,
        idx: usize,
        probe: &str,
        n: usize,
    ) -> Vec<(u64, i32, Vec<String>)> {
        let mut counts: Vec<(u64, i32)> = self.workloads[idx]
            .stack_counts
            .iter()
            .filter(|((p, _), _)| p == probe)
            .map(|((_, id), c)| (*c, *id))
            .collect();
        counts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        counts.truncate(n);
        counts
            .into_iter()
            .map(|(c, id)| (c, id, self.stack(id).to_vec()))
            .collect()
    }

    /// Every (stack id, count) of `probe` in workload `idx`, most frequent first.
    pub fn stacks_of(&self, idx: usize, probe: ProbeKind) -> Vec<(i32, u64)> {
        let mut v: Vec<(i32, u64)> = self.workloads[idx]
            .stack_counts
            .iter()
            .filter(|((p, _), _)| p == probe.name())
            .map(|((_, id), c)| (*id, *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// `ips` as `symbol+0xoff` frames, each with its file:line when `lines` has them
/// (the KASLR slide from kallsyms' `_text`).
fn symbolize(
    k: &Kallsyms,
    lines: Option<&guest_kernel::dwarf_lines::DwarfLines>,
    ips: &[u64],
) -> Vec<String> {
    let with_lines = lines.zip(k.by_name("_text").map(|t| t.addr));
    match with_lines {
        Some((lines, text)) => {
            let slide = lines.slide(text);
            k.symbolize_stack_with(ips, |ip, probed| lines.describe(ip, slide, !probed))
        }
        None => k.symbolize_stack(ips),
    }
}
