//! A fast path for the payload of `Events` records, byte for byte what postcard
//! writes (the tests compare both on random input and at every varint boundary): the
//! record's sequence number and variant, then the packed batch ([`super::packed`]) as
//! a byte string (its length, then its bytes).
//!
//! Events are nearly all of a stream; serde's generic path costs about 1 µs per event
//! in a TCG guest, this one a fraction of it. Records of every other kind but `Stack`
//! ([`super::stack_record`]) go through postcard.

use std::sync::OnceLock;

use super::packed::{self, PackedBatch, read_varint, varint};
use super::{Body, Record};
use crate::event::RawEvent;

/// postcard's bytes for the `Events` variant index (it depends on the order of
/// [`Body`]'s variants, so it is taken from postcard itself once).
fn events_variant() -> &'static [u8] {
    static VARIANT: OnceLock<Vec<u8>> = OnceLock::new();
    VARIANT.get_or_init(|| {
        let empty = Record {
            seq: 0,
            body: Body::Events(Vec::new()),
        };
        let bytes = postcard::to_allocvec(&empty).expect("an empty Events record encodes");
        // [seq 0: one byte][variant index][the empty batch's length: one byte][the
        // empty batch]
        let mut batch = Vec::new();
        packed::pack(&mut batch, &[]);
        bytes[1..bytes.len() - 1 - batch.len()].to_vec()
    })
}

/// Appends the payload of `Record { seq, body: Body::Events(events) }` to `out`.
pub(super) fn encode_into(out: &mut Vec<u8>, seq: u64, events: &[RawEvent]) {
    encode_packed_into(out, seq, &PackedBatch::from_events(events));
}

/// Appends the payload of the `Events` record `seq` whose batch was packed as its
/// events arrived: the record's sequence number and variant, then the packed batch as
/// a byte string (its length, then its bytes).
pub(super) fn encode_packed_into(out: &mut Vec<u8>, seq: u64, batch: &PackedBatch) {
    varint(out, seq);
    out.extend_from_slice(events_variant());
    varint(out, batch.packed_len() as u64);
    batch.write_to(out);
}

/// The payload of `Record { seq, body: Body::Events(events) }`.
#[cfg(test)]
pub(super) fn encode(seq: u64, events: &[RawEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, seq, events);
    out
}

/// The record of an `Events` payload, unpacked straight from its bytes; `None`
/// when the payload is not an `Events` record (or is not whole), for postcard's
/// generic path to decode or reject.
pub(super) fn decode(payload: &[u8]) -> Option<Record> {
    let (seq, a) = read_varint(payload)?;
    let variant = events_variant();
    let rest = payload[a..].strip_prefix(variant)?;
    let (n, b) = read_varint(rest)?;
    let body = &rest[b..];
    if body.len() as u64 != n {
        return None;
    }
    let events = packed::unpack(body).ok()?;
    Some(Record {
        seq,
        body: Body::Events(events),
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::packed::test_event as event;

    fn postcard_payload(seq: u64, events: Vec<RawEvent>) -> Vec<u8> {
        postcard::to_allocvec(&Record {
            seq,
            body: Body::Events(events),
        })
        .unwrap()
    }

    proptest! {
        #[test]
        fn a_batch_packed_as_it_came_encodes_as_its_events_do(
            seq in any::<u64>(),
            raw in proptest::collection::vec((any::<[u64; 3]>(), any::<[u32; 5]>(), any::<i32>(), any::<[u8; 16]>()), 0..300),
        ) {
            let events: Vec<RawEvent> = raw.into_iter().map(|(v, w, s, c)| event(v, w, s, c)).collect();
            let mut batch = PackedBatch::default();
            for e in &events {
                batch.push(e);
            }
            let mut packed = Vec::new();
            encode_packed_into(&mut packed, seq, &batch);
            prop_assert_eq!(&packed, &encode(seq, &events));
            prop_assert_eq!(packed, postcard_payload(seq, events));
        }
    }

    #[test]
    fn matches_postcard_at_every_varint_boundary() {
        let edges = [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            65_535,
            65_536,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        let mut events = Vec::new();
        for &v in &edges {
            let w = u32::try_from(v).unwrap_or(u32::MAX);
            for stack_id in [
                0,
                -1,
                1,
                i32::MIN,
                i32::MAX,
                -64,
                63,
                64,
                -65,
                -8_192,
                8_192,
            ] {
                events.push(event([v, v, v], [w; 5], stack_id, [0xff; 16]));
            }
        }
        for &seq in &edges {
            assert_eq!(
                encode(seq, &events),
                postcard_payload(seq, events.clone()),
                "seq {seq}"
            );
        }
        assert_eq!(encode(3, &[]), postcard_payload(3, Vec::new()));
    }

    proptest! {
        #[test]
        fn matches_postcard(
            seq in any::<u64>(),
            raw in proptest::collection::vec((any::<[u64; 3]>(), any::<[u32; 5]>(), any::<i32>(), any::<[u8; 16]>()), 0..40),
        ) {
            let events: Vec<RawEvent> = raw.into_iter().map(|(v, w, s, c)| event(v, w, s, c)).collect();
            let payload = encode(seq, &events);
            prop_assert_eq!(&payload, &postcard_payload(seq, events.clone()));
            let record = Record { seq, body: Body::Events(events) };
            prop_assert_eq!(decode(&payload), Some(record));
            // Cut short or with a byte more, the fast path leaves it to postcard.
            if !payload.is_empty() {
                prop_assert_eq!(decode(&payload[..payload.len() - 1]), None);
            }
            let mut longer = payload.clone();
            longer.push(0);
            prop_assert_eq!(decode(&longer), None);
        }
    }

    #[test]
    fn other_records_are_left_to_postcard() {
        let record = Record {
            seq: 5,
            body: Body::Heartbeat { monotonic_ns: 7 },
        };
        assert_eq!(decode(&postcard::to_allocvec(&record).unwrap()), None);
    }
}
