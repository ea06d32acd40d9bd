//! Reading the stopped target: halt reason, threads, registers, memory and the
//! physical-memory mode.

use std::sync::Arc;

use super::transport::Expect;
use super::{Client, Registers};
use crate::GdbError;
use crate::packet::{self, StopReply, ThreadId};
use crate::target::RegisterInfo;
impl Client {
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
}
