//! The resume → stop → condition loop the gdbstub experiments share: a breakpoint
//! inserted for the length of an experiment, each hit's `current` read on the host,
//! and the step over the breakpoint address, with their timings and round trips.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use qemu_gdb_client::{Client, GdbError, ThreadId};

use guest_kernel::kernel::{Access, CurrentReader, MemoryPath, TaskIds};

use super::{Cr3Error, Cr3Options, HitSample, StepOver};
/// Inserts a breakpoint, runs `f`, and removes the breakpoint whatever `f` returned.
pub(crate) fn with_breakpoint<T>(
    client: &mut Client,
    entry: u64,
    f: impl FnOnce(&mut Client) -> Result<T, Cr3Error>,
) -> Result<T, Cr3Error> {
    if client.is_running() {
        client.interrupt()?;
    }
    client.insert_hw_breakpoint(entry)?;
    let result = f(client);
    if client.is_running() {
        client.interrupt()?;
    }
    let removed = client.remove_hw_breakpoint(entry);
    let value = result?;
    removed?;
    Ok(value)
}

/// One breakpoint stop and the task it stopped in.
pub(crate) struct Hit {
    /// `current`'s ids.
    pub ids: TaskIds,
    /// The vCPU's per-cpu base.
    pub base: u64,
    /// The vCPU that stopped.
    pub thread: Option<ThreadId>,
    /// When the stop arrived.
    pub stopped: Instant,
    rt_at_stop: u64,
}

/// Resume → stop → condition, with the bookkeeping the gdbstub experiments share.
pub(crate) struct HitLoop {
    pub(super) step_over_mode: StepOver,
    pub(super) hit_timeout: Duration,
    pub(super) keep_samples: usize,
    pub(super) bases: HashMap<Option<ThreadId>, u64>,
    pub(super) samples: Vec<HitSample>,
    pub(super) samples_all: Vec<u32>,
    pub(super) seen: Vec<u32>,
    pub(super) run_to_hit: Vec<Duration>,
    pub(crate) handling: Vec<Duration>,
    pub(super) per_hit: Vec<Duration>,
    pub(crate) hits: u64,
    pub(crate) resumed: u64,
    pub(super) other_rts: u64,
    pub(super) last_resume: Option<Instant>,
    pub(super) last_path: Option<MemoryPath>,
}

impl HitLoop {
    pub(crate) fn new(opts: &Cr3Options) -> HitLoop {
        HitLoop {
            step_over_mode: opts.step_over,
            hit_timeout: opts.hit_timeout,
            keep_samples: opts.keep_samples,
            bases: HashMap::new(),
            samples: Vec::new(),
            samples_all: Vec::new(),
            seen: Vec::new(),
            run_to_hit: Vec::new(),
            handling: Vec::new(),
            per_hit: Vec::new(),
            hits: 0,
            resumed: 0,
            other_rts: 0,
            last_resume: None,
            last_path: None,
        }
    }

    /// Resumes (unless the target still runs from a call that found no hit), waits for
    /// the next hit and reads `current` there. `None`: no hit in time; the target runs
    /// on, and is not stopped to say so: every stop and start of the VM also stops and
    /// starts its vhost-user devices (the vsock link), and adds a hold to the time line.
    /// [`with_breakpoint`] stops it at the end.
    pub(crate) fn next_hit(
        &mut self,
        client: &mut Client,
        reader: &mut CurrentReader,
        entry: u64,
    ) -> Result<Option<Hit>, Cr3Error> {
        let resumed = match self.last_resume {
            Some(at) if client.is_running() => at,
            _ => {
                let now = Instant::now();
                if let Some(prev) = self.last_resume.replace(now) {
                    self.per_hit.push(now - prev);
                }
                client.resume()?;
                now
            }
        };
        let Some(stop) = client.wait_stop(self.hit_timeout)? else {
            return Ok(None);
        };
        let stopped = Instant::now();
        self.run_to_hit.push(stopped - resumed);
        let rt_at_stop = client.round_trips();
        self.hits += 1;
        if self.hits == 1 {
            // QEMU's stop replies do not say which breakpoint hit; check the first.
            let rip = client.read_register("rip")?;
            if rip != entry {
                return Err(Cr3Error::WrongStop { rip, entry });
            }
        }
        let thread = stop.thread();
        if let Some(t) = thread {
            client.select_thread(t)?;
        }
        let base = match self.bases.get(&thread) {
            Some(b) => *b,
            None => {
                let b = reader.per_cpu_base(client)?;
                self.bases.insert(thread, b);
                b
            }
        };
        let ids = reader.current_ids(client, base, Access::Auto)?;
        if self.samples.len() < self.keep_samples {
            self.samples.push(HitSample {
                pid: ids.pid,
                tgid: ids.tgid,
                thread,
            });
        }
        self.samples_all.push(ids.tgid);
        if !self.seen.contains(&ids.tgid) {
            self.seen.push(ids.tgid);
        }
        Ok(Some(Hit {
            ids,
            base,
            thread,
            stopped,
            rt_at_stop,
        }))
    }

    /// Mean round trips per resumed hit (stop + condition + step-over); 0 with none.
    pub(crate) fn round_trips_per_hit(&self) -> f64 {
        if self.resumed == 0 {
            0.0
        } else {
            self.other_rts as f64 / self.resumed as f64
        }
    }

    /// Leaves the breakpoint address so the next resume runs on.
    pub(crate) fn step_over(
        &mut self,
        client: &mut Client,
        entry: u64,
        hit: &Hit,
    ) -> Result<(), Cr3Error> {
        let (rt_at_stop, stopped) = (hit.rt_at_stop, hit.stopped);
        match self.step_over_mode {
            StepOver::KeepBreakpoint => {
                step(client, hit.thread)?;
            }
            StepOver::Reinsert => {
                client.remove_hw_breakpoint(entry)?;
                step(client, hit.thread)?;
                client.insert_hw_breakpoint(entry)?;
            }
        }
        self.resumed += 1;
        // +1: the resume and its stop, counted when the stop arrived.
        self.other_rts += client.round_trips() - rt_at_stop + 1;
        self.handling.push(stopped.elapsed());
        Ok(())
    }
}

/// One instruction on the hit's vCPU only (the others stay stopped).
pub(super) fn step(client: &mut Client, thread: Option<ThreadId>) -> Result<(), GdbError> {
    match thread {
        Some(t) => client.step_thread(t).map(drop),
        None => client.step().map(drop),
    }
}
