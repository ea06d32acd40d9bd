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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::endpoint::Transport;
use crate::packet::{self, Decoder, StopReply, ThreadId};
use crate::target::TargetDescription;

mod execution;
mod handshake;
mod inspect;
mod transport;

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
