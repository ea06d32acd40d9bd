//! The receiving loop's state across connections: serving one connection, recording
//! outages, injected faults, reconnections and agent take-overs.

use std::io;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use guestscope_common::wire::{Body, Connect, DecodeError, FrameReader};

use super::handshake::{Waited, continues_run, handshake, patient_handshake, refusal};
use super::reader::{Acker, Interrupt, PatientReader};
use super::{
    Accept, Alive, ClockExchange, Conn, FIRST_HANDSHAKE_TIMEOUT, LabSession, LinkFault, LinkReport,
    Outage, READ_TIMEOUT, ReceiveOptions, Received, Stop, WRITE_TIMEOUT,
};
use crate::run_end::Outcome;
use crate::run_end::RunEnd;
use crate::stream::clock_probe::ClockProber;
/// A connection let in, with its `Connect`.
pub(super) type Accepted = (Box<dyn Conn>, Connect);

/// How one connection ended.
pub(super) enum ConnEnd {
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

/// The state of one run's receiving across its connections.
pub(super) struct Receiver<'s, 'a, 'b, 'c> {
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
    /// Why the run stopped while the first connection's `Connect` was awaited.
    stopped_at_start: Option<Stop>,
}

impl<'s, 'a, 'b, 'c> Receiver<'s, 'a, 'b, 'c> {
    /// A receiver that has seen no connection yet.
    pub(super) fn new(
        session: &'s mut LabSession,
        alive: &'a mut Alive<'b>,
        accept: &'c mut dyn Accept,
        t0: Instant,
        options: ReceiveOptions,
    ) -> Self {
        Receiver {
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
            stopped_at_start: None,
        }
    }

    /// Reads the first connection's `Connect` (waiting up to
    /// [`FIRST_HANDSHAKE_TIMEOUT`] while the run is alive: the agent writes it once its
    /// probes are loaded); a refused one is counted and `None` returned (the run then
    /// waits for a reconnection, which ends at once on a stop `alive` gave meanwhile).
    pub(super) fn first_connection(&mut self, first: Box<dyn Conn>) -> Option<Accepted> {
        match patient_handshake(
            first,
            self.options.secret.as_deref(),
            FIRST_HANDSHAKE_TIMEOUT,
            &mut *self.alive,
        ) {
            Ok((conn, _, c)) => Some((conn, c)),
            Err(Waited::Refused(why)) => {
                self.link.refused.push(why);
                None
            }
            Err(Waited::Stopped(stop)) => {
                self.stopped_at_start = Some(stop);
                None
            }
        }
    }

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
    pub(super) fn serve(
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
        let prober = self
            .prober
            .take()
            .expect("the prober is home between connections");
        let mut acker = Acker::new(
            acks,
            self.session.seq.next,
            prober,
            self.options.replies_paused.clone(),
        );
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
            let reader = frames.get_mut();
            let acker = &mut reader.acker;
            acker.applied(self.session.seq.next, reader.bytes);
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
        self.link.releases_sent += reader.acker.releases_sent;
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

    /// If `c` is a new agent that took over the run (see
    /// [`restarted`](super::handshake::restarted)), records it on
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

    /// Waits for the agent's next connection after a lost one; records when the link
    /// came back and any agent take-over. A stop says why no connection came.
    pub(super) fn reconnect(&mut self) -> Result<Accepted, Stop> {
        if let Some(stop) = self.stopped_at_start.take() {
            return Err(self.explain_stop(stop));
        }
        match self.reconnection() {
            Ok((conn, seq, c)) => {
                if let Some(o) = self
                    .link
                    .outages
                    .last_mut()
                    .filter(|o| o.restored_host_s.is_none())
                {
                    let now = self.t0.elapsed().as_secs_f64();
                    o.restored_host_s = Some(now);
                    o.gap_s = Some(now - o.lost_host_s);
                    o.resumed_from = Some(seq);
                    o.agent = c.after.clone();
                }
                self.take_over(seq, &c);
                Ok((conn, c))
            }
            Err(stop) => Err(self.explain_stop(stop)),
        }
    }

    /// `stop` as the run's outcome: a run whose agent never got in says why what did
    /// connect was refused; a guest silent while the link is down lost the link.
    fn explain_stop(&self, mut stop: Stop) -> Stop {
        if self.link.connections == 0 {
            // Say why what did connect was not let in.
            let how = if stop.how == RunEnd::LinkLost {
                RunEnd::AgentNeverConnected
            } else {
                stop.how
            };
            let refused = if self.link.refused.is_empty() {
                String::new()
            } else {
                format!("; refused: {}", self.link.refused.join("; "))
            };
            stop = Stop::new(how, format!("{}{refused}", stop.detail));
        } else if stop.how == RunEnd::GuestHung && self.link_down() {
            // Silent because the link is down, not because the guest is stuck.
            stop = Stop::new(
                RunEnd::LinkLost,
                format!("the link was lost and not restored: {}", stop.detail),
            );
        }
        stop
    }

    /// Whether the last outage was never restored.
    fn link_down(&self) -> bool {
        self.link
            .outages
            .last()
            .is_some_and(|o| o.restored_host_s.is_none())
    }

    /// Takes in how a connection ended: breaks when the run is over (with `outcome`
    /// and `decode_error` set), or continues with the connection to serve next, if
    /// one already arrived.
    pub(super) fn after_connection(
        &mut self,
        end: ConnEnd,
        outcome: &mut Outcome,
        decode_error: &mut Option<String>,
    ) -> ControlFlow<(), Option<Accepted>> {
        match end {
            ConnEnd::Done => {
                outcome.how = RunEnd::Finished;
                outcome.complete = true;
                return ControlFlow::Break(());
            }
            ConnEnd::Stopped(stop) => {
                outcome.how = stop.how;
                outcome.detail = Some(stop.detail);
                return ControlFlow::Break(());
            }
            ConnEnd::Fault(fault) => {
                self.lost(String::new());
                let why = self.inject(fault);
                self.link
                    .outages
                    .last_mut()
                    .expect("the outage just recorded")
                    .why = why;
            }
            ConnEnd::Lost(why) => self.lost(why),
            ConnEnd::Superseded(conn, seq, c) => {
                let now = self.now_s();
                self.link.outages.push(Outage {
                    lost_host_s: now,
                    restored_host_s: Some(now),
                    gap_s: Some(0.0),
                    why: "the agent opened a new connection while the old one was still open"
                        .into(),
                    resumed_from: Some(seq),
                    records_before: self.session.records,
                    agent: c.after.clone(),
                    restarted_agent: None,
                });
                self.take_over(seq, &c);
                return ControlFlow::Continue(Some((conn, c)));
            }
            ConnEnd::Corrupt(e) => {
                outcome.how = RunEnd::StreamError;
                outcome.detail = Some(e.to_string());
                *decode_error = Some(e.to_string());
                return ControlFlow::Break(());
            }
            ConnEnd::OutputFailed(e) => {
                outcome.how = RunEnd::OutputWriteFailed;
                outcome.detail = Some(format!("writing events.jsonl: {e}"));
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(None)
    }

    /// An incomplete run whose link was lost and never restored says so in its detail
    /// (unless it was interrupted).
    pub(super) fn note_unrestored_outage(&self, outcome: &mut Outcome) {
        if !outcome.complete && self.link_down() && outcome.how != RunEnd::Interrupted {
            let o = self.link.outages.last().expect("an outage");
            let detail = outcome.detail.take().unwrap_or_default();
            outcome.detail = Some(format!(
                "{detail} (the link was lost at {:.1} s: {})",
                o.lost_host_s, o.why
            ));
        }
    }

    /// What was received, once the run is over.
    pub(super) fn into_received(
        mut self,
        outcome: Outcome,
        decode_error: Option<String>,
    ) -> Received {
        let prober = self
            .prober
            .take()
            .expect("the prober is home after the last connection");
        let clock = ClockExchange {
            samples: prober.samples().to_vec(),
            counts: prober.counts().clone(),
        };
        Received {
            outcome,
            bytes: self.bytes,
            decode_error,
            hello_host_s: self.hello_host_s,
            link: self.link,
            clock,
        }
    }
}
