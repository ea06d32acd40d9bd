//! How one ring-buffer record becomes events in the batch: each event counted, its
//! stack interned or looked up (or why it has none counted), and its arguments split
//! off for the kinds that carry them.

use std::time::Instant;

use guestscope_common::{
    CacheSlot, ProbeKind, RawEvent,
    event::USER_ARGS,
    wire::{EventArgs, Totals},
};

use crate::{
    batch::Batcher,
    ringbuf::Record,
    stacks::{NoStack, StackTable},
    tallies::TallyBook,
};

/// One probe record taken in: each of its events (a staged run of cached hits holds
/// several) counted, its stack interned or looked up (or why not counted), its
/// arguments split off for the kinds that carry them, and the event added to `batch`
/// (read at `now`); returns whether the batch is full (a run is taken whole, so the
/// batch may pass its size by less than a run). Inlined into the read loop, and writing
/// into the batch rather than returning the event (64 bytes, and 56 of arguments):
/// under TCG every call's return and every copy through the stack costs, and this runs
/// once per event.
#[inline(always)]
pub(super) fn accept(
    record: Record<'_>,
    stacks: &mut StackTable,
    tallies: &mut TallyBook,
    totals: &mut Totals,
    batch: &mut Batcher,
    now: Instant,
) -> bool {
    match record {
        Record::Cached(run) => {
            totals.events_read += run.len() as u64;
            batch.push_cached_run(
                run,
                |cached| {
                    let (id, stack) = stacks.cached_stack(cached);
                    // An event with a stack has an id of 0 or more; only one without
                    // may be missing it.
                    if id < 0 {
                        count_missing(stack, totals);
                    }
                    id
                },
                now,
            )
        }
        Record::CachedArgs(with_args) => {
            let (id, stack) = stacks.cached_stack(&with_args.cached);
            take_in(
                &with_args.cached.event,
                id,
                stack,
                Some(with_args.args),
                totals,
                batch,
                now,
            )
        }
        Record::Walked(walked) => {
            let (e, stack) = stacks.resolve(walked);
            if let Some(index) = CacheSlot::index(walked.cache_slot) {
                tallies.kept(e.cpu, index, walked.replaced_tally, e.kind, e.stack_id);
            }
            let args = ProbeKind::from_id(e.kind)
                .is_some_and(ProbeKind::carries_args)
                .then(|| walked.user_args());
            take_in(&e, e.stack_id, stack, args, totals, batch, now)
        }
    }
}

/// One event of a record and its stack: counted, its arguments (if it carries them)
/// and the event batched with stack id `id` (the event's own is not read: a cached hit
/// comes straight from the ring buffer); returns whether the batch is full.
#[inline(always)]
fn take_in(
    e: &RawEvent,
    id: i32,
    stack: Result<u32, NoStack>,
    args: Option<[u64; USER_ARGS]>,
    totals: &mut Totals,
    batch: &mut Batcher,
    now: Instant,
) -> bool {
    totals.events_read += 1;
    count_missing(stack, totals);
    if let Some(args) = args {
        batch.push_args(EventArgs {
            tid: e.tid,
            ts_ns: e.ts_ns,
            args,
        });
    }
    batch.push_with_stack(e, id, now)
}

/// Counts an event that reaches the host without a stack it should have had.
#[inline(always)]
fn count_missing(stack: Result<u32, NoStack>, totals: &mut Totals) {
    match stack {
        Ok(_) | Err(NoStack::Failed(_) | NoStack::Off) => {}
        Err(
            why @ (NoStack::Unusable(_) | NoStack::TableFull | NoStack::UnknownCacheSlot { .. }),
        ) => {
            if totals.stacks_missing == 0 {
                tracing::warn!("an event without its stack: {why}");
            }
            totals.stacks_missing += 1;
        }
    }
}
