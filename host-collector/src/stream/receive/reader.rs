//! Reading one connection: the [`Acker`] that acknowledges applied records, sends
//! clock probes and says when a hold of the VM has ended, and the [`PatientReader`] that waits through socket timeouts while
//! watching for a stop or a newer connection.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use guestscope_common::wire::{Connect, Reply, encode_reply};

use super::handshake::{continues_run, handshake, refusal};
use super::{
    ACK_EVERY, ACK_EVERY_BYTES, ACK_EVERY_RECORDS, ALIVE_EVERY, Accept, Alive, Conn, Stop,
};
use crate::stream::clock_probe::ClockProber;
/// Writes acknowledgements on a connection: after [`ACK_EVERY_RECORDS`] records or
/// [`ACK_EVERY_BYTES`] bytes, and
/// at least every [`ACK_EVERY`] while something applied is unacknowledged (the agent
/// takes a connection that acknowledges nothing for long for dead).
pub(super) struct Acker {
    pub(super) conn: Box<dyn Conn>,
    /// The next sequence number the session expects (everything below is stored).
    pub(super) next: u64,
    /// The last `next` sent.
    pub(super) sent: Option<u64>,
    pub(super) unacked: u64,
    /// Bytes read on the connection when the last acknowledgement went out, and now.
    pub(super) acked_at_byte: u64,
    pub(super) read_bytes: u64,
    pub(super) last: Instant,
    pub(super) acks_sent: u64,
    pub(super) errors: u64,
    pub(super) prober: ClockProber,
    pub(super) paused: Arc<AtomicBool>,
    /// `paused` was seen set since the last [`Reply::Released`].
    pub(super) held: bool,
    /// [`Reply::Released`] written.
    pub(super) releases_sent: u64,
}

impl Acker {
    /// An acker on `conn` (the connection's write half), whose session expects record
    /// `next`; `paused` says when nothing may be written to the guest.
    pub(super) fn new(
        conn: Box<dyn Conn>,
        next: u64,
        prober: ClockProber,
        paused: Arc<AtomicBool>,
    ) -> Acker {
        Acker {
            conn,
            next,
            sent: None,
            unacked: 0,
            acked_at_byte: 0,
            read_bytes: 0,
            last: Instant::now(),
            acks_sent: 0,
            errors: 0,
            prober,
            paused,
            held: false,
            releases_sent: 0,
        }
    }

    /// Tells the agent once that a hold of the VM has ended ([`Reply::Released`]): a
    /// workload running with a quiet link may stream again.
    pub(super) fn release_if_due(&mut self) {
        if self.paused.load(Ordering::Relaxed) {
            self.held = true;
            return;
        }
        if std::mem::take(&mut self.held) {
            let frame = encode_reply(&Reply::Released).expect("a release encodes");
            match self.conn.write_all(&frame) {
                Ok(()) => self.releases_sent += 1,
                Err(_) => self.errors += 1,
            }
        }
    }

    /// Writes a clock probe if one is due.
    pub(super) fn probe_if_due(&mut self) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        if let Some(frame) = self.prober.due()
            && self.conn.write_all(&frame).is_err()
        {
            self.prober.write_failed();
        }
    }

    /// Notes that records below `next` are stored, `read_bytes` read so far.
    pub(super) fn applied(&mut self, next: u64, read_bytes: u64) {
        self.next = next;
        self.unacked += 1;
        self.read_bytes = read_bytes;
    }

    /// Acknowledges now if something is unacknowledged and it is due (or `force`).
    pub(super) fn ack_if_due(&mut self, force: bool) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        let pending = self.sent != Some(self.next);
        let due = force
            || self.unacked >= ACK_EVERY_RECORDS
            || self.read_bytes - self.acked_at_byte >= ACK_EVERY_BYTES
            || self.last.elapsed() >= ACK_EVERY;
        if pending && due {
            let frame = encode_reply(&Reply::Ack { next: self.next }).expect("an ack encodes");
            match self.conn.write_all(&frame) {
                Ok(()) => self.acks_sent += 1,
                Err(_) => self.errors += 1,
            }
            self.sent = Some(self.next);
            self.unacked = 0;
            self.acked_at_byte = self.read_bytes;
            self.last = Instant::now();
        }
    }
}

/// Why reading a connection stopped.
pub(super) enum Interrupt {
    /// `alive` said to stop.
    Stop(Stop),
    /// A newer connection of the same agent arrived: the current one is dead to it.
    Superseded(Box<dyn Conn>, u64, Connect),
}

/// A reader that waits through socket timeouts while `alive` says to go on, asks it at
/// least every [`ALIVE_EVERY`] while data flows, and watches for a newer connection.
pub(super) struct PatientReader<'a, 'b, 'c> {
    pub(super) stream: Box<dyn Conn>,
    pub(super) acker: Acker,
    pub(super) alive: &'a mut Alive<'b>,
    pub(super) accept: &'c mut dyn Accept,
    pub(super) identity: (u32, u64),
    pub(super) connection: u32,
    pub(super) secret: Option<String>,
    pub(super) refused: Vec<String>,
    pub(super) interrupted: Option<Interrupt>,
    pub(super) last_check: Instant,
    pub(super) bytes: u64,
}

impl PatientReader<'_, '_, '_> {
    fn check(&mut self) -> io::Result<()> {
        self.last_check = Instant::now();
        self.acker.release_if_due();
        self.acker.ack_if_due(false);
        self.acker.probe_if_due();
        if let Err(stop) = (self.alive)() {
            let e = io::Error::other(stop.to_string());
            self.interrupted = Some(Interrupt::Stop(stop));
            return Err(e);
        }
        while let Ok(Some(new)) = self.accept.accept_now() {
            match handshake(new, self.secret.as_deref()) {
                Ok((conn, seq, c))
                    if continues_run(
                        self.secret.as_deref(),
                        self.identity,
                        self.connection,
                        &c,
                    ) =>
                {
                    self.interrupted = Some(Interrupt::Superseded(conn, seq, c));
                    return Err(io::Error::other("superseded by a newer connection"));
                }
                Ok((conn, _, c)) => {
                    conn.close();
                    self.refused.push(refusal(&c, self.identity));
                }
                Err(why) => self.refused.push(why),
            }
        }
        Ok(())
    }
}

impl Read for PatientReader<'_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.last_check.elapsed() >= ALIVE_EVERY {
            self.check()?;
        }
        loop {
            match self.stream.read(buf) {
                Ok(n) => {
                    self.bytes += n as u64;
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.check()?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
