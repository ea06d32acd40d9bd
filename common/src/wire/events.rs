//! A fast path for the payload of `Events` records, byte for byte what postcard
//! writes (the tests compare both on random input and at every varint boundary).
//!
//! Events are nearly all of a stream; serde's generic path costs about 1 µs per event
//! in a TCG guest, this one a fraction of it. Records of every other kind go through
//! postcard.

use std::sync::OnceLock;

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
        // [seq 0: one byte][variant index][length 0: one byte]
        bytes[1..bytes.len() - 1].to_vec()
    })
}

/// postcard's variable-length integer (LEB128): seven bits a byte, low bits first,
/// the top bit set on every byte but the last.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// postcard's signed integers: zigzag, then [`varint`].
fn zigzag_i32(v: i32) -> u64 {
    u64::from(((v << 1) ^ (v >> 31)) as u32)
}

/// The payload of `Record { seq, body: Body::Events(events) }`.
pub(super) fn encode(seq: u64, events: &[RawEvent]) -> Vec<u8> {
    let variant = events_variant();
    let mut out = Vec::with_capacity(10 + variant.len() + 10 + events.len() * 48);
    varint(&mut out, seq);
    out.extend_from_slice(variant);
    varint(&mut out, events.len() as u64);
    for e in events {
        varint(&mut out, e.ts_ns);
        varint(&mut out, e.arg);
        varint(&mut out, e.ip);
        varint(&mut out, u64::from(e.kind));
        varint(&mut out, u64::from(e.cpu));
        varint(&mut out, u64::from(e.pid));
        varint(&mut out, u64::from(e.tid));
        varint(&mut out, zigzag_i32(e.stack_id));
        varint(&mut out, u64::from(e.flags));
        // A byte array is a tuple of u8s: one byte each, no length.
        out.extend_from_slice(&e.comm);
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn postcard_payload(seq: u64, events: Vec<RawEvent>) -> Vec<u8> {
        postcard::to_allocvec(&Record {
            seq,
            body: Body::Events(events),
        })
        .unwrap()
    }

    fn event(v: [u64; 3], w: [u32; 5], stack_id: i32, comm: [u8; 16]) -> RawEvent {
        RawEvent {
            ts_ns: v[0],
            arg: v[1],
            ip: v[2],
            kind: w[0],
            cpu: w[1],
            pid: w[2],
            tid: w[3],
            stack_id,
            flags: w[4],
            comm,
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
            prop_assert_eq!(encode(seq, &events), postcard_payload(seq, events.clone()));
        }
    }
}
