//! Hits the probes only counted per stack ([`Body::Tallies`](guestscope_common::wire::Body::Tallies)):
//! added to their workload's counts per probe and per stack, which is what the
//! experiments classify, but with no line in `events.jsonl` (a tallied hit has no time,
//! thread or lock address of its own).

use std::io::Write;

use guestscope_common::{event::ProbeKind, wire::Tallies};

use super::event::count_by_name;
use super::{Session, UNKNOWN_PROBE};

impl<W: Write> Session<W> {
    /// Applies one workload's tallies. I/O errors writing `stacks.jsonl` are returned.
    pub(super) fn tallies(&mut self, t: Tallies) -> std::io::Result<()> {
        let idx = self.workload_of(t.pid);
        for c in t.counts {
            let name = ProbeKind::from_id(c.kind).map_or(UNKNOWN_PROBE, ProbeKind::name);
            let stack_id = if c.stack_id >= 0 {
                c.stack_id + self.stack_id_base as i32
            } else {
                c.stack_id
            };
            self.events_tallied += c.hits;
            count_by_name(&mut self.tallied_by_probe, name, c.hits);
            if stack_id >= 0 && !self.stacks_raw.contains_key(&(stack_id as u32)) {
                self.events_stack_unknown += c.hits;
            }
            match idx {
                Some(i) => {
                    let w = &mut self.workloads[i];
                    count_by_name(&mut w.events, name, c.hits);
                    count_by_name(&mut w.tallied, name, c.hits);
                    *w.tallied_stacks
                        .entry((name.to_string(), stack_id))
                        .or_default() += c.hits;
                    *w.stack_counts.entry((name.into(), stack_id)).or_default() += c.hits;
                }
                None => self.events_unattributed += c.hits,
            }
            self.write_stack_once(stack_id)?;
        }
        Ok(())
    }

    /// Hits of `probe` the current agent's probes tallied (since the last restart):
    /// with the events received, what its counters account for.
    pub fn tallied_of_current_agent(&self, probe: &str) -> u64 {
        let all = self.tallied_by_probe.get(probe).copied().unwrap_or(0);
        let before = self
            .restarts
            .last()
            .and_then(|r| r.tallied_before.get(probe).copied())
            .unwrap_or(0);
        all - before
    }
}
