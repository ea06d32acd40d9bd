//! The packing's tests: what `pack` writes reads back, a batch packed as its events
//! arrive (runs of cached hits included) is `pack`'s bytes, one task's hits take a
//! fraction of their memory, and malformed input is refused, never a panic.

use super::test_event as event;
use super::*;
use crate::ProbeKind;
use proptest::prelude::*;

proptest! {
    #[test]
    fn any_batch_reads_back(
        raw in proptest::collection::vec((any::<[u64; 3]>(), any::<[u32; 5]>(), any::<i32>(), any::<[u8; 16]>()), 0..40),
    ) {
        let events: Vec<RawEvent> = raw.into_iter().map(|(v, w, s, c)| event(v, w, s, c)).collect();
        let mut bytes = Vec::new();
        pack(&mut bytes, &events);
        prop_assert!(bytes.len() <= 10 + events.len() * MAX_PACKED_EVENT_BYTES);
        prop_assert_eq!(unpack(&bytes), Ok(events));
        // Cut short, or with a byte more, it is malformed.
        if !bytes.is_empty() {
            prop_assert_eq!(unpack(&bytes[..bytes.len() - 1]), Err(Malformed));
        }
        bytes.push(0);
        prop_assert_eq!(unpack(&bytes), Err(Malformed));
    }

    #[test]
    fn a_batch_packed_event_by_event_is_what_pack_writes(
        raw in proptest::collection::vec((any::<[u64; 3]>(), any::<[u32; 5]>(), any::<i32>(), any::<[u8; 16]>()), 0..40),
        cut in 0usize..40,
    ) {
        let events: Vec<RawEvent> = raw.into_iter().map(|(v, w, s, c)| event(v, w, s, c)).collect();
        let mut batch = PackedBatch::default();
        // A batch sent and cleared before: nothing of it carries over.
        for e in &events[..cut.min(events.len())] {
            batch.push(e);
        }
        batch.clear();
        for e in &events {
            batch.push(e);
        }
        let mut bytes = Vec::new();
        pack(&mut bytes, &events);
        let mut written = Vec::new();
        batch.write_to(&mut written);
        prop_assert_eq!(&written, &bytes);
        prop_assert_eq!(batch.packed_len(), bytes.len());
        prop_assert_eq!(batch.len(), events.len());
        prop_assert_eq!(batch.events(), events.clone());
        for kind in 0..ProbeKind::COUNT {
            let n = events.iter().filter(|e| e.kind as usize == kind).count() as u64;
            prop_assert_eq!(batch.kinds()[kind], n);
        }
    }

    #[test]
    fn runs_of_cached_hits_pack_as_their_events_with_the_given_ids(
        raw in proptest::collection::vec((any::<[u64; 3]>(), any::<[u32; 5]>(), any::<i32>(), any::<[u8; 16]>()), 0..60),
        cuts in proptest::collection::vec(0usize..60, 0..6),
        id_offset in any::<i32>(),
    ) {
        // The ring's records name no stack (their own id is NO_STACK-like
        // garbage here); the id given is the record's own plus an offset.
        let hits: Vec<CachedEvent> = raw
            .into_iter()
            .map(|(v, w, s, c)| CachedEvent { event: event(v, w, s, c), cache_slot: w[0], _pad: 0 })
            .collect();
        let id = |h: &CachedEvent| h.event.stack_id.wrapping_add(id_offset) ^ h.cache_slot as i32;
        let events: Vec<RawEvent> = hits
            .iter()
            .map(|h| RawEvent { stack_id: id(h), ..h.event })
            .collect();
        // Runs cut anywhere, every other one pushed event by event (as walked
        // records come between the runs).
        let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c.min(hits.len())).collect();
        bounds.push(0);
        bounds.push(hits.len());
        bounds.sort_unstable();
        let mut batch = PackedBatch::default();
        for (i, w) in bounds.windows(2).enumerate() {
            let run = &hits[w[0]..w[1]];
            if i % 2 == 0 {
                batch.push_cached_run(run, id);
            } else {
                for h in run {
                    batch.push_with_stack(&h.event, id(h));
                }
            }
        }
        let mut bytes = Vec::new();
        pack(&mut bytes, &events);
        let mut written = Vec::new();
        batch.write_to(&mut written);
        prop_assert_eq!(&written, &bytes);
        prop_assert_eq!(batch.len(), events.len());
        for kind in 0..ProbeKind::COUNT {
            let n = events.iter().filter(|e| e.kind as usize == kind).count() as u64;
            prop_assert_eq!(batch.kinds()[kind], n);
        }
    }

    #[test]
    fn garbage_is_malformed_or_events_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = unpack(&bytes);
    }
}

#[test]
fn one_tasks_hits_take_a_fraction_of_their_memory() {
    // A loop's spin_lock hits: one task, one CPU, a few locks, a few stacks.
    let events: Vec<RawEvent> = (0..1000u64)
        .map(|i| RawEvent {
            arg: 0xffff_8880_0000_1000 + (i % 3) * 64,
            stack_id: (i % 5) as i32,
            ..RawEvent::new(ProbeKind::SpinLock, 4242, 1_000_000 + i * 2_500).with_comm("fopen")
        })
        .collect();
    let mut bytes = Vec::new();
    pack(&mut bytes, &events);
    let per_event = bytes.len() as f64 / events.len() as f64;
    // 64 bytes in memory; here the header, a 2-byte time, the stack id and the lock.
    assert!(
        (12.0..=13.0).contains(&per_event),
        "{per_event} bytes per event"
    );
    assert_eq!(unpack(&bytes).unwrap(), events);
}

#[test]
fn a_count_larger_than_the_bytes_can_hold_is_malformed() {
    let mut bytes = Vec::new();
    varint(&mut bytes, u64::MAX);
    assert_eq!(unpack(&bytes), Err(Malformed));
    assert_eq!(unpack(&[]), Err(Malformed));
    // A stack id past i32 and a varint of eleven bytes.
    assert_eq!(
        unpack(&[1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10]),
        Err(Malformed)
    );
    assert_eq!(
        unpack(&[
            1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0
        ]),
        Err(Malformed)
    );
}
