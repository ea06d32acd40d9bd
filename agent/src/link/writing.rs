//! Writing to the collector: the preamble and the spooled frames, as far as the
//! connection takes them, and waiting for the connection to be ready.

use std::{
    io::{self, IoSlice, Write},
    os::fd::AsFd,
    time::{Duration, Instant},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::reconnect::Down;
use super::{Connector, FLUSH_BUDGET, GATHER_FRAMES, Link, WRITABLE_WAIT};
impl<C: Connector> Link<C> {
    /// Writes the preamble and spooled frames while the connection takes them: when it
    /// would block, waits up to [`WRITABLE_WAIT`] for room, for at most
    /// [`FLUSH_BUDGET`] in all. A host that reads gets everything at once (records
    /// keep their latency: events do not queue behind a large artifact); a stalled
    /// link costs little.
    pub(super) fn write_pending(&mut self) -> io::Result<()> {
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
            let Some(first) = self.spool.get(self.write_idx) else {
                break;
            };
            // The rest of the current frame and the frames after it, in one write.
            let slices: Vec<IoSlice<'_>> = std::iter::once(&first.frame[self.write_off..])
                .chain(
                    self.spool
                        .range(self.write_idx + 1..)
                        .take(GATHER_FRAMES - 1)
                        .map(|s| &s.frame[..]),
                )
                .map(IoSlice::new)
                .collect();
            match conn.write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.advance(n);
                    wrote += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((false, wrote)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((true, wrote))
    }

    /// Moves the write position `n` bytes on, through the spool: a frame written to its
    /// end is counted (a resend, if it was written before). Frames the collector has
    /// already acknowledged are forgotten only once all `n` bytes are accounted for: one
    /// write may span several frames, and forgetting one midway would shift the rest.
    pub(super) fn advance(&mut self, mut n: usize) {
        if self.unacked_since.is_none() {
            self.unacked_since = Some(Instant::now());
        }
        let mut acknowledged_written = false;
        while n > 0 {
            let Some(item) = self.spool.get(self.write_idx) else {
                break;
            };
            let rest = item.frame.len() - self.write_off;
            if n < rest {
                self.write_off += n;
                break;
            }
            n -= rest;
            let seq = item.seq;
            if seq < self.written_below {
                self.stats.records_resent += 1;
            }
            self.written_below = self.written_below.max(seq + 1);
            self.write_idx += 1;
            self.write_off = 0;
            acknowledged_written |= seq < self.acked;
        }
        if acknowledged_written {
            self.forget_acknowledged();
        }
    }

    /// Waits up to `timeout` for the connection to become readable or writable (or
    /// sleeps, when there is none); a readable one has its replies read at the next
    /// service.
    pub(super) fn wait(&mut self, timeout: Duration) {
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
        if fds[0].revents().is_some_and(|r| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        }) {
            self.replies_waiting = true;
        }
    }
}
