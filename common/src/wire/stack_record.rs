//! A fast path for `Stack` records, byte for byte what postcard writes (the tests
//! compare both on random input): the record's sequence number and variant, the
//! stack's id, then its frames as a sequence (their count, then each as a varint),
//! written from a slice, so a sender needs no vector of its own per stack.

use std::sync::OnceLock;

use super::packed::varint;
use super::{Body, Record};

/// postcard's bytes for the `Stack` variant index (it depends on the order of
/// [`Body`]'s variants, so it is taken from postcard itself once).
fn stack_variant() -> &'static [u8] {
    static VARIANT: OnceLock<Vec<u8>> = OnceLock::new();
    VARIANT.get_or_init(|| {
        let empty = Record {
            seq: 0,
            body: Body::Stack {
                id: 0,
                ips: Vec::new(),
            },
        };
        let bytes = postcard::to_allocvec(&empty).expect("an empty Stack record encodes");
        // [seq 0: one byte][variant index][id 0: one byte][no frames: one byte]
        bytes[1..bytes.len() - 2].to_vec()
    })
}

/// Appends the payload of `Record { seq, body: Body::Stack { id, ips } }` to `out`.
pub(super) fn encode_into(out: &mut Vec<u8>, seq: u64, id: u32, ips: &[u64]) {
    varint(out, seq);
    out.extend_from_slice(stack_variant());
    varint(out, u64::from(id));
    varint(out, ips.len() as u64);
    for &ip in ips {
        varint(out, ip);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn matches_postcard(
            seq in any::<u64>(),
            id in any::<u32>(),
            ips in proptest::collection::vec(any::<u64>(), 0..80),
        ) {
            let mut fast = Vec::new();
            encode_into(&mut fast, seq, id, &ips);
            let generic = postcard::to_allocvec(&Record { seq, body: Body::Stack { id, ips } }).unwrap();
            prop_assert_eq!(fast, generic);
        }
    }

    #[test]
    fn kernel_addresses_take_ten_bytes_each() {
        let ips = [0xffff_ffff_8100_0005u64, 0xffff_ffff_8123_4567];
        let mut out = Vec::new();
        encode_into(&mut out, 1, 2, &ips);
        // seq, the variant, the id and the count take a byte each here.
        assert_eq!(out.len(), 1 + stack_variant().len() + 1 + 1 + 2 * 10);
    }
}
