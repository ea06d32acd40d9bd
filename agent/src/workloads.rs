//! Running one workload under the probes, streaming its events while it runs.

use std::{
    os::fd::{AsRawFd, BorrowedFd},
    time::{Duration, Instant},
};

use guestscope_common::{
    plan::{TIMEOUT_GRACE_MS, Tracing, WorkloadSpec},
    wire::{Body, ProgramRuns, Tallies, WorkloadExited, WorkloadStarted},
};
use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::{Pid, read},
};

use crate::{
    clock::monotonic_ns,
    deadline::{Action, Deadline},
    spawn::{Running, spawn_gated},
    stream::{Sink, Stream, StreamError},
    tracer::Tracer,
    tracing_mode::TracingMode,
};

/// Most workload output kept (stdout and stderr together).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Status reported for a workload that never ran.
pub const NEVER_RAN: i32 = -1;
/// Longest wait for the queued records to be written before a held workload's hold.
const WRITE_OUT_LIMIT: Duration = Duration::from_secs(20);

/// A workload's output, kept up to a limit; the rest is counted and dropped.
#[derive(Debug)]
pub struct OutputBuffer {
    data: Vec<u8>,
    limit: usize,
    dropped: u64,
}

impl OutputBuffer {
    /// An empty buffer keeping at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        OutputBuffer {
            data: Vec::new(),
            limit,
            dropped: 0,
        }
    }

    /// Appends bytes, dropping what does not fit.
    pub fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.data.len());
        let take = room.min(bytes.len());
        self.data.extend_from_slice(&bytes[..take]);
        self.dropped += (bytes.len() - take) as u64;
    }

    /// Reads from a non-blocking fd until it would block; returns false at end of file
    /// (or on an error, after which the fd is not worth polling).
    pub fn read_from(&mut self, fd: BorrowedFd<'_>) -> bool {
        let mut buf = [0u8; 8192];
        loop {
            match read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => return false,
                Ok(n) => self.push(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(e) => {
                    tracing::warn!("reading workload output: {e}");
                    return false;
                }
            }
        }
    }

    /// The kept output as text (invalid UTF-8 replaced), with a note when bytes were
    /// dropped; never longer than the limit.
    pub fn finish(mut self) -> String {
        if self.dropped > 0 {
            let note = format!(
                "\n[guestscope-agent: output truncated, {} more bytes dropped]\n",
                self.dropped
            );
            let keep = self.limit.saturating_sub(note.len());
            self.data.truncate(keep);
            self.data.extend_from_slice(note.as_bytes());
            self.data.truncate(self.limit);
        }
        match String::from_utf8(self.data) {
            Ok(s) => s,
            Err(e) => {
                let mut s = String::from_utf8_lossy(e.as_bytes()).into_owned();
                // Replacement characters can make it longer than the limit.
                while s.len() > self.limit {
                    s.pop();
                }
                s
            }
        }
    }
}

/// The exit status as the wire reports it: the exit code, or 128 + signal.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// Runs `spec` to completion under `tracer`: `WorkloadStarted`, its events and stacks,
/// then `WorkloadExited`. Only a broken stream is an error; a workload that cannot be
/// started is reported with status [`NEVER_RAN`] (or 127 when exec fails) and the run goes on.
///
/// A workload with its own [`guestscope_common::plan::Tracing`] runs with what that asks
/// attached; its report (artifact `tracing-<name>`) precedes `WorkloadExited`, and the
/// plan's probes are attached again after it.
pub fn run<W: Sink>(
    spec: &WorkloadSpec,
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
) -> Result<i32, StreamError> {
    let mode = TracingMode::begin(&spec.tracing, tracer);
    tracer.begin_program_runs();
    let (exited, drain) = match spec.tracing {
        Tracing::Synthetic(events) => {
            crate::synthetic::produce(&spec.name, events, tracer, stream)?
        }
        _ => execute(spec, tracer, stream)?,
    };
    send_tallies(&exited, tracer, stream)?;
    if let Some(programs) = tracer.program_runs() {
        stream.send(Body::ProgramRuns(ProgramRuns {
            pid: exited.pid,
            programs,
        }))?;
    }
    if let Some(mode) = mode {
        mode.finish(&spec.name, drain, tracer, stream)?;
    }
    let status = exited.status;
    stream.send(Body::WorkloadExited(exited))?;
    Ok(status)
}

/// Starts the workload, streams its events until it exits, and drains the ring buffer;
/// returns its exit record (the caller sends it) and how long the final drain took.
fn execute<W: Sink>(
    spec: &WorkloadSpec,
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
) -> Result<(WorkloadExited, Duration), StreamError> {
    let argv: Vec<String> = std::iter::once(spec.path.clone())
        .chain(spec.args.iter().cloned())
        .collect();
    let exited = |pid: u32, status: i32, output: String, timed_out: bool| WorkloadExited {
        name: spec.name.clone(),
        pid,
        status,
        end_ns: monotonic_ns(),
        output,
        timed_out,
    };
    let run_as = (!spec.as_root).then_some(guestscope_common::plan::UNPRIVILEGED_ID);
    let gated = match spawn_gated(&spec.path, &argv, run_as, spec.cwd.as_deref()) {
        Ok(g) => g,
        Err(e) => {
            tracing::error!(workload = %spec.name, "cannot start: {e}");
            let output = format!("guestscope-agent: cannot start {}: {e}\n", spec.path);
            return Ok((exited(0, NEVER_RAN, output, false), Duration::ZERO));
        }
    };
    let pid = gated.pid.as_raw() as u32;
    if let Err(e) = tracer.trace(pid) {
        tracing::error!(workload = %spec.name, "{e}; it runs untraced");
        stream.send(Body::Log {
            level: "error".into(),
            message: format!("workload {}: {e}; it runs untraced", spec.name),
        })?;
    }
    let start_ns = monotonic_ns();
    stream.send(Body::WorkloadStarted(WorkloadStarted {
        name: spec.name.clone(),
        pid,
        argv: argv.clone(),
        start_ns,
    }))?;
    if let Some(ms) = spec.hold_before_exec_ms {
        // The host puts its breakpoints in meanwhile, once it has the pid: the hold counts
        // from when WorkloadStarted is written out, not from when it was queued behind
        // the start's artifacts (megabytes of BTF and symbols).
        if !stream.write_out(WRITE_OUT_LIMIT) {
            tracing::warn!(workload = %spec.name, "the workload's start is not written out yet");
        }
        std::thread::sleep(Duration::from_millis(ms));
    }
    if spec.quiet_link {
        // A release the host sent before it started holding the VM for this workload
        // (the end of the last workload's stops) must not end this one's quiet.
        let _ = stream.released();
    }
    let running = match gated.release() {
        Ok(r) => r,
        Err(e) => {
            // The child sees the closed gate and exits on its own; reap it.
            let _ = waitpid(Pid::from_raw(pid as i32), None);
            untrace(tracer, &spec.name);
            let drained = Instant::now();
            tracer.drain(stream)?;
            let drain = drained.elapsed();
            return Ok((
                exited(pid, NEVER_RAN, format!("guestscope-agent: {e}\n"), false),
                drain,
            ));
        }
    };
    tracing::info!(workload = %spec.name, pid, "started");

    let deadline = spec.timeout_ms.map(|ms| {
        Deadline::new(
            Instant::now(),
            Duration::from_millis(ms),
            Duration::from_millis(TIMEOUT_GRACE_MS),
        )
    });
    let end = supervise(&running, tracer, stream, spec.quiet_link, deadline)?;
    if spec.quiet_link {
        stream.quiet_ended();
    }
    untrace(tracer, &spec.name);
    let drained = Instant::now();
    tracer.drain(stream)?;
    let drain = drained.elapsed();
    tracing::info!(workload = %spec.name, pid, status = end.status, timed_out = end.timed_out, "exited");
    Ok((exited(pid, end.status, end.output, end.timed_out), drain))
}

/// What a poll reports on a descriptor that has something to read: data, or its end.
const READY: PollFlags = PollFlags::POLLIN
    .union(PollFlags::POLLHUP)
    .union(PollFlags::POLLERR);

/// How often a quiet workload's supervision looks at the child without a poll event.
const QUIET_POLL: Duration = Duration::from_millis(50);

/// How a supervised workload ended.
struct End {
    status: i32,
    output: String,
    timed_out: bool,
}

/// Streams events and collects output until the child exits, ending it (its whole
/// process group) when `deadline` says so; returns its status and output.
/// `quiet`: the link stays silent meanwhile (nothing sent; the events wait in the ring
/// buffer), until the host says it holds the VM no longer ([`Stream::released`]) or
/// the child exits.
fn supervise<W: Sink>(
    running: &Running,
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
    mut quiet: bool,
    mut deadline: Option<Deadline>,
) -> Result<End, StreamError> {
    let mut output = OutputBuffer::new(OUTPUT_LIMIT);
    let mut output_open = true;
    // While quiet, whether the link is still watched for the host's release (not once
    // it hung up: a dead connection would keep the poll awake; the next service after
    // the exit reconnects).
    let mut watch_link = true;
    let status = loop {
        let now = Instant::now();
        let mut wait = if quiet {
            QUIET_POLL
        } else {
            tracer.poll_timeout(now)
        };
        if let Some(left) = deadline.as_ref().and_then(|d| d.until_next(now)) {
            wait = wait.min(left);
        }
        // Round up: a deadline 0.4 ms away must not become a busy 0 ms poll.
        let timeout =
            PollTimeout::from(wait.as_micros().div_ceil(1000).min(u128::from(u16::MAX)) as u16);
        // What the poll saw on the link, the output pipe and the pidfd.
        let (host_wrote, output_ready, exited) = {
            let mut fds = Vec::with_capacity(4);
            // The host's replies (acknowledgements, clock probes; while quiet, the
            // word that the host holds the VM no longer) wake the loop too.
            let wake = stream.wake_fd().filter(|_| !quiet || watch_link).map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            if let (false, Some(fd)) = (quiet, tracer.ring_fd()) {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let output_at = output_open.then(|| {
                fds.push(PollFd::new(running.output(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let pidfd_at = running.pidfd().map(|fd| {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                fds.len() - 1
            });
            let polled = match poll(&mut fds, timeout) {
                Ok(_) => true,
                Err(Errno::EINTR) => false,
                Err(e) => {
                    tracing::warn!("poll: {e}");
                    false
                }
            };
            let seen = |at: Option<usize>| {
                at.and_then(|i| fds[i].revents())
                    .unwrap_or(PollFlags::empty())
            };
            // Without a pidfd, or a poll that did not say, every round looks.
            (
                seen(wake),
                !polled || seen(output_at).intersects(READY),
                !polled || pidfd_at.is_none() || seen(pidfd_at).intersects(READY),
            )
        };
        if quiet && host_wrote.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            watch_link = false;
        }
        if host_wrote.intersects(READY) {
            stream.host_wrote();
        }
        if quiet && host_wrote.contains(PollFlags::POLLIN) && stream.released() {
            tracing::info!(
                pid = running.pid.as_raw(),
                "the host holds the VM no longer: streaming again"
            );
            quiet = false;
            stream.quiet_ended();
        }
        if !quiet {
            tracer.pump(stream)?;
        }
        // A read of an empty pipe, or a wait for a child that did not exit, is a
        // system call for nothing, in every wakeup of a traced workload.
        if output_open && output_ready {
            output_open = output.read_from(running.output());
        }
        if let Some(d) = deadline.as_mut() {
            end_if_due(running.pid, d);
        }
        if !exited {
            continue;
        }
        match waitpid(running.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    break code;
                }
            }
            Err(e) => {
                tracing::error!("waitpid({}): {e}", running.pid);
                break NEVER_RAN;
            }
        }
    };
    // What the child wrote before exiting is in the pipe; descendants still holding it
    // open cannot make us wait (the read end is non-blocking).
    if output_open {
        output.read_from(running.output());
    }
    Ok(End {
        status,
        output: output.finish(),
        timed_out: deadline.is_some_and(|d| d.expired()),
    })
}

/// Signals the workload's process group when its deadline says so.
fn end_if_due(pid: Pid, deadline: &mut Deadline) {
    let signal = match deadline.check(Instant::now()) {
        Action::Wait => return,
        Action::Terminate => Signal::SIGTERM,
        Action::Kill => Signal::SIGKILL,
    };
    tracing::warn!(pid = pid.as_raw(), "workload past its time limit: {signal}");
    // The group first (its children too); the workload alone if it left the group.
    if killpg(pid, signal).is_err() {
        let _ = kill(pid, signal);
    }
}

/// Sends the hits the probes only counted during the workload (none unless its stack
/// mode was [`guestscope_common::plan::StackMode::Tallied`]), before its exit record.
fn send_tallies<W: Sink>(
    exited: &WorkloadExited,
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
) -> Result<(), StreamError> {
    let counts = tracer.take_tallies();
    if counts.is_empty() {
        return Ok(());
    }
    stream
        .send(Body::Tallies(Tallies {
            pid: exited.pid,
            counts,
        }))
        .map(drop)
}

fn untrace(tracer: &mut Tracer, name: &str) {
    let removed = tracer.untrace_all();
    tracing::debug!(workload = name, removed, "pids removed from the filter");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::spawn_gated;

    /// Whether `pid` has ended (gone, or a zombie waiting for its reaper).
    fn ended(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        }
    }

    #[test]
    fn a_workload_past_its_deadline_is_ended_with_its_children() {
        let argv = ["sh", "-c", "sleep 100 & echo $!; wait"].map(String::from);
        let running = spawn_gated("/bin/sh", &argv, None, None)
            .unwrap()
            .release()
            .unwrap();
        // The shell prints its child's pid once it started it.
        let mut out = OutputBuffer::new(1024);
        let child: i32 = loop {
            out.read_from(running.output());
            let text = String::from_utf8_lossy(&out.data).into_owned();
            if let Some(line) = text.lines().next().filter(|_| text.ends_with('\n')) {
                break line.trim().parse().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut deadline = Deadline::new(Instant::now(), Duration::ZERO, Duration::from_secs(60));
        end_if_due(running.pid, &mut deadline);
        let status = waitpid(running.pid, None).unwrap();
        assert_eq!(exit_code(status), Some(128 + Signal::SIGTERM as i32));
        assert!(deadline.expired());
        let gone = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            ended(child)
        });
        assert!(gone, "the workload's child {child} outlived its timeout");
    }

    #[test]
    fn output_is_kept_up_to_the_limit_with_a_note() {
        let mut out = OutputBuffer::new(100);
        out.push(&[b'a'; 60]);
        out.push(&[b'b'; 60]);
        let text = out.finish();
        assert!(text.len() <= 100, "{}", text.len());
        assert!(text.starts_with("aaaa"));
        assert!(text.contains("20 more bytes dropped"), "{text}");
    }

    #[test]
    fn short_output_is_unchanged_and_lossy_utf8_is_bounded() {
        let mut out = OutputBuffer::new(100);
        out.push(b"done: 100 iterations\n");
        assert_eq!(out.finish(), "done: 100 iterations\n");

        let mut out = OutputBuffer::new(10);
        out.push(&[0xff; 10]);
        assert!(out.finish().len() <= 10);
    }

    #[test]
    fn exit_codes() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
