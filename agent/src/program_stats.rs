//! What the kernel times of the loaded eBPF programs (`BPF_ENABLE_STATS`,
//! [`guestscope_common::plan::RunPlan::program_stats`]): each program's runs and the time
//! spent inside it, read from its `bpf_prog_info` before and after a workload.
//!
//! The kernel counts while any holder keeps the statistics enabled (the file descriptor
//! [`ProgramStats`] holds); every run is counted, whichever process hit the probe, since
//! the pid filter is inside the program. The time is the program's own: the trampoline
//! or kprobe that calls it is outside, and is what a run costs beyond it.

use std::{collections::BTreeMap, os::fd::OwnedFd};

use aya::{
    Ebpf,
    sys::{Stats, SyscallError, enable_stats},
};
use guestscope_common::wire::ProgramRun;

/// Runs and nanoseconds inside, by program name.
pub type RunTimes = BTreeMap<String, (u64, u64)>;

/// The kernel's statistics, enabled while this lives, and the counts at the start of
/// the current workload.
pub struct ProgramStats {
    /// Keeps the statistics on; closing it turns them off.
    _enabled: OwnedFd,
    /// The counts when [`ProgramStats::begin`] was last called.
    at_begin: RunTimes,
}

impl ProgramStats {
    /// Turns the kernel's statistics on.
    pub fn enable() -> Result<ProgramStats, SyscallError> {
        Ok(ProgramStats {
            _enabled: enable_stats(Stats::RunTime)?,
            at_begin: RunTimes::new(),
        })
    }

    /// Notes the counts of `ebpf`'s programs now: a workload starts.
    pub fn begin(&mut self, ebpf: &Ebpf) {
        self.at_begin = read(ebpf);
    }

    /// The runs of each of `ebpf`'s programs since [`ProgramStats::begin`].
    pub fn since_begin(&self, ebpf: &Ebpf) -> Vec<ProgramRun> {
        delta(&self.at_begin, &read(ebpf))
    }
}

/// The counts of every loaded program of `ebpf` (one that is not loaded has none).
fn read(ebpf: &Ebpf) -> RunTimes {
    ebpf.programs()
        .filter_map(|(name, program)| {
            let info = program.info().ok()?;
            Some((
                name.to_string(),
                (info.run_count(), info.run_time().as_nanos() as u64),
            ))
        })
        .collect()
}

/// The programs that ran between `before` and `now`, with their runs and time over
/// that span, by name. A program loaded in between counts from zero.
pub fn delta(before: &RunTimes, now: &RunTimes) -> Vec<ProgramRun> {
    now.iter()
        .filter_map(|(name, &(runs, ns))| {
            let (runs0, ns0) = before.get(name).copied().unwrap_or((0, 0));
            let runs = runs.saturating_sub(runs0);
            (runs > 0).then(|| ProgramRun {
                program: name.clone(),
                runs,
                run_ns: ns.saturating_sub(ns0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(entries: &[(&str, u64, u64)]) -> RunTimes {
        entries
            .iter()
            .map(|&(name, runs, ns)| (name.to_string(), (runs, ns)))
            .collect()
    }

    #[test]
    fn only_programs_that_ran_are_reported_with_their_share() {
        let before = times(&[("spin_lock_fentry", 100, 5_000), ("alloc_fd", 10, 900)]);
        let now = times(&[
            ("spin_lock_fentry", 1_100, 65_000),
            ("alloc_fd", 10, 900),
            ("page_fault_user", 3, 300),
        ]);
        assert_eq!(
            delta(&before, &now),
            vec![
                ProgramRun {
                    program: "page_fault_user".into(),
                    runs: 3,
                    run_ns: 300,
                },
                ProgramRun {
                    program: "spin_lock_fentry".into(),
                    runs: 1_000,
                    run_ns: 60_000,
                },
            ]
        );
    }

    #[test]
    fn counts_that_went_back_do_not_wrap() {
        // A program reloaded in between starts its counts again.
        let before = times(&[("alloc_fd", 500, 50_000)]);
        let now = times(&[("alloc_fd", 20, 1_000)]);
        assert_eq!(delta(&before, &now), vec![]);
    }
}
