//! Reading probe records from the `EVENTS` ring buffer: a [`StackedEvent`] (an event
//! and its walked kernel stack), a run of [`CachedEvent`]s (events whose stacks the
//! probes' stack cache gave, up to [`STAGED_EVENTS`] staged together) or a
//! [`CachedArgsEvent`] (the same with a user probe's arguments), told apart by length.

use std::{
    borrow::Borrow,
    os::fd::{AsFd, BorrowedFd},
};

use aya::maps::{MapData, RingBuf};
use guestscope_common::{CachedArgsEvent, CachedEvent, STAGED_EVENTS, StackedEvent};

/// One ring-buffer record, read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// An event with its walked stack.
    Walked(&'a StackedEvent),
    /// Events whose stacks are stack-cache entries', in the order their probes ran on
    /// their CPU (one or more).
    Cached(&'a [CachedEvent]),
    /// An event with arguments whose stack is a stack-cache entry's.
    CachedArgs(&'a CachedArgsEvent),
}

/// `bytes` as a `T` if it is exactly one: in place when aligned (as ring-buffer records
/// are), else `None` with `copy` set to a copy.
fn view<'a, T: Copy>(bytes: &'a [u8], copy: &'a mut Option<T>) -> Option<&'a T> {
    if bytes.len() != size_of::<T>() {
        return None;
    }
    if bytes.as_ptr().cast::<T>().is_aligned() {
        // SAFETY: the length and alignment are checked above; callers use this only for
        // the repr(C) records of common/, which hold only integer fields (every bit
        // pattern valid); the reference lives no longer than `bytes`.
        return Some(unsafe { &*bytes.as_ptr().cast::<T>() });
    }
    // SAFETY: the length is checked above; as above for the bit patterns;
    // read_unaligned has no alignment requirement.
    Some(copy.insert(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }))
}

/// `bytes` as 1 to [`STAGED_EVENTS`] [`CachedEvent`]s, in place when aligned (as
/// ring-buffer records are), else `None` with `copy` filled with a copy.
fn view_run<'a>(
    bytes: &'a [u8],
    copy: &'a mut Option<[CachedEvent; STAGED_EVENTS]>,
) -> Option<&'a [CachedEvent]> {
    let size = size_of::<CachedEvent>();
    let n = bytes.len() / size;
    if !bytes.len().is_multiple_of(size) || !(1..=STAGED_EVENTS).contains(&n) {
        return None;
    }
    if bytes.as_ptr().cast::<CachedEvent>().is_aligned() {
        // SAFETY: `n` whole records by the length check, aligned as checked; a
        // `CachedEvent` holds only integer fields (every bit pattern valid); the slice
        // lives no longer than `bytes`.
        return Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast(), n) });
    }
    let mut run = [CachedEvent {
        event: guestscope_common::RawEvent::default(),
        cache_slot: 0,
        _pad: 0,
    }; STAGED_EVENTS];
    for (i, r) in run.iter_mut().take(n).enumerate() {
        // SAFETY: record `i` lies within `bytes` by the length check; read_unaligned has
        // no alignment requirement; every bit pattern is valid, as above.
        *r = unsafe { std::ptr::read_unaligned(bytes.as_ptr().add(i * size).cast()) };
    }
    Some(&copy.insert(run)[..n])
}

/// Calls `f` with the record in `bytes` if it is exactly a run of 1 to
/// [`STAGED_EVENTS`] [`CachedEvent`]s, one [`StackedEvent`] or one [`CachedArgsEvent`]
/// (in place when `bytes` is aligned for it, as ring-buffer records are; from a copy
/// otherwise), or with the record's length if it is none of them.
pub fn with_record<R>(bytes: &[u8], f: impl FnOnce(Result<Record<'_>, usize>) -> R) -> R {
    let (mut walked, mut cached, mut with_args) = (None, None, None);
    if let Some(r) = view_run(bytes, &mut cached) {
        f(Ok(Record::Cached(r)))
    } else if let Some(r) = view::<StackedEvent>(bytes, &mut walked) {
        f(Ok(Record::Walked(r)))
    } else if let Some(r) = view::<CachedArgsEvent>(bytes, &mut with_args) {
        f(Ok(Record::CachedArgs(r)))
    } else {
        f(Err(bytes.len()))
    }
}

/// The consumer side of the `EVENTS` ring buffer.
pub struct EventReader<T> {
    ring: RingBuf<T>,
}

impl<T: Borrow<MapData>> EventReader<T> {
    /// Wraps the ring buffer.
    pub fn new(ring: RingBuf<T>) -> Self {
        EventReader { ring }
    }

    /// Calls `f` with the next record, if one is ready (see [`with_record`]); the record
    /// is read in place, then released to the producer.
    pub fn read_next<R>(&mut self, f: impl FnOnce(Result<Record<'_>, usize>) -> R) -> Option<R> {
        let item = self.ring.next()?;
        Some(with_record(&item, f))
    }

    /// The ring buffer's fd, readable when records are waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use guestscope_common::{CacheSlot, EntryCaller, MAX_STACK_FRAMES, RawEvent};

    use super::*;

    fn bytes_of<T>(r: &T) -> &[u8] {
        // SAFETY: the records of common/ are plain old data of size_of::<T>() bytes.
        unsafe { std::slice::from_raw_parts((r as *const T).cast::<u8>(), size_of::<T>()) }
    }

    fn event() -> RawEvent {
        RawEvent {
            ts_ns: 1,
            arg: 2,
            ip: 3,
            kind: 4,
            cpu: 5,
            pid: 6,
            tid: 7,
            stack_id: -8,
            flags: 9,
            comm: *b"fopen\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    fn walked() -> StackedEvent {
        let mut ips = [0; MAX_STACK_FRAMES];
        ips[0] = 0xffff_ffff_8100_0005;
        ips[63] = 0xffff_ffff_8100_0063;
        StackedEvent {
            event: event(),
            stack_bytes: 512,
            cache_slot: CacheSlot::tag(7),
            entry: EntryCaller {
                frame: 10,
                caller: 11,
            },
            replaced_tally: 3,
            ips,
        }
    }

    #[test]
    fn tells_the_two_records_apart_by_length_aligned_or_not() {
        let w = walked();
        let c = CachedEvent {
            event: event(),
            cache_slot: CacheSlot::tag(7),
            _pad: 0,
        };
        let a = CachedArgsEvent {
            cached: c,
            args: [21, 22, 23, 24, 25],
        };
        #[derive(Debug, PartialEq)]
        enum Copied {
            Walked(Box<StackedEvent>),
            Cached(Vec<CachedEvent>),
            CachedArgs(CachedArgsEvent),
        }
        let copy = |b: &[u8]| {
            with_record(b, |r| match r {
                Ok(Record::Walked(w)) => Ok(Copied::Walked(Box::new(*w))),
                Ok(Record::Cached(c)) => Ok(Copied::Cached(c.to_vec())),
                Ok(Record::CachedArgs(a)) => Ok(Copied::CachedArgs(*a)),
                Err(len) => Err(len),
            })
        };
        // In place when aligned.
        let aligned = [w];
        let in_place = with_record(
            bytes_of(&aligned[0]),
            |r| matches!(r, Ok(Record::Walked(p)) if std::ptr::eq(p, &aligned[0])),
        );
        assert!(in_place, "an aligned record is read in place");
        assert_eq!(copy(bytes_of(&w)), Ok(Copied::Walked(Box::new(w))));
        assert_eq!(copy(bytes_of(&c)), Ok(Copied::Cached(vec![c])));
        assert_eq!(copy(bytes_of(&a)), Ok(Copied::CachedArgs(a)));
        // Misaligned on purpose: the parser must not care.
        for raw in [bytes_of(&w), bytes_of(&c), bytes_of(&a)] {
            let mut shifted = vec![0u8; 1];
            shifted.extend_from_slice(raw);
            assert_eq!(copy(&shifted[1..]), copy(raw));
            // Any other length is malformed, and says its length.
            assert_eq!(copy(&shifted), Err(raw.len() + 1));
            assert_eq!(copy(&shifted[1..raw.len()]), Err(raw.len() - 1));
        }
        // A staged run of cached events, in order, aligned or not; past
        // STAGED_EVENTS it is malformed.
        let run: Vec<CachedEvent> = (0..STAGED_EVENTS as u32)
            .map(|i| CachedEvent {
                cache_slot: CacheSlot::tag(i),
                ..c
            })
            .collect();
        let run_bytes: Vec<u8> = run.iter().flat_map(|r| bytes_of(r).to_vec()).collect();
        for n in [2, 3, STAGED_EVENTS] {
            let bytes = &run_bytes[..n * size_of::<CachedEvent>()];
            assert_eq!(copy(bytes), Ok(Copied::Cached(run[..n].to_vec())));
            let mut shifted = vec![0u8; 1];
            shifted.extend_from_slice(bytes);
            assert_eq!(copy(&shifted[1..]), Ok(Copied::Cached(run[..n].to_vec())));
        }
        let mut too_long = run_bytes.clone();
        too_long.extend_from_slice(bytes_of(&c));
        assert_eq!(copy(&too_long), Err(too_long.len()));
        // A bare event (the record of older probes) is malformed too.
        assert_eq!(copy(&bytes_of(&w)[..64]), Err(64));
        assert_eq!(copy(&[]), Err(0));
    }
}
