//! The threads that hold the VM through the gdbstub while a workload runs (the built-in snapshots and the user's stops).

use super::*;

/// How long a holding thread waits, once nothing more is written to the guest, before
/// it may stop the VM: the vsock device finishes with what is in flight (the record
/// that started the hold, the host's last reply) and the guest sees its completions.
/// A stop of the VM stops the vhost-user device too, and one that comes while the
/// device is still handling a packet can lose the notification of it, which the
/// guest's driver then never gets (the user-stops scenario lost its link about once
/// in twenty runs, right after a workload's stops).
const SETTLE_BEFORE_HOLD: Duration = Duration::from_millis(50);

/// Runs `f` on a thread that may hold the VM through the gdbstub: `paused` is set from
/// now until the thread ends, however it ends (nothing is written to the guest
/// meanwhile, see [`ReceiveOptions::replies_paused`]); `f` starts
/// [`SETTLE_BEFORE_HOLD`] later.
pub(crate) fn spawn_holding<T: Send + 'static>(
    paused: &Arc<std::sync::atomic::AtomicBool>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    struct Release(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Release {
        fn drop(&mut self) {
            self.0.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
    paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let release = Release(paused.clone());
    std::thread::spawn(move || {
        let _release = release;
        std::thread::sleep(SETTLE_BEFORE_HOLD);
        f()
    })
}

/// The thread taking the traced run's gdbstub snapshots (or a workload's stops).
pub(crate) struct Snapshotter {
    /// The process the thread stops.
    pub(crate) tgid: u32,
    /// Set when the process has exited: the breakpoint comes out.
    pub(crate) done: Arc<std::sync::atomic::AtomicBool>,
    /// The thread.
    pub(crate) thread: std::thread::JoinHandle<Result<SnapshotRun, String>>,
    /// Events received when the process started.
    events_at_start: u64,
}

impl Snapshotter {
    /// The thread for process `tgid`, which has just started in `session`.
    pub(crate) fn new<W: io::Write>(
        session: &Session<W>,
        tgid: u32,
        done: Arc<std::sync::atomic::AtomicBool>,
        thread: std::thread::JoinHandle<Result<SnapshotRun, String>>,
    ) -> Snapshotter {
        Snapshotter {
            tgid,
            done,
            thread,
            events_at_start: session.events_received,
        }
    }

    /// Tells the thread when its process has exited: its exit record arrived, or any
    /// event did. A workload the VM is held in runs with a quiet link (the agent sends
    /// nothing until it has exited, see `quiet_link` in the plan), so its first event
    /// here is the agent draining the ring buffer after the exit, ahead of the exit
    /// record. Stopping there keeps the breakpoints from holding the VM at every one of
    /// the agent's own system calls while it sends (a stop with vsock traffic in flight
    /// can wedge the vhost-user device, and the drain would crawl at the gdbstub's pace).
    pub(crate) fn note_progress<W: io::Write>(&self, session: &Session<W>) {
        let exited = session
            .workloads
            .iter()
            .any(|w| w.started.pid == self.tgid && w.exited.is_some());
        if exited || session.events_received > self.events_at_start {
            self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Waits for the thread (the stream has ended: its process is gone).
    pub(crate) fn join(self) -> Result<SnapshotRun, String> {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| Err("the snapshot thread panicked".into()))
    }
}

/// Starts the gdbstub snapshots when the [`SNAPSHOT_WORKLOAD`] has just started and
/// the guest's kallsyms and BTF are in.
/// `paused` is set while the thread runs (nothing is written to the guest meanwhile).
pub(super) fn start_snapshots<W: io::Write>(
    session: &Session<W>,
    gdb: GdbEndpoint,
    launched: Instant,
    paused: &Arc<std::sync::atomic::AtomicBool>,
) -> Option<Snapshotter> {
    let w = session
        .workloads
        .last()
        .filter(|w| w.started.name == SNAPSHOT_WORKLOAD && w.exited.is_none())?;
    let kallsyms = session.kallsyms.clone()?;
    let btf = session
        .artifacts
        .get("btf")
        .filter(|a| a.complete && !a.data.is_empty())?;
    let btf = btf.data.clone();
    let tgid = w.started.pid;
    let addr = gdb;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tracing::debug!(tgid, "starting the gdbstub snapshots");
    let flag = done.clone();
    let thread = spawn_holding(paused, move || {
        let offsets = guest_kernel::btf::task_offsets(&btf)
            .map_err(|e| format!("no task_struct layout from the guest's BTF: {e}"))?;
        snapshots::take(
            addr,
            &kallsyms,
            &offsets,
            tgid,
            launched,
            &flag,
            &SnapshotOptions::default(),
        )
        .map_err(|e| e.to_string())
    });
    Some(Snapshotter::new(session, tgid, done, thread))
}

/// Why the snapshots of a finished run were never started.
pub(super) fn snapshots_not_started<W: io::Write>(session: &Session<W>) -> String {
    if !session
        .workloads
        .iter()
        .any(|w| w.started.name == SNAPSHOT_WORKLOAD)
    {
        format!("no {SNAPSHOT_WORKLOAD} workload in the plan")
    } else if session
        .artifacts
        .get("btf")
        .is_none_or(|a| a.data.is_empty())
    {
        "the guest kernel offers no BTF (/sys/kernel/btf/vmlinux): no task_struct layout to read the pid with".into()
    } else {
        "the guest's kallsyms and BTF had not arrived when the workload started".into()
    }
}
