//! Opening a connection: the loopback/Unix connect and the handshake that reads
//! the stub's features, the target description and the halt reason.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Client, ClientOptions, MAX_INCOMING};
use crate::GdbError;
use crate::endpoint::{GdbEndpoint, Transport};
use crate::packet::Decoder;
use crate::target::TargetDescription;
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
}
