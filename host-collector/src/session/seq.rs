//! Sequence-number accounting: every record carries `seq`, and any gap is counted.

use serde::{Deserialize, Serialize};

/// What happened to one record's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// The expected next record.
    InOrder,
    /// Records were skipped before this one (the count is in the tracker).
    AfterGap(u64),
    /// A record already seen (or older): drop it.
    Duplicate,
}

/// Tracks the sequence numbers of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqTracker {
    /// The next expected sequence number.
    pub next: u64,
    /// Records received in order or after a gap.
    pub accepted: u64,
    /// Records missing from the stream (sum of all gaps).
    pub missing: u64,
    /// Number of distinct gaps.
    pub gaps: u64,
    /// Records dropped as duplicates.
    pub duplicates: u64,
}

impl SeqTracker {
    /// Accounts for a record with sequence number `seq`.
    pub fn observe(&mut self, seq: u64) -> SeqVerdict {
        if seq < self.next {
            self.duplicates += 1;
            return SeqVerdict::Duplicate;
        }
        let skipped = seq - self.next;
        self.next = seq + 1;
        self.accepted += 1;
        if skipped == 0 {
            SeqVerdict::InOrder
        } else {
            self.missing += skipped;
            self.gaps += 1;
            SeqVerdict::AfterGap(skipped)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_gaps() {
        let mut t = SeqTracker::default();
        for s in 0..10 {
            assert_eq!(t.observe(s), SeqVerdict::InOrder);
        }
        assert_eq!((t.accepted, t.missing, t.gaps, t.duplicates), (10, 0, 0, 0));
    }

    #[test]
    fn gaps_and_duplicates_are_counted() {
        let mut t = SeqTracker::default();
        t.observe(0);
        assert_eq!(t.observe(3), SeqVerdict::AfterGap(2));
        assert_eq!(t.observe(3), SeqVerdict::Duplicate);
        assert_eq!(t.observe(1), SeqVerdict::Duplicate);
        assert_eq!(t.observe(4), SeqVerdict::InOrder);
        assert_eq!(t.observe(10), SeqVerdict::AfterGap(5));
        assert_eq!((t.accepted, t.missing, t.gaps, t.duplicates), (4, 7, 2, 2));
    }

    #[test]
    fn a_stream_not_starting_at_zero_is_a_gap() {
        let mut t = SeqTracker::default();
        assert_eq!(t.observe(5), SeqVerdict::AfterGap(5));
    }
}
