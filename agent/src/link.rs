//! The link to the host: a connection that may drop, a bounded spool of the records the
//! collector has not acknowledged, reconnection with backoff, and resending.
//!
//! Every record is kept in the spool until a [`Reply::Ack`](guestscope_common::wire::Reply::Ack) says the collector stored it.
//! When the connection fails (a read or write error, the host closing it, or no
//! acknowledgement for [`LinkConfig::ack_timeout`] while records wait), the link
//! reconnects with backoff and, after a [`Body::Connect`](guestscope_common::wire::Body::Connect) naming the lost link, resends
//! every unacknowledged record; the collector drops the duplicates by sequence number.
//!
//! A [`Reply::ClockProbe`](guestscope_common::wire::Reply::ClockProbe) is answered at once with a [`Body::ClockEcho`](guestscope_common::wire::Body::ClockEcho) stamped when the
//! probe was read: it goes out at the next frame boundary, ahead of the spool, and is
//! never spooled (a lost echo is only a lost clock sample).
//!
//! The spool is bounded: while connected, a full spool waits for acknowledgements (the
//! probes' ring buffer takes up the slack, and counts what it cannot); while the link is
//! down, an `Events` record that does not fit is dropped, and counted, leaving a gap in
//! the sequence. Other records (workload starts and exits, stacks, artifacts) are always
//! kept, so what arrives can still be attributed and symbolized.

use std::{
    collections::VecDeque,
    io,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use guestscope_common::{ProbeKind, wire::Totals};

use crate::stream::Sink;

mod connector;
mod reconnect;
mod replies;
mod writing;

pub use connector::{Connector, VsockConnector, connect_state};
use reconnect::Down;

/// How many acknowledged frames' buffers the link keeps for the next frames: as many as
/// may be in flight between two acknowledgements (the collector's
/// [`ACK_EVERY_RECORDS`](guestscope_common::wire::ACK_EVERY_RECORDS)). With 8, every
/// full batch past the eighth of an acknowledgement's window got a fresh buffer, which
/// musl's allocator maps, faults in and unmaps (`mmap`, `munmap` and their page faults were
/// about 1.4% of the guest's samples in the fopen loop's profile); the buffers kept hold no
/// more than the frames in flight held at their peak (two megabytes at 32 KiB each).
pub const SPARE_FRAMES: usize = guestscope_common::wire::ACK_EVERY_RECORDS as usize;

/// Largest buffer kept for reuse: an `Events` frame of a full batch fits; the
/// artifacts' 256 KiB chunks are not kept.
pub const SPARE_FRAME_BYTES: usize = 128 * 1024;

/// Smallest buffer kept for reuse: a full batch's `Events` frame
/// ([`crate::batch::MAX_EVENTS`] events at the bytes per event the packing reserves,
/// [`guestscope_common::wire::packed::RESERVED_BYTES_PER_EVENT`], and the frame's few
/// bytes more).
/// Smaller frames (stacks, heartbeats, a batch sent by age) come cheaply from the
/// allocator's pools. Kept, they took the spare slots, so a full batch's frame grew a
/// small buffer into a fresh 64 KiB one, which musl's allocator maps and unmaps: in the
/// fopen loop one `mmap`, 17 page faults and one `munmap` per batch, a quarter of the
/// agent's time (bpftrace's profile of the agent in the guest).
pub const SPARE_FRAME_MIN_BYTES: usize =
    crate::batch::MAX_EVENTS * guestscope_common::wire::packed::RESERVED_BYTES_PER_EVENT;

/// Most buffers of smaller frames kept for reuse ([`Sink::spare_small_frame`]).
///
/// A stack's record is a few hundred bytes, and new stacks keep coming (a hit in an
/// interrupt carries the interrupted code's frames): in the fopen loop about a hundred
/// a second. Each frame waits in the spool until the collector acknowledges it, so
/// they were freed in bursts, and musl's allocator unmapped each page group as it
/// emptied and mapped a new one for the next stacks: about 30 `mmap` and 20 `munmap`
/// calls a second, each followed by fresh page faults. Kept, at most this many
/// buffers of [`SMALL_FRAME_BYTES`] to [`SPARE_FRAME_MIN_BYTES`] (well under a
/// megabyte) serve them all.
pub const SPARE_SMALL_FRAMES: usize = 256;

/// Room a new small frame's buffer starts with: a stack of
/// [`guestscope_common::MAX_STACK_FRAMES`] frames (ten bytes each at most) and its
/// record's header fit, so it is made once and never grown.
pub const SMALL_FRAME_BYTES: usize = 1024;

/// Longest [`Sink::settle`] waits for acknowledgements before going on regardless.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

/// Default bound of the spool, bytes.
pub const DEFAULT_SPOOL_BYTES: u64 = 64 * 1024 * 1024;
/// First pause before reconnecting; doubled after each failed attempt up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the connection in one round of backpressure.
const WAIT_STEP: Duration = Duration::from_millis(100);
/// How long the first acknowledgement after a quiet workload may take: the host keeps
/// holding the VM (and writes nothing to the guest) until the workload's exit record
/// reaches it, behind the events the workload left in the ring buffer; with a stop
/// site the agent's own sending hits, that drain runs at the gdbstub's pace (tens of
/// milliseconds a hit), longer than [`LinkConfig::ack_timeout`].
pub const AFTER_QUIET_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest one service call spends writing what is pending.
const FLUSH_BUDGET: Duration = Duration::from_millis(100);
/// Longest wait for room on a connection that would block, before giving up for now.
const WRITABLE_WAIT: Duration = Duration::from_millis(5);
/// While [corked](Sink::cork), frames are written once this many bytes wait: one
/// packet's worth (see [`crate::packet_size::MAX_WRITE`]).
const CORK_BYTES: usize = crate::packet_size::MAX_WRITE;
/// Most spooled frames gathered into one write.
const GATHER_FRAMES: usize = crate::packet_size::MAX_SLICES;
/// Longest a service goes without reading the host's replies when no poll said the
/// connection was readable ([`Sink::host_wrote`]): loops that poll the connection
/// read as soon as the host writes; this bounds the wait of those that do not (the
/// synthetic producer's), so acknowledgements still free the spool.
pub const REPLIES_READ_EVERY: Duration = Duration::from_millis(10);

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The agent's pid, sent in every [`Connect`](guestscope_common::wire::Connect).
    pub agent_pid: u32,
    /// Guest CLOCK_MONOTONIC when the agent started, ns.
    pub agent_start_ns: u64,
    /// Bound of the spool of unacknowledged records, bytes.
    pub spool_bytes: u64,
    /// A connection whose oldest unacknowledged record waits longer than this is taken
    /// for dead.
    pub ack_timeout: Duration,
    /// The run's secret, presented on every connection.
    pub secret: String,
}

/// Why the link could not be finished.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Records were still unacknowledged when the time ran out.
    #[error("{records} records not acknowledged by the collector after {waited:?} ({why})")]
    Unacknowledged {
        /// Records left in the spool.
        records: usize,
        /// Time waited.
        waited: Duration,
        /// The link's state.
        why: String,
    },
}

/// A record kept until the collector acknowledges it.
struct Spooled {
    seq: u64,
    frame: Vec<u8>,
}

/// The counters of a link, for the run's [`Totals`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Connections after the first.
    pub reconnects: u64,
    /// Records written again on a new connection.
    pub records_resent: u64,
    /// `Events` records dropped because the spool was full while the link was down.
    pub spool_dropped_records: u64,
    /// Events in them, per probe id.
    pub spool_dropped_events: [u64; ProbeKind::COUNT],
    /// Largest spool size, bytes.
    pub spool_peak_bytes: u64,
    /// Clock probes answered.
    pub clock_echoes: u64,
}

/// A connection to the collector that survives drops (see the module docs).
pub struct Link<C: Connector> {
    connector: C,
    config: LinkConfig,
    conn: Option<C::Conn>,
    /// Bytes of out-of-sequence frames not written yet: the current connection's
    /// [`Connect`](guestscope_common::wire::Connect), then clock echoes. Written only at a frame boundary.
    preamble: Vec<u8>,
    spool: VecDeque<Spooled>,
    spool_bytes: u64,
    /// Buffers of acknowledged frames, emptied, for the next frames
    /// ([`Sink::spare_frame`]); at most [`SPARE_FRAMES`].
    spare: Vec<Vec<u8>>,
    /// The same for smaller frames ([`Sink::spare_small_frame`]); at most
    /// [`SPARE_SMALL_FRAMES`].
    spare_small: Vec<Vec<u8>>,
    /// Records below this are stored by the collector.
    acked: u64,
    /// The sequence number the next record will have.
    next_seq: u64,
    /// Spool index and byte offset of the next bytes to write on this connection.
    write_idx: usize,
    write_off: usize,
    /// Records below this were written on some connection (resends are counted).
    written_below: u64,
    /// Since when the oldest written, unacknowledged record has waited.
    unacked_since: Option<Instant>,
    /// A quiet workload ended and no acknowledgement came since: the host may still
    /// hold the VM, so the wait is [`AFTER_QUIET_ACK_TIMEOUT`].
    after_quiet: bool,
    /// The host said it holds the VM no longer ([`Reply::Released`]), not yet taken by
    /// [`Sink::released`].
    ///
    /// [`Reply::Released`]: guestscope_common::wire::Reply::Released
    released: bool,
    replies: Vec<u8>,
    /// Whether the host may have written since the replies were last read: set when a
    /// poll saw the connection readable (or hung up), and for a new connection.
    replies_waiting: bool,
    /// When the replies were last read.
    replies_read_at: Instant,
    connections: u32,
    down: Option<Down<C::Conn>>,
    stats: LinkStats,
    /// Whether frames are held back ([`Sink::cork`]), and the bytes held since the last
    /// write.
    corked: bool,
    corked_bytes: usize,
}

impl<C: Connector> Link<C> {
    /// A link over `conn`, the first connection, already made.
    pub fn new(connector: C, conn: C::Conn, config: LinkConfig) -> io::Result<Link<C>> {
        let mut link = Link {
            connector,
            config,
            conn: None,
            preamble: Vec::new(),
            spool: VecDeque::new(),
            spool_bytes: 0,
            spare: Vec::new(),
            spare_small: Vec::new(),
            acked: 0,
            next_seq: 0,
            write_idx: 0,
            write_off: 0,
            written_below: 0,
            unacked_since: None,
            after_quiet: false,
            released: false,
            replies: Vec::new(),
            replies_waiting: true,
            replies_read_at: Instant::now(),
            connections: 0,
            down: None,
            stats: LinkStats::default(),
            corked: false,
            corked_bytes: 0,
        };
        link.attach(conn, None)?;
        Ok(link)
    }

    /// The link's counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether a connection is up.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Records waiting for an acknowledgement.
    pub fn unacknowledged(&self) -> usize {
        self.spool.len()
    }

    /// Reads acknowledgements, writes what is pending, detects a dead connection and
    /// reconnects when it is time. Never blocks for long (a connection attempt at most).
    pub fn service(&mut self) {
        if self.conn.is_none() {
            self.try_reconnect();
        }
        if self.conn.is_some() {
            // A read that finds nothing is a system call for nothing: most services
            // (one per batch, one per wakeup) come between two replies.
            if (self.replies_waiting || self.replies_read_at.elapsed() >= REPLIES_READ_EVERY)
                && let Err(why) = self.read_replies()
            {
                self.lose(why);
                return;
            }
            self.corked_bytes = 0;
            if let Err(e) = self.write_pending() {
                self.lose(format!("writing: {e}"));
                return;
            }
            if let Some(since) = self.unacked_since
                && since.elapsed() >= self.ack_timeout()
            {
                let why = format!(
                    "no acknowledgement for {:.1} s with {} records waiting",
                    since.elapsed().as_secs_f64(),
                    self.spool.len()
                );
                self.lose(why);
            }
        }
    }

    /// How long written records may wait for an acknowledgement before the connection
    /// is taken for dead.
    fn ack_timeout(&self) -> Duration {
        if self.after_quiet {
            self.config.ack_timeout.max(AFTER_QUIET_ACK_TIMEOUT)
        } else {
            self.config.ack_timeout
        }
    }

    /// Waits until the collector has acknowledged every record, reconnecting as needed,
    /// for at most `timeout`; then closes the connection.
    pub fn finish(&mut self, timeout: Duration) -> Result<(), LinkError> {
        let started = Instant::now();
        loop {
            self.service();
            if self.spool.is_empty() {
                break;
            }
            if started.elapsed() >= timeout {
                let why = match (&self.conn, &self.down) {
                    (Some(_), _) => "connected".to_string(),
                    (None, Some(d)) => format!("down: {} ({} attempts)", d.why, d.attempts),
                    (None, None) => "down".into(),
                };
                return Err(LinkError::Unacknowledged {
                    records: self.spool.len(),
                    waited: started.elapsed(),
                    why,
                });
            }
            self.wait(WAIT_STEP);
        }
        if let Some(conn) = self.conn.take() {
            drop(conn);
        }
        Ok(())
    }
}

impl<C: Connector> Sink for Link<C> {
    fn send_frame(
        &mut self,
        seq: u64,
        frame: Vec<u8>,
        events: &[u64; ProbeKind::COUNT],
    ) -> io::Result<()> {
        self.next_seq = seq + 1;
        if !self.corked {
            self.service();
        }
        let len = frame.len() as u64;
        // Connected: wait for the collector rather than drop (backpressure), until the
        // connection is found dead.
        while self.conn.is_some()
            && !self.spool.is_empty()
            && self.spool_bytes + len > self.config.spool_bytes
        {
            self.wait(WAIT_STEP);
            self.service();
        }
        let is_events = events.iter().any(|&n| n > 0);
        if is_events && !self.spool.is_empty() && self.spool_bytes + len > self.config.spool_bytes {
            self.stats.spool_dropped_records += 1;
            for (total, n) in self.stats.spool_dropped_events.iter_mut().zip(events) {
                *total += n;
            }
            return Ok(());
        }
        self.spool_bytes += len;
        self.stats.spool_peak_bytes = self.stats.spool_peak_bytes.max(self.spool_bytes);
        self.spool.push_back(Spooled { seq, frame });
        self.corked_bytes += len as usize;
        if !self.corked || self.corked_bytes >= CORK_BYTES {
            self.service();
        }
        Ok(())
    }

    fn released(&mut self) -> bool {
        // Read only: a quiet workload writes nothing until the host lets it. A lost
        // connection is left for the next service, which reconnects.
        if let Err(e) = self.read_replies() {
            tracing::debug!("reading the host's replies while quiet: {e}");
        }
        std::mem::take(&mut self.released)
    }

    fn quiet_ended(&mut self) {
        if self.unacked_since.is_some() {
            self.unacked_since = Some(Instant::now());
        }
        self.after_quiet = true;
    }

    fn cork(&mut self) {
        self.corked = true;
    }

    fn uncork(&mut self) {
        self.corked = false;
        self.service();
    }

    fn service(&mut self) {
        Link::service(self);
    }

    fn host_wrote(&mut self) {
        self.replies_waiting = true;
    }

    fn settle(&mut self, bytes: u64) {
        let give_up = Instant::now() + SETTLE_LIMIT;
        while self.conn.is_some() && self.spool_bytes > bytes && Instant::now() < give_up {
            self.wait(WAIT_STEP);
            self.service();
        }
    }

    fn spare_frame(&mut self) -> Vec<u8> {
        // A new one as large as the pool keeps: a batch sent by age, smaller, would
        // otherwise come back too small for it, and be freed.
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SPARE_FRAME_MIN_BYTES))
    }

    fn spare_small_frame(&mut self) -> Vec<u8> {
        self.spare_small
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SMALL_FRAME_BYTES))
    }

    fn unwritten(&self) -> usize {
        // Records from the write position on (a partly written one included).
        self.spool.len().saturating_sub(self.write_idx)
    }

    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.conn.as_ref().map(|c| c.as_fd())
    }

    fn fill_totals(&self, totals: &mut Totals) {
        let s = &self.stats;
        totals.reconnects = s.reconnects;
        totals.spool_dropped_records = s.spool_dropped_records;
        totals.spool_dropped_events = s.spool_dropped_events.iter().sum();
        totals.spool_peak_bytes = s.spool_peak_bytes;
        totals.spool_dropped_by_probe = ProbeKind::ALL
            .iter()
            .map(|k| (k.name().to_string(), s.spool_dropped_events[*k as usize]))
            .filter(|(_, n)| *n > 0)
            .collect();
    }
}

#[cfg(test)]
mod tests;
