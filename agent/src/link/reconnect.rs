//! Losing and restoring the connection: taking a new connection (and queueing its
//! `Connect`), dropping a dead one, and reconnecting with backoff.

use std::{
    io,
    time::{Duration, Instant},
};

use guestscope_common::wire::{Body, Connect, LinkLoss, Record, encode_frame};

use super::connector::{connect_state, set_nonblocking};
use super::{CONNECT_TIMEOUT, Connector, FIRST_BACKOFF, Link, MAX_BACKOFF};
use crate::clock::monotonic_ns;

/// The link while no connection is up: since when and why, the attempts so far and
/// when the next one is due.
pub(super) struct Down<T> {
    pub(super) since_ns: u64,
    pub(super) why: String,
    pub(super) attempts: u32,
    pub(super) next_try: Instant,
    pub(super) backoff: Duration,
    /// A connection being made, and since when.
    pub(super) connecting: Option<(T, Instant)>,
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

impl<C: Connector> Link<C> {
    /// Takes `conn` as the current connection and queues its [`Connect`].
    pub(super) fn attach(&mut self, conn: C::Conn, after: Option<LinkLoss>) -> io::Result<()> {
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
        self.replies_waiting = true;
        Ok(())
    }

    /// Drops the connection (if any) and schedules a reconnection.
    pub(super) fn lose(&mut self, why: String) {
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

    /// When it is time, starts a connection attempt or checks the one in progress;
    /// a made connection is attached with the [`LinkLoss`] it ends.
    pub(super) fn try_reconnect(&mut self) {
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
}
