//! Kernel stacks: each stack id is sent once, as a `Stack` record, before the first
//! `Events` record that refers to it.
//!
//! Ids come from `bpf_get_stackid` without `BPF_F_REUSE_STACKID`, so an id, once
//! handed out, keeps naming the same stack for the life of the map.

use std::{borrow::Borrow, collections::HashSet, io::Write};

use aya::maps::{MapData, StackTraceMap};
use guestscope_common::{RawEvent, wire::Body};

use crate::stream::{Stream, StreamError};

/// Somewhere stacks can be read by id.
pub trait StackSource {
    /// The return addresses of stack `id`, innermost first; `None` if it is unknown.
    fn stack(&self, id: u32) -> Option<Vec<u64>>;
}

impl<T: Borrow<MapData>> StackSource for StackTraceMap<T> {
    fn stack(&self, id: u32) -> Option<Vec<u64>> {
        match self.get(&id, 0) {
            Ok(trace) => Some(trace.frames().iter().map(|f| f.ip).collect()),
            Err(e) => {
                tracing::debug!(id, error = %e, "stack id not in the stack map");
                None
            }
        }
    }
}

/// Remembers which stack ids were already sent.
#[derive(Debug, Default)]
pub struct StackDedup {
    sent: HashSet<u32>,
}

impl StackDedup {
    /// The valid stack ids in `events` not seen before, in order of first use; they are
    /// marked as seen.
    pub fn new_ids(&mut self, events: &[RawEvent]) -> Vec<u32> {
        let mut ids = Vec::new();
        for e in events {
            if e.stack_id >= 0 && self.sent.insert(e.stack_id as u32) {
                ids.push(e.stack_id as u32);
            }
        }
        ids
    }

    /// Number of distinct ids seen.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether no id was seen yet.
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }
}

/// What sending one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSent {
    /// Events sent.
    pub events: u64,
    /// `Stack` records sent.
    pub stacks: u64,
    /// New stack ids that could not be read.
    pub stacks_missing: u64,
}

/// Sends the stacks `events` need that were not sent before, then `events` as one
/// `Events` record (nothing at all when `events` is empty).
pub fn send_batch<W: Write>(
    events: Vec<RawEvent>,
    dedup: &mut StackDedup,
    source: Option<&dyn StackSource>,
    stream: &mut Stream<W>,
) -> Result<BatchSent, StreamError> {
    let mut sent = BatchSent::default();
    if events.is_empty() {
        return Ok(sent);
    }
    for id in dedup.new_ids(&events) {
        match source.and_then(|s| s.stack(id)) {
            Some(ips) => {
                stream.send(Body::Stack { id, ips })?;
                sent.stacks += 1;
            }
            None => sent.stacks_missing += 1,
        }
    }
    sent.events = events.len() as u64;
    stream.send(Body::Events(events))?;
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use guestscope_common::wire::{DecodeError, FrameReader};

    use super::*;

    fn ev(stack_id: i32) -> RawEvent {
        RawEvent {
            ts_ns: 0,
            arg: 0,
            ip: 0,
            kind: 2,
            cpu: 0,
            pid: 1,
            tid: 1,
            stack_id,
            flags: 0,
            comm: [0; 16],
        }
    }

    struct Fake(HashMap<u32, Vec<u64>>);
    impl StackSource for Fake {
        fn stack(&self, id: u32) -> Option<Vec<u64>> {
            self.0.get(&id).cloned()
        }
    }

    #[test]
    fn new_ids_in_first_use_order_without_errors() {
        let mut d = StackDedup::default();
        let events = [ev(5), ev(3), ev(5), ev(-17), ev(i32::MIN), ev(0)];
        assert_eq!(d.new_ids(&events), vec![5, 3, 0]);
        assert_eq!(d.new_ids(&[ev(3), ev(9), ev(5)]), vec![9]);
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn stacks_go_once_and_before_their_events() {
        let fake = Fake(HashMap::from([(1, vec![0xa, 0xb]), (2, vec![0xc])]));
        let mut dedup = StackDedup::default();
        let mut stream = Stream::new(Vec::new());
        let a =
            send_batch(vec![ev(1), ev(2), ev(1)], &mut dedup, Some(&fake), &mut stream).unwrap();
        assert_eq!(a, BatchSent { events: 3, stacks: 2, stacks_missing: 0 });
        // Id 7 is unknown to the map: counted, not sent; id 1 is not sent again.
        let b =
            send_batch(vec![ev(1), ev(7), ev(-14)], &mut dedup, Some(&fake), &mut stream).unwrap();
        assert_eq!(b, BatchSent { events: 3, stacks: 0, stacks_missing: 1 });
        assert_eq!(
            send_batch(vec![], &mut dedup, Some(&fake), &mut stream).unwrap(),
            BatchSent::default()
        );

        let buf = stream.into_inner();
        let mut reader = FrameReader::new(buf.as_slice());
        let mut bodies = Vec::new();
        loop {
            match reader.next_record() {
                Ok(r) => bodies.push(r.body),
                Err(DecodeError::Eof) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(bodies.len(), 4);
        assert_eq!(bodies[0], Body::Stack { id: 1, ips: vec![0xa, 0xb] });
        assert_eq!(bodies[1], Body::Stack { id: 2, ips: vec![0xc] });
        assert!(matches!(&bodies[2], Body::Events(e) if e.len() == 3));
        assert!(matches!(&bodies[3], Body::Events(e) if e.len() == 3));
    }

    #[test]
    fn without_a_stack_map_every_new_id_is_missing() {
        let mut stream = Stream::new(Vec::new());
        let s =
            send_batch(vec![ev(1), ev(2)], &mut StackDedup::default(), None, &mut stream).unwrap();
        assert_eq!(s, BatchSent { events: 2, stacks: 0, stacks_missing: 2 });
    }
}
