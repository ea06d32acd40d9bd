//! The stack table's unit tests: ids by content, cached hits, and stacks sent once
//! and before their events.

use guestscope_common::{
    EntryCaller, ProbeKind,
    wire::{DecodeError, FrameReader},
};

use super::*;

fn record(frames: &[u64], stack_bytes: Option<i32>) -> StackedEvent {
    let mut ips = [0; MAX_STACK_FRAMES];
    ips[..frames.len()].copy_from_slice(frames);
    StackedEvent {
        event: RawEvent::new(ProbeKind::SpinLock, 1, 0),
        stack_bytes: stack_bytes.unwrap_or(8 * frames.len() as i32),
        cache_slot: CacheSlot::NONE,
        entry: EntryCaller::UNKNOWN,
        replaced_tally: 0,
        ips,
    }
}

#[test]
fn equal_stacks_share_an_id_and_different_ones_do_not() {
    let mut t = StackTable::default();
    assert_eq!(t.intern(&[1, 2, 3]), Ok(0));
    assert_eq!(t.intern(&[1, 2]), Ok(1));
    assert_eq!(t.intern(&[1, 2, 3]), Ok(0));
    // A prefix, or the same frames in another order, is another stack.
    assert_eq!(t.intern(&[3, 2, 1]), Ok(2));
    assert_eq!(t.len(), 3);
    assert_eq!(
        t.take_unsent(),
        vec![(0, vec![1, 2, 3]), (1, vec![1, 2]), (2, vec![3, 2, 1])]
    );
    assert_eq!(t.take_unsent(), vec![]);
    assert_eq!(t.intern(&[1, 2]), Ok(1));
    assert_eq!(t.take_unsent(), vec![]);
}

#[test]
fn resolve_sets_the_id_or_a_negative_code() {
    let mut t = StackTable::default();
    let (e, r) = t.resolve(&record(&[0xa, 0xb], None));
    assert_eq!((e.stack_id, r), (0, Ok(0)));
    let (e, r) = t.resolve(&record(&[0xa, 0xb], None));
    assert_eq!((e.stack_id, r), (0, Ok(0)));
    let (e, r) = t.resolve(&record(&[], Some(-17)));
    assert_eq!(
        (e.stack_id, r),
        (-17, Err(NoStack::Failed(StackError::Walk(-17))))
    );
    let (e, r) = t.resolve(&record(&[0xa], Some(12)));
    assert_eq!(e.stack_id, BAD_LENGTH_ID);
    assert_eq!(r, Err(NoStack::Unusable(StackError::BadLength(12))));
    let (e, r) = t.resolve(&record(&[], Some(8 * 65)));
    assert_eq!(e.stack_id, BAD_LENGTH_ID);
    assert!(matches!(
        r,
        Err(NoStack::Unusable(StackError::BadLength(_)))
    ));
    let (e, r) = t.resolve(&record(&[], None));
    assert_eq!(
        (e.stack_id, r),
        (EMPTY_ID, Err(NoStack::Unusable(StackError::Empty)))
    );
    // The rest of the event is untouched.
    assert_eq!(e.kind, 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_cached_hit_gets_the_id_of_the_walk_that_filled_its_entry() {
    let mut t = StackTable::default();
    let filled = |frames: &[u64], cpu: u32, index: u32| {
        let mut r = record(frames, None);
        r.event.cpu = cpu;
        r.cache_slot = CacheSlot::tag(index);
        r
    };
    let hit = |cpu: u32, index: u32| {
        let mut event = RawEvent::new(ProbeKind::SpinLock, 1, 0);
        event.cpu = cpu;
        event.ts_ns = 99;
        CachedEvent {
            event,
            cache_slot: CacheSlot::tag(index),
            _pad: 0,
        }
    };
    // Nothing filled entry 3 of CPU 0 yet.
    let (e, r) = t.resolve_cached(&hit(0, 3));
    assert_eq!(e.stack_id, UNKNOWN_SLOT_ID);
    assert_eq!(r, Err(NoStack::UnknownCacheSlot { cpu: 0, index: 3 }));
    assert_eq!(t.resolve(&filled(&[0xa, 0xb], 0, 3)).1, Ok(0));
    assert_eq!(t.resolve(&filled(&[0xc], 1, 3)).1, Ok(1));
    let (e, r) = t.resolve_cached(&hit(0, 3));
    assert_eq!(
        (e.stack_id, r, e.ts_ns),
        (0, Ok(0), 99),
        "the rest is the hit's"
    );
    // The same entry of another CPU holds another walk.
    assert_eq!(t.resolve_cached(&hit(1, 3)).1, Ok(1));
    // A later walk kept in the entry replaces what it holds.
    assert_eq!(t.resolve(&filled(&[0xc], 0, 3)).1, Ok(1));
    assert_eq!(t.resolve_cached(&hit(0, 3)).1, Ok(1));
    // A walk not kept anywhere changes no entry.
    assert_eq!(t.resolve(&filled(&[0xd], 0, 3)).1, Ok(2));
    let mut unkept = record(&[0xe], None);
    unkept.cache_slot = CacheSlot::NONE;
    assert_eq!(t.resolve(&unkept).1, Ok(3));
    assert_eq!(t.resolve_cached(&hit(0, 3)).1, Ok(2));
    // A failed walk's code is what its entry's hits get too.
    assert_eq!(t.resolve(&filled(&[], 2, 0)).0.stack_id, EMPTY_ID);
    assert_eq!(t.resolve_cached(&hit(2, 0)).0.stack_id, EMPTY_ID);
    // Tags out of range, and CPUs past the table, are unknown, not a panic.
    let mut bad = hit(0, 0);
    bad.cache_slot = STACK_CACHE_ENTRIES + 1;
    assert_eq!(t.resolve_cached(&bad).0.stack_id, UNKNOWN_SLOT_ID);
    // A hit with stacks off names no entry: the event as the probe wrote it.
    bad.cache_slot = CacheSlot::NONE;
    let (e, r) = t.resolve_cached(&bad);
    assert_eq!((e, r), (bad.event, Err(NoStack::Off)));
    assert_eq!(e.stack_id, NO_STACK);
    assert_eq!(t.resolve(&filled(&[0xf], u32::MAX, 1)).1, Ok(4));
    assert_eq!(
        t.resolve_cached(&hit(u32::MAX, 1)).0.stack_id,
        UNKNOWN_SLOT_ID
    );
    // Every stack was sent once, whichever way its events came.
    assert_eq!(t.take_unsent().len(), 5);
}

#[test]
fn a_cached_hit_of_a_walk_that_lacked_its_caller_counts_as_put_back() {
    let mut t = StackTable::default();
    // The walk skipped the probed function's caller (0xc0): frame 0xf0 is followed
    // by the caller's caller.
    let mut r = record(&[0xb0, 0xf0, 0xd0], None);
    r.entry = EntryCaller {
        frame: 0xf0,
        caller: 0xc0,
    };
    r.cache_slot = CacheSlot::tag(5);
    let (walked, _) = t.resolve(&r);
    assert_eq!(t.callers_recovered(), 1);
    let mut event = RawEvent::new(ProbeKind::SpinLock, 1, 0);
    event.cpu = r.event.cpu;
    let (e, _) = t.resolve_cached(&CachedEvent {
        event,
        cache_slot: CacheSlot::tag(5),
        _pad: 0,
    });
    assert_eq!(e.stack_id, walked.stack_id);
    assert_eq!(t.callers_recovered(), 2);
    assert_eq!(t.take_unsent()[0].1, vec![0xb0, 0xf0, 0xc0, 0xd0]);
}

#[test]
fn the_frame_hash_tells_orders_and_lengths_apart() {
    let h = frame_hash;
    assert_eq!(h(&[1, 2, 3]), h(&[1, 2, 3]));
    assert_ne!(h(&[1, 2, 3]), h(&[3, 2, 1]));
    assert_ne!(h(&[1, 2]), h(&[1, 2, 0]));
    assert_ne!(h(&[]), h(&[0]));
    // The table compares frames itself: equal hashes are not equal stacks.
    assert!(same_frames(&[1, 2], &[1, 2]));
    assert!(!same_frames(&[1, 2], &[1, 3]) && !same_frames(&[1, 2], &[1, 2, 0]));
}

#[test]
fn a_full_table_still_resolves_known_stacks() {
    let mut t = StackTable::with_capacity(2);
    assert_eq!(t.intern(&[1]), Ok(0));
    assert_eq!(t.intern(&[2]), Ok(1));
    assert_eq!(t.intern(&[3]), Err(NoStack::TableFull));
    assert_eq!(t.intern(&[2]), Ok(1));
    let (e, _) = t.resolve(&record(&[4], None));
    assert_eq!(e.stack_id, TABLE_FULL_ID);
    assert_eq!(t.take_unsent().len(), 2);
}

#[test]
fn stacks_go_once_and_before_their_events() {
    let mut table = StackTable::default();
    let mut stream = Stream::new(Vec::new());
    let batch = |table: &mut StackTable, records: &[StackedEvent]| {
        let mut batch = PackedBatch::default();
        for r in records {
            batch.push(&table.resolve(r).0);
        }
        batch
    };
    let first = batch(
        &mut table,
        &[
            record(&[0xa, 0xb], None),
            record(&[0xc], None),
            record(&[0xa, 0xb], None),
        ],
    );
    let a = send_batch(&first, Vec::new(), &mut table, &mut stream).unwrap();
    assert_eq!(
        a,
        BatchSent {
            events: 3,
            stacks: 2
        }
    );
    let second = batch(
        &mut table,
        &[record(&[0xa, 0xb], None), record(&[], Some(-14))],
    );
    let b = send_batch(&second, Vec::new(), &mut table, &mut stream).unwrap();
    assert_eq!(
        b,
        BatchSent {
            events: 2,
            stacks: 0
        }
    );
    assert_eq!(
        send_batch(&PackedBatch::default(), Vec::new(), &mut table, &mut stream).unwrap(),
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
    assert_eq!(
        bodies[0],
        Body::Stack {
            id: 0,
            ips: vec![0xa, 0xb]
        }
    );
    assert_eq!(
        bodies[1],
        Body::Stack {
            id: 1,
            ips: vec![0xc]
        }
    );
    let ids = |b: &Body| match b {
        Body::Events(e) => e.iter().map(|e| e.stack_id).collect::<Vec<_>>(),
        other => panic!("not events: {other:?}"),
    };
    assert_eq!(ids(&bodies[2]), vec![0, 1, 0]);
    assert_eq!(ids(&bodies[3]), vec![0, -14]);
}
