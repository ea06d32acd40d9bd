//! Does CR3 change on a system call? (seed §6, redone.)
//!
//! The lab's run put a breakpoint on `entry_SYSCALL_64` and saw the same CR3 before
//! and after the entry, and concluded the kernel does not switch page tables. Its
//! guest ran without page-table isolation: QEMU's default CPU model reports an AMD
//! vendor, so the kernel says "meltdown: Not affected" and leaves PTI off. With a
//! Meltdown-affected model (`-cpu Haswell-noTSX`) the kernel enables PTI and
//! `SWITCH_TO_KERNEL_CR3` clears bit 12 of CR3 a few instructions into the entry.
//!
//! The experiment, through QEMU's gdbstub: a hardware breakpoint on
//! `entry_SYSCALL_64` (address from the guest's kallsyms, KASLR included); on each
//! hit, `current`'s tgid decides host-side whether this is the target process
//! (read from the per-cpu base in `k_gs_base`, which still holds the kernel value
//! before `swapgs`; under PTI through a walk of the kernel page tables, since the
//! user page tables do not map `current`). Other processes are stepped over and
//! resumed. At the target's hit: CR3, whether `current` is readable through the
//! page tables in force, then single steps until CR3 changes (or a step limit),
//! CR3 again and readability again. The breakpoint is then removed and the guest
//! runs on.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::gdb::kernel::{Access, CR3_NOFLUSH, CR3_PCID_MASK, CR3_PTI_USER_BIT, MemoryPath, TaskIds};
use crate::gdb::{Client, ClientOptions, CurrentReader, GdbError, KernelLayout, ThreadId};
use crate::guest::btf::TaskOffsets;
use crate::guest::kallsyms::Kallsyms;

/// The entry point the breakpoint goes on.
pub const ENTRY_SYMBOL: &str = "entry_SYSCALL_64";

/// How a non-target hit continues past the breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum StepOver {
    /// Single-step with the breakpoint in place (QEMU's single step ignores a
    /// breakpoint at the starting address), then continue: 2 packets.
    KeepBreakpoint,
    /// What gdb does: remove the breakpoint, step, insert it again, continue.
    /// In QEMU 7.2 each insert and remove flushes all translated code.
    Reinsert,
}

/// Settings of the experiment.
#[derive(Clone, Debug)]
pub struct Cr3Options {
    /// Connection settings.
    pub client: ClientOptions,
    /// Give up after this many hits without the target.
    pub max_hits: u64,
    /// Give up after this long.
    pub timeout: Duration,
    /// Longest wait for one hit (an idle guest makes no system calls).
    pub hit_timeout: Duration,
    /// Single steps allowed at the target's hit while waiting for CR3 to change.
    pub max_steps: u32,
    /// How other processes' hits continue.
    pub step_over: StepOver,
    /// How many hits' (pid, tgid, comm-less) identities to keep in the report.
    pub keep_samples: usize,
}

impl Default for Cr3Options {
    fn default() -> Cr3Options {
        Cr3Options {
            client: ClientOptions::default(),
            max_hits: 5000,
            timeout: Duration::from_secs(120),
            hit_timeout: Duration::from_secs(10),
            max_steps: 30,
            step_over: StepOver::KeepBreakpoint,
            keep_samples: 64,
        }
    }
}

/// Why the experiment gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Cr3Error {
    /// Talking to the gdbstub or reading the guest failed.
    #[error(transparent)]
    Gdb(#[from] GdbError),
    /// A needed kernel symbol is missing from kallsyms.
    #[error("kallsyms has no {0}")]
    MissingSymbol(&'static str),
    /// The target process made no system call before a limit.
    #[error("pid {target_pid} made no system call in {hits} hits / {elapsed_ms:.0} ms ({reason}); tgids seen: {seen:?}")]
    TargetNotSeen {
        /// The pid looked for.
        target_pid: u32,
        /// Hits examined.
        hits: u64,
        /// Time spent.
        elapsed_ms: f64,
        /// Which limit ended the search.
        reason: String,
        /// Distinct tgids seen at the breakpoint.
        seen: Vec<u32>,
    },
    /// The first stop was not at the breakpoint.
    #[error("stopped at {rip:#x}, not at {ENTRY_SYMBOL} ({entry:#x})")]
    WrongStop {
        /// Where the vCPU stopped.
        rip: u64,
        /// The breakpoint address.
        entry: u64,
    },
}

/// Timing summary of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Millis {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

impl Millis {
    fn of(samples: &[Duration]) -> Millis {
        if samples.is_empty() {
            return Millis::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
        Millis { n, median, mean: ms.iter().sum::<f64>() / n as f64, max: ms[n - 1] }
    }
}

/// One breakpoint hit's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HitSample {
    /// `current->pid`.
    pub pid: u32,
    /// `current->tgid`.
    pub tgid: u32,
}

/// What the experiment saw.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Cr3Report {
    /// Process looked for.
    pub target_pid: u32,
    /// Its task at the hit.
    pub target: TaskIds,
    /// `entry_SYSCALL_64`'s run-time address.
    pub entry: u64,
    /// CR3 at the breakpoint (the user page tables under PTI).
    pub cr3_user: u64,
    /// CR3 after the switch (or after the step limit, if it never changed).
    pub cr3_kernel: u64,
    /// Whether CR3 changed within the step limit.
    pub cr3_changed: bool,
    /// `cr3_user ^ cr3_kernel`.
    pub differing_bits: u64,
    /// Bit 12 differs: PTI's user/kernel PGD switch.
    pub pgd_switch_bit12: bool,
    /// PCID (bits 0–11) before and after.
    pub pcid: (u16, u16),
    /// Bit 63 (no-flush) before and after.
    pub noflush: (bool, bool),
    /// Single steps taken after the breakpoint.
    pub steps: u32,
    /// Where the vCPU was after the step that changed CR3 (`symbol+off`).
    pub switch_at: Option<String>,
    /// `current` readable through the page tables in force at the breakpoint.
    pub current_readable_before: bool,
    /// The error that read gave, if any.
    pub current_error_before: Option<String>,
    /// `current` readable after the last step.
    pub current_readable_after: bool,
    /// How the pid condition was read at the target's hit.
    pub condition_path: MemoryPath,
    /// Breakpoint hits examined (target's included).
    pub hits_examined: u64,
    /// Hits of other processes, resumed.
    pub resumes_other: u64,
    /// How they were resumed.
    pub step_over: StepOver,
    /// Round trips in the whole run (handshake included).
    pub round_trips_total: u64,
    /// Mean round trips per other-process hit (stop + condition + step-over).
    pub round_trips_per_other_hit: f64,
    /// From resume to the next stop: guest time until the next system call,
    /// including QEMU's retranslation after a flush.
    pub run_to_hit: Millis,
    /// From a stop to the next resume: the host-side condition and step-over.
    pub handling: Millis,
    /// Whole cycle of an other-process hit (resume to resume).
    pub per_hit: Millis,
    /// First hits' identities.
    pub samples: Vec<HitSample>,
    /// Wall time of the run.
    pub elapsed_ms: f64,
}

impl Cr3Report {
    /// PTI seen in action: CR3's bit 12 switched and `current` was unreadable before.
    pub fn pti_observed(&self) -> bool {
        self.cr3_changed && self.pgd_switch_bit12 && !self.current_readable_before
    }
}

impl fmt::Display for Cr3Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target pid {} (task {:#x}) at {ENTRY_SYMBOL} {:#x}", self.target_pid, self.target.task, self.entry)?;
        writeln!(
            f,
            "cr3 {:#x} -> {:#x} ({}; differing bits {:#x}, bit 12 {}, pcid {:#x}/{:#x}) after {} steps{}",
            self.cr3_user,
            self.cr3_kernel,
            if self.cr3_changed { "changed" } else { "unchanged" },
            self.differing_bits,
            if self.pgd_switch_bit12 { "switched" } else { "same" },
            self.pcid.0,
            self.pcid.1,
            self.steps,
            self.switch_at.as_deref().map(|s| format!(" at {s}")).unwrap_or_default()
        )?;
        writeln!(
            f,
            "current readable before the switch: {}{}; after: {}",
            self.current_readable_before,
            self.current_error_before.as_deref().map(|e| format!(" ({e})")).unwrap_or_default(),
            self.current_readable_after
        )?;
        write!(
            f,
            "{} hits, {} other-process resumes ({:?}); per hit {:.2} ms median ({:.2} mean), handling {:.3} ms, {:.1} round trips per other hit; {} round trips in all",
            self.hits_examined,
            self.resumes_other,
            self.step_over,
            self.per_hit.median,
            self.per_hit.mean,
            self.handling.median,
            self.round_trips_per_other_hit,
            self.round_trips_total
        )
    }
}

/// Connects to the gdbstub at `gdb` (loopback only), runs the experiment, and
/// detaches (the guest runs on).
///
/// Inputs from the guest: its `/proc/kallsyms` (for `entry_SYSCALL_64` and
/// `current_task`) and the task_struct offsets from its BTF
/// ([`crate::guest::btf::task_offsets`]).
pub fn run(gdb: SocketAddr, kallsyms: &Kallsyms, offsets: &TaskOffsets, target_pid: u32, opts: &Cr3Options) -> Result<Cr3Report, Cr3Error> {
    let mut client = Client::connect(gdb, opts.client.clone())?;
    let report = run_on(&mut client, kallsyms, offsets, target_pid, opts);
    let detached = client.detach();
    let report = report?;
    detached?;
    Ok(report)
}

/// Runs the experiment on a connected, stopped client. The breakpoint is removed
/// before returning, on success and on error; the client stays attached.
pub fn run_on(client: &mut Client, kallsyms: &Kallsyms, offsets: &TaskOffsets, target_pid: u32, opts: &Cr3Options) -> Result<Cr3Report, Cr3Error> {
    let entry = kallsyms.by_name(ENTRY_SYMBOL).ok_or(Cr3Error::MissingSymbol(ENTRY_SYMBOL))?.addr;
    let layout = KernelLayout::new(kallsyms, offsets.clone())?;
    let mut reader = CurrentReader::new(layout);
    if client.is_running() {
        client.interrupt()?;
    }
    client.insert_hw_breakpoint(entry)?;
    let result = hunt(client, &mut reader, kallsyms, entry, target_pid, opts);
    if client.is_running() {
        client.interrupt()?;
    }
    let removed = client.remove_hw_breakpoint(entry);
    let report = result?;
    removed?;
    Ok(report)
}

fn hunt(
    client: &mut Client,
    reader: &mut CurrentReader,
    kallsyms: &Kallsyms,
    entry: u64,
    target_pid: u32,
    opts: &Cr3Options,
) -> Result<Cr3Report, Cr3Error> {
    let start = Instant::now();
    let mut bases: HashMap<Option<ThreadId>, u64> = HashMap::new();
    let mut samples = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    let (mut run_to_hit, mut handling, mut per_hit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut hits, mut resumes_other, mut other_rts) = (0u64, 0u64, 0u64);
    let mut last_resume: Option<Instant> = None;
    loop {
        let not_seen = |reason: &str, hits: u64, seen: &[u32]| Cr3Error::TargetNotSeen {
            target_pid,
            hits,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            reason: reason.to_string(),
            seen: seen.to_vec(),
        };
        if hits >= opts.max_hits {
            return Err(not_seen("hit limit", hits, &seen));
        }
        if start.elapsed() >= opts.timeout {
            return Err(not_seen("time limit", hits, &seen));
        }
        let resumed = Instant::now();
        if let Some(prev) = last_resume.replace(resumed) {
            per_hit.push(resumed - prev);
        }
        client.resume()?;
        let Some(stop) = client.wait_stop(opts.hit_timeout)? else {
            client.interrupt()?;
            return Err(not_seen("no system call within the hit timeout", hits, &seen));
        };
        let stopped = Instant::now();
        run_to_hit.push(stopped - resumed);
        let rt_at_stop = client.round_trips();
        hits += 1;
        if hits == 1 {
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
        let base = match bases.get(&thread) {
            Some(b) => *b,
            None => {
                let b = reader.per_cpu_base(client)?;
                bases.insert(thread, b);
                b
            }
        };
        let ids = reader.current_ids(client, base, Access::Auto)?;
        if samples.len() < opts.keep_samples {
            samples.push(HitSample { pid: ids.pid, tgid: ids.tgid });
        }
        if !seen.contains(&ids.tgid) {
            seen.push(ids.tgid);
        }
        if ids.tgid != target_pid {
            resumes_other += 1;
            match opts.step_over {
                StepOver::KeepBreakpoint => {
                    client.step()?;
                }
                StepOver::Reinsert => {
                    client.remove_hw_breakpoint(entry)?;
                    client.step()?;
                    client.insert_hw_breakpoint(entry)?;
                }
            }
            // +1: the resume and its stop, counted when the stop arrived.
            other_rts += client.round_trips() - rt_at_stop + 1;
            handling.push(stopped.elapsed());
            continue;
        }
        tracing::debug!(target_pid, hits, "target process at the syscall entry");
        let rip = client.read_register("rip")?;
        if rip != entry {
            return Err(Cr3Error::WrongStop { rip, entry });
        }
        let cr3_user = client.read_register("cr3")?;
        let (current_readable_before, current_error_before) = match reader.current_ids(client, base, Access::Virtual) {
            Ok(_) => (true, None),
            Err(e @ GdbError::Memory { .. }) => (false, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let mut cr3_kernel = cr3_user;
        let mut steps = 0;
        let mut switch_at = None;
        while steps < opts.max_steps {
            client.step()?;
            steps += 1;
            cr3_kernel = client.read_register("cr3")?;
            if cr3_kernel != cr3_user {
                let rip = client.read_register("rip")?;
                switch_at = Some(kallsyms.resolve(rip).map_or_else(|| format!("{rip:#x}"), |r| r.to_string()));
                break;
            }
        }
        let current_readable_after = reader.current_ids(client, base, Access::Virtual).is_ok();
        let diff = cr3_user ^ cr3_kernel;
        return Ok(Cr3Report {
            target_pid,
            target: ids.clone(),
            entry,
            cr3_user,
            cr3_kernel,
            cr3_changed: diff != 0,
            differing_bits: diff,
            pgd_switch_bit12: diff & CR3_PTI_USER_BIT != 0,
            pcid: ((cr3_user & CR3_PCID_MASK) as u16, (cr3_kernel & CR3_PCID_MASK) as u16),
            noflush: (cr3_user & CR3_NOFLUSH != 0, cr3_kernel & CR3_NOFLUSH != 0),
            steps,
            switch_at,
            current_readable_before,
            current_error_before,
            current_readable_after,
            condition_path: ids.path,
            hits_examined: hits,
            resumes_other,
            step_over: opts.step_over,
            round_trips_total: client.round_trips(),
            round_trips_per_other_hit: if resumes_other == 0 { 0.0 } else { other_rts as f64 / resumes_other as f64 },
            run_to_hit: Millis::of(&run_to_hit),
            handling: Millis::of(&handling),
            per_hit: Millis::of(&per_hit),
            samples,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_summarises_durations() {
        let m = Millis::of(&[Duration::from_millis(1), Duration::from_millis(3), Duration::from_millis(8)]);
        assert_eq!((m.n, m.median, m.max), (3, 3.0, 8.0));
        assert!((m.mean - 4.0).abs() < 1e-9);
        assert_eq!(Millis::of(&[]), Millis::default());
    }
}
