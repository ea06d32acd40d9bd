//! What the CR3 experiment reports: the [`Cr3Report`] of the target's system call
//! entry, and the timing summaries ([`Millis`]) and hit samples the gdbstub
//! measurements share.

use std::fmt;
use std::time::Duration;

use qemu_gdb_client::ThreadId;

use guest_kernel::kernel::{MemoryPath, TaskIds};

use super::{ENTRY_SYMBOL, StepOver};
/// Timing summary of a set of durations, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Millis {
    /// Number of samples.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub median: f64,
    /// Mean.
    pub mean: f64,
    /// Largest.
    pub max: f64,
}

impl Millis {
    pub(super) fn of(samples: &[Duration]) -> Millis {
        if samples.is_empty() {
            return Millis::default();
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Millis {
            n,
            min: ms[0],
            median,
            mean: ms.iter().sum::<f64>() / n as f64,
            max: ms[n - 1],
        }
    }
}

/// One breakpoint hit's task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HitSample {
    /// `current->pid`.
    pub pid: u32,
    /// `current->tgid`.
    pub tgid: u32,
    /// The vCPU (gdb thread) that hit.
    pub thread: Option<ThreadId>,
}

/// What the experiment saw.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
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
        writeln!(
            f,
            "target pid {} (task {:#x}) at {ENTRY_SYMBOL} {:#x}",
            self.target_pid, self.target.task, self.entry
        )?;
        writeln!(
            f,
            "cr3 {:#x} -> {:#x} ({}; differing bits {:#x}, bit 12 {}, pcid {:#x}/{:#x}) after {} steps{}",
            self.cr3_user,
            self.cr3_kernel,
            if self.cr3_changed {
                "changed"
            } else {
                "unchanged"
            },
            self.differing_bits,
            if self.pgd_switch_bit12 {
                "switched"
            } else {
                "same"
            },
            self.pcid.0,
            self.pcid.1,
            self.steps,
            self.switch_at
                .as_deref()
                .map(|s| format!(" at {s}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "current readable before the switch: {}{}; after: {}",
            self.current_readable_before,
            self.current_error_before
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default(),
            self.current_readable_after
        )?;
        write!(
            f,
            "{} hits, {} other-process resumes ({:?})",
            self.hits_examined, self.resumes_other, self.step_over
        )?;
        if self.resumes_other > 0 {
            write!(
                f,
                "; per hit {:.2} ms median ({:.2} mean, {:.2} min), handling {:.3} ms, {:.1} round trips per other hit",
                self.per_hit.median,
                self.per_hit.mean,
                self.per_hit.min,
                self.handling.median,
                self.round_trips_per_other_hit
            )?;
        }
        write!(f, "; {} round trips in all", self.round_trips_total)
    }
}
