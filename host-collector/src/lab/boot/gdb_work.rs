//! The gdbstub work of one boot, started as the agent's records arrive: the CR3
//! experiment ([`Mode::Cr3`]), the built-in snapshots, or the user's stops (one
//! thread per workload, in turn).

use std::sync::atomic::AtomicBool;

use super::*;

/// The CR3 experiment's outcome (None: not run).
type Cr3Outcome = Option<Result<Cr3Report, String>>;
/// The snapshots' or the stops' outcome (None: not taken).
type SnapshotsOutcome = Option<Result<SnapshotRun, String>>;

/// The gdbstub threads of one boot and what they need to start.
pub(super) struct GdbWork<'a> {
    o: &'a LabOptions,
    v: &'a Validated,
    /// How much of the run to do.
    pub(super) mode: &'a Mode,
    gdb: GdbEndpoint,
    /// QEMU's launch: the zero of the run's host times.
    pub(super) launched: Instant,
    cr3_thread: Option<std::thread::JoinHandle<Result<Cr3Report, String>>>,
    snapshot_thread: Option<Snapshotter>,
    take_snapshots: bool,
    /// The user's stops: one thread per workload, in turn.
    take_stops: bool,
    stop_runs: Vec<Result<SnapshotRun, String>>,
    stop_types: Option<Result<Arc<own_questions::GuestTypes>, String>>,
}

impl<'a> GdbWork<'a> {
    /// Nothing started yet.
    pub(super) fn new(
        o: &'a LabOptions,
        v: &'a Validated,
        mode: &'a Mode,
        gdb: GdbEndpoint,
        launched: Instant,
    ) -> GdbWork<'a> {
        GdbWork {
            o,
            v,
            mode,
            gdb,
            launched,
            cr3_thread: None,
            snapshot_thread: None,
            take_snapshots: question_checks::builtin_snapshots(o) && *mode == Mode::Full,
            take_stops: !o.stop_at.is_empty() && *mode == Mode::Full,
            stop_runs: Vec::new(),
            stop_types: None,
        }
    }

    /// After each applied record: starts what is due (the CR3 experiment at the first
    /// workload, a workload's stops or the snapshots when it starts) and tells running
    /// threads of exited processes. `paused` is set while a thread may hold the VM.
    pub(super) fn on_record(&mut self, session: &LabSession, paused: &Arc<AtomicBool>) {
        if let (Mode::Cr3 { offsets, .. }, None) = (self.mode, &self.cr3_thread)
            && let (Some(w), Some(k)) = (session.workloads.last(), &session.kallsyms)
        {
            let (pid, k, off) = (w.started.pid, k.clone(), offsets.clone());
            let addr = self.gdb.clone();
            self.cr3_thread = Some(spawn_holding(paused, move || {
                syscall_cr3::run(addr, &k, &off, pid, &Cr3Options::default())
                    .map_err(|e| e.to_string())
            }));
        }
        if self.take_stops {
            self.stops(session, paused);
            return;
        }
        match &self.snapshot_thread {
            None if self.take_snapshots => {
                self.snapshot_thread =
                    start_snapshots(session, self.gdb.clone(), self.launched, paused)
            }
            Some(s) => s.note_progress(session),
            None => {}
        }
    }

    /// The user's stops: a thread for each workload as it starts, after the last one's.
    fn stops(&mut self, session: &LabSession, paused: &Arc<AtomicBool>) {
        if let Some(s) = &self.snapshot_thread {
            s.note_progress(session);
        }
        // The BTF comes before any workload: parse it then, not in a
        // workload's hold before exec.
        if self.stop_types.is_none() {
            self.stop_types = own_questions::guest_types(session);
        }
        let next = session
            .workloads
            .last()
            .filter(|w| w.exited.is_none())
            .map(|w| w.started.pid)
            .filter(|pid| self.snapshot_thread.as_ref().is_none_or(|s| s.tgid != *pid));
        if next.is_some() {
            let arrived = Instant::now();
            if let Some(previous) = self.snapshot_thread.take() {
                self.stop_runs.push(previous.join());
            }
            self.snapshot_thread = own_questions::start_stops(
                session,
                self.o,
                self.v,
                self.gdb.clone(),
                own_questions::StopTimes {
                    launched: self.launched,
                    arrived,
                },
                paused,
                self.stop_types.as_ref(),
            );
        }
    }

    /// Waits for the threads once the stream has ended: the CR3 experiment's outcome
    /// and the snapshots' (or the stops', merged). `complete`: the run finished.
    pub(super) fn finish(
        mut self,
        complete: bool,
        session: &LabSession,
    ) -> (Cr3Outcome, SnapshotsOutcome) {
        let cr3 = self.cr3_thread.map(|t| {
            t.join()
                .unwrap_or_else(|_| Err("the CR3 experiment thread panicked".into()))
        });
        let snapshots = if self.take_stops {
            if let Some(s) = self.snapshot_thread {
                self.stop_runs.push(s.join());
            }
            Some(own_questions::merge_stops(self.stop_runs))
        } else {
            match self.snapshot_thread {
                Some(s) => Some(s.join()),
                None if self.take_snapshots && complete => {
                    Some(Err(snapshots_not_started(session)))
                }
                None => None,
            }
        };
        (cr3, snapshots)
    }
}
