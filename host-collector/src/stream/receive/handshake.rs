//! A new connection's first record: the `Connect` that must carry the run's secret,
//! and whether it continues this run (the same agent, or a restarted one) or is refused.

use guestscope_common::plan::secret_matches;
use guestscope_common::wire::{Body, Connect, FrameReader, Record};

use super::{Conn, READ_TIMEOUT, WRITE_TIMEOUT};
use std::time::Duration;
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
/// `secret` (if there is one) and come within `timeout`; returns the connection, the
/// record's `seq` (the first sequence number the connection carries) and the `Connect`.
pub(super) fn handshake(
    conn: Box<dyn Conn>,
    secret: Option<&str>,
    timeout: Duration,
) -> Result<(Box<dyn Conn>, u64, Connect), String> {
    if let Err(e) = conn.set_timeouts(timeout, WRITE_TIMEOUT) {
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
