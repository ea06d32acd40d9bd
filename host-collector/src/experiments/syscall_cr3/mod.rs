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

use std::time::{Duration, Instant};

use qemu_gdb_client::{Client, ClientOptions, GdbEndpoint, GdbError};

use guest_kernel::btf::TaskOffsets;
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{
    Access, CR3_NOFLUSH, CR3_PCID_MASK, CR3_PTI_USER_BIT, CurrentReader, KernelLayout,
    KernelReadError,
};

mod condition;
mod hit_loop;
mod report;

pub use condition::{ConditionCost, FunctionTrace, measure_condition, trace_function};
use hit_loop::step;
pub(crate) use hit_loop::{HitLoop, with_breakpoint};
pub use report::{Cr3Report, HitSample, Millis};

/// The entry point the breakpoint goes on.
pub const ENTRY_SYMBOL: &str = "entry_SYSCALL_64";

/// How a non-target hit continues past the breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StepOver {
    /// Single-step with the breakpoint in place (QEMU's single step ignores a
    /// breakpoint at the starting address), then continue: 2 packets.
    KeepBreakpoint,
    /// What gdb does: remove the breakpoint, step, insert it again, continue:
    /// 4 packets. QEMU since 6.2 recognises breakpoints outside translated code, so
    /// inserting and removing one no longer flushes the translation cache; measured
    /// on 7.2, this costs two round trips more and no slower guest run.
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
    /// Talking to the gdbstub failed.
    #[error(transparent)]
    Gdb(#[from] GdbError),
    /// Reading the stopped guest kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelReadError),
    /// A needed kernel symbol is missing from kallsyms.
    #[error("kallsyms has no {0}")]
    MissingSymbol(&'static str),
    /// A function the user asked to stop at is not in kallsyms.
    #[error("no function {0} in the guest's kallsyms")]
    NoFunction(String),
    /// The target process made no system call before a limit.
    #[error(
        "pid {target_pid} made no system call in {hits} hits / {elapsed_ms:.0} ms ({reason}); tgids seen: {seen:?}"
    )]
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
    #[error("stopped at {rip:#x}, not at the breakpoint ({entry:#x})")]
    WrongStop {
        /// Where the vCPU stopped.
        rip: u64,
        /// The breakpoint address.
        entry: u64,
    },
}

/// Connects to the gdbstub at `gdb` (loopback only), runs the experiment, and
/// detaches (the guest runs on).
///
/// Inputs from the guest: its `/proc/kallsyms` (for `entry_SYSCALL_64` and
/// `current_task`) and the task_struct offsets from its BTF
/// ([`guest_kernel::btf::task_offsets`]).
pub fn run(
    gdb: GdbEndpoint,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    target_pid: u32,
    opts: &Cr3Options,
) -> Result<Cr3Report, Cr3Error> {
    let mut client = Client::connect(gdb, opts.client.clone())?;
    let report = run_on(&mut client, kallsyms, offsets, target_pid, opts);
    let detached = client.detach();
    let report = report?;
    detached?;
    Ok(report)
}

/// Runs the experiment on a connected, stopped client. The breakpoint is removed
/// before returning, on success and on error; the client stays attached.
pub fn run_on(
    client: &mut Client,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    target_pid: u32,
    opts: &Cr3Options,
) -> Result<Cr3Report, Cr3Error> {
    let entry = kallsyms
        .by_name(ENTRY_SYMBOL)
        .ok_or(Cr3Error::MissingSymbol(ENTRY_SYMBOL))?
        .addr;
    let layout = KernelLayout::new(kallsyms, offsets.clone())?;
    let mut reader = CurrentReader::new(layout);
    with_breakpoint(client, entry, |client| {
        hunt(client, &mut reader, kallsyms, entry, target_pid, opts)
    })
}

/// Resumes past other processes' hits until `target_pid` enters a system call, then
/// single-steps it until CR3 changes and reports both page tables.
fn hunt(
    client: &mut Client,
    reader: &mut CurrentReader,
    kallsyms: &Kallsyms,
    entry: u64,
    target_pid: u32,
    opts: &Cr3Options,
) -> Result<Cr3Report, Cr3Error> {
    let start = Instant::now();
    let mut l = HitLoop::new(opts);
    let not_seen = |reason: &str, l: &HitLoop| Cr3Error::TargetNotSeen {
        target_pid,
        hits: l.hits,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        reason: reason.to_string(),
        seen: l.seen.clone(),
    };
    let hit = loop {
        if l.hits >= opts.max_hits {
            return Err(not_seen("hit limit", &l));
        }
        if start.elapsed() >= opts.timeout {
            return Err(not_seen("time limit", &l));
        }
        let Some(hit) = l.next_hit(client, reader, entry)? else {
            return Err(not_seen("no system call within the hit timeout", &l));
        };
        if hit.ids.tgid == target_pid {
            break hit;
        }
        l.step_over(client, entry, &hit)?;
    };
    tracing::debug!(
        target_pid,
        hits = l.hits,
        "target process at the syscall entry"
    );
    let rip = client.read_register("rip")?;
    if rip != entry {
        return Err(Cr3Error::WrongStop { rip, entry });
    }
    let cr3_user = client.read_register("cr3")?;
    let (current_readable_before, current_error_before) =
        match reader.current_ids(client, hit.base, Access::Virtual) {
            Ok(_) => (true, None),
            Err(e @ KernelReadError::Gdb(GdbError::Memory { .. })) => (false, Some(e.to_string())),
            Err(e) => return Err(e.into()),
        };
    let mut cr3_kernel = cr3_user;
    let mut steps = 0;
    let mut switch_at = None;
    while steps < opts.max_steps {
        step(client, hit.thread)?;
        steps += 1;
        cr3_kernel = client.read_register("cr3")?;
        if cr3_kernel != cr3_user {
            let rip = client.read_register("rip")?;
            switch_at = Some(
                kallsyms
                    .resolve(rip)
                    .map_or_else(|| format!("{rip:#x}"), |r| r.to_string()),
            );
            break;
        }
    }
    let current_readable_after = reader
        .current_ids(client, hit.base, Access::Virtual)
        .is_ok();
    let diff = cr3_user ^ cr3_kernel;
    Ok(Cr3Report {
        target_pid,
        target: hit.ids.clone(),
        entry,
        cr3_user,
        cr3_kernel,
        cr3_changed: diff != 0,
        differing_bits: diff,
        pgd_switch_bit12: diff & CR3_PTI_USER_BIT != 0,
        pcid: (
            (cr3_user & CR3_PCID_MASK) as u16,
            (cr3_kernel & CR3_PCID_MASK) as u16,
        ),
        noflush: (cr3_user & CR3_NOFLUSH != 0, cr3_kernel & CR3_NOFLUSH != 0),
        steps,
        switch_at,
        current_readable_before,
        current_error_before,
        current_readable_after,
        condition_path: hit.ids.path,
        hits_examined: l.hits,
        resumes_other: l.resumed,
        step_over: opts.step_over,
        round_trips_total: client.round_trips(),
        round_trips_per_other_hit: l.round_trips_per_hit(),
        run_to_hit: Millis::of(&l.run_to_hit),
        handling: Millis::of(&l.handling),
        per_hit: Millis::of(&l.per_hit),
        samples: l.samples,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_summarises_durations() {
        let m = Millis::of(&[
            Duration::from_millis(1),
            Duration::from_millis(3),
            Duration::from_millis(8),
        ]);
        assert_eq!((m.n, m.min, m.median, m.max), (3, 1.0, 3.0, 8.0));
        assert!((m.mean - 4.0).abs() < 1e-9);
        assert_eq!(Millis::of(&[]), Millis::default());
    }
}
