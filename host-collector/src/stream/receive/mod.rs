//! Receiving the agent's stream: connections, acknowledgements, reconnections.
//!
//! Every connection starts with a `Connect` record. The collector applies the records
//! that follow to the [`Session`] (which drops duplicates by sequence number) and
//! acknowledges them on the same connection, so the agent can forget them. When a
//! connection breaks, it waits for the agent to reconnect: the agent resends what was not
//! acknowledged, and the outage (its time on both clocks, what was resent) goes into the
//! [`LinkReport`]. A connection whose first record is not a `Connect` of this run's agent
//! is refused and counted, and so is one without the run's secret.
//!
//! On the same connection the collector runs the clock-sync exchange
//! ([`super::clock_probe`]): the agent's echoes are taken out of the stream before the
//! session sees it, and their round trips come back in [`Received::clock`].

use std::io;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use guestscope_common::wire::ACK_EVERY_RECORDS;

use crate::run_end::Outcome;
use crate::run_end::RunEnd;
use crate::session::Session;

mod conn;
mod handshake;
mod reader;
mod receiver;
mod report;

pub use conn::{Accept, Conn};
use receiver::Receiver;
pub use report::{ClockExchange, LinkReport, Outage, Received};

/// Why a run stopped waiting for the guest before the stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    /// How the run ends.
    pub how: RunEnd,
    /// What exactly happened.
    pub detail: String,
}

impl Stop {
    /// A stop with outcome `how`.
    pub fn new(how: RunEnd, detail: impl Into<String>) -> Stop {
        Stop {
            how,
            detail: detail.into(),
        }
    }

    /// The stop for a received SIGINT/SIGTERM/SIGHUP, if one was received.
    pub fn interrupted() -> Option<Stop> {
        crate::interrupt::received().map(|s| {
            Stop::new(
                RunEnd::Interrupted,
                format!("{s} received; QEMU stopped, everything received so far written"),
            )
        })
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.how, self.detail)
    }
}

/// Asked between reads whether to keep waiting for the guest.
pub type Alive<'a> = dyn FnMut() -> Result<(), Stop> + 'a;

/// The session type the collector fills.
pub type LabSession = Session<Box<dyn io::Write + Send>>;

/// A fault injected into the link, for tests: the collector closes the agent's
/// connection as a network outage would, and stops listening for a while.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkFault {
    /// Close the connection once this many records have been applied.
    pub after_records: u64,
    /// Refuse new connections for this long afterwards.
    pub down_for: Duration,
}

/// How to receive.
#[derive(Clone, Debug)]
pub struct ReceiveOptions {
    /// Stop at the agent's hello (boot-time measurements).
    pub stop_at_hello: bool,
    /// Longest wait for the agent to reconnect after a lost connection.
    pub reconnect_within: Duration,
    /// Faults to inject (tests).
    pub faults: Vec<LinkFault>,
    /// The run's secret: a connection whose `Connect` does not carry it is refused
    /// (`None`: any agent is let in).
    pub secret: Option<String>,
    /// While set, nothing is written to the agent (no acknowledgement, no clock probe):
    /// set while the gdbstub holds the VM, since a VM stop with vsock traffic in flight
    /// can wedge the vhost-user vsock device.
    pub replies_paused: Arc<AtomicBool>,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            stop_at_hello: false,
            reconnect_within: Duration::from_secs(60),
            faults: Vec::new(),
            secret: None,
            replies_paused: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// How often `alive` is asked while data keeps arriving (a busy stream never times out).
const ALIVE_EVERY: Duration = Duration::from_millis(250);
/// Read timeout of a connection: how often a quiet connection checks `alive` and
/// acknowledges what it applied.
const READ_TIMEOUT: Duration = Duration::from_millis(100);
/// Write timeout of acknowledgements (an agent that does not read them must not stall
/// the collector; a later acknowledgement supersedes a lost one).
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for a new connection's `Connect`.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the first connection's `Connect`: the agent connects as it starts
/// but writes its `Connect` with its first record, the hello, once its probes are
/// loaded (5.7 s for the user-probes test's under TCG, longer with many probes; at
/// [`HANDSHAKE_TIMEOUT`] the first connection was refused and the agent reconnected).
/// The wait asks the run whether it goes on at each read timeout, so QEMU exiting or
/// the run's time limit ends it at once.
const FIRST_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(120);
/// Acknowledge after [`ACK_EVERY_RECORDS`] records ...
/// ... or this many bytes (the agent's artifacts come in 256 KiB records, and it
/// keeps little of them unacknowledged) ...
const ACK_EVERY_BYTES: u64 = 512 * 1024;
/// ... or this long after the last acknowledgement, whichever comes first.
const ACK_EVERY: Duration = Duration::from_millis(100);

/// Reads the agent's stream into `session`, starting with connection `first`, until the
/// agent's final record (or its hello, with `stop_at_hello`), a corrupt stream, or a
/// stop from `alive` (asked between reads); a lost connection is waited out while the
/// agent reconnects on `accept`. `on_record` runs after each applied record.
pub fn receive(
    first: Box<dyn Conn>,
    accept: &mut dyn Accept,
    session: &mut LabSession,
    alive: &mut Alive<'_>,
    t0: Instant,
    options: ReceiveOptions,
    on_record: &mut dyn FnMut(&LabSession),
) -> Received {
    let mut rx = Receiver::new(session, alive, accept, t0, options);
    let mut outcome = Outcome::default();
    let mut decode_error = None;
    let mut next = rx.first_connection(first);
    loop {
        let (conn, connect) = match next.take() {
            Some(n) => n,
            None => match rx.reconnect() {
                Ok(n) => n,
                Err(stop) => {
                    outcome.how = stop.how;
                    outcome.detail = Some(stop.detail);
                    break;
                }
            },
        };
        let end = rx.serve(conn, connect, on_record);
        match rx.after_connection(end, &mut outcome, &mut decode_error) {
            ControlFlow::Continue(n) => next = n,
            ControlFlow::Break(()) => break,
        }
    }
    rx.note_unrestored_outage(&mut outcome);
    rx.into_received(outcome, decode_error)
}
