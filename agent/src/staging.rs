//! The probes' staged hits (see [`guestscope_common::STAGED_EVENTS`]): a CPU's cached
//! hits wait in its scratch until a run is full, so the agent runs the `flush_staged`
//! program on every CPU to write the rest out: while it reads the ring, so no hit
//! waits much longer than a batch does, and before it drains the ring at a
//! workload's end, so every hit of the workload is read and counted.

use std::time::{Duration, Instant};

use aya::{
    Ebpf,
    programs::{ProgramError, RawTracePoint, RawTracePointRunOptions, TestRun},
};
use guestscope_common::maps::{FLUSH_BUSY, FLUSH_STAGED};

use crate::failure_run::FailureRun;

/// How often [`Staging::flush_if_due`] writes the stages out while the agent reads.
pub const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Longest [`Staging::flush_all`] waits for a CPU whose scratch a probe holds (a task
/// preempted inside a probe holds it until it runs again).
pub const FLUSH_PATIENCE: Duration = Duration::from_millis(200);

/// Why the stages could not be written out.
#[derive(Debug, thiserror::Error)]
pub enum StagingError {
    /// The object has no `flush_staged` program, or the kernel refused it.
    #[error("the {FLUSH_STAGED} program: {0}")]
    Program(#[from] ProgramError),
    /// The program's run on a CPU failed (the others were still flushed).
    #[error("running {FLUSH_STAGED} on CPU {cpu}: {source}")]
    Run {
        /// The CPU.
        cpu: u32,
        /// Why the run failed.
        source: ProgramError,
    },
    /// The online CPUs could not be read.
    #[error("reading the online CPUs: {0}")]
    Cpus(String),
    /// A CPU's scratch stayed held for [`FLUSH_PATIENCE`].
    #[error("CPU {0} stayed busy: its staged hits wait for the next flush")]
    Busy(u32),
}

/// Runs `flush_staged` on every online CPU.
#[derive(Debug)]
pub struct Staging {
    cpus: Vec<u32>,
    flushed: Instant,
    /// Failed write-outs by [`Staging::pump`] since the last that worked.
    failures: FailureRun,
}

impl Staging {
    /// Loads `flush_staged` (never attached) into `ebpf`; with it loaded the probes may
    /// stage (`guestscope_common::maps::STAGE_CACHED`).
    pub fn load(ebpf: &mut Ebpf) -> Result<Staging, StagingError> {
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| StagingError::Cpus(format!("{what}: {e}")))?;
        let program: &mut RawTracePoint = ebpf
            .program_mut(FLUSH_STAGED)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        program.load()?;
        Ok(Staging {
            cpus,
            flushed: Instant::now(),
            failures: FailureRun::default(),
        })
    }

    /// [`Staging::flush_if_due`] for the event pump's every round. It is retried every
    /// [`FLUSH_EVERY`], so a CPU that keeps failing is logged once per run of
    /// failures, and how many there were once the write-out works again.
    pub fn pump(&mut self, ebpf: &Ebpf) {
        match self.flush_if_due(ebpf) {
            Err(e) if self.failures.failed() => {
                tracing::warn!("{e} (repeats are counted, not logged)");
            }
            Err(_) => {}
            Ok(()) => {
                if let Some(n) = self.failures.succeeded() {
                    tracing::info!(failures = n, "staged hits are written out again");
                }
            }
        }
    }

    /// Writes every CPU's stage out if [`FLUSH_EVERY`] passed since the last time; a
    /// CPU whose scratch a probe holds is left for the next time.
    pub fn flush_if_due(&mut self, ebpf: &Ebpf) -> Result<(), StagingError> {
        if self.flushed.elapsed() < FLUSH_EVERY {
            return Ok(());
        }
        self.flushed = Instant::now();
        self.flush_each(ebpf, &self.cpus).map(drop)
    }

    /// Writes every CPU's stage out, waiting up to [`FLUSH_PATIENCE`] for a CPU whose
    /// scratch a probe holds.
    pub fn flush_all(&mut self, ebpf: &Ebpf) -> Result<(), StagingError> {
        self.flushed = Instant::now();
        let until = self.flushed + FLUSH_PATIENCE;
        let mut left = self.cpus.clone();
        loop {
            left = self.flush_each(ebpf, &left)?;
            let Some(&cpu) = left.first() else {
                return Ok(());
            };
            if Instant::now() >= until {
                return Err(StagingError::Busy(cpu));
            }
            // The preempted task gets the CPU back meanwhile.
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Runs the program once on each of `cpus`; returns those that were busy. A CPU
    /// whose run fails (one gone offline since the list was read) does not keep the
    /// others from being flushed: the first such failure is returned after them all.
    fn flush_each(&self, ebpf: &Ebpf, cpus: &[u32]) -> Result<Vec<u32>, StagingError> {
        let program: &RawTracePoint = ebpf
            .program(FLUSH_STAGED)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        let mut busy = Vec::new();
        let mut failed = None;
        for &cpu in cpus {
            match program.test_run(RawTracePointRunOptions {
                cpu: Some(cpu),
                ..RawTracePointRunOptions::new()
            }) {
                Ok(ran) if ran.return_value == FLUSH_BUSY => busy.push(cpu),
                Ok(_) => {}
                Err(source) => {
                    failed.get_or_insert(StagingError::Run { cpu, source });
                }
            }
        }
        failed.map_or(Ok(busy), Err)
    }
}
