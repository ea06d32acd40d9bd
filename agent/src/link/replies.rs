//! The collector's replies: acknowledgements, which free the spool, clock probes,
//! answered with echoes ahead of the spool, and the word that the host holds the VM
//! no longer.

use std::{
    io::{self, Read},
    time::Instant,
};

use guestscope_common::wire::{
    Body, ClockEcho, DecodeError, FrameReader, Record, Reply, encode_frame,
};

use super::{
    Connector, Link, SMALL_FRAME_BYTES, SPARE_FRAME_BYTES, SPARE_FRAME_MIN_BYTES, SPARE_FRAMES,
    SPARE_SMALL_FRAMES,
};
use crate::clock::monotonic_ns;
impl<C: Connector> Link<C> {
    /// Reads and applies every complete reply waiting; an error means the connection
    /// is gone (the replies that came before the end are applied first: the final
    /// acknowledgement often arrives together with the host closing the connection).
    pub(super) fn read_replies(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        self.replies_waiting = false;
        self.replies_read_at = Instant::now();
        let mut buf = [0u8; 4096];
        let mut ended = None;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    ended = Some("the host closed the connection".to_string());
                    break;
                }
                Ok(n) => {
                    self.replies.extend_from_slice(&buf[..n]);
                    // A short read emptied the socket: another would find nothing
                    // (what comes later, a poll sees).
                    if n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    ended = Some(format!("reading: {e}"));
                    break;
                }
            }
        }
        let mut used = 0;
        loop {
            let mut reader = FrameReader::new(&self.replies[used..]);
            match reader.next_reply() {
                Ok(Reply::Ack { next }) => {
                    used += reader.bytes_read() as usize;
                    self.acknowledge(next);
                }
                Ok(Reply::ClockProbe { id }) => {
                    used += reader.bytes_read() as usize;
                    self.echo(id);
                }
                Ok(Reply::Released) => {
                    used += reader.bytes_read() as usize;
                    self.released = true;
                }
                Err(DecodeError::Eof | DecodeError::Truncated { .. }) => break,
                Err(e) => return Err(format!("a bad reply from the host: {e}")),
            }
        }
        self.replies.drain(..used);
        ended.map_or(Ok(()), Err)
    }

    /// Queues the answer to clock probe `id`, stamped now.
    fn echo(&mut self, id: u32) {
        let echo = ClockEcho {
            id,
            guest_ns: monotonic_ns(),
        };
        match encode_frame(&Record {
            seq: self.next_seq,
            body: Body::ClockEcho(echo),
        }) {
            Ok(frame) => {
                self.preamble.extend_from_slice(&frame);
                self.stats.clock_echoes += 1;
            }
            Err(e) => tracing::warn!("encoding a clock echo: {e}"),
        }
    }

    /// Forgets the records the collector stored (`seq < next`).
    fn acknowledge(&mut self, next: u64) {
        // The host writes again: it holds the VM no longer.
        self.after_quiet = false;
        if next <= self.acked {
            return;
        }
        self.acked = next;
        self.forget_acknowledged();
        let waiting = self.write_idx > 0 || self.write_off > 0;
        self.unacked_since = waiting.then(Instant::now);
    }

    /// Drops the spooled records below [`Link::acked`], up to one partly written on this
    /// connection (finished first, or the stream would be cut inside it; it is dropped
    /// when its last byte is out: a record acknowledged while being resent).
    pub(super) fn forget_acknowledged(&mut self) {
        while let Some(front) = self.spool.front() {
            if front.seq >= self.acked || (self.write_idx == 0 && self.write_off > 0) {
                break;
            }
            let mut done = self.spool.pop_front().expect("front");
            self.spool_bytes -= done.frame.len() as u64;
            let capacity = done.frame.capacity();
            if self.spare.len() < SPARE_FRAMES
                && (SPARE_FRAME_MIN_BYTES..=SPARE_FRAME_BYTES).contains(&capacity)
            {
                done.frame.clear();
                self.spare.push(done.frame);
            } else if self.spare_small.len() < SPARE_SMALL_FRAMES
                && (SMALL_FRAME_BYTES..SPARE_FRAME_MIN_BYTES).contains(&capacity)
            {
                done.frame.clear();
                self.spare_small.push(done.frame);
            }
            if self.write_idx > 0 {
                self.write_idx -= 1;
            }
        }
    }
}
