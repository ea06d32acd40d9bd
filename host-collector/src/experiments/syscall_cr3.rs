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
use std::time::{Duration, Instant};

use qemu_gdb_client::{Client, ClientOptions, GdbEndpoint, GdbError, ThreadId};

use guest_kernel::btf::TaskOffsets;
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{
    Access, CR3_NOFLUSH, CR3_PCID_MASK, CR3_PTI_USER_BIT, CurrentReader, KernelLayout,
    KernelReadError, MemoryPath, TaskIds,
};

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
    fn of(samples: &[Duration]) -> Millis {
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

/// The cost of a breakpoint whose condition (the current tgid) is decided on the host.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConditionCost {
    /// Hits examined.
    pub hits: u64,
    /// Hits of the process the condition asks for.
    pub matching: u64,
    /// How hits continued.
    pub step_over: StepOver,
    /// How the condition was read (the last hit's path).
    pub condition_path: Option<MemoryPath>,
    /// Mean round trips per hit (stop + condition + step-over).
    pub round_trips_per_hit: f64,
    /// From resume to the next stop.
    pub run_to_hit: Millis,
    /// From a stop to the next resume (host-side condition + step-over).
    pub handling: Millis,
    /// Resume to resume.
    pub per_hit: Millis,
    /// First hits' identities.
    pub samples: Vec<HitSample>,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// Measures `hits` breakpoint hits on `entry_SYSCALL_64` with the tgid condition
/// evaluated host-side and every hit resumed (none is treated as the target).
/// `tgid` only counts matches. The client stays attached; the breakpoint is removed.
pub fn measure_condition(
    client: &mut Client,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    tgid: u32,
    hits: u64,
    opts: &Cr3Options,
) -> Result<ConditionCost, Cr3Error> {
    let entry = kallsyms
        .by_name(ENTRY_SYMBOL)
        .ok_or(Cr3Error::MissingSymbol(ENTRY_SYMBOL))?
        .addr;
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    with_breakpoint(client, entry, |client| {
        let mut l = HitLoop::new(opts);
        let start = Instant::now();
        while l.hits < hits {
            if start.elapsed() >= opts.timeout {
                break;
            }
            let Some(hit) = l.next_hit(client, &mut reader, entry)? else {
                break;
            };
            l.step_over(client, entry, &hit)?;
            l.last_path = Some(hit.ids.path);
        }
        let matching = l.samples_all.iter().filter(|t| **t == tgid).count() as u64;
        Ok(ConditionCost {
            hits: l.hits,
            matching,
            step_over: opts.step_over,
            condition_path: l.last_path,
            round_trips_per_hit: if l.resumed == 0 {
                0.0
            } else {
                l.other_rts as f64 / l.resumed as f64
            },
            run_to_hit: Millis::of(&l.run_to_hit),
            handling: Millis::of(&l.handling),
            per_hit: Millis::of(&l.per_hit),
            samples: l.samples,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    })
}

/// What the lab's gdb method saw tracing one kernel function for one process: a
/// hardware breakpoint on the function, the tgid condition decided on the host at every
/// hit (through `current_task`, as in [`measure_condition`]), every hit resumed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionTrace {
    /// The traced function.
    pub symbol: String,
    /// Its run-time address (KASLR included).
    pub address: u64,
    /// The process the condition asks for.
    pub tgid: u32,
    /// Hits the run stopped after (of `tgid`).
    pub expected: u64,
    /// Hits examined (every process).
    pub hits: u64,
    /// Hits of `tgid`.
    pub matching: u64,
    /// How hits continued.
    pub step_over: StepOver,
    /// Host seconds from the first hit of `tgid` to its last: the traced part of the
    /// workload, on the host clock (the guest's clock stops while the stub holds it).
    pub matching_span_s: f64,
    /// Mean round trips per hit.
    pub round_trips_per_hit: f64,
    /// From resume to the next stop.
    pub run_to_hit: Millis,
    /// From a stop to the next resume (host-side condition + step-over).
    pub handling: Millis,
    /// Resume to resume.
    pub per_hit: Millis,
    /// Wall time with the breakpoint in place.
    pub elapsed_ms: f64,
    /// What ended it: all expected hits seen, or which limit.
    pub ended: String,
}

/// Traces `symbol` for process `tgid` by the lab's gdb method until `expected` hits of
/// it were seen (or a hit timeout / the time limit in `opts`). The client stays
/// attached; the breakpoint is removed.
pub fn trace_function(
    client: &mut Client,
    kallsyms: &Kallsyms,
    symbol: &'static str,
    offsets: &TaskOffsets,
    tgid: u32,
    expected: u64,
    opts: &Cr3Options,
) -> Result<FunctionTrace, Cr3Error> {
    let address = kallsyms
        .by_name(symbol)
        .ok_or(Cr3Error::MissingSymbol(symbol))?
        .addr;
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    with_breakpoint(client, address, |client| {
        let mut l = HitLoop::new(opts);
        let start = Instant::now();
        let (mut first, mut last, mut matching) = (None, None, 0u64);
        let ended = loop {
            if matching >= expected {
                break "every expected hit";
            }
            if start.elapsed() >= opts.timeout {
                break "time limit";
            }
            let Some(hit) = l.next_hit(client, &mut reader, address)? else {
                break "no hit within the hit timeout";
            };
            if hit.ids.tgid == tgid {
                matching += 1;
                first.get_or_insert(hit.stopped);
                last = Some(hit.stopped);
            }
            l.step_over(client, address, &hit)?;
        };
        Ok(FunctionTrace {
            symbol: symbol.to_string(),
            address,
            tgid,
            expected,
            hits: l.hits,
            matching,
            step_over: opts.step_over,
            matching_span_s: match (first, last) {
                (Some(a), Some(z)) => (z - a).as_secs_f64(),
                _ => 0.0,
            },
            round_trips_per_hit: if l.resumed == 0 {
                0.0
            } else {
                l.other_rts as f64 / l.resumed as f64
            },
            run_to_hit: Millis::of(&l.run_to_hit),
            handling: Millis::of(&l.handling),
            per_hit: Millis::of(&l.per_hit),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            ended: ended.to_string(),
        })
    })
}

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
    step_over_mode: StepOver,
    hit_timeout: Duration,
    keep_samples: usize,
    bases: HashMap<Option<ThreadId>, u64>,
    samples: Vec<HitSample>,
    samples_all: Vec<u32>,
    seen: Vec<u32>,
    run_to_hit: Vec<Duration>,
    pub(crate) handling: Vec<Duration>,
    per_hit: Vec<Duration>,
    pub(crate) hits: u64,
    pub(crate) resumed: u64,
    other_rts: u64,
    last_resume: Option<Instant>,
    last_path: Option<MemoryPath>,
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

    /// Resumes, waits for the next hit and reads `current` there. `None`: no hit in time
    /// (the target is stopped again by an interrupt).
    pub(crate) fn next_hit(
        &mut self,
        client: &mut Client,
        reader: &mut CurrentReader,
        entry: u64,
    ) -> Result<Option<Hit>, Cr3Error> {
        let resumed = Instant::now();
        if let Some(prev) = self.last_resume.replace(resumed) {
            self.per_hit.push(resumed - prev);
        }
        client.resume()?;
        let Some(stop) = client.wait_stop(self.hit_timeout)? else {
            client.interrupt()?;
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
fn step(client: &mut Client, thread: Option<ThreadId>) -> Result<(), GdbError> {
    match thread {
        Some(t) => client.step_thread(t).map(drop),
        None => client.step().map(drop),
    }
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
        round_trips_per_other_hit: if l.resumed == 0 {
            0.0
        } else {
            l.other_rts as f64 / l.resumed as f64
        },
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
