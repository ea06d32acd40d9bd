//! Running the target: hardware breakpoints, single steps, resume and stop,
//! the holds that stop the guest's clock, and detaching.

use std::time::{Duration, Instant};

use super::transport::Expect;
use super::{Client, Hold};
use crate::GdbError;
use crate::packet::{self, StopReply, ThreadId};
impl Client {
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

    pub(super) fn detach_inner(&mut self) -> Result<(), GdbError> {
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
