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

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guestscope_common::plan::secret_matches;
use guestscope_common::wire::{
    Body, Connect, DecodeError, FrameReader, LinkLoss, Record, Reply, encode_reply,
};
use serde::{Deserialize, Serialize};

use crate::output::summary::Outcome;
use crate::run_end::RunEnd;
use crate::session::Session;
use crate::stream::clock_probe::{ClockProber, ProbeCounts};
use crate::timeline::clock::Sample;

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

/// One connection from the agent, both directions.
pub trait Conn: Read + Write + Send {
    /// A second handle on the same connection (to write acknowledgements with).
    fn clone_conn(&self) -> io::Result<Box<dyn Conn>>;
    /// Closes both directions (both handles).
    fn close(&self);
    /// Read and write timeouts.
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(write))
    }
}

impl Conn for vsock::VsockStream {
    fn clone_conn(&self) -> io::Result<Box<dyn Conn>> {
        Ok(Box::new(self.try_clone()?))
    }
    fn close(&self) {
        let _ = self.shutdown(Shutdown::Both);
    }
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(read))?;
        self.set_write_timeout(Some(write))
    }
}

/// Where the agent's connections arrive.
pub trait Accept {
    /// A connection already waiting, if any (never blocks).
    fn accept_now(&mut self) -> io::Result<Option<Box<dyn Conn>>>;
    /// Stops listening (new connections are refused) until [`Accept::resume`].
    fn pause(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Listens again after [`Accept::pause`].
    fn resume(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Accept for vsock::VsockListener {
    fn accept_now(&mut self) -> io::Result<Option<Box<dyn Conn>>> {
        self.set_nonblocking(true)?;
        match self.accept() {
            Ok((s, _)) => Ok(Some(Box::new(s))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}

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

/// One time the link was lost.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outage {
    /// Host seconds (since launch) when the collector saw the connection end.
    pub lost_host_s: f64,
    /// Host seconds when the agent's next connection was accepted (None: never).
    pub restored_host_s: Option<f64>,
    /// Time without the link on the host clock, s.
    pub gap_s: Option<f64>,
    /// How the connection ended, as the collector saw it.
    pub why: String,
    /// The first sequence number the new connection carried (resent records included).
    pub resumed_from: Option<u64>,
    /// Records the collector had applied when the link was lost.
    pub records_before: u64,
    /// The agent's view: when it found the link broken and restored it (guest clock),
    /// how many attempts it took, why.
    pub agent: Option<LinkLoss>,
    /// When a new agent took over (the guest restarted a dead agent): its pid. The
    /// events before and after are kept; what happened in between was not traced.
    pub restarted_agent: Option<u32>,
}

/// Everything about the connections of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LinkReport {
    /// Connections accepted from the agent.
    pub connections: u32,
    /// Connections refused (not this run's agent), with why.
    pub refused: Vec<String>,
    /// Times the link was lost (and restored, or not).
    pub outages: Vec<Outage>,
    /// Acknowledgements sent.
    pub acks_sent: u64,
    /// Acknowledgements that could not be written.
    pub ack_errors: u64,
}

impl LinkReport {
    /// Total time without the link, s (outages never restored not included).
    pub fn total_gap_s(&self) -> f64 {
        self.outages.iter().filter_map(|o| o.gap_s).sum()
    }
}

/// What [`receive`] saw of a stream.
pub struct Received {
    /// How the stream ended.
    pub outcome: Outcome,
    /// Bytes read.
    pub bytes: u64,
    /// The decode error that ended it, if any.
    pub decode_error: Option<String>,
    /// Seconds since `t0` when the agent's hello arrived.
    pub hello_host_s: Option<f64>,
    /// The connections.
    pub link: LinkReport,
    /// The clock-sync exchange's round trips.
    pub clock: ClockExchange,
}

/// What the clock-sync exchange of a run measured.
#[derive(Clone, Debug, Default)]
pub struct ClockExchange {
    /// Every answered round trip, in order (host times since QEMU's launch).
    pub samples: Vec<Sample>,
    /// Probes sent, answered, given up.
    pub counts: ProbeCounts,
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
/// Acknowledge after this many records ...
const ACK_EVERY_RECORDS: u64 = 64;
/// ... or this long after the last acknowledgement, whichever comes first.
const ACK_EVERY: Duration = Duration::from_millis(100);

/// Writes acknowledgements on a connection: after [`ACK_EVERY_RECORDS`] records, and
/// at least every [`ACK_EVERY`] while something applied is unacknowledged (the agent
/// takes a connection that acknowledges nothing for long for dead).
struct Acker {
    conn: Box<dyn Conn>,
    /// The next sequence number the session expects (everything below is stored).
    next: u64,
    /// The last `next` sent.
    sent: Option<u64>,
    unacked: u64,
    last: Instant,
    acks_sent: u64,
    errors: u64,
    prober: ClockProber,
    paused: Arc<AtomicBool>,
}

impl Acker {
    /// Writes a clock probe if one is due.
    fn probe_if_due(&mut self) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        if let Some(frame) = self.prober.due()
            && self.conn.write_all(&frame).is_err()
        {
            self.prober.write_failed();
        }
    }

    /// Notes that records below `next` are stored.
    fn applied(&mut self, next: u64) {
        self.next = next;
        self.unacked += 1;
    }

    /// Acknowledges now if something is unacknowledged and it is due (or `force`).
    fn ack_if_due(&mut self, force: bool) {
        if self.paused.load(Ordering::Relaxed) {
            return;
        }
        let pending = self.sent != Some(self.next);
        let due = force || self.unacked >= ACK_EVERY_RECORDS || self.last.elapsed() >= ACK_EVERY;
        if pending && due {
            let frame = encode_reply(&Reply::Ack { next: self.next }).expect("an ack encodes");
            match self.conn.write_all(&frame) {
                Ok(()) => self.acks_sent += 1,
                Err(_) => self.errors += 1,
            }
            self.sent = Some(self.next);
            self.unacked = 0;
            self.last = Instant::now();
        }
    }
}

/// Why reading a connection stopped.
enum Interrupt {
    Stop(Stop),
    /// A newer connection of the same agent arrived: the current one is dead to it.
    Superseded(Box<dyn Conn>, u64, Connect),
}

/// A reader that waits through socket timeouts while `alive` says to go on, asks it at
/// least every [`ALIVE_EVERY`] while data flows, and watches for a newer connection.
struct PatientReader<'a, 'b, 'c> {
    stream: Box<dyn Conn>,
    acker: Acker,
    alive: &'a mut Alive<'b>,
    accept: &'c mut dyn Accept,
    identity: (u32, u64),
    connection: u32,
    secret: Option<String>,
    refused: Vec<String>,
    interrupted: Option<Interrupt>,
    last_check: Instant,
    bytes: u64,
}

impl PatientReader<'_, '_, '_> {
    fn check(&mut self) -> io::Result<()> {
        self.last_check = Instant::now();
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

/// Whether `c` comes from a new agent that took over this run: the guest restarts an
/// agent that died, and the new one presents the run's secret under a new identity.
/// Without a secret nothing tells it from a stranger, so nothing is taken over.
fn restarted(secret: Option<&str>, identity: (u32, u64), c: &Connect) -> bool {
    secret.is_some() && (c.agent_pid, c.agent_start_ns) != identity && c.agent_start_ns > identity.1
}

/// Whether `c` carries the run on after connection `connection` of agent `identity`:
/// a newer connection of the same agent, or a restarted agent taking over.
fn continues_run(secret: Option<&str>, identity: (u32, u64), connection: u32, c: &Connect) -> bool {
    ((c.agent_pid, c.agent_start_ns) == identity && c.connection > connection)
        || restarted(secret, identity, c)
}

fn refusal(c: &Connect, identity: (u32, u64)) -> String {
    if (c.agent_pid, c.agent_start_ns) != identity {
        format!(
            "a connection from another agent (pid {}, started at {} ns; this run's is pid {}, {} ns)",
            c.agent_pid, c.agent_start_ns, identity.0, identity.1
        )
    } else {
        format!(
            "an out-of-date connection (number {}) of this run's agent",
            c.connection
        )
    }
}

/// Reads a new connection's first record, which must be a `Connect` with the run's
/// `secret` (if there is one); returns the connection, the record's `seq` (the first
/// sequence number the connection carries) and the `Connect`.
fn handshake(
    conn: Box<dyn Conn>,
    secret: Option<&str>,
) -> Result<(Box<dyn Conn>, u64, Connect), String> {
    if let Err(e) = conn.set_timeouts(HANDSHAKE_TIMEOUT, WRITE_TIMEOUT) {
        return Err(format!("a connection that could not be set up: {e}"));
    }
    let mut frames = FrameReader::new(conn);
    let first = frames.next_record();
    let conn = frames.into_inner();
    match first {
        Ok(Record {
            seq,
            body: Body::Connect(c),
        }) => {
            if secret.is_some_and(|expected| !secret_matches(&c.secret, expected)) {
                conn.close();
                return Err(format!(
                    "a connection without this run's secret (it claimed to be agent pid {}, connection {})",
                    c.agent_pid, c.connection
                ));
            }
            let _ = conn.set_timeouts(READ_TIMEOUT, WRITE_TIMEOUT);
            Ok((conn, seq, c))
        }
        Ok(r) => {
            conn.close();
            Err(format!(
                "a connection whose first record ({}) is not Connect",
                body_name(&r.body)
            ))
        }
        Err(e) => {
            conn.close();
            Err(format!("a connection without a valid Connect record: {e}"))
        }
    }
}

fn body_name(b: &Body) -> &'static str {
    match b {
        Body::Hello(_) => "Hello",
        Body::ProbeAttach(_) => "ProbeAttach",
        Body::Artifact { .. } => "Artifact",
        Body::WorkloadStarted(_) => "WorkloadStarted",
        Body::WorkloadExited(_) => "WorkloadExited",
        Body::Events(_) => "Events",
        Body::Stack { .. } => "Stack",
        Body::Log { .. } => "Log",
        Body::Finished(_) => "Finished",
        Body::Heartbeat { .. } => "Heartbeat",
        Body::Connect(_) => "Connect",
        Body::ClockEcho(_) => "ClockEcho",
        Body::Args(_) => "Args",
    }
}

/// How one connection ended.
enum ConnEnd {
    /// The agent's final record (or its hello, with `stop_at_hello`) arrived.
    Done,
    /// `alive` said to stop.
    Stopped(Stop),
    /// The connection broke (end of stream, an I/O error, a frame cut short, an
    /// injected fault).
    Lost(String),
    /// A newer connection of the agent replaced it (its first `seq`, its `Connect`).
    Superseded(Box<dyn Conn>, u64, Connect),
    /// An injected fault closed it.
    Fault(LinkFault),
    /// The stream is corrupt (bad magic, unknown version, undecodable record).
    Corrupt(DecodeError),
    /// `events.jsonl` could not be written.
    OutputFailed(io::Error),
}

struct Receiver<'s, 'a, 'b, 'c> {
    session: &'s mut LabSession,
    alive: &'a mut Alive<'b>,
    accept: &'c mut dyn Accept,
    t0: Instant,
    options: ReceiveOptions,
    identity: Option<(u32, u64)>,
    connection: u32,
    bytes: u64,
    hello_host_s: Option<f64>,
    link: LinkReport,
    /// Lent to each connection's [`Acker`] while it is served.
    prober: Option<ClockProber>,
}

impl Receiver<'_, '_, '_, '_> {
    fn now_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    fn lost(&mut self, why: String) {
        tracing::info!(
            records = self.session.records,
            "the agent's connection was lost: {why}"
        );
        self.link.outages.push(Outage {
            lost_host_s: self.now_s(),
            restored_host_s: None,
            gap_s: None,
            why,
            resumed_from: None,
            records_before: self.session.records,
            agent: None,
            restarted_agent: None,
        });
    }

    /// Serves one connection whose `Connect` was read.
    fn serve(
        &mut self,
        conn: Box<dyn Conn>,
        connect: Connect,
        on_record: &mut dyn FnMut(&LabSession),
    ) -> ConnEnd {
        let identity = (connect.agent_pid, connect.agent_start_ns);
        self.identity = Some(identity);
        self.connection = connect.connection;
        self.link.connections += 1;
        let acks = match conn.clone_conn() {
            Ok(w) => w,
            Err(e) => return ConnEnd::Lost(format!("cloning the connection: {e}")),
        };
        let _ = conn.set_timeouts(READ_TIMEOUT, WRITE_TIMEOUT);
        let mut acker = Acker {
            conn: acks,
            next: self.session.seq.next,
            sent: None,
            unacked: 0,
            last: Instant::now(),
            acks_sent: 0,
            errors: 0,
            prober: self
                .prober
                .take()
                .expect("the prober is home between connections"),
            paused: self.options.replies_paused.clone(),
        };
        // At once: what is already stored, so the agent need not resend it.
        acker.ack_if_due(true);
        let mut reader = PatientReader {
            stream: conn,
            acker,
            alive: &mut *self.alive,
            accept: &mut *self.accept,
            identity,
            connection: self.connection,
            secret: self.options.secret.clone(),
            refused: Vec::new(),
            interrupted: None,
            last_check: Instant::now(),
            bytes: 0,
        };
        let mut frames = FrameReader::new(&mut reader);
        let end = loop {
            let rec = match frames.next_record() {
                Ok(rec) => rec,
                Err(e) => break Err(e),
            };
            if matches!(rec.body, Body::Connect(_)) {
                break Ok(ConnEnd::Lost(
                    "a second Connect record on one connection".into(),
                ));
            }
            if let Body::ClockEcho(echo) = &rec.body {
                let acker = &mut frames.get_mut().acker;
                acker.prober.echo(echo);
                acker.probe_if_due();
                continue;
            }
            if let Err(e) = self.session.apply(rec) {
                break Ok(ConnEnd::OutputFailed(e));
            }
            if self.hello_host_s.is_none() && self.session.hello.is_some() {
                self.hello_host_s = Some(self.t0.elapsed().as_secs_f64());
            }
            on_record(self.session);
            let done = self.session.finished()
                || (self.options.stop_at_hello && self.session.hello.is_some());
            let acker = &mut frames.get_mut().acker;
            acker.applied(self.session.seq.next);
            acker.ack_if_due(done);
            acker.probe_if_due();
            if done {
                break Ok(ConnEnd::Done);
            }
            if let Some(i) = self
                .options
                .faults
                .iter()
                .position(|f| f.after_records <= self.session.records)
            {
                let fault = self.options.faults.remove(i);
                acker.conn.close();
                break Ok(ConnEnd::Fault(fault));
            }
        };
        drop(frames);
        reader.acker.prober.connection_ended();
        self.prober = Some(reader.acker.prober);
        self.bytes += reader.bytes;
        self.link.acks_sent += reader.acker.acks_sent;
        self.link.ack_errors += reader.acker.errors;
        self.link.refused.append(&mut reader.refused);
        match (end, reader.interrupted) {
            (Ok(end), _) => end,
            (Err(_), Some(Interrupt::Stop(stop))) => ConnEnd::Stopped(stop),
            (Err(_), Some(Interrupt::Superseded(conn, seq, c))) => {
                ConnEnd::Superseded(conn, seq, c)
            }
            (Err(DecodeError::Eof), None) => ConnEnd::Lost("the connection was closed".into()),
            (Err(e @ (DecodeError::Truncated { .. } | DecodeError::Io(_))), None) => {
                ConnEnd::Lost(e.to_string())
            }
            (Err(e), None) => ConnEnd::Corrupt(e),
        }
    }

    /// If `c` is a new agent that took over the run (see [`restarted`]), records it on
    /// the last outage and lets the session start the new agent's sequence at `seq`.
    fn take_over(&mut self, seq: u64, c: &Connect) {
        let Some(old) = self.identity else { return };
        if old == (c.agent_pid, c.agent_start_ns) {
            return;
        }
        tracing::warn!(
            old_pid = old.0,
            new_pid = c.agent_pid,
            "a restarted agent took over the run"
        );
        if let Some(o) = self.link.outages.last_mut() {
            o.restarted_agent = Some(c.agent_pid);
            o.why = format!("{} (the agent, pid {}, died)", o.why, old.0);
        }
        self.session.agent_restarted(seq);
    }

    /// Closes the link as a network outage would: nothing is accepted for a while.
    fn inject(&mut self, fault: LinkFault) -> String {
        tracing::info!(records = self.session.records, down_for = ?fault.down_for, "injected fault: closing the agent's connection");
        let _ = self.accept.pause();
        let until = Instant::now() + fault.down_for;
        while Instant::now() < until {
            if (self.alive)().is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Err(e) = self.accept.resume() {
            tracing::error!("listening again after the injected fault: {e}");
        }
        format!(
            "closed by the collector (injected fault, {} ms without listening)",
            fault.down_for.as_millis()
        )
    }

    /// Waits for the agent's next connection and reads its `Connect`.
    fn reconnection(&mut self) -> Result<(Box<dyn Conn>, u64, Connect), Stop> {
        let deadline = Instant::now() + self.options.reconnect_within;
        loop {
            (self.alive)()?;
            match self.accept.accept_now() {
                Ok(Some(conn)) => match handshake(conn, self.options.secret.as_deref()) {
                    Ok((conn, seq, c)) => {
                        let ok = self.identity.is_none_or(|id| {
                            continues_run(self.options.secret.as_deref(), id, self.connection, &c)
                        });
                        if ok {
                            return Ok((conn, seq, c));
                        }
                        conn.close();
                        self.link
                            .refused
                            .push(refusal(&c, self.identity.unwrap_or_default()));
                    }
                    Err(why) => self.link.refused.push(why),
                },
                Ok(None) => {}
                Err(e) => {
                    return Err(Stop::new(
                        RunEnd::LinkLost,
                        format!("accepting the agent's reconnection: {e}"),
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(Stop::new(
                    RunEnd::LinkLost,
                    format!(
                        "the agent did not reconnect within {:?}",
                        self.options.reconnect_within
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

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
    let mut rx = Receiver {
        session,
        alive,
        accept,
        t0,
        options,
        identity: None,
        connection: 0,
        bytes: 0,
        hello_host_s: None,
        link: LinkReport::default(),
        prober: Some(ClockProber::new(t0)),
    };
    let mut outcome = Outcome::default();
    let mut decode_error = None;
    let mut next = match handshake(first, rx.options.secret.as_deref()) {
        Ok((conn, _, c)) => Some((conn, c)),
        Err(why) => {
            rx.link.refused.push(why);
            None
        }
    };
    loop {
        let (conn, connect) = match next.take() {
            Some(n) => n,
            None => match rx.reconnection() {
                Ok((conn, seq, c)) => {
                    if let Some(o) = rx
                        .link
                        .outages
                        .last_mut()
                        .filter(|o| o.restored_host_s.is_none())
                    {
                        let now = rx.t0.elapsed().as_secs_f64();
                        o.restored_host_s = Some(now);
                        o.gap_s = Some(now - o.lost_host_s);
                        o.resumed_from = Some(seq);
                        o.agent = c.after.clone();
                    }
                    rx.take_over(seq, &c);
                    (conn, c)
                }
                Err(mut stop) => {
                    if rx.link.connections == 0 {
                        // Say why what did connect was not let in.
                        let how = if stop.how == RunEnd::LinkLost {
                            RunEnd::AgentNeverConnected
                        } else {
                            stop.how
                        };
                        let refused = if rx.link.refused.is_empty() {
                            String::new()
                        } else {
                            format!("; refused: {}", rx.link.refused.join("; "))
                        };
                        stop = Stop::new(how, format!("{}{refused}", stop.detail));
                    } else if stop.how == RunEnd::GuestHung
                        && rx
                            .link
                            .outages
                            .last()
                            .is_some_and(|o| o.restored_host_s.is_none())
                    {
                        // Silent because the link is down, not because the guest is stuck.
                        stop = Stop::new(
                            RunEnd::LinkLost,
                            format!("the link was lost and not restored: {}", stop.detail),
                        );
                    }
                    outcome.how = stop.how;
                    outcome.detail = Some(stop.detail);
                    break;
                }
            },
        };
        match rx.serve(conn, connect, on_record) {
            ConnEnd::Done => {
                outcome.how = RunEnd::Finished;
                outcome.complete = true;
                break;
            }
            ConnEnd::Stopped(stop) => {
                outcome.how = stop.how;
                outcome.detail = Some(stop.detail);
                break;
            }
            ConnEnd::Fault(fault) => {
                rx.lost(String::new());
                let why = rx.inject(fault);
                rx.link
                    .outages
                    .last_mut()
                    .expect("the outage just recorded")
                    .why = why;
            }
            ConnEnd::Lost(why) => rx.lost(why),
            ConnEnd::Superseded(conn, seq, c) => {
                let now = rx.now_s();
                rx.link.outages.push(Outage {
                    lost_host_s: now,
                    restored_host_s: Some(now),
                    gap_s: Some(0.0),
                    why: "the agent opened a new connection while the old one was still open"
                        .into(),
                    resumed_from: Some(seq),
                    records_before: rx.session.records,
                    agent: c.after.clone(),
                    restarted_agent: None,
                });
                rx.take_over(seq, &c);
                next = Some((conn, c));
            }
            ConnEnd::Corrupt(e) => {
                outcome.how = RunEnd::StreamError;
                outcome.detail = Some(e.to_string());
                decode_error = Some(e.to_string());
                break;
            }
            ConnEnd::OutputFailed(e) => {
                outcome.how = RunEnd::OutputWriteFailed;
                outcome.detail = Some(format!("writing events.jsonl: {e}"));
                break;
            }
        }
    }
    if !outcome.complete
        && rx
            .link
            .outages
            .last()
            .is_some_and(|o| o.restored_host_s.is_none())
        && outcome.how != RunEnd::Interrupted
    {
        let o = rx.link.outages.last().expect("an outage");
        let detail = outcome.detail.take().unwrap_or_default();
        outcome.detail = Some(format!(
            "{detail} (the link was lost at {:.1} s: {})",
            o.lost_host_s, o.why
        ));
    }
    let prober = rx
        .prober
        .take()
        .expect("the prober is home after the last connection");
    let clock = ClockExchange {
        samples: prober.samples().to_vec(),
        counts: prober.counts().clone(),
    };
    Received {
        outcome,
        bytes: rx.bytes,
        decode_error,
        hello_host_s: rx.hello_host_s,
        link: rx.link,
        clock,
    }
}
