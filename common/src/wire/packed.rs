//! How an `Events` record carries its events: each one as what changed since the event
//! before it in the batch. A batch's events share most fields (one task's hits of a few
//! probes, on one CPU, a few microseconds apart), so an event of 64 bytes in memory
//! takes about 6 to 15 on the stream: the agent's `sendmsg` copies, the guest's vsock
//! queues and the host reads that much less per event.
//!
//! The batch: its event count (varint), then per event
//! - a byte saying which fields differ from the previous event's (one bit each; the
//!   first event is compared with an all-zero one),
//! - the time since the previous event, zigzag varint (a batch is in ring-buffer order,
//!   which across CPUs is not quite time order),
//! - the stack id, zigzag varint (small, or a negative error),
//! - then each changed field, in the bits' order: `kind`, `cpu`, `pid`, `tid` and
//!   `flags` as varints, `arg` and `ip` as 8 bytes and `comm` as 16, little endian.

use core::mem::MaybeUninit;

use crate::{
    ProbeKind,
    cached_event::CachedEvent,
    event::{COMM_BYTES, RawEvent},
};

/// Which fields of an event differ from the previous one's: one bit each.
struct Changed;

impl Changed {
    const KIND: u8 = 1 << 0;
    const CPU: u8 = 1 << 1;
    const PID: u8 = 1 << 2;
    const TID: u8 = 1 << 3;
    const FLAGS: u8 = 1 << 4;
    const ARG: u8 = 1 << 5;
    const IP: u8 = 1 << 6;
    const COMM: u8 = 1 << 7;
}

/// Bytes one event takes at most: its header byte, two 10-byte varints, five 5-byte
/// varints, two 8-byte fields and the name.
pub const MAX_PACKED_EVENT_BYTES: usize = 1 + 2 * 10 + 5 * 5 + 2 * 8 + COMM_BYTES;

/// One byte of a buffer [`put_varint`] writes into: a plain byte, or one not yet
/// initialized (the spare capacity an event is packed into).
trait ByteSlot {
    /// Sets the byte.
    fn set(&mut self, b: u8);
}

impl ByteSlot for u8 {
    #[inline(always)]
    fn set(&mut self, b: u8) {
        *self = b;
    }
}

impl ByteSlot for MaybeUninit<u8> {
    #[inline(always)]
    fn set(&mut self, b: u8) {
        self.write(b);
    }
}

/// Writes `v` as a varint (LEB128, as postcard writes integers: seven bits a byte, low
/// bits first, the top bit set on every byte but the last) into `buf` from `at`;
/// returns where it ends. `buf` must have ten bytes of room from `at`.
#[inline(always)]
fn put_varint(buf: &mut [impl ByteSlot], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        buf[at].set((v as u8) | 0x80);
        v >>= 7;
        at += 1;
    }
    buf[at].set(v as u8);
    at + 1
}

/// `v` as a varint ([`put_varint`]): its bytes and how many.
#[inline(always)]
pub(super) fn varint_bytes(v: u64) -> ([u8; 10], usize) {
    let mut b = [0u8; 10];
    let n = put_varint(&mut b, 0, v);
    (b, n)
}

/// Appends `v` as a varint ([`varint_bytes`]).
#[inline(always)]
pub(super) fn varint(out: &mut Vec<u8>, v: u64) {
    let (b, n) = varint_bytes(v);
    out.extend_from_slice(&b[..n]);
}

/// Reads a varint from the start of `bytes`: the value and its length; `None` when it
/// is cut short or longer than ten bytes.
pub(super) fn read_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// A signed value as an unsigned one, small magnitudes small (zigzag).
#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// The inverse of [`zigzag`].
#[inline(always)]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Bytes [`pack`] reserves per event before it starts: what a batch of one task's
/// hits usually takes (a batch that takes more grows its buffer).
pub const RESERVED_BYTES_PER_EVENT: usize = 16;

/// Appends `events`, packed, to `out`: their count, then each event packed against
/// the one before it.
pub fn pack(out: &mut Vec<u8>, events: &[RawEvent]) {
    out.reserve(10 + events.len() * RESERVED_BYTES_PER_EVENT);
    varint(out, events.len() as u64);
    let mut prev = RawEvent::default();
    for e in events {
        pack_event(out, e, e.stack_id, &prev);
        prev = *e;
    }
}

/// Appends `e`, packed against `prev` (the event before it in the batch, or an
/// all-zero one for the first), to `out`.
///
/// The event is written in place at the end of `out`, into [`MAX_PACKED_EVENT_BYTES`]
/// of its spare capacity, and `out`'s length then takes in the bytes written.
/// Appending field by field checked `out`'s capacity at every byte (2.4 times as
/// long); packing into a buffer on the stack and copying it out read back bytes just
/// written one by one, a stall that took half of the packing's time natively; zeroing
/// the room first and cutting it back after cost 16 of 121 instructions per event
/// (callgrind, runs of 32 cached hits).
///
/// The stack id written is `stack_id`, not `e.stack_id`: a probe's cached hit is
/// packed straight from its ring-buffer record, whose stack id the agent decides.
#[inline(always)]
fn pack_event(out: &mut Vec<u8>, e: &RawEvent, stack_id: i32, prev: &RawEvent) {
    out.reserve(MAX_PACKED_EVENT_BYTES);
    let start = out.len();
    let spare = &mut out.spare_capacity_mut()[..MAX_PACKED_EVENT_BYTES];
    let mut packed = EventBytes::new(spare);
    packed.varint(zigzag(e.ts_ns.wrapping_sub(prev.ts_ns) as i64));
    packed.varint(zigzag(i64::from(stack_id)));
    let mut changed = 0;
    for (bit, now, before) in [
        (Changed::KIND, e.kind, prev.kind),
        (Changed::CPU, e.cpu, prev.cpu),
        (Changed::PID, e.pid, prev.pid),
        (Changed::TID, e.tid, prev.tid),
        (Changed::FLAGS, e.flags, prev.flags),
    ] {
        if now != before {
            changed |= bit;
            packed.varint(u64::from(now));
        }
    }
    if e.arg != prev.arg {
        changed |= Changed::ARG;
        packed.bytes(&e.arg.to_le_bytes());
    }
    if e.ip != prev.ip {
        changed |= Changed::IP;
        packed.bytes(&e.ip.to_le_bytes());
    }
    if e.comm != prev.comm {
        changed |= Changed::COMM;
        packed.bytes(&e.comm);
    }
    let len = packed.finish(changed);
    // SAFETY: `finish` returns how many bytes from `start` were written (the header
    // byte and the fields after it), all within the reserved spare capacity.
    unsafe { out.set_len(start + len) };
}

/// A batch packed as its events arrive: the bytes [`pack`] writes for the same
/// events, made one event at a time, so a sender keeps no copy of the events
/// themselves and reads none back when it sends them.
#[derive(Clone, Debug, Default)]
pub struct PackedBatch {
    /// The packed events, without their count.
    bytes: Vec<u8>,
    /// How many.
    len: usize,
    /// The last event packed, which the next is packed against.
    prev: RawEvent,
    /// Events per probe kind (indexed by `kind`; kinds past the table not counted).
    kinds: [u64; ProbeKind::COUNT],
}

impl PackedBatch {
    /// An empty batch with room for about `events` events.
    pub fn with_capacity(events: usize) -> Self {
        PackedBatch {
            bytes: Vec::with_capacity(events * RESERVED_BYTES_PER_EVENT + MAX_PACKED_EVENT_BYTES),
            ..PackedBatch::default()
        }
    }

    /// The batch of `events`, packed.
    pub fn from_events(events: &[RawEvent]) -> Self {
        let mut batch = PackedBatch::with_capacity(events.len());
        for e in events {
            batch.push(e);
        }
        batch
    }

    /// Packs `e` after the events already in the batch.
    #[inline]
    pub fn push(&mut self, e: &RawEvent) {
        self.push_with_stack(e, e.stack_id);
    }

    /// Packs `e` with stack id `stack_id` in place of its own after the events
    /// already in the batch: the event as the probe wrote it, no copy made to set its
    /// id.
    #[inline]
    pub fn push_with_stack(&mut self, e: &RawEvent, stack_id: i32) {
        pack_event(&mut self.bytes, e, stack_id, &self.prev);
        self.prev = *e;
        self.len += 1;
        self.count_kind(e.kind);
    }

    /// Packs a run of cached hits (a probe's staged record) after the events already
    /// in the batch, each with the stack id `stack_id` gives it: each hit is packed
    /// against the one before it in the run where it lies, and only the run's last is
    /// copied to be the next event's `prev` (a copy per hit was a tenth of the agent's
    /// instructions per event).
    #[inline]
    pub fn push_cached_run(
        &mut self,
        run: &[CachedEvent],
        mut stack_id: impl FnMut(&CachedEvent) -> i32,
    ) {
        let Some(last) = run.last() else {
            return;
        };
        let before = self.prev;
        let mut prev = &before;
        for hit in run {
            pack_event(&mut self.bytes, &hit.event, stack_id(hit), prev);
            self.count_kind(hit.event.kind);
            prev = &hit.event;
        }
        self.len += run.len();
        self.prev = last.event;
    }

    /// Counts one event of probe kind `kind` (kinds past the table are not counted).
    #[inline(always)]
    fn count_kind(&mut self, kind: u32) {
        if let Some(n) = self.kinds.get_mut(kind as usize) {
            *n += 1;
        }
    }

    /// Number of events in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Events per probe kind, indexed by [`ProbeKind`]'s id.
    pub fn kinds(&self) -> &[u64; ProbeKind::COUNT] {
        &self.kinds
    }

    /// Bytes the packed batch takes ([`PackedBatch::write_to`]'s).
    pub fn packed_len(&self) -> usize {
        varint_bytes(self.len as u64).1 + self.bytes.len()
    }

    /// Appends the packed batch to `out`: what [`pack`] appends for the same events.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        varint(out, self.len as u64);
        out.extend_from_slice(&self.bytes);
    }

    /// Empties the batch, its buffer kept.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.len = 0;
        self.prev = RawEvent::default();
        self.kinds = [0; ProbeKind::COUNT];
    }

    /// Bytes the batch's buffer can hold without growing.
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// The batch's events, unpacked.
    pub fn events(&self) -> Vec<RawEvent> {
        let mut whole = Vec::with_capacity(self.packed_len());
        self.write_to(&mut whole);
        unpack(&whole).expect("a batch packed here reads back")
    }
}

/// One event's packed bytes, written in place: its header byte (which fields changed)
/// is written last, in front of the fields.
struct EventBytes<'a> {
    buf: &'a mut [MaybeUninit<u8>],
    len: usize,
}

impl<'a> EventBytes<'a> {
    /// Empty, with room for the header byte; `buf` holds at least
    /// [`MAX_PACKED_EVENT_BYTES`].
    #[inline(always)]
    fn new(buf: &'a mut [MaybeUninit<u8>]) -> Self {
        EventBytes { buf, len: 1 }
    }

    /// Appends `v` as a varint, written in place ([`put_varint`]): a copy of
    /// [`varint_bytes`]'s variable length would cost a `memcpy` call per field.
    #[inline(always)]
    fn varint(&mut self, v: u64) {
        self.len = put_varint(self.buf, self.len, v);
    }

    /// Appends `bytes`.
    #[inline(always)]
    fn bytes(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].write_copy_of_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes the header byte, `changed`; returns the event's length.
    #[inline(always)]
    fn finish(self, changed: u8) -> usize {
        self.buf[0].write(changed);
        self.len
    }
}

/// A packed batch that does not read back: cut short, a field out of range, or bytes
/// left over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed;

/// Reads packed bytes from the front.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(Malformed)?;
        self.0 = rest;
        Ok(*head)
    }

    fn varint(&mut self) -> Result<u64, Malformed> {
        let (v, n) = read_varint(self.0).ok_or(Malformed)?;
        self.0 = &self.0[n..];
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.varint()?).map_err(|_| Malformed)
    }
}

/// The events of a packed batch ([`pack`]'s bytes, whole).
pub fn unpack(bytes: &[u8]) -> Result<Vec<RawEvent>, Malformed> {
    let mut r = Reader(bytes);
    let n = r.varint()?;
    // Every event takes three bytes at least: no count can claim more than that.
    if n > bytes.len() as u64 / 3 {
        return Err(Malformed);
    }
    let mut events = Vec::with_capacity(n as usize);
    let mut prev = RawEvent::default();
    for _ in 0..n {
        let [changed] = r.take::<1>()?;
        let mut e = prev;
        e.ts_ns = prev.ts_ns.wrapping_add(unzigzag(r.varint()?) as u64);
        e.stack_id = i32::try_from(unzigzag(r.varint()?)).map_err(|_| Malformed)?;
        if changed & Changed::KIND != 0 {
            e.kind = r.u32()?;
        }
        if changed & Changed::CPU != 0 {
            e.cpu = r.u32()?;
        }
        if changed & Changed::PID != 0 {
            e.pid = r.u32()?;
        }
        if changed & Changed::TID != 0 {
            e.tid = r.u32()?;
        }
        if changed & Changed::FLAGS != 0 {
            e.flags = r.u32()?;
        }
        if changed & Changed::ARG != 0 {
            e.arg = u64::from_le_bytes(r.take()?);
        }
        if changed & Changed::IP != 0 {
            e.ip = u64::from_le_bytes(r.take()?);
        }
        if changed & Changed::COMM != 0 {
            e.comm = r.take()?;
        }
        events.push(e);
        prev = e;
    }
    if r.0.is_empty() {
        Ok(events)
    } else {
        Err(Malformed)
    }
}

/// Serde's view of [`Body::Events`](super::Body::Events): the packed batch as one byte
/// string, so postcard's generic path writes what the fast path
/// ([`super::events`]) writes.
pub(super) mod serde_events {
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    use crate::event::RawEvent;

    /// Writes `events` packed, as bytes.
    pub fn serialize<S: Serializer>(events: &[RawEvent], s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        super::pack(&mut bytes, events);
        s.serialize_bytes(&bytes)
    }

    /// Reads a packed batch written by [`serialize`].
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<RawEvent>, D::Error> {
        let bytes: &[u8] = serde::Deserialize::deserialize(d)?;
        super::unpack(bytes).map_err(|_| D::Error::custom("a malformed packed event batch"))
    }
}

/// An event of the given fields, for the wire's tests: `v` is `ts_ns`, `arg` and `ip`;
/// `w` is `kind`, `cpu`, `pid`, `tid` and `flags`.
#[cfg(test)]
pub(super) fn test_event(v: [u64; 3], w: [u32; 5], stack_id: i32, comm: [u8; 16]) -> RawEvent {
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

#[cfg(test)]
mod tests;
