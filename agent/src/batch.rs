//! Grouping events into `Events` records: at most [`MAX_EVENTS`] events, and no event
//! waits more than [`MAX_AGE`] before it is sent. Each event is packed as it joins
//! ([`PackedBatch`]), so the batch is the record's bytes, ready to send.

use std::time::{Duration, Instant};

use guestscope_common::{
    CachedEvent, RawEvent, STAGED_EVENTS,
    wire::{EventArgs, packed::PackedBatch},
};

/// Most events in one `Events` record: a full batch of the fopen loop's events packs
/// into about 23 KB, one write ([`crate::packet_size::MAX_WRITE`]). Each write is a
/// vsock send, which the guest's kernel hands to a worker that preempts the agent;
/// at 1024 (16 KiB writes) the agent made twice as many, and was preempted about a
/// third more often per event.
pub const MAX_EVENTS: usize = 2048;
/// Longest time the first event of a batch waits before the batch is sent.
pub const MAX_AGE: Duration = Duration::from_millis(50);

/// Events collected for the next `Events` record.
#[derive(Debug)]
pub struct Batcher {
    events: PackedBatch,
    /// The last sent batch, emptied, for the batch after the current one.
    spare: PackedBatch,
    args: Vec<EventArgs>,
    opened: Option<Instant>,
    max_events: usize,
    max_age: Duration,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher::new(MAX_EVENTS, MAX_AGE)
    }
}

impl Batcher {
    /// A batcher with the given limits (`max_events` ≥ 1).
    pub fn new(max_events: usize, max_age: Duration) -> Self {
        let max_events = max_events.max(1);
        Batcher {
            // Room for a staged run taken whole past the limit (see `push`).
            events: PackedBatch::with_capacity(max_events + STAGED_EVENTS),
            spare: PackedBatch::default(),
            args: Vec::new(),
            opened: None,
            max_events,
            max_age,
        }
    }

    /// [`Batcher::push_with_stack`] with the event's own stack id.
    #[cfg(test)]
    pub fn push(&mut self, event: &RawEvent, now: Instant) -> bool {
        self.push_with_stack(event, event.stack_id, now)
    }

    /// Adds an event read at `now`, with stack id `stack_id` in place of its own
    /// ([`PackedBatch::push_with_stack`]); returns true when the batch is full. A full
    /// batch still takes events: the rest of a staged run (fewer than
    /// [`STAGED_EVENTS`]) goes with it.
    #[inline]
    pub fn push_with_stack(&mut self, event: &RawEvent, stack_id: i32, now: Instant) -> bool {
        if self.events.is_empty() {
            self.opened = Some(now);
        }
        self.events.push_with_stack(event, stack_id);
        self.is_full()
    }

    /// Adds a staged run of cached hits read at `now`, each with the stack id
    /// `stack_id` gives it ([`PackedBatch::push_cached_run`]); returns true when the
    /// batch is full (a run is taken whole).
    #[inline]
    pub fn push_cached_run(
        &mut self,
        run: &[CachedEvent],
        stack_id: impl FnMut(&CachedEvent) -> i32,
        now: Instant,
    ) -> bool {
        if run.is_empty() {
            return self.is_full();
        }
        if self.events.is_empty() {
            self.opened = Some(now);
        }
        self.events.push_cached_run(run, stack_id);
        self.is_full()
    }

    /// Whether the batch holds `max_events` events.
    pub fn is_full(&self) -> bool {
        self.events.len() >= self.max_events
    }

    /// Whether the batch should be sent now (full, or its first event is `max_age` old).
    pub fn is_due(&self, now: Instant) -> bool {
        self.is_full() || self.deadline().is_some_and(|d| now >= d)
    }

    /// When the batch becomes due by age; `None` while empty.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.max_age)
    }

    /// Number of events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Adds the arguments of an event about to be [pushed](Batcher::push_with_stack); they go
    /// out with its batch.
    #[inline]
    pub fn push_args(&mut self, args: EventArgs) {
        self.args.push(args);
    }

    /// Takes the waiting events' arguments (before [`Batcher::take`]).
    pub fn take_args(&mut self) -> Vec<EventArgs> {
        std::mem::take(&mut self.args)
    }

    /// Takes the waiting events, leaving the batch empty (in the batch last given
    /// back, if any).
    pub fn take(&mut self) -> PackedBatch {
        self.opened = None;
        let next = std::mem::take(&mut self.spare);
        std::mem::replace(&mut self.events, next)
    }

    /// Gives back a taken batch once its events were sent: the next batch fills its
    /// buffer (no fresh pages to fault in per batch).
    pub fn give_back(&mut self, mut events: PackedBatch) {
        events.clear();
        if events.capacity() > self.spare.capacity() {
            self.spare = events;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guestscope_common::ProbeKind;

    pub(crate) fn ev(n: u64) -> RawEvent {
        RawEvent {
            stack_id: -1,
            ..RawEvent::new(ProbeKind::AllocFd, 1, n)
        }
    }

    #[test]
    fn a_batch_given_back_holds_the_batch_after_next() {
        let mut b = Batcher::new(4, MAX_AGE);
        let now = Instant::now();
        b.push(&ev(1), now);
        let first = b.take();
        let reused = first.capacity();
        assert!(reused > 0, "the first batch had room reserved");
        b.give_back(first);
        b.push(&ev(2), now);
        let second = b.take();
        assert_ne!(
            second.capacity(),
            reused,
            "the open batch had its own buffer"
        );
        b.push(&ev(3), now);
        let third = b.take();
        assert_eq!(
            third.capacity(),
            reused,
            "the given-back buffer, not a new one"
        );
        assert_eq!(third.events(), [ev(3)]);
    }

    #[test]
    fn full_at_max_events() {
        let t = Instant::now();
        let mut b = Batcher::new(3, MAX_AGE);
        assert!(!b.push(&ev(0), t));
        assert!(!b.push(&ev(1), t));
        assert!(!b.is_due(t));
        assert!(b.push(&ev(2), t));
        assert!(b.is_due(t));
        let got = b.take().events();
        assert_eq!(
            got.iter().map(|e| e.ts_ns).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(b.is_empty() && b.deadline().is_none());
    }

    #[test]
    fn a_staged_run_is_taken_whole_with_the_ids_given() {
        let t = Instant::now();
        let mut b = Batcher::new(3, MAX_AGE);
        assert!(
            !b.push_cached_run(&[], |_| 0, t),
            "an empty run adds nothing"
        );
        assert!(b.deadline().is_none(), "and opens no batch");
        let run: Vec<CachedEvent> = (0..5)
            .map(|n| CachedEvent {
                event: ev(n),
                cache_slot: n as u32,
                _pad: 0,
            })
            .collect();
        assert!(b.push_cached_run(&run, |c| 10 + c.cache_slot as i32, t));
        assert_eq!(b.deadline(), Some(t + MAX_AGE));
        let got = b.take().events();
        assert_eq!(
            got.iter()
                .map(|e| (e.ts_ns, e.stack_id))
                .collect::<Vec<_>>(),
            vec![(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)],
            "past max_events: a run is not cut"
        );
    }

    #[test]
    fn due_by_age_from_first_event() {
        let t = Instant::now();
        let mut b = Batcher::new(1024, Duration::from_millis(50));
        assert!(
            !b.is_due(t + Duration::from_secs(10)),
            "an empty batch is never due"
        );
        b.push(&ev(0), t);
        b.push(&ev(1), t + Duration::from_millis(40));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(50)));
        assert!(!b.is_due(t + Duration::from_millis(49)));
        assert!(b.is_due(t + Duration::from_millis(50)));
        b.take();
        b.push(&ev(2), t + Duration::from_millis(60));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(110)));
    }

    #[test]
    fn zero_limit_is_treated_as_one() {
        let mut b = Batcher::new(0, MAX_AGE);
        assert!(b.push(&ev(0), Instant::now()));
        assert_eq!(b.len(), 1);
    }
}
