//! The connection to a gdbstub: handshake, request/reply, resume/stop, detach.
//!
//! Written against QEMU 7.2's stub and checked on its recorded exchanges:
//! - on connect QEMU pauses the VM and, if it was running, sends an unsolicited
//!   stop reply (`T02thread:01;`); any stop-shaped packet that arrives while a
//!   normal reply is awaited is kept as the last stop instead of being taken as the reply;
//! - QEMU 7.2 does not offer `QStartNoAckMode` (newer versions do): no-ack mode is
//!   used only when `qSupported` offers it;
//! - `p` answers empty until the target description has been read, so the
//!   handshake always reads `target.xml`;
//! - the multiprocess setting is sticky in QEMU across connections, so the client
//!   always asks for it and detaches with `D;pid`;
//! - QEMU leaves the VM paused when a client disconnects without `D`: dropping a
//!   [`Client`] detaches (best effort), which resumes the guest;
//! - `TCP_NODELAY` is set: without it every request waits ~40 ms for a delayed
//!   ACK behind the previous `+` (measured: 43 ms → 0.09 ms per `p`).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::GdbError;
use crate::endpoint::{GdbEndpoint, Transport};
use crate::packet::{self, Decoder, Frame, StopReply, ThreadId};
use crate::target::{RegisterInfo, TargetDescription};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for the TCP connect.
    pub connect_timeout: Duration,
    /// Limit for each reply (and for the stop after a step or an interrupt).
    pub reply_timeout: Duration,
    /// Ask for no-ack mode when the stub offers it.
    pub no_ack: bool,
    /// Retransmissions of one packet after `-` before giving up.
    pub max_retransmits: u32,
    /// Treat the thread named in a stop reply as the selected thread for register
    /// and memory reads (QEMU does this: the stopping vCPU becomes current), which
    /// saves an `Hg` per stop.
    pub stop_selects_thread: bool,
    /// Keep a copy of every byte sent and received (see [`Client::transcript`]).
    pub record: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(5),
            no_ack: true,
            max_retransmits: 3,
            stop_selects_thread: true,
            record: false,
        }
    }
}

/// Direction of a recorded transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → stub.
    Sent,
    /// Stub → client.
    Received,
}

/// Register contents from one `g` reply, readable by name.
#[derive(Clone, Debug)]
pub struct Registers {
    bytes: Vec<u8>,
    target: Arc<TargetDescription>,
}

impl Registers {
    /// Raw bytes of a register, `None` if unknown or past the end of the reply.
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        let r = self.target.register(name)?;
        let len = (r.bitsize as usize).div_ceil(8);
        self.bytes.get(r.g_offset..r.g_offset + len)
    }

    /// A register of up to 64 bits as a number.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.raw(name).and_then(|b| packet::le_u64(b).ok())
    }

    /// Length of the reply in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the reply was empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    Reply,
    Stop,
}

/// A connected gdbstub client. The target is stopped while no resume is pending.
pub struct Client {
    stream: Transport,
    decoder: Decoder,
    opts: ClientOptions,
    ack_mode: bool,
    multiprocess: bool,
    packet_size: usize,
    features: Vec<String>,
    qemu_features: Vec<String>,
    target: Arc<TargetDescription>,
    round_trips: u64,
    g_thread: Option<ThreadId>,
    phys_mode: Option<bool>,
    p_supported: bool,
    vcont_step: Option<bool>,
    last_stop: Option<StopReply>,
    running: bool,
    detached: bool,
    broken: bool,
    breakpoints: BTreeSet<u64>,
    transcript: Vec<(Direction, Vec<u8>)>,
    /// Since when the VM is held (stopped by the stub), if it is.
    held_since: Option<Instant>,
    /// Single-step time inside the current hold.
    held_stepping: Duration,
    /// Every finished hold, in order.
    holds: Vec<Hold>,
}

/// A time the stub held the VM: from a stop (or the client's connection, which pauses
/// QEMU) to the next resume or detach. The guest's clocks stand still meanwhile (QEMU
/// stops its virtual clock and the CPU tick count with the VM), so a hold shifts the
/// guest clock against the host's by its length, less what single steps inside it ran:
/// a step starts the VM for one instruction, and the guest's clock moves for part of
/// the step's round trip (measured over 8-snapshot runs: counting steps as held
/// over-counted the stopped time by 0.1-0.2 ms per step, counting them as running
/// under-counted it by 0.45-0.6 ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hold {
    /// When the stop was seen.
    pub from: Instant,
    /// When the resume was sent.
    pub to: Instant,
    /// Time spent in single steps inside the hold (the guest's clock ran for part of it).
    pub stepping: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stream", &self.stream)
            .field("ack_mode", &self.ack_mode)
            .field("round_trips", &self.round_trips)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

/// Bytes read per socket read.
const READ_CHUNK: usize = 64 * 1024;
/// Largest packet accepted from the stub.
const MAX_INCOMING: usize = 1 << 20;

impl Client {
    /// Connects to a gdbstub on a Unix socket or a loopback TCP address and performs
    /// the handshake (features, no-ack mode if offered, target description, halt
    /// reason). The target is stopped when this returns (QEMU pauses the VM when a
    /// client connects).
    pub fn connect(
        endpoint: impl Into<GdbEndpoint>,
        opts: ClientOptions,
    ) -> Result<Client, GdbError> {
        let endpoint = endpoint.into();
        let stream: Transport = match &endpoint {
            GdbEndpoint::Tcp(addr) => {
                if !addr.ip().is_loopback() {
                    return Err(GdbError::NotLoopback(*addr));
                }
                let stream =
                    TcpStream::connect_timeout(addr, opts.connect_timeout).map_err(|source| {
                        GdbError::Connect {
                            addr: endpoint.clone(),
                            source,
                        }
                    })?;
                stream.set_nodelay(true)?;
                stream.into()
            }
            // A local connect either succeeds or fails at once: no timeout to apply.
            GdbEndpoint::Unix(path) => UnixStream::connect(path)
                .map_err(|source| GdbError::Connect {
                    addr: endpoint.clone(),
                    source,
                })?
                .into(),
        };
        tracing::debug!(%endpoint, "gdbstub connected");
        Client::handshake(stream, opts)
    }

    /// Runs the handshake on an already connected stream (tests use a scripted stub).
    pub fn handshake(
        stream: impl Into<Transport>,
        opts: ClientOptions,
    ) -> Result<Client, GdbError> {
        let mut c = Client {
            stream: stream.into(),
            decoder: Decoder::new(MAX_INCOMING),
            opts,
            ack_mode: true,
            multiprocess: false,
            packet_size: 0x400,
            features: Vec::new(),
            qemu_features: Vec::new(),
            target: Arc::new(TargetDescription::default()),
            round_trips: 0,
            g_thread: None,
            phys_mode: None,
            p_supported: true,
            vcont_step: None,
            last_stop: None,
            running: false,
            detached: false,
            broken: false,
            breakpoints: BTreeSet::new(),
            transcript: Vec::new(),
            // QEMU pauses the VM when a client connects.
            held_since: Some(Instant::now()),
            held_stepping: Duration::ZERO,
            holds: Vec::new(),
        };
        let reply =
            c.request_text("qSupported:multiprocess+;swbreak+;hwbreak+;xmlRegisters=i386")?;
        c.features = reply
            .split(';')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(size) = c
            .features
            .iter()
            .find_map(|f| f.strip_prefix("PacketSize="))
        {
            c.packet_size = usize::from_str_radix(size, 16)
                .ok()
                .filter(|s| *s >= 64)
                .ok_or_else(|| GdbError::Malformed(format!("bad PacketSize {size:?}")))?;
        }
        c.multiprocess = c.has_feature("multiprocess+");
        if c.opts.no_ack && c.has_feature("QStartNoAckMode+") {
            c.expect_ok("QStartNoAckMode")?;
            c.ack_mode = false;
        }
        if !c.has_feature("qXfer:features:read+") {
            return Err(GdbError::TargetXml(
                "the stub offers no target description (qXfer:features:read)".into(),
            ));
        }
        let root = c.read_feature_file("target.xml")?;
        let target = TargetDescription::parse(&root, &mut |href| c.read_feature_file(href))?;
        tracing::debug!(arch = ?target.architecture, registers = target.registers.len(), "target description");
        c.target = Arc::new(target);
        let stop = c.halt_reason()?;
        tracing::debug!(?stop, "halt reason");
        match c.request_text("qqemu.Supported") {
            Ok(list) => c.qemu_features = list.split(';').map(str::to_string).collect(),
            Err(GdbError::Unsupported { .. }) => {}
            Err(e) => return Err(e),
        }
        if c.supports_phys_mem_mode() {
            let mode = c.request_text("qqemu.PhyMemMode")?;
            c.phys_mode = Some(mode.trim() == "1");
        }
        Ok(c)
    }

    /// The `qSupported` reply's items (`PacketSize=1000`, `qXfer:features:read+`, ...).
    pub fn features(&self) -> &[String] {
        &self.features
    }

    fn has_feature(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }

    /// QEMU's own extensions (`qqemu.Supported`: `sstepbits`, `sstep`, `PhyMemMode`).
    pub fn qemu_features(&self) -> &[String] {
        &self.qemu_features
    }

    /// Whether `Qqemu.PhyMemMode` (physical-address memory access) is available.
    pub fn supports_phys_mem_mode(&self) -> bool {
        self.qemu_features.iter().any(|f| f == "PhyMemMode")
    }

    /// Whether no-ack mode is in effect.
    pub fn no_ack_mode(&self) -> bool {
        !self.ack_mode
    }

    /// The target description.
    pub fn target(&self) -> &TargetDescription {
        &self.target
    }

    /// Requests answered so far (a resume and its stop count as one).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    /// The last stop reply seen (solicited or not).
    pub fn last_stop(&self) -> Option<&StopReply> {
        self.last_stop.as_ref()
    }

    /// Every byte exchanged, when [`ClientOptions::record`] is set.
    pub fn transcript(&self) -> &[(Direction, Vec<u8>)] {
        &self.transcript
    }

    /// Whether a resume is pending (the target runs).
    pub fn is_running(&self) -> bool {
        self.running
    }

    // ---- transport -------------------------------------------------------

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), GdbError> {
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
    fn transact(
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

    fn await_packet(
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

    fn note_stop(&mut self, stop: &StopReply) {
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

    fn expect_ok(&mut self, request: &str) -> Result<(), GdbError> {
        let reply = self.request_text(request)?;
        if reply != "OK" {
            return Err(GdbError::UnexpectedReply {
                request: request.into(),
                reply,
            });
        }
        Ok(())
    }

    fn read_feature_file(&mut self, annex: &str) -> Result<String, GdbError> {
        let chunk = (self.packet_size.saturating_sub(16) / 2).clamp(64, 0x800);
        let mut out = Vec::new();
        for _ in 0..4096 {
            let request = format!("qXfer:features:read:{annex}:{:x},{chunk:x}", out.len());
            let reply = self.request(request.as_bytes())?;
            let (kind, data) = reply
                .split_first()
                .ok_or_else(|| GdbError::Malformed("empty qXfer reply".into()))?;
            out.extend_from_slice(data);
            match kind {
                b'l' => {
                    return String::from_utf8(out)
                        .map_err(|_| GdbError::TargetXml(format!("{annex} is not UTF-8")));
                }
                b'm' if !data.is_empty() => {}
                _ => {
                    return Err(GdbError::UnexpectedReply {
                        request,
                        reply: String::from_utf8_lossy(&reply).into_owned(),
                    });
                }
            }
        }
        Err(GdbError::TargetXml(format!("{annex} is too large")))
    }

    // ---- queries -----------------------------------------------------------

    /// `?`: why the target is stopped.
    pub fn halt_reason(&mut self) -> Result<StopReply, GdbError> {
        let reply = self.transact(b"?", Expect::Stop, self.opts.reply_timeout)?;
        let stop = StopReply::parse(&reply)?;
        self.note_stop(&stop);
        Ok(stop)
    }

    /// The threads (vCPUs), from `qfThreadInfo`/`qsThreadInfo`.
    pub fn threads(&mut self) -> Result<Vec<ThreadId>, GdbError> {
        let mut all = Vec::new();
        let mut request = "qfThreadInfo";
        for _ in 0..1024 {
            let reply = self.request(request.as_bytes())?;
            let (threads, more) = packet::parse_thread_list(&reply)?;
            all.extend(threads);
            if !more {
                return Ok(all);
            }
            request = "qsThreadInfo";
        }
        Err(GdbError::Malformed("thread list does not end".into()))
    }

    /// `Hg`: the thread whose registers and memory view later reads use. Skipped if already selected.
    pub fn select_thread(&mut self, thread: ThreadId) -> Result<(), GdbError> {
        if self.g_thread == Some(thread) {
            return Ok(());
        }
        self.expect_ok(&format!("Hg{thread}"))?;
        self.g_thread = Some(thread);
        Ok(())
    }

    // ---- registers ---------------------------------------------------------

    /// The description of a register.
    pub fn register_info(&self, name: &str) -> Result<RegisterInfo, GdbError> {
        self.target
            .register(name)
            .cloned()
            .ok_or_else(|| GdbError::UnknownRegister(name.to_string()))
    }

    /// Raw bytes of one register (`p`, or `g` if the stub lacks `p`).
    pub fn read_register_raw(&mut self, name: &str) -> Result<Vec<u8>, GdbError> {
        let info = self.register_info(name)?;
        if self.p_supported {
            match self.request_text(&format!("p{:x}", info.regnum)) {
                Ok(hex) => return packet::decode_hex(hex.as_bytes()),
                Err(GdbError::Unsupported { .. }) => {
                    tracing::debug!("the gdbstub has no 'p' packet; using 'g'");
                    self.p_supported = false;
                }
                Err(e) => return Err(e),
            }
        }
        let regs = self.read_registers()?;
        regs.raw(name)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| GdbError::UnknownRegister(format!("{name} (not in the 'g' reply)")))
    }

    /// One register of up to 64 bits, by name.
    pub fn read_register(&mut self, name: &str) -> Result<u64, GdbError> {
        let raw = self.read_register_raw(name)?;
        packet::le_u64(&raw)
    }

    /// All registers in one `g` round trip.
    pub fn read_registers(&mut self) -> Result<Registers, GdbError> {
        let hex = self.request(b"g")?;
        let bytes = packet::decode_hex(&hex)?;
        Ok(Registers {
            bytes,
            target: Arc::clone(&self.target),
        })
    }

    // ---- memory ------------------------------------------------------------

    /// Reads `len` bytes at `addr` (virtual, through the selected vCPU's page
    /// tables, unless physical mode is on), in packet-sized pieces.
    pub fn read_memory(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, GdbError> {
        let max = (self.packet_size.saturating_sub(8) / 2).max(16);
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = addr.wrapping_add(out.len() as u64);
            let n = (len - out.len()).min(max);
            let hex = match self.request_text(&format!("m{at:x},{n:x}")) {
                Ok(h) => h,
                Err(GdbError::Refused { code, .. }) => {
                    return Err(GdbError::Memory {
                        addr: at,
                        len: n,
                        code,
                    });
                }
                Err(e) => return Err(e),
            };
            let bytes = packet::decode_hex(hex.as_bytes())?;
            if bytes.is_empty() || bytes.len() > n {
                return Err(GdbError::UnexpectedReply {
                    request: format!("m{at:x},{n:x}"),
                    reply: hex,
                });
            }
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// A little-endian u64 at `addr`.
    pub fn read_u64(&mut self, addr: u64) -> Result<u64, GdbError> {
        packet::le_u64(&self.read_memory(addr, 8)?)
    }

    /// Switches `m` reads between virtual (off) and physical (on) addresses
    /// (`Qqemu.PhyMemMode`). No packet is sent if the mode is already right.
    pub fn set_phys_mem_mode(&mut self, on: bool) -> Result<(), GdbError> {
        if self.phys_mode == Some(on) {
            return Ok(());
        }
        if !self.supports_phys_mem_mode() {
            return Err(GdbError::Unsupported {
                request: "Qqemu.PhyMemMode".into(),
            });
        }
        self.expect_ok(&format!("Qqemu.PhyMemMode:{}", u8::from(on)))?;
        self.phys_mode = Some(on);
        Ok(())
    }

    /// Whether `m` reads physical addresses now.
    pub fn phys_mem_mode(&self) -> bool {
        self.phys_mode == Some(true)
    }

    // ---- breakpoints and execution ------------------------------------------

    /// `Z1`: a hardware breakpoint at `addr`.
    pub fn insert_hw_breakpoint(&mut self, addr: u64) -> Result<(), GdbError> {
        self.expect_ok(&format!("Z1,{addr:x},1"))?;
        self.breakpoints.insert(addr);
        Ok(())
    }

    /// `z1`: removes the hardware breakpoint at `addr`.
    pub fn remove_hw_breakpoint(&mut self, addr: u64) -> Result<(), GdbError> {
        self.expect_ok(&format!("z1,{addr:x},1"))?;
        self.breakpoints.remove(&addr);
        Ok(())
    }

    /// `s`: executes one instruction on the vCPU that last stopped and returns the stop.
    /// In QEMU a single step does not trigger a breakpoint at the starting address,
    /// so stepping is how execution leaves a breakpoint without removing it.
    pub fn step(&mut self) -> Result<StopReply, GdbError> {
        self.ensure_stopped("s")?;
        let started = Instant::now();
        let reply = self.transact(b"s", Expect::Stop, self.opts.reply_timeout)?;
        self.held_stepping += started.elapsed();
        self.stop_from(&reply, "s")
    }

    /// Steps one instruction on `thread` only, the other vCPUs staying stopped
    /// (`vCont;s:thread`), so no other vCPU can hit a breakpoint meanwhile and
    /// the stop is this thread's. Falls back to [`Client::step`] when the stub has
    /// no `vCont` step.
    pub fn step_thread(&mut self, thread: ThreadId) -> Result<StopReply, GdbError> {
        self.ensure_stopped("vCont;s")?;
        if self.vcont_step.is_none() {
            let actions = match self.request_text("vCont?") {
                Ok(a) => a,
                Err(GdbError::Unsupported { .. }) => String::new(),
                Err(e) => return Err(e),
            };
            self.vcont_step = Some(actions.split(';').any(|a| a == "s"));
        }
        if self.vcont_step != Some(true) {
            return self.step();
        }
        let request = format!("vCont;s:{thread}");
        let started = Instant::now();
        let reply = self.transact(request.as_bytes(), Expect::Stop, self.opts.reply_timeout)?;
        self.held_stepping += started.elapsed();
        let stop = self.stop_from(&reply, &request)?;
        if stop.thread().is_some_and(|t| t != thread) {
            return Err(GdbError::UnexpectedReply {
                request,
                reply: format!("{stop:?}"),
            });
        }
        Ok(stop)
    }

    /// `c`: resumes the target without waiting (see [`Client::wait_stop`]).
    pub fn resume(&mut self) -> Result<(), GdbError> {
        self.ensure_stopped("c")?;
        let framed = packet::encode(b"c");
        tracing::trace!("gdb > c");
        self.release();
        self.write_raw(&framed)?;
        self.running = true;
        self.g_thread = None;
        Ok(())
    }

    /// Waits up to `timeout` for the stop after [`Client::resume`]; `Ok(None)` if
    /// the target still runs.
    pub fn wait_stop(&mut self, timeout: Duration) -> Result<Option<StopReply>, GdbError> {
        if !self.running {
            return Err(GdbError::UnexpectedReply {
                request: "wait for stop".into(),
                reply: "(target is not running)".into(),
            });
        }
        match self.await_packet(
            Some(&packet::encode(b"c")),
            "c",
            Expect::Stop,
            Instant::now() + timeout,
        ) {
            Ok(reply) => {
                self.round_trips += 1;
                self.stop_from(&reply, "c").map(Some)
            }
            Err(GdbError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Resumes and waits up to `timeout` for a stop; interrupts the target if none came.
    pub fn cont(&mut self, timeout: Duration) -> Result<StopReply, GdbError> {
        self.resume()?;
        match self.wait_stop(timeout)? {
            Some(stop) => Ok(stop),
            None => self.interrupt(),
        }
    }

    /// Stops a running target (`0x03`) and returns its stop reply (which may also be
    /// a breakpoint stop that raced with the interrupt).
    pub fn interrupt(&mut self) -> Result<StopReply, GdbError> {
        if !self.running {
            return self
                .last_stop
                .clone()
                .ok_or_else(|| GdbError::UnexpectedReply {
                    request: "interrupt".into(),
                    reply: "(target is not running)".into(),
                });
        }
        self.write_raw(&[packet::INTERRUPT])?;
        let reply = self.await_packet(
            None,
            "interrupt",
            Expect::Stop,
            Instant::now() + self.opts.reply_timeout,
        )?;
        self.round_trips += 1;
        self.stop_from(&reply, "interrupt")
    }

    /// The VM runs again from now: ends the current hold.
    fn release(&mut self) {
        if let Some(from) = self.held_since.take() {
            let stepping = std::mem::take(&mut self.held_stepping);
            self.holds.push(Hold {
                from,
                to: Instant::now(),
                stepping,
            });
        }
    }

    /// The holds so far (the current one not included).
    pub fn holds(&self) -> &[Hold] {
        &self.holds
    }

    fn ensure_stopped(&self, request: &str) -> Result<(), GdbError> {
        if self.running {
            return Err(GdbError::UnexpectedReply {
                request: request.into(),
                reply: "(target is already running)".into(),
            });
        }
        Ok(())
    }

    fn stop_from(&mut self, reply: &[u8], request: &str) -> Result<StopReply, GdbError> {
        if let Some(code) = packet::error_code(reply) {
            return Err(GdbError::Refused {
                request: request.into(),
                code,
            });
        }
        let stop = StopReply::parse(reply)?;
        self.note_stop(&stop);
        if matches!(
            stop,
            StopReply::Exited { .. } | StopReply::Terminated { .. }
        ) {
            return Err(GdbError::TargetGone(stop));
        }
        Ok(stop)
    }

    /// Removes our breakpoints, restores virtual memory mode, and detaches: the
    /// guest runs on. A running target is interrupted first.
    pub fn detach(self) -> Result<(), GdbError> {
        self.detach_with_holds().map(drop)
    }

    /// [`Client::detach`], returning every time the VM was held, the last one ending
    /// at the detach.
    pub fn detach_with_holds(mut self) -> Result<Vec<Hold>, GdbError> {
        self.detach_inner()?;
        Ok(std::mem::take(&mut self.holds))
    }

    fn detach_inner(&mut self) -> Result<(), GdbError> {
        if self.detached {
            return Ok(());
        }
        if self.running {
            self.interrupt()?;
        }
        let bps: Vec<u64> = self.breakpoints.iter().copied().collect();
        for bp in bps {
            self.remove_hw_breakpoint(bp)?;
        }
        if self.phys_mode == Some(true) {
            self.set_phys_mem_mode(false)?;
        }
        let pid = self
            .last_stop
            .as_ref()
            .and_then(StopReply::thread)
            .and_then(|t| t.pid)
            .unwrap_or(1);
        let request = if self.multiprocess {
            format!("D;{pid:x}")
        } else {
            "D".to_string()
        };
        let sent = Instant::now();
        self.expect_ok(&request)?;
        if let Some(from) = self.held_since.take() {
            let stepping = std::mem::take(&mut self.held_stepping);
            self.holds.push(Hold {
                from,
                to: sent,
                stepping,
            });
        }
        self.detached = true;
        tracing::debug!("detached from the gdbstub");
        Ok(())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.detached && !self.broken {
            self.opts.reply_timeout = self.opts.reply_timeout.min(Duration::from_secs(1));
            if let Err(e) = self.detach_inner() {
                tracing::warn!(error = %e, "could not detach from the gdbstub; the guest may stay paused");
            }
        }
    }
}

/// `O` + hex: console output a stub may send before a stop reply.
fn is_console_output(p: &[u8]) -> bool {
    p.len() > 1 && p[0] == b'O' && p[1..].iter().all(u8::is_ascii_hexdigit)
}
