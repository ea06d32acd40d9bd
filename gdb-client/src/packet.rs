//! GDB remote serial protocol framing: `$payload#cs` packets, checksums, escaping,
//! run-length decoding, and the small payload grammars the client needs (hex,
//! thread ids, stop replies, thread lists).
//!
//! Everything here is pure and works on byte slices, so the parsers are tested
//! against recorded QEMU exchanges without a socket.

use std::fmt;

use crate::GdbError;

/// The byte a client sends (outside any packet) to interrupt a running target.
pub const INTERRUPT: u8 = 0x03;

/// Modulo-256 sum of `data`: the checksum that follows `#` in a packet.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// Frames `payload` as `$payload#cs`, escaping `$`, `#`, `}` and `*` as `}` + byte^0x20.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 4);
    for &b in payload {
        if matches!(b, b'$' | b'#' | b'}' | b'*') {
            body.push(b'}');
            body.push(b ^ 0x20);
        } else {
            body.push(b);
        }
    }
    let cs = checksum(&body);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(b'$');
    out.extend_from_slice(&body);
    out.push(b'#');
    out.extend_from_slice(format!("{cs:02x}").as_bytes());
    out
}

/// Undoes escaping (`}` x → x^0x20) and run-length encoding (`c*n` → `c` repeated
/// `n - 29` more times) of a packet body, in one left-to-right pass as gdb does.
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, GdbError> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'}' => {
                let Some(&next) = body.get(i + 1) else {
                    return Err(GdbError::Malformed("packet ends inside an escape".into()));
                };
                out.push(next ^ 0x20);
                i += 2;
            }
            b'*' => {
                let Some(&count) = body.get(i + 1) else {
                    return Err(GdbError::Malformed(
                        "packet ends inside a run-length".into(),
                    ));
                };
                let Some(&last) = out.last() else {
                    return Err(GdbError::Malformed(
                        "run-length with nothing to repeat".into(),
                    ));
                };
                if !(29 + 3..=126).contains(&count) {
                    return Err(GdbError::Malformed(format!(
                        "bad run-length count byte {count:#04x}"
                    )));
                }
                out.extend(std::iter::repeat_n(last, usize::from(count - 29)));
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One unit read from the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `+`: the peer received our packet.
    Ack,
    /// `-`: the peer asks for a retransmission.
    Nack,
    /// A packet whose checksum matched, decoded (unescaped, run-length expanded).
    Packet(Vec<u8>),
    /// A packet whose checksum did not match (the body as received).
    BadChecksum {
        /// Checksum written after `#`.
        sent: u8,
        /// Checksum of the received body.
        computed: u8,
    },
}

/// Incremental splitter of a byte stream into [`Frame`]s.
///
/// Bytes outside packets other than `+`/`-` (line noise, a stray `0x03`) are
/// skipped. A packet longer than the limit is an error, so a misbehaving peer
/// cannot make the client buffer without bound.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_packet: usize,
}

impl Decoder {
    /// A decoder that rejects packets longer than `max_packet` bytes on the wire.
    pub fn new(max_packet: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_packet,
        }
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, GdbError> {
        loop {
            let Some(&first) = self.buf.first() else {
                return Ok(None);
            };
            match first {
                b'+' => {
                    self.buf.drain(..1);
                    return Ok(Some(Frame::Ack));
                }
                b'-' => {
                    self.buf.drain(..1);
                    return Ok(Some(Frame::Nack));
                }
                b'$' => break,
                _ => {
                    // Noise between packets: drop up to the next frame start.
                    let skip = self
                        .buf
                        .iter()
                        .position(|b| matches!(b, b'$' | b'+' | b'-'))
                        .unwrap_or(self.buf.len());
                    self.buf.drain(..skip);
                }
            }
        }
        let Some(hash) = self.buf.iter().position(|&b| b == b'#') else {
            if self.buf.len() > self.max_packet {
                let len = self.buf.len();
                self.buf.clear();
                return Err(GdbError::Malformed(format!(
                    "packet longer than {} bytes ({len} without end)",
                    self.max_packet
                )));
            }
            return Ok(None);
        };
        if self.buf.len() < hash + 3 {
            return Ok(None);
        }
        let frame: Vec<u8> = self.buf.drain(..hash + 3).collect();
        let body = &frame[1..hash];
        let sent = std::str::from_utf8(&frame[hash + 1..hash + 3])
            .ok()
            .and_then(|s| u8::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                GdbError::Malformed(format!(
                    "bad checksum digits {:?}",
                    String::from_utf8_lossy(&frame[hash + 1..])
                ))
            })?;
        let computed = checksum(body);
        if sent != computed {
            return Ok(Some(Frame::BadChecksum { sent, computed }));
        }
        Ok(Some(Frame::Packet(decode_body(body)?)))
    }
}

/// Lower-case hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Bytes of a hex string (either case). `xx` pairs, which QEMU and gdbserver send
/// for unavailable register bytes, are an error.
pub fn decode_hex(hex: &[u8]) -> Result<Vec<u8>, GdbError> {
    if !hex.len().is_multiple_of(2) {
        return Err(GdbError::Malformed(format!(
            "odd-length hex ({} digits)",
            hex.len()
        )));
    }
    hex.chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    GdbError::Malformed(format!("bad hex pair {:?}", String::from_utf8_lossy(pair)))
                })
        })
        .collect()
}

/// A little-endian value of up to 8 bytes (register contents are in target order).
pub fn le_u64(bytes: &[u8]) -> Result<u64, GdbError> {
    if bytes.is_empty() || bytes.len() > 8 {
        return Err(GdbError::Malformed(format!(
            "{} bytes do not fit a 64-bit value",
            bytes.len()
        )));
    }
    Ok(bytes
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

fn parse_hex_u64(s: &str) -> Result<u64, GdbError> {
    u64::from_str_radix(s, 16).map_err(|_| GdbError::Malformed(format!("bad hex number {s:?}")))
}

/// A thread as the stub names it: `p<pid>.<tid>` in multiprocess mode, `<tid>` otherwise
/// (QEMU: one thread per vCPU, numbered from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ThreadId {
    /// Process id, present in multiprocess syntax.
    pub pid: Option<u64>,
    /// Thread id.
    pub tid: u64,
}

impl ThreadId {
    /// Parses `p1.2`, `p01.01` or `02`. `-1`/`0` (all/any) are not concrete threads and are rejected.
    pub fn parse(s: &str) -> Result<ThreadId, GdbError> {
        let bad = || GdbError::Malformed(format!("bad thread id {s:?}"));
        if let Some(rest) = s.strip_prefix('p') {
            let (pid, tid) = rest.split_once('.').ok_or_else(bad)?;
            let id = ThreadId {
                pid: Some(parse_hex_u64(pid)?),
                tid: parse_hex_u64(tid)?,
            };
            if id.tid == 0 {
                return Err(bad());
            }
            return Ok(id);
        }
        let tid = parse_hex_u64(s)?;
        if tid == 0 {
            return Err(bad());
        }
        Ok(ThreadId { pid: None, tid })
    }
}

impl fmt::Display for ThreadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "p{pid:x}.{:x}", self.tid),
            None => write!(f, "{:x}", self.tid),
        }
    }
}

/// Parses one `qfThreadInfo`/`qsThreadInfo` reply: the threads and whether more
/// follow (`m...`) or this was the last part (`l...`).
pub fn parse_thread_list(reply: &[u8]) -> Result<(Vec<ThreadId>, bool), GdbError> {
    let text = std::str::from_utf8(reply)
        .map_err(|_| GdbError::Malformed("thread list is not text".into()))?;
    let (more, rest) = match text.as_bytes().first() {
        Some(b'm') => (true, &text[1..]),
        Some(b'l') => (false, &text[1..]),
        _ => {
            return Err(GdbError::UnexpectedReply {
                request: "qfThreadInfo".into(),
                reply: text.into(),
            });
        }
    };
    let threads = rest
        .split(',')
        .filter(|s| !s.is_empty())
        .map(ThreadId::parse)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((threads, more))
}

/// Why the target stopped, from a stop reply.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum StopReply {
    /// `S`/`T`: stopped with a signal (5 = SIGTRAP: breakpoint or step; 2 = SIGINT: interrupted).
    Signal {
        /// Signal number.
        signal: u8,
        /// The stopping thread, if named (`thread:` pair).
        thread: Option<ThreadId>,
        /// Other `name:value` pairs (`hwbreak`, `watch`, register numbers, ...).
        pairs: Vec<(String, String)>,
    },
    /// `W`: the process exited.
    Exited {
        /// Exit status.
        code: u8,
    },
    /// `X`: the process was terminated by a signal.
    Terminated {
        /// Signal number.
        signal: u8,
    },
}

impl StopReply {
    /// Parses a stop reply payload (`T05thread:p01.01;`, `S02`, `W00`, ...).
    pub fn parse(reply: &[u8]) -> Result<StopReply, GdbError> {
        let text = std::str::from_utf8(reply)
            .map_err(|_| GdbError::Malformed("stop reply is not text".into()))?;
        let bad = || GdbError::Malformed(format!("bad stop reply {text:?}"));
        let kind = text.as_bytes().first().copied().ok_or_else(bad)?;
        let num = text.get(1..3).ok_or_else(bad)?;
        let value = u8::from_str_radix(num, 16).map_err(|_| bad())?;
        match kind {
            b'S' if text.len() == 3 => Ok(StopReply::Signal {
                signal: value,
                thread: None,
                pairs: Vec::new(),
            }),
            b'T' => {
                let mut thread = None;
                let mut pairs = Vec::new();
                for pair in text[3..].split(';').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once(':').ok_or_else(bad)?;
                    if k == "thread" {
                        thread = Some(ThreadId::parse(v)?);
                    } else {
                        pairs.push((k.to_string(), v.to_string()));
                    }
                }
                Ok(StopReply::Signal {
                    signal: value,
                    thread,
                    pairs,
                })
            }
            b'W' => Ok(StopReply::Exited { code: value }),
            b'X' => Ok(StopReply::Terminated { signal: value }),
            _ => Err(bad()),
        }
    }

    /// Whether `payload` has the shape of a stop reply (used to recognise the
    /// unsolicited stop QEMU sends when a client connects to a running VM).
    pub fn looks_like(payload: &[u8]) -> bool {
        matches!(payload.first(), Some(b'S' | b'T' | b'W' | b'X'))
            && payload.len() >= 3
            && payload[1].is_ascii_hexdigit()
            && payload[2].is_ascii_hexdigit()
            && (payload[0] == b'T' || payload.len() == 3 || payload[3] == b';')
    }

    /// The stopping thread, if the reply names one.
    pub fn thread(&self) -> Option<ThreadId> {
        match self {
            StopReply::Signal { thread, .. } => *thread,
            _ => None,
        }
    }

    /// The signal, for signal stops.
    pub fn signal(&self) -> Option<u8> {
        match self {
            StopReply::Signal { signal, .. } => Some(*signal),
            _ => None,
        }
    }
}

/// An error reply `Enn` (also `E.message`), or `None` if `reply` is not one.
pub fn error_code(reply: &[u8]) -> Option<String> {
    let rest = reply.strip_prefix(b"E")?;
    let is_code = rest.len() == 2 && rest.iter().all(u8::is_ascii_hexdigit);
    let is_text = rest.first() == Some(&b'.');
    (is_code || is_text).then(|| String::from_utf8_lossy(rest).into_owned())
}
