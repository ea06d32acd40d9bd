//! Reading [`StackedEvent`] records (an event and its kernel stack) from the `EVENTS`
//! ring buffer.

use std::{
    borrow::Borrow,
    os::fd::{AsFd, BorrowedFd},
};

use aya::maps::{MapData, RingBuf};
use guestscope_common::StackedEvent;

/// Decodes one ring-buffer record; `None` if it is not exactly one [`StackedEvent`].
pub fn parse_record(bytes: &[u8]) -> Option<StackedEvent> {
    if bytes.len() != size_of::<StackedEvent>() {
        return None;
    }
    // SAFETY: the length is checked above; StackedEvent is repr(C) with only integer
    // fields, so every bit pattern is valid, and read_unaligned has no alignment
    // requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<StackedEvent>()) })
}

/// Calls `f` with the record in `bytes` if it is exactly one [`StackedEvent`] (in place
/// when `bytes` is aligned for it, as ring-buffer records are; from a copy otherwise), or
/// with the record's length if it is not.
pub fn with_record<R>(bytes: &[u8], f: impl FnOnce(Result<&StackedEvent, usize>) -> R) -> R {
    if bytes.len() != size_of::<StackedEvent>() {
        return f(Err(bytes.len()));
    }
    if bytes.as_ptr().cast::<StackedEvent>().is_aligned() {
        // SAFETY: the length and alignment are checked above; StackedEvent is repr(C) with
        // only integer fields, so every bit pattern is valid; the reference lives no
        // longer than `bytes`.
        f(Ok(unsafe { &*bytes.as_ptr().cast::<StackedEvent>() }))
    } else {
        match parse_record(bytes) {
            Some(record) => f(Ok(&record)),
            None => f(Err(bytes.len())),
        }
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
    pub fn read_next<R>(&mut self, f: impl FnOnce(Result<&StackedEvent, usize>) -> R) -> Option<R> {
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
    use guestscope_common::RawEvent;

    use super::*;

    #[test]
    fn parses_exactly_one_record() {
        let mut ips = [0; guestscope_common::MAX_STACK_FRAMES];
        ips[0] = 0xffff_ffff_8100_0005;
        ips[63] = 0xffff_ffff_8100_0063;
        let r = StackedEvent {
            event: RawEvent {
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
            },
            stack_bytes: 512,
            _pad: 0,
            entry: guestscope_common::EntryCaller {
                frame: 10,
                caller: 11,
            },
            ips,
        };
        let size = size_of::<StackedEvent>();
        let mut bytes = vec![0u8; 1];
        // SAFETY: StackedEvent is plain old data of `size` bytes.
        let raw =
            unsafe { std::slice::from_raw_parts((&r as *const StackedEvent).cast::<u8>(), size) };
        bytes.extend_from_slice(raw);
        // Misaligned on purpose: the parser must not care.
        assert_eq!(parse_record(&bytes[1..]), Some(r));
        assert_eq!(parse_record(&bytes[1..size]), None);
        assert_eq!(parse_record(&bytes), None);
        // A bare event (the record of older probes) is malformed too.
        assert_eq!(parse_record(&bytes[1..65]), None);
        assert_eq!(parse_record(&[]), None);

        // In place when aligned, from a copy when not; the length decides malformed.
        let aligned = [r];
        // SAFETY: as above.
        let raw = unsafe { std::slice::from_raw_parts(aligned.as_ptr().cast::<u8>(), size) };
        assert_eq!(
            with_record(raw, |got| got.map(|e| std::ptr::eq(e, &aligned[0]))),
            Ok(true)
        );
        assert_eq!(with_record(&bytes[1..], |got| got.copied()), Ok(r));
        assert_eq!(with_record(&bytes[1..65], |got| got.copied()), Err(64));
    }
}
