//! The link to the host: a connection that may drop, a bounded spool of the records the
//! collector has not acknowledged, reconnection with backoff, and resending.
//!
//! Every record is kept in the spool until a [`Reply::Ack`] says the collector stored it.
//! When the connection fails (a read or write error, the host closing it, or no
//! acknowledgement for [`LinkConfig::ack_timeout`] while records wait), the link
//! reconnects with backoff and, after a [`Body::Connect`] naming the lost link, resends
//! every unacknowledged record; the collector drops the duplicates by sequence number.
//!
//! A [`Reply::ClockProbe`] is answered at once with a [`Body::ClockEcho`] stamped when the
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
    io::{self, Read, Write},
    os::fd::{AsFd, AsRawFd},
    time::{Duration, Instant},
};

use guestscope_common::{
    ProbeKind,
    wire::{
        Body, ClockEcho, Connect, DecodeError, FrameReader, LinkLoss, Record, Reply, Totals,
        encode_frame,
    },
};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::{clock::monotonic_ns, stream::Sink};

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
/// Longest one service call spends writing what is pending.
const FLUSH_BUDGET: Duration = Duration::from_millis(100);
/// Longest wait for room on a connection that would block, before giving up for now.
const WRITABLE_WAIT: Duration = Duration::from_millis(5);

/// Makes connections to the collector.
pub trait Connector {
    /// A connection.
    type Conn: Read + Write + AsFd;
    /// Starts connecting without blocking (once; the link paces retries). The
    /// connection may still be in progress: [`connect_state`] says when it is made.
    fn start(&mut self) -> io::Result<Self::Conn>;
}

/// Whether a connection from [`Connector::start`] is made: `Ok(true)` made,
/// `Ok(false)` still in progress, `Err` failed.
pub fn connect_state<T: AsFd>(conn: &T) -> io::Result<bool> {
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::SocketError)? {
        0 => Ok(true),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Connects over vsock to the host.
#[derive(Debug, Clone, Copy)]
pub struct VsockConnector {
    /// Host CID.
    pub cid: u32,
    /// Port.
    pub port: u32,
}

impl Connector for VsockConnector {
    // Small writes keep each vsock packet in one buffer (see crate::packet_size).
    type Conn = crate::packet_size::SmallWrites<vsock::VsockStream>;
    /// A non-blocking connect: a blocking one waits seconds for an absent host, while
    /// the probes' ring buffer fills.
    fn start(&mut self) -> io::Result<Self::Conn> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(fd.as_raw_fd(), &VsockAddr::new(self.cid, self.port)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(crate::packet_size::SmallWrites(vsock::VsockStream::from(
            fd,
        )))
    }
}

/// How the link behaves.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// The agent's pid, sent in every [`Connect`].
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

struct Spooled {
    seq: u64,
    frame: Vec<u8>,
}

struct Down<T> {
    since_ns: u64,
    why: String,
    attempts: u32,
    next_try: Instant,
    backoff: Duration,
    /// A connection being made, and since when.
    connecting: Option<(T, Instant)>,
}

impl<T> Down<T> {
    fn new(since_ns: u64, why: String, attempts: u32) -> Down<T> {
        Down {
            since_ns,
            why,
            attempts,
            next_try: Instant::now() + FIRST_BACKOFF,
            backoff: FIRST_BACKOFF,
            connecting: None,
        }
    }

    /// Schedules the next attempt after a failed one.
    fn failed(&mut self, e: &io::Error) {
        if self.attempts == 1 {
            tracing::info!("reconnecting to the host: {e}; retrying with backoff");
        }
        self.connecting = None;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.next_try = Instant::now() + self.backoff;
    }
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
    /// [`Connect`], then clock echoes. Written only at a frame boundary.
    preamble: Vec<u8>,
    spool: VecDeque<Spooled>,
    spool_bytes: u64,
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
    replies: Vec<u8>,
    connections: u32,
    down: Option<Down<C::Conn>>,
    stats: LinkStats,
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
            acked: 0,
            next_seq: 0,
            write_idx: 0,
            write_off: 0,
            written_below: 0,
            unacked_since: None,
            replies: Vec::new(),
            connections: 0,
            down: None,
            stats: LinkStats::default(),
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

    /// Takes `conn` as the current connection and queues its [`Connect`].
    fn attach(&mut self, conn: C::Conn, after: Option<LinkLoss>) -> io::Result<()> {
        set_nonblocking(&conn)?;
        self.connections += 1;
        let first = self.spool.front().map_or(self.next_seq, |s| s.seq);
        let connect = Connect {
            agent_pid: self.config.agent_pid,
            agent_start_ns: self.config.agent_start_ns,
            connection: self.connections,
            after,
            secret: self.config.secret.clone(),
        };
        self.preamble = encode_frame(&Record {
            seq: first,
            body: Body::Connect(connect),
        })
        .map_err(io::Error::other)?;
        self.conn = Some(conn);
        self.write_idx = 0;
        self.write_off = 0;
        self.unacked_since = None;
        self.replies.clear();
        Ok(())
    }

    /// Drops the connection (if any) and schedules a reconnection.
    fn lose(&mut self, why: String) {
        if self.conn.take().is_none() {
            return;
        }
        if self.spool.is_empty() {
            // Everything was acknowledged: nothing is lost with it (the usual end).
            tracing::debug!("connection to the host closed: {why}");
        } else {
            tracing::warn!(
                acked = self.acked,
                unacked = self.spool.len(),
                "link to the host lost: {why}"
            );
        }
        self.down = Some(Down::new(monotonic_ns(), why, 0));
    }

    /// Reads acknowledgements, writes what is pending, detects a dead connection and
    /// reconnects when it is time. Never blocks for long (a connection attempt at most).
    pub fn service(&mut self) {
        if self.conn.is_none() {
            self.try_reconnect();
        }
        if self.conn.is_some() {
            if let Err(why) = self.read_replies() {
                self.lose(why);
                return;
            }
            if let Err(e) = self.write_pending() {
                self.lose(format!("writing: {e}"));
                return;
            }
            if let Some(since) = self.unacked_since
                && since.elapsed() >= self.config.ack_timeout
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

    fn try_reconnect(&mut self) {
        let Some(down) = self.down.as_mut() else {
            return;
        };
        if down.connecting.is_none() {
            if Instant::now() < down.next_try {
                return;
            }
            down.attempts += 1;
            match self.connector.start() {
                Ok(conn) => down.connecting = Some((conn, Instant::now())),
                Err(e) => {
                    down.failed(&e);
                    return;
                }
            }
        }
        let (conn, started) = down.connecting.as_ref().expect("connecting");
        match connect_state(conn) {
            Ok(false) if started.elapsed() < CONNECT_TIMEOUT => {}
            Ok(false) => down.failed(&io::Error::from(io::ErrorKind::TimedOut)),
            Err(e) => down.failed(&e),
            Ok(true) => {
                let mut down = self.down.take().expect("down");
                let (conn, _) = down.connecting.take().expect("connecting");
                let loss = LinkLoss {
                    lost_ns: down.since_ns,
                    restored_ns: monotonic_ns(),
                    attempts: down.attempts,
                    why: down.why,
                    acked: self.acked,
                };
                tracing::info!(
                    attempts = loss.attempts,
                    resend = self.spool.len(),
                    "link to the host restored"
                );
                match self.attach(conn, Some(loss.clone())) {
                    Ok(()) => self.stats.reconnects += 1,
                    Err(e) => {
                        let why = format!("{}; then setting up the new connection: {e}", loss.why);
                        self.down = Some(Down::new(loss.lost_ns, why, loss.attempts));
                    }
                }
            }
        }
    }

    /// Reads and applies every complete reply waiting; an error means the connection
    /// is gone (the replies that came before the end are applied first: the final
    /// acknowledgement often arrives together with the host closing the connection).
    fn read_replies(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; 4096];
        let mut ended = None;
        loop {
            match conn.read(&mut buf) {
                Ok(0) => {
                    ended = Some("the host closed the connection".to_string());
                    break;
                }
                Ok(n) => self.replies.extend_from_slice(&buf[..n]),
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
    fn forget_acknowledged(&mut self) {
        while let Some(front) = self.spool.front() {
            if front.seq >= self.acked || (self.write_idx == 0 && self.write_off > 0) {
                break;
            }
            let done = self.spool.pop_front().expect("front");
            self.spool_bytes -= done.frame.len() as u64;
            if self.write_idx > 0 {
                self.write_idx -= 1;
            }
        }
    }

    /// Writes the preamble and spooled frames while the connection takes them: when it
    /// would block, waits up to [`WRITABLE_WAIT`] for room, for at most
    /// [`FLUSH_BUDGET`] in all. A host that reads gets everything at once (records
    /// keep their latency: events do not queue behind a large artifact); a stalled
    /// link costs little.
    fn write_pending(&mut self) -> io::Result<()> {
        let started = Instant::now();
        loop {
            let (done, wrote) = self.write_some()?;
            // A round that wrote nothing means the room poll saw was not there: stop.
            if done
                || wrote == 0
                || started.elapsed() >= FLUSH_BUDGET
                || !self.writable_within(WRITABLE_WAIT)
            {
                return Ok(());
            }
        }
    }

    /// Whether the connection has room to write within `timeout` (a hang-up or an error
    /// is not room).
    fn writable_within(&self, timeout: Duration) -> bool {
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLOUT)];
        let ms = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
        if !matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0) {
            return false;
        }
        fds[0].revents().is_some_and(|r| {
            r.contains(PollFlags::POLLOUT) && !r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)
        })
    }

    /// Writes until everything is written or the connection would block; returns whether
    /// everything is written, and the bytes written.
    fn write_some(&mut self) -> io::Result<(bool, usize)> {
        let mut wrote = 0;
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok((true, wrote));
            };
            // Out-of-sequence frames go between records, never inside one.
            if !self.preamble.is_empty() && self.write_off == 0 {
                match conn.write(&self.preamble) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.preamble.drain(..n);
                        wrote += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, wrote)),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let Some(item) = self.spool.get(self.write_idx) else {
                break;
            };
            match conn.write(&item.frame[self.write_off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    if self.unacked_since.is_none() {
                        self.unacked_since = Some(Instant::now());
                    }
                    self.write_off += n;
                    wrote += n;
                    if self.write_off == item.frame.len() {
                        if item.seq < self.written_below {
                            self.stats.records_resent += 1;
                        }
                        self.written_below = self.written_below.max(item.seq + 1);
                        self.write_idx += 1;
                        self.write_off = 0;
                        if item.seq < self.acked {
                            self.forget_acknowledged();
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, wrote)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((true, wrote))
    }

    /// Waits up to `timeout` for the connection to become readable or writable (or
    /// sleeps, when there is none).
    fn wait(&self, timeout: Duration) {
        let Some(conn) = self.conn.as_ref() else {
            match self.down.as_ref() {
                Some(Down {
                    connecting: Some((c, _)),
                    ..
                }) => {
                    let ms = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
                    let _ = poll(
                        &mut [PollFd::new(c.as_fd(), PollFlags::POLLOUT)],
                        PollTimeout::from(ms),
                    );
                }
                Some(d) => std::thread::sleep(
                    timeout.min(d.next_try.saturating_duration_since(Instant::now())),
                ),
                None => std::thread::sleep(timeout),
            }
            return;
        };
        let mut flags = PollFlags::POLLIN;
        if !self.preamble.is_empty() || self.write_idx < self.spool.len() {
            flags |= PollFlags::POLLOUT;
        }
        let ms = timeout.as_millis().min(u128::from(u16::MAX)) as u16;
        let mut fds = [PollFd::new(conn.as_fd(), flags)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
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
        self.service();
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
        self.service();
        Ok(())
    }

    fn service(&mut self) {
        Link::service(self);
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

fn set_nonblocking<T: AsFd>(conn: &T) -> io::Result<()> {
    let fd = conn.as_fd().as_raw_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests;
