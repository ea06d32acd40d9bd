//! The packet exchange: framed writes, socket reads with a deadline, acks and
//! retransmissions, and requests whose replies are checked for errors.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::{Client, Direction, READ_CHUNK};
use crate::GdbError;
use crate::packet::{self, Frame, StopReply};

/// What a request waits for: a normal reply, or a stop reply.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    /// A normal reply (stop replies seen meanwhile are noted and skipped).
    Reply,
    /// A stop reply (console output seen meanwhile is skipped).
    Stop,
}

impl Client {
    pub(super) fn write_raw(&mut self, bytes: &[u8]) -> Result<(), GdbError> {
        if self.opts.record {
            self.transcript.push((Direction::Sent, bytes.to_vec()));
        }
        self.stream
            .write_all(bytes)
            .inspect_err(|_| self.broken = true)?;
        Ok(())
    }

    fn fill(&mut self, deadline: Instant, request: &str) -> Result<(), GdbError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(self.timeout(request));
        }
        self.stream.set_read_timeout(Some(deadline - now))?;
        let mut buf = vec![0u8; READ_CHUNK];
        let result = self.stream.read(&mut buf);
        if matches!(&result, Ok(0))
            || result.as_ref().is_err_and(|e| {
                !matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                )
            })
        {
            self.broken = true;
        }
        match result {
            Ok(0) => Err(GdbError::Closed),
            Ok(n) => {
                if self.opts.record {
                    self.transcript
                        .push((Direction::Received, buf[..n].to_vec()));
                }
                self.decoder.feed(&buf[..n]);
                Ok(())
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(self.timeout(request))
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::BrokenPipe
                ) =>
            {
                Err(GdbError::Closed)
            }
            Err(e) => Err(GdbError::Io(e)),
        }
    }

    fn timeout(&self, request: &str) -> GdbError {
        GdbError::Timeout {
            request: request.to_string(),
            after: self.opts.reply_timeout,
        }
    }

    /// Sends `payload` and returns the reply payload. Unsolicited stop replies are
    /// recorded as the last stop and skipped when a normal reply is expected.
    pub(super) fn transact(
        &mut self,
        payload: &[u8],
        expect: Expect,
        timeout: Duration,
    ) -> Result<Vec<u8>, GdbError> {
        let request = String::from_utf8_lossy(payload).into_owned();
        let framed = packet::encode(payload);
        tracing::trace!(request = %request, "gdb >");
        self.write_raw(&framed)?;
        let reply = self.await_packet(Some(&framed), &request, expect, Instant::now() + timeout)?;
        self.round_trips += 1;
        Ok(reply)
    }

    pub(super) fn await_packet(
        &mut self,
        resend: Option<&[u8]>,
        request: &str,
        expect: Expect,
        deadline: Instant,
    ) -> Result<Vec<u8>, GdbError> {
        let mut nacks = 0u32;
        loop {
            let frame = match self.decoder.next_frame()? {
                Some(f) => f,
                None => {
                    self.fill(deadline, request)?;
                    continue;
                }
            };
            match frame {
                Frame::Ack => {}
                Frame::Nack => {
                    nacks += 1;
                    let Some(bytes) = resend else { continue };
                    if nacks > self.opts.max_retransmits {
                        return Err(GdbError::Retransmits {
                            request: request.to_string(),
                        });
                    }
                    tracing::debug!(request, "gdbstub asked for a retransmission");
                    self.write_raw(bytes)?;
                }
                Frame::BadChecksum { sent, computed } => {
                    if !self.ack_mode {
                        return Err(GdbError::Malformed(format!(
                            "checksum {sent:02x} != {computed:02x} in no-ack mode"
                        )));
                    }
                    tracing::debug!(
                        sent,
                        computed,
                        "bad checksum from the gdbstub, asking again"
                    );
                    self.write_raw(b"-")?;
                }
                Frame::Packet(p) => {
                    if self.ack_mode {
                        self.write_raw(b"+")?;
                    }
                    tracing::trace!(reply = %String::from_utf8_lossy(&p[..p.len().min(200)]), "gdb <");
                    let is_stop = StopReply::looks_like(&p);
                    match expect {
                        Expect::Reply if is_stop => {
                            let stop = StopReply::parse(&p)?;
                            tracing::debug!(?stop, request, "unsolicited stop reply");
                            self.note_stop(&stop);
                        }
                        Expect::Stop if !is_stop && is_console_output(&p) => {}
                        _ => return Ok(p),
                    }
                }
            }
        }
    }

    pub(super) fn note_stop(&mut self, stop: &StopReply) {
        self.running = false;
        self.held_since.get_or_insert_with(Instant::now);
        self.g_thread = if self.opts.stop_selects_thread {
            stop.thread()
        } else {
            None
        };
        self.last_stop = Some(stop.clone());
    }

    /// Sends a request and returns its reply as text; `E..` and empty replies become errors.
    pub fn request_text(&mut self, request: &str) -> Result<String, GdbError> {
        let reply = self.request(request.as_bytes())?;
        String::from_utf8(reply)
            .map_err(|_| GdbError::Malformed(format!("reply to {request} is not text")))
    }

    /// Sends a request and returns the raw reply payload; `E..` and empty replies become errors.
    pub fn request(&mut self, payload: &[u8]) -> Result<Vec<u8>, GdbError> {
        if self.running {
            return Err(GdbError::UnexpectedReply {
                request: String::from_utf8_lossy(payload).into_owned(),
                reply: "(target is running: stop it first)".into(),
            });
        }
        let reply = self.transact(payload, Expect::Reply, self.opts.reply_timeout)?;
        let name = || String::from_utf8_lossy(payload).into_owned();
        if reply.is_empty() {
            return Err(GdbError::Unsupported { request: name() });
        }
        if let Some(code) = packet::error_code(&reply) {
            return Err(GdbError::Refused {
                request: name(),
                code,
            });
        }
        Ok(reply)
    }

    pub(super) fn expect_ok(&mut self, request: &str) -> Result<(), GdbError> {
        let reply = self.request_text(request)?;
        if reply != "OK" {
            return Err(GdbError::UnexpectedReply {
                request: request.into(),
                reply,
            });
        }
        Ok(())
    }
}

/// `O` + hex: console output a stub may send before a stop reply.
fn is_console_output(p: &[u8]) -> bool {
    p.len() > 1 && p[0] == b'O' && p[1..].iter().all(u8::is_ascii_hexdigit)
}
