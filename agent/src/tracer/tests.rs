//! The tracer's unit tests: records taken in, and a tracer without probes.

use guestscope_common::{
    CacheSlot, CachedArgsEvent, CachedEvent, EntryCaller, MAX_STACK_FRAMES, RawEvent, StackedEvent,
    event::USER_STACK_FRAMES, wire::EventArgs,
};

use super::*;

/// [`accept`] into a batch of its own: the event it took in and its arguments.
fn accept_one(
    record: Record<'_>,
    stacks: &mut StackTable,
    tallies: &mut TallyBook,
    totals: &mut Totals,
) -> (RawEvent, Option<EventArgs>) {
    let mut batch = Batcher::default();
    assert!(!accept(
        record,
        stacks,
        tallies,
        totals,
        &mut batch,
        Instant::now()
    ));
    let args = batch.take_args();
    let events = batch.take().events();
    assert!(events.len() == 1 && args.len() <= 1, "{events:?} {args:?}");
    (events[0], args.first().copied())
}

#[test]
fn a_cached_user_probe_hit_gets_its_entrys_stack_and_its_own_arguments() {
    let (mut stacks, mut tallies, mut totals) = (
        StackTable::default(),
        TallyBook::default(),
        Totals::default(),
    );
    let event = |ts_ns| RawEvent {
        ts_ns,
        tid: 9,
        ..RawEvent::new(ProbeKind::Kprobe, 9, ts_ns)
    };
    // The walked hit: three frames, its arguments in the last slots, kept in entry 3.
    let mut ips = [0; MAX_STACK_FRAMES];
    ips[..3].copy_from_slice(&[0xffff_ffff_8100_0010, 0xffff_ffff_8100_0020, 7]);
    ips[USER_STACK_FRAMES..].copy_from_slice(&[1, 2, 3, 4, 5]);
    let walked = StackedEvent {
        event: event(100),
        stack_bytes: 24,
        cache_slot: CacheSlot::tag(3),
        entry: EntryCaller::UNKNOWN,
        replaced_tally: 0,
        ips,
    };
    let (first, first_args) = accept_one(
        Record::Walked(&walked),
        &mut stacks,
        &mut tallies,
        &mut totals,
    );
    assert!(first.stack_id >= 0, "{first:?}");
    assert_eq!(first_args.map(|a| a.args), Some([1, 2, 3, 4, 5]));
    // A later hit the cache answered: the same stack, its own arguments and time.
    let cached = CachedArgsEvent {
        cached: CachedEvent {
            event: event(200),
            cache_slot: CacheSlot::tag(3),
            _pad: 0,
        },
        args: [11, 12, 13, 14, 15],
    };
    let (second, second_args) = accept_one(
        Record::CachedArgs(&cached),
        &mut stacks,
        &mut tallies,
        &mut totals,
    );
    assert_eq!(second.stack_id, first.stack_id);
    assert_eq!(second.ts_ns, 200);
    assert_eq!(
        second_args,
        Some(EventArgs {
            tid: 9,
            ts_ns: 200,
            args: [11, 12, 13, 14, 15]
        })
    );
    // One naming an entry nothing was kept in has no stack, and is counted.
    let stray = CachedArgsEvent {
        cached: CachedEvent {
            cache_slot: CacheSlot::tag(4),
            ..cached.cached
        },
        ..cached
    };
    let (third, third_args) = accept_one(
        Record::CachedArgs(&stray),
        &mut stacks,
        &mut tallies,
        &mut totals,
    );
    assert!(third.stack_id < 0, "{third:?}");
    assert!(third_args.is_some());
    assert_eq!((totals.events_read, totals.stacks_missing), (3, 1));
}

#[test]
fn a_staged_run_is_taken_whole_in_order_each_event_with_its_entrys_stack() {
    let (mut stacks, mut tallies, mut totals) = (
        StackTable::default(),
        TallyBook::default(),
        Totals::default(),
    );
    // Entries 1 and 2 of CPU 0 hold two walks.
    let walked = |slot, frame: u64| {
        let mut ips = [0; MAX_STACK_FRAMES];
        ips[..2].copy_from_slice(&[frame, 0xffff_ffff_8100_0100]);
        StackedEvent {
            event: RawEvent::new(ProbeKind::SpinLock, 5, 1),
            stack_bytes: 16,
            cache_slot: CacheSlot::tag(slot),
            entry: EntryCaller::UNKNOWN,
            replaced_tally: 0,
            ips,
        }
    };
    let mut batch = Batcher::new(4, MAX_AGE);
    let now = Instant::now();
    for (slot, frame) in [(1, 0xffff_ffff_8100_0010), (2, 0xffff_ffff_8100_0020)] {
        let w = walked(slot, frame);
        accept(
            Record::Walked(&w),
            &mut stacks,
            &mut tallies,
            &mut totals,
            &mut batch,
            now,
        );
    }
    let ids: Vec<i32> = batch.take().events().iter().map(|e| e.stack_id).collect();
    assert!(ids[0] >= 0 && ids[1] >= 0 && ids[0] != ids[1], "{ids:?}");
    // A run of five staged hits, alternating the entries, into a batch of four: taken
    // whole, the batch full after it.
    let run: Vec<CachedEvent> = (0..5u64)
        .map(|i| CachedEvent {
            event: RawEvent::new(ProbeKind::SpinLock, 5, 10 + i),
            cache_slot: CacheSlot::tag(1 + i as u32 % 2),
            _pad: 0,
        })
        .collect();
    assert!(accept(
        Record::Cached(&run),
        &mut stacks,
        &mut tallies,
        &mut totals,
        &mut batch,
        now
    ));
    let events = batch.take().events();
    assert_eq!(
        events.iter().map(|e| e.ts_ns).collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );
    assert_eq!(
        events.iter().map(|e| e.stack_id).collect::<Vec<_>>(),
        [ids[0], ids[1], ids[0], ids[1], ids[0]]
    );
    assert_eq!((totals.events_read, totals.stacks_missing), (7, 0));
}

#[test]
fn an_inactive_tracer_runs_workloads_without_records() {
    let mut tracer = Tracer::inactive();
    let mut stream = Stream::new(Vec::new());
    assert!(!tracer.is_active());
    assert!(tracer.ring_fd().is_none());
    tracer.trace(42).unwrap();
    assert_eq!(tracer.untrace_all(), 0);
    tracer.pump(&mut stream).unwrap();
    tracer.drain(&mut stream).unwrap();
    assert_eq!(stream.records(), 0);
    assert_eq!(tracer.poll_timeout(Instant::now()), MAX_AGE);
    assert_eq!(tracer.attached(), Attached::default());
    assert!(tracer.set_attached(&Attached::default()).is_empty());
    let all = Attached {
        kinds: ProbeKind::ALL.to_vec(),
        fork_follower: true,
    };
    assert_eq!(
        tracer.set_attached(&all),
        ["the eBPF probes are not loaded"]
    );
    assert!(tracer.restore_plan().is_empty());
    let totals = tracer.totals();
    assert_eq!(totals.probes.len(), guestscope_common::ProbeKind::ALL.len());
    assert_eq!(totals.events_sent, 0);
}
