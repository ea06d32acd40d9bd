//! Hits the probes only counted ([`StackMode::Tallied`]): the kernel keeps one count per
//! stack-cache entry and CPU (the `TALLIES` map), and this book turns those counts into
//! hits per probe and stack id, the ids the entries' walks were given.
//!
//! An entry's count belongs to the walk the entry holds. When a new walk is kept in the
//! entry, its record carries the old walk's count
//! ([`guestscope_common::StackedEvent::replaced_tally`]) and the kernel starts the
//! count again; the records of a CPU arrive in the order its probes ran, so the book
//! still knows the old walk when it reads that record. What an entry counted since
//! its last walk is read from the map when a workload ends (its processes no longer
//! pass the probes' filter, and the ring buffer has been drained), and remembered, so
//! that a later read or replacement adds only what came after.
//!
//! [`StackMode::Tallied`]: guestscope_common::plan::StackMode::Tallied

use std::collections::BTreeMap;

use guestscope_common::{STACK_CACHE_ENTRIES, wire::Tally};

use crate::stacks::slot_position;

/// What one stack-cache entry of one CPU holds, as far as tallies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    /// The probe of the walk ([`guestscope_common::ProbeKind`] id).
    kind: u32,
    /// The walk's stack id (or the negative code of why it has none).
    stack_id: i32,
    /// The entry's count already added to the book.
    read: u64,
}

/// Counts per probe and stack, and what each entry holds.
#[derive(Debug, Default)]
pub struct TallyBook {
    /// At `cpu * STACK_CACHE_ENTRIES + index`; grows with the highest CPU seen.
    holders: Vec<Option<Holder>>,
    /// Hits per (probe, stack id) not sent yet.
    counts: BTreeMap<(u32, i32), u64>,
}

impl TallyBook {
    /// A walk of probe `kind` with stack id `stack_id` was kept in entry `index` of
    /// `cpu`, replacing a walk that had counted `replaced` hits since the entry's count
    /// was last reset.
    pub fn kept(&mut self, cpu: u32, index: u32, replaced: u64, kind: u32, stack_id: i32) {
        let Some(at) = slot_position(cpu, index) else {
            return;
        };
        if self.holders.len() <= at {
            let cpus = at / STACK_CACHE_ENTRIES as usize + 1;
            self.holders
                .resize(cpus * STACK_CACHE_ENTRIES as usize, None);
        }
        let old = self.holders[at].replace(Holder {
            kind,
            stack_id,
            read: 0,
        });
        match old {
            Some(h) => self.add(h.kind, h.stack_id, replaced.saturating_sub(h.read)),
            // The kernel counts only hits an entry answered, so an entry with a count
            // had a walk before; if the book missed it, the hits still count, under
            // the new walk's probe with no stack.
            None => self.add(kind, crate::stacks::UNKNOWN_SLOT_ID, replaced),
        }
    }

    /// The entries that hold a walk: `(cpu, index)`.
    pub fn held(&self) -> Vec<(u32, u32)> {
        let per_cpu = STACK_CACHE_ENTRIES as usize;
        self.holders
            .iter()
            .enumerate()
            .filter(|(_, h)| h.is_some())
            .map(|(at, _)| ((at / per_cpu) as u32, (at % per_cpu) as u32))
            .collect()
    }

    /// Entry `index` of `cpu` has counted `now` since its walk was kept: adds what was
    /// not read before.
    pub fn read(&mut self, cpu: u32, index: u32, now: u64) {
        let Some(Some(h)) = slot_position(cpu, index).and_then(|at| self.holders.get_mut(at))
        else {
            return;
        };
        let new = now.saturating_sub(h.read);
        h.read = now;
        let (kind, stack_id) = (h.kind, h.stack_id);
        self.add(kind, stack_id, new);
    }

    /// The hits counted since the last call, per probe and stack.
    pub fn take(&mut self) -> Vec<Tally> {
        std::mem::take(&mut self.counts)
            .into_iter()
            .map(|((kind, stack_id), hits)| Tally {
                kind,
                stack_id,
                hits,
            })
            .collect()
    }

    fn add(&mut self, kind: u32, stack_id: i32, hits: u64) {
        if hits > 0 {
            *self.counts.entry((kind, stack_id)).or_default() += hits;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPIN: u32 = 3;

    fn tally(kind: u32, stack_id: i32, hits: u64) -> Tally {
        Tally {
            kind,
            stack_id,
            hits,
        }
    }

    #[test]
    fn a_replaced_walk_gets_the_hits_counted_under_it() {
        let mut book = TallyBook::default();
        book.kept(0, 7, 0, SPIN, 1);
        // The entry counted 5 hits of stack 1, then another walk (stack 2) took it.
        book.kept(0, 7, 5, SPIN, 2);
        assert_eq!(book.take(), vec![tally(SPIN, 1, 5)]);
        assert_eq!(book.take(), vec![]);
    }

    #[test]
    fn reads_add_only_what_came_after_the_last_one() {
        let mut book = TallyBook::default();
        book.kept(1, 3, 0, SPIN, 4);
        assert_eq!(book.held(), vec![(1, 3)]);
        book.read(1, 3, 10);
        assert_eq!(book.take(), vec![tally(SPIN, 4, 10)]);
        // Another workload: 4 more, then the walk is replaced with 16 counted in all.
        book.read(1, 3, 14);
        book.kept(1, 3, 16, SPIN, 5);
        assert_eq!(book.take(), vec![tally(SPIN, 4, 6)]);
        // The new walk's count starts from 0.
        book.read(1, 3, 2);
        assert_eq!(book.take(), vec![tally(SPIN, 5, 2)]);
    }

    #[test]
    fn cpus_keep_their_own_entries_and_counts_merge_per_stack() {
        let mut book = TallyBook::default();
        book.kept(0, 9, 0, SPIN, 1);
        book.kept(2, 9, 0, SPIN, 1);
        book.read(0, 9, 3);
        book.read(2, 9, 4);
        // An entry no walk was kept in is not read.
        book.read(1, 9, 100);
        assert_eq!(book.take(), vec![tally(SPIN, 1, 7)]);
        assert_eq!(book.held(), vec![(0, 9), (2, 9)]);
    }

    #[test]
    fn hits_of_an_entry_the_book_missed_are_kept_without_a_stack() {
        let mut book = TallyBook::default();
        book.kept(0, 1, 8, SPIN, 6);
        assert_eq!(
            book.take(),
            vec![tally(SPIN, crate::stacks::UNKNOWN_SLOT_ID, 8)]
        );
        // Out-of-range places are ignored, not a panic.
        book.kept(u32::MAX, 0, 1, SPIN, 1);
        book.read(0, STACK_CACHE_ENTRIES, 1);
        assert_eq!(book.take(), vec![]);
    }
}
