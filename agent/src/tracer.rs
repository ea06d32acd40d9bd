//! The running trace: the pid filter, and the pump that moves events from the ring
//! buffer into `Stack` and `Events` records.
//!
//! A [`Tracer`] may be inactive (the probes could not be loaded); every method then
//! does nothing, so workloads still run and the stream still completes.

use std::{
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use aya::{
    Btf, Ebpf,
    maps::{Array, MapData, MapError, PerCpuArray},
    programs::fentry::FEntryLink,
};
use guestscope_common::{
    ProbeCounters, ProbeKind,
    plan::StackMode,
    wire::{ProgramRun, Tally, Totals},
};

use self::intake::accept;
use crate::{
    batch::{Batcher, MAX_AGE},
    counters,
    probe_links::Links,
    probes::{self, Loaded, ProbeError},
    program_stats::ProgramStats,
    ringbuf::{EventReader, Record},
    stacks::{StackTable, send_batch},
    staging::Staging,
    stream::{Sink, Stream, StreamError},
    tallies::TallyBook,
    tally_map::TallyMap,
    traced_set::{PidOutOfRange, TracedSet},
};

/// Most ring-buffer records read in one [`Tracer::pump`] call, so a flood of events
/// cannot starve the rest of the loop (child exit, output pipe).
const PUMP_BUDGET: usize = 64 * 1024;

struct Active {
    /// Holds the programs.
    ebpf: Ebpf,
    /// Which built-in programs are attached (a detached one stays loaded).
    links: Links,
    events: EventReader<MapData>,
    traced: TracedSet,
    counters: PerCpuArray<MapData, ProbeCounters>,
    settings: Array<MapData, u32>,
    /// `TALLIES`: the probes' counts per stack-cache entry ([`StackMode::Tallied`]).
    tallies: TallyMap,
    /// Whether the probes may have counted since the counts were last read: a
    /// [`StackMode::Tallied`] was set.
    tallying: bool,
    /// What was attached when the tracer was made: the plan's probes.
    plan: Attached,
    /// How the plan asks the probes to get stacks (restored after a workload's own).
    plan_stacks: StackMode,
    /// The kernel's BTF (for fentry), read only when a program must be loaded with it: the
    /// user's fentry probes, or spin_lock's if it was never loaded (a detached built-in
    /// program stays loaded and needs none).
    btf: Option<Result<Btf, ProbeError>>,
    /// The user's fentry probes: each link holds its own load of `user_fentry`, and
    /// dropping it detaches that function.
    user_links: Vec<FEntryLink>,
    /// The kernel's statistics of the programs, when the plan asks for them.
    stats: Option<ProgramStats>,
    /// Writes out the probes' staged hits; `None` when the probes stage none.
    staging: Option<Staging>,
}

/// Which programs are attached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attached {
    /// Event probes, in id order.
    pub kinds: Vec<ProbeKind>,
    /// Whether the fork follower is attached.
    pub fork_follower: bool,
}

/// The pid filter and the event pump.
pub struct Tracer {
    active: Option<Active>,
    batch: Batcher,
    stacks: StackTable,
    tallies: TallyBook,
    totals: Totals,
}

impl Tracer {
    /// A tracer over loaded (and attached) probes.
    pub fn new(loaded: Loaded) -> Tracer {
        let Loaded {
            ebpf,
            maps,
            links,
            staging,
        } = loaded;
        let plan = Attached {
            kinds: probes::attached_kinds(&ebpf, &links),
            fork_follower: links.is_attached(probes::FORK_FOLLOWER),
        };
        let active = Active {
            ebpf,
            links,
            events: EventReader::new(maps.events),
            traced: maps.traced,
            counters: maps.counters,
            settings: maps.settings,
            tallies: maps.tallies,
            tallying: false,
            plan,
            plan_stacks: StackMode::default(),
            btf: None,
            user_links: Vec::new(),
            stats: None,
            staging,
        };
        Tracer {
            active: Some(active),
            ..Tracer::inactive()
        }
    }

    /// A tracer without probes: nothing is filtered or read.
    pub fn inactive() -> Tracer {
        Tracer {
            active: None,
            batch: Batcher::default(),
            stacks: StackTable::default(),
            tallies: TallyBook::default(),
            totals: Totals::default(),
        }
    }

    /// Whether probes are loaded.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The ring buffer's fd (readable when events wait), if active.
    pub fn ring_fd(&self) -> Option<BorrowedFd<'_>> {
        self.active.as_ref().map(|a| a.events.fd())
    }

    /// Starts tracing process `pid` (and, through the fork probe, its children).
    pub fn trace(&mut self, pid: u32) -> Result<(), PidOutOfRange> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        a.traced.insert(pid)
    }

    /// Stops tracing every process (the workload and all the descendants the fork probe
    /// added); returns how many pids were removed.
    pub fn untrace_all(&mut self) -> usize {
        self.active.as_ref().map_or(0, |a| a.traced.clear())
    }

    /// How long the caller may sleep before the current batch is due.
    pub fn poll_timeout(&self, now: Instant) -> Duration {
        match self.batch.deadline() {
            Some(d) => d.saturating_duration_since(now),
            None => MAX_AGE,
        }
    }

    /// Reads the records that are ready (up to a budget) and sends every batch that is
    /// full or old enough.
    /// A quiet stream gets a heartbeat, so the collector can tell an idle workload from a
    /// hung guest.
    pub fn pump<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        if let Some(a) = self.active.as_mut()
            && let Some(staging) = a.staging.as_mut()
        {
            staging.pump(&a.ebpf);
        }
        self.read(stream, PUMP_BUDGET)?;
        if self.batch.is_due(Instant::now()) {
            self.flush(stream)?;
        }
        stream.heartbeat_if_idle()?;
        stream.service();
        Ok(())
    }

    /// Has every CPU's staged hits written to the ring buffer, then reads it until it
    /// is empty and sends everything.
    pub fn drain<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        if let Some(a) = self.active.as_mut()
            && let Some(staging) = a.staging.as_mut()
            && let Err(e) = staging.flush_all(&a.ebpf)
        {
            tracing::warn!("{e}");
        }
        while self.read(stream, PUMP_BUDGET)? == PUMP_BUDGET {}
        self.flush(stream)
    }

    /// Reads up to `budget` records; returns how many were read.
    fn read<W: Sink>(
        &mut self,
        stream: &mut Stream<W>,
        budget: usize,
    ) -> Result<usize, StreamError> {
        let mut n = 0;
        // One clock read per call: it only dates the opening of a batch.
        let now = Instant::now();
        while n < budget {
            let Some(a) = self.active.as_mut() else { break };
            let (stacks, tallies, totals, batch) = (
                &mut self.stacks,
                &mut self.tallies,
                &mut self.totals,
                &mut self.batch,
            );
            let Some(full) = a.events.read_next(|record| match record {
                Ok(record) => accept(record, stacks, tallies, totals, batch, now),
                Err(len) => {
                    totals.events_malformed += 1;
                    tracing::warn!(len, "skipping a ring-buffer record of the wrong size");
                    false
                }
            }) else {
                break;
            };
            n += 1;
            if full {
                self.flush(stream)?;
            }
        }
        Ok(n)
    }

    /// Sends the waiting batch, preceded by the stacks it introduces: the records
    /// leave together, in as few writes as they fit in.
    fn flush<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        let args = self.batch.take_args();
        let events = self.batch.take();
        stream.cork();
        let sent = send_batch(&events, args, &mut self.stacks, stream);
        stream.uncork();
        self.batch.give_back(events);
        let sent = sent?;
        self.totals.events_sent += sent.events;
        self.totals.stacks_sent += sent.stacks;
        Ok(())
    }

    /// Sends one record made outside the ring buffer (a synthetic producer's) the way a
    /// probe's record is sent: its stack interned (or, for a cached record, its cache
    /// entry's), the event batched, the batch sent when full.
    pub fn inject<W: Sink>(
        &mut self,
        record: Record<'_>,
        now: Instant,
        stream: &mut Stream<W>,
    ) -> Result<(), StreamError> {
        if accept(
            record,
            &mut self.stacks,
            &mut self.tallies,
            &mut self.totals,
            &mut self.batch,
            now,
        ) {
            self.flush(stream)?;
        }
        Ok(())
    }

    /// Sends what is batched.
    pub fn flush_batch<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        self.flush(stream)
    }

    /// What is attached now (nothing when inactive).
    pub fn attached(&self) -> Attached {
        self.active
            .as_ref()
            .map_or_else(Attached::default, |a| Attached {
                kinds: probes::attached_kinds(&a.ebpf, &a.links),
                fork_follower: a.links.is_attached(probes::FORK_FOLLOWER),
            })
    }

    /// Attaches exactly `want`, detaching everything else; returns what could not be
    /// done (one message each). Nothing can be attached without loaded probes.
    pub fn set_attached(&mut self, want: &Attached) -> Vec<String> {
        let Some(a) = self.active.as_mut() else {
            return if want.kinds.is_empty() && !want.fork_follower {
                Vec::new()
            } else {
                vec!["the eBPF probes are not loaded".into()]
            };
        };
        let mut errors = Vec::new();
        let now = probes::attached_kinds(&a.ebpf, &a.links);
        // The user's probes stay as they are: only built-in probes are switched.
        for kind in ProbeKind::BUILTIN {
            match (now.contains(&kind), want.kinds.contains(&kind)) {
                (true, false) => {
                    if let Err(e) = probes::detach_kind(&mut a.ebpf, &mut a.links, kind) {
                        errors.push(format!("detaching {}: {}", kind.name(), probes::chain(&e)));
                    }
                }
                (false, true) => {
                    // Only a program never loaded needs the kernel's BTF.
                    let unread = ProbeError::Btf("not needed: the program is loaded".into());
                    let btf = if probes::needs_btf(&a.ebpf, kind) {
                        a.btf.get_or_insert_with(probes::kernel_btf).as_ref()
                    } else {
                        Err(&unread)
                    };
                    let record = probes::attach_kind(&mut a.ebpf, &mut a.links, kind, btf);
                    if !record.attached {
                        errors.push(format!("attaching {}: {}", kind.name(), record.note));
                    }
                }
                _ => {}
            }
        }
        let fork_now = a.links.is_attached(probes::FORK_FOLLOWER);
        let fork_result = match (fork_now, want.fork_follower) {
            (true, false) => {
                probes::detach_program(&mut a.ebpf, &mut a.links, probes::FORK_FOLLOWER)
            }
            (false, true) => probes::attach_fork_follower(&mut a.ebpf, &mut a.links),
            _ => Ok(()),
        };
        if let Err(e) = fork_result {
            errors.push(format!("fork follower: {}", probes::chain(&e)));
        }
        errors.extend(next_generation(&mut a.settings));
        errors
    }

    /// Attaches `probes` (user probes, resolved against the running kernel) until
    /// [`Tracer::detach_user`]; what could not be done, one message each.
    pub fn attach_user(
        &mut self,
        probes: &[guestscope_common::user_probe::UserProbe],
    ) -> Vec<String> {
        let Some(a) = self.active.as_mut() else {
            return vec!["the eBPF probes are not loaded".into()];
        };
        let list = crate::user_probes::read_probe_list();
        let btf = a.btf.get_or_insert_with(probes::kernel_btf);
        let mut errors = match crate::user_probes::attach(&mut a.ebpf, probes, &list, btf.as_ref())
        {
            Ok(attached) => {
                a.user_links.extend(attached.fentry_links);
                Vec::new()
            }
            Err(errors) => errors,
        };
        errors.extend(next_generation(&mut a.settings));
        errors
    }

    /// Holds `links` (the user's fentry attachments) until [`Tracer::detach_user`].
    pub fn keep_user_links(&mut self, links: Vec<FEntryLink>) {
        if let Some(a) = self.active.as_mut() {
            a.user_links.extend(links);
        }
    }

    /// Detaches every user probe (their programs are unloaded).
    pub fn detach_user(&mut self) -> Vec<String> {
        let Some(a) = self.active.as_mut() else {
            return Vec::new();
        };
        a.user_links.clear();
        let mut errors: Vec<String> = [
            ProbeKind::Kprobe,
            ProbeKind::Kretprobe,
            ProbeKind::Tracepoint,
        ]
        .into_iter()
        .filter_map(|k| probes::detach_kind(&mut a.ebpf, &mut a.links, k).err())
        .map(|e| format!("detaching user probes: {}", probes::chain(&e)))
        .collect();
        errors.extend(next_generation(&mut a.settings));
        errors
    }

    /// Attaches again what the plan attached at start (after [`Tracer::set_attached`]).
    pub fn restore_plan(&mut self) -> Vec<String> {
        match self.active.as_ref().map(|a| a.plan.clone()) {
            Some(plan) => self.set_attached(&plan),
            None => Vec::new(),
        }
    }

    /// Sets the plan's stack mode: what [`Tracer::restore_stack_mode`] goes back to.
    pub fn set_plan_stack_mode(&mut self, mode: StackMode) -> Result<(), MapError> {
        if let Some(a) = self.active.as_mut() {
            a.plan_stacks = mode;
        }
        self.set_stack_mode(mode)
    }

    /// The plan's stack mode.
    pub fn plan_stack_mode(&self) -> StackMode {
        self.active
            .as_ref()
            .map_or(StackMode::default(), |a| a.plan_stacks)
    }

    /// Sets the plan's stack mode again (after a workload's own).
    pub fn restore_stack_mode(&mut self) -> Result<(), MapError> {
        match self.active.as_ref().map(|a| a.plan_stacks) {
            Some(mode) => self.set_stack_mode(mode),
            None => Ok(()),
        }
    }

    /// Sets how the probes get each event's stack ([`StackMode::Cached`] by default).
    pub fn set_stack_mode(&mut self, mode: StackMode) -> Result<(), MapError> {
        let Some(a) = self.active.as_mut() else {
            return Ok(());
        };
        a.tallying |= mode.tallies();
        let mut flags = mode.settings_flags();
        if a.staging.is_none() {
            flags &= !guestscope_common::maps::STAGE_CACHED;
        }
        a.settings
            .set(guestscope_common::maps::SETTINGS_FLAGS, flags, 0)
    }

    /// The hits the probes only counted ([`StackMode::tallies`]) since the last call, per
    /// probe and stack. Call it once the ring buffer is drained and no process passes
    /// the filter: the entries' counts are read from the agent's mapping of the array
    /// then, with no system call.
    pub fn take_tallies(&mut self) -> Vec<Tally> {
        if let Some(a) = self.active.as_mut().filter(|a| a.tallying) {
            for (cpu, index) in self.tallies.held() {
                self.tallies.read(cpu, index, a.tallies.get(cpu, index));
            }
            a.tallying = a.plan_stacks.tallies();
        }
        self.tallies.take()
    }

    /// Turns the kernel's statistics of the programs on for the rest of the run
    /// ([`ProgramStats`]); an error when no probe is loaded or the kernel refuses.
    pub fn enable_program_stats(&mut self) -> Result<(), String> {
        let a = self.active.as_mut().ok_or("no probe is loaded")?;
        a.stats = Some(ProgramStats::enable().map_err(|e| format!("BPF_ENABLE_STATS: {e}"))?);
        Ok(())
    }

    /// Notes the programs' counts: a workload starts (nothing without statistics).
    pub fn begin_program_runs(&mut self) {
        if let Some(a) = self.active.as_mut()
            && let Some(stats) = a.stats.as_mut()
        {
            stats.begin(&a.ebpf);
        }
    }

    /// The programs' runs since [`Tracer::begin_program_runs`]; `None` without
    /// statistics.
    pub fn program_runs(&self) -> Option<Vec<ProgramRun>> {
        let a = self.active.as_ref()?;
        Some(a.stats.as_ref()?.since_begin(&a.ebpf))
    }

    /// The probes' counters now, summed over CPUs, by probe name in id order.
    pub fn counters(&self) -> Vec<(String, ProbeCounters)> {
        counters::read_all(self.active.as_ref().map(|a| &a.counters))
    }

    /// Ring-buffer records read and events sent so far.
    pub fn events_read_sent(&self) -> (u64, u64) {
        (self.totals.events_read, self.totals.events_sent)
    }

    /// The run's totals: the probes' counters summed over CPUs, and the agent's counts.
    pub fn totals(&self) -> Totals {
        Totals {
            probes: counters::read_all(self.active.as_ref().map(|a| &a.counters)),
            callers_recovered: self.stacks.callers_recovered(),
            ..self.totals.clone()
        }
    }
}

/// Bumps the probes' attachment generation (a part of their stack cache's key): an
/// attach or detach can rebuild a trampoline that cached walks pass through. An error
/// message if the map refused.
fn next_generation(settings: &mut Array<MapData, u32>) -> Option<String> {
    use guestscope_common::maps::SETTINGS_GENERATION;
    let now = settings.get(&SETTINGS_GENERATION, 0).unwrap_or(0);
    settings
        .set(SETTINGS_GENERATION, now.wrapping_add(1), 0)
        .err()
        .map(|e| format!("bumping the probes' attachment generation: {e}"))
}

mod intake;
#[cfg(test)]
mod tests;
