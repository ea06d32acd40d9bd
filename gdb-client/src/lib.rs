//! A client for QEMU's gdbstub (the GDB remote serial protocol), for reading a
//! stopped guest from the host: registers by name (including `cr3` and `k_gs_base`),
//! virtual or physical memory, hardware breakpoints, single steps. It knows the
//! protocol and QEMU's extensions, nothing about any guest operating system.
//!
//! - [`packet`]: framing, checksums, escaping, run-length decoding, reply grammars.
//! - [`target`]: the target description (`target.xml` and its includes).
//! - [`endpoint`]: where the stub listens (a Unix socket, or loopback TCP) and the stream to it.
//! - [`client`]: the connection: handshake, requests, resume/stop, detach.
//!
//! QEMU's documentation warns that the gdb socket gives code execution in the
//! guest: put it on a Unix socket in a private directory; [`Client::connect`]
//! only accepts loopback TCP addresses.

pub mod client;
pub mod endpoint;
pub mod packet;
pub mod target;

use std::net::SocketAddr;
use std::time::Duration;

pub use client::{Client, ClientOptions, Hold};
pub use endpoint::{GdbEndpoint, Transport};
pub use packet::{StopReply, ThreadId};
pub use target::{RegisterInfo, TargetDescription};

/// Everything that can go wrong talking to a gdbstub.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// Only loopback addresses are accepted (the socket is code execution in the guest).
    #[error("refusing to connect to {0}: the gdbstub must listen on 127.0.0.1 or ::1")]
    NotLoopback(SocketAddr),
    /// The connection could not be made.
    #[error("cannot connect to the gdbstub at {addr}: {source}")]
    Connect {
        /// Address tried.
        addr: GdbEndpoint,
        /// Cause.
        source: std::io::Error,
    },
    /// Reading or writing the socket failed.
    #[error("gdbstub connection: {0}")]
    Io(#[from] std::io::Error),
    /// The stub closed the connection.
    #[error("the gdbstub closed the connection")]
    Closed,
    /// No answer in time.
    #[error("no reply from the gdbstub to {request} within {after:?}")]
    Timeout {
        /// The request waited on.
        request: String,
        /// How long we waited.
        after: Duration,
    },
    /// Bytes that do not follow the protocol.
    #[error("malformed data from the gdbstub: {0}")]
    Malformed(String),
    /// Our packet was rejected (`-`) too many times.
    #[error("the gdbstub kept rejecting {request} (checksum nacks)")]
    Retransmits {
        /// The request.
        request: String,
    },
    /// The stub answered with an error code (`Enn`).
    #[error("the gdbstub refused {request}: error {code}")]
    Refused {
        /// The request.
        request: String,
        /// Its error code (`22`, `14`, ...).
        code: String,
    },
    /// The stub does not implement the request (empty reply).
    #[error("the gdbstub does not support {request}")]
    Unsupported {
        /// The request.
        request: String,
    },
    /// A reply that does not fit the request.
    #[error("unexpected reply to {request}: {reply:?}")]
    UnexpectedReply {
        /// The request.
        request: String,
        /// The reply (lossy text).
        reply: String,
    },
    /// The target description could not be used.
    #[error("target description: {0}")]
    TargetXml(String),
    /// The target description has no register of this name.
    #[error("the target has no register named {0}")]
    UnknownRegister(String),
    /// A memory read failed (unmapped address: `E14` from QEMU).
    #[error("cannot read {len} bytes at {addr:#x}: error {code}")]
    Memory {
        /// Start address.
        addr: u64,
        /// Bytes requested.
        len: usize,
        /// The stub's error code.
        code: String,
    },
    /// The target exited or was killed while we waited for a stop.
    #[error("the target is gone: {0:?}")]
    TargetGone(StopReply),
}
