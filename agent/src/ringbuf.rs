//! Reading [`RawEvent`] records from the `EVENTS` ring buffer.

use std::{
    borrow::Borrow,
    os::fd::{AsFd, BorrowedFd},
};

use aya::maps::{MapData, RingBuf};
use guestscope_common::RawEvent;

/// Decodes one ring-buffer record; `None` if it is not exactly one [`RawEvent`].
pub fn parse_event(bytes: &[u8]) -> Option<RawEvent> {
    if bytes.len() != size_of::<RawEvent>() {
        return None;
    }
    // SAFETY: the length is checked above; RawEvent is repr(C) with only integer fields,
    // so every bit pattern is valid, and read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<RawEvent>()) })
}

/// A record read from the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A well-formed event.
    Event(RawEvent),
    /// A record of the wrong size (skipped).
    Malformed(usize),
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

    /// The next record, if one is ready.
    pub fn read_next(&mut self) -> Option<Read> {
        let item = self.ring.next()?;
        Some(match parse_event(&item) {
            Some(e) => Read::Event(e),
            None => Read::Malformed(item.len()),
        })
    }

    /// The ring buffer's fd, readable when records are waiting.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.ring.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_one_event() {
        let e = RawEvent {
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
        };
        let mut bytes = vec![0u8; 1];
        // SAFETY: RawEvent is plain old data of 64 bytes.
        let raw = unsafe { std::slice::from_raw_parts((&e as *const RawEvent).cast::<u8>(), 64) };
        bytes.extend_from_slice(raw);
        // Misaligned on purpose: the parser must not care.
        assert_eq!(parse_event(&bytes[1..]), Some(e));
        assert_eq!(parse_event(&bytes[1..64]), None);
        assert_eq!(parse_event(&bytes), None);
        assert_eq!(parse_event(&[]), None);
    }
}
