//! A new connection's first record: the `Connect` that must carry the run's secret,
//! and whether it continues this run (the same agent, or a restarted one) or is refused.

use guestscope_common::plan::secret_matches;
use guestscope_common::wire::{Body, Connect, FrameReader, Record};

use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::{Alive, Conn, HANDSHAKE_TIMEOUT, READ_TIMEOUT, Stop, WRITE_TIMEOUT};

/// Whether `c` comes from a new agent that took over this run: the guest restarts an
/// agent that died, and the new one presents the run's secret under a new identity.
/// Without a secret nothing tells it from a stranger, so nothing is taken over.
pub(super) fn restarted(secret: Option<&str>, identity: (u32, u64), c: &Connect) -> bool {
    secret.is_some() && (c.agent_pid, c.agent_start_ns) != identity && c.agent_start_ns > identity.1
}

/// Whether `c` carries the run on after connection `connection` of agent `identity`:
/// a newer connection of the same agent, or a restarted agent taking over.
pub(super) fn continues_run(
    secret: Option<&str>,
    identity: (u32, u64),
    connection: u32,
    c: &Connect,
) -> bool {
    ((c.agent_pid, c.agent_start_ns) == identity && c.connection > connection)
        || restarted(secret, identity, c)
}

/// Why connection `c` is refused: another agent's, or an out-of-date one of `identity`.
pub(super) fn refusal(c: &Connect, identity: (u32, u64)) -> String {
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
pub(super) fn handshake(
    conn: Box<dyn Conn>,
    secret: Option<&str>,
) -> Result<(Box<dyn Conn>, u64, Connect), String> {
    if let Err(e) = conn.set_timeouts(HANDSHAKE_TIMEOUT, WRITE_TIMEOUT) {
        return Err(format!("a connection that could not be set up: {e}"));
    }
    let mut frames = FrameReader::new(conn);
    let first = frames.next_record();
    check_connect(frames.into_inner(), first, secret)
}

/// Why a patient handshake gave up.
pub(super) enum Waited {
    /// The connection was refused, with why.
    Refused(String),
    /// `alive` said to stop the run.
    Stopped(Stop),
}

/// Like [`handshake`], for the first connection, whose `Connect` the agent writes only
/// with its hello, once its probes are loaded: waits up to `limit`, asking `alive`
/// between reads, so that a run that ends meanwhile (QEMU exited, the run's time limit)
/// ends the wait.
pub(super) fn patient_handshake(
    conn: Box<dyn Conn>,
    secret: Option<&str>,
    limit: Duration,
    alive: &mut Alive<'_>,
) -> Result<(Box<dyn Conn>, u64, Connect), Waited> {
    if let Err(e) = conn.set_timeouts(READ_TIMEOUT, WRITE_TIMEOUT) {
        return Err(Waited::Refused(format!(
            "a connection that could not be set up: {e}"
        )));
    }
    let mut frames = FrameReader::new(Patient {
        conn,
        until: Instant::now() + limit,
        alive,
        stopped: None,
    });
    let first = frames.next_record();
    let patient = frames.into_inner();
    if let Some(stop) = patient.stopped {
        patient.conn.close();
        return Err(Waited::Stopped(stop));
    }
    check_connect(patient.conn, first, secret).map_err(Waited::Refused)
}

/// Reads through the connection's read timeouts until `until`, asking `alive` at each.
struct Patient<'a, 'b> {
    conn: Box<dyn Conn>,
    until: Instant,
    alive: &'a mut Alive<'b>,
    /// What `alive` said, when it said to stop.
    stopped: Option<Stop>,
}

impl Read for Patient<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.read(buf) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= self.until {
                        return Err(e);
                    }
                    if let Err(stop) = (self.alive)() {
                        let e = io::Error::other(stop.to_string());
                        self.stopped = Some(stop);
                        return Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// The connection if `first` is a `Connect` with the run's `secret`; else closes it
/// and says why.
fn check_connect(
    conn: Box<dyn Conn>,
    first: Result<Record, guestscope_common::wire::DecodeError>,
    secret: Option<&str>,
) -> Result<(Box<dyn Conn>, u64, Connect), String> {
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

/// The name of a record's kind, for a refusal message.
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
        Body::Tallies(_) => "Tallies",
        Body::ProgramRuns(_) => "ProgramRuns",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    use guestscope_common::wire::encode_frame;

    use super::*;
    use crate::stream::receive::RunEnd;

    fn connect_frame() -> Vec<u8> {
        encode_frame(&Record {
            seq: 0,
            body: Body::Connect(Connect {
                agent_pid: 7,
                agent_start_ns: 1,
                connection: 1,
                after: None,
                secret: String::new(),
            }),
        })
        .unwrap()
    }

    #[test]
    fn the_first_connect_is_waited_for_past_the_read_timeouts() {
        let (host, mut agent) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            // Past several read timeouts, as an agent loading its probes.
            std::thread::sleep(READ_TIMEOUT * 4);
            agent.write_all(&connect_frame()).unwrap();
            agent
        });
        let mut asked = 0;
        let mut alive = || {
            asked += 1;
            Ok(())
        };
        let got = patient_handshake(Box::new(host), None, Duration::from_secs(30), &mut alive);
        let (_, seq, c) = got.ok().expect("the Connect was read");
        assert_eq!((seq, c.agent_pid), (0, 7));
        drop(writer.join());
        assert!(asked >= 2, "alive was asked at each read timeout: {asked}");
    }

    #[test]
    fn a_run_that_stops_while_the_first_connect_is_awaited_ends_the_wait() {
        let (host, _agent) = UnixStream::pair().unwrap();
        let started = Instant::now();
        let mut asked = 0;
        let mut alive = || {
            asked += 1;
            if asked < 3 {
                Ok(())
            } else {
                Err(Stop::new(RunEnd::QemuExited, "exit status: 1"))
            }
        };
        match patient_handshake(Box::new(host), None, Duration::from_secs(30), &mut alive) {
            Err(Waited::Stopped(stop)) => assert_eq!(stop.detail, "exit status: 1"),
            Err(Waited::Refused(why)) => panic!("refused: {why}"),
            Ok(_) => panic!("no Connect was written"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_first_connection_silent_past_the_limit_is_refused() {
        let (host, _agent) = UnixStream::pair().unwrap();
        let mut alive = || Ok(());
        match patient_handshake(Box::new(host), None, READ_TIMEOUT * 3, &mut alive) {
            Err(Waited::Refused(why)) => {
                assert!(why.contains("without a valid Connect"), "{why}")
            }
            Err(Waited::Stopped(_)) => panic!("alive never said to stop"),
            Ok(_) => panic!("no Connect was written"),
        }
    }
}
