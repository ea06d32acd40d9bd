//! Starting a workload held at a gate: the child exists (so its pid can be put in the
//! kernel filter) but does not exec until the agent opens the gate.

use std::{
    ffi::CString,
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
};

use nix::{
    errno::Errno,
    fcntl::{FcntlArg, OFlag, fcntl},
    sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask},
    unistd::{ForkResult, Pid, dup2, execv, fork, pipe2, read, setpgid, write},
};

/// Exit status of a child whose exec failed (as shells use).
pub const EXEC_FAILED: i32 = 127;

/// A workload could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// A path or argument contains a NUL byte.
    #[error("path or argument contains a NUL byte")]
    Nul,
    /// Creating a pipe failed.
    #[error("creating a pipe: {0}")]
    Pipe(#[source] Errno),
    /// fork() failed.
    #[error("fork: {0}")]
    Fork(#[source] Errno),
    /// Opening the gate failed.
    #[error("releasing the child: {0}")]
    Gate(#[source] Errno),
}

/// A child waiting at its gate.
pub struct Gated {
    /// The child's pid.
    pub pid: Pid,
    gate: OwnedFd,
    output: OwnedFd,
    pidfd: Option<OwnedFd>,
}

impl Gated {
    /// Lets the child exec.
    pub fn release(self) -> Result<Running, SpawnError> {
        let Gated {
            pid,
            gate,
            output,
            pidfd,
        } = self;
        loop {
            match write(&gate, &[1]) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(SpawnError::Gate(e)),
            }
        }
        drop(gate);
        Ok(Running { pid, output, pidfd })
    }
}

/// A released child.
pub struct Running {
    /// The child's pid.
    pub pid: Pid,
    output: OwnedFd,
    pidfd: Option<OwnedFd>,
}

impl Running {
    /// Read end of the child's stdout+stderr pipe (non-blocking).
    pub fn output(&self) -> BorrowedFd<'_> {
        self.output.as_fd()
    }

    /// A pidfd that becomes readable when the child exits, if the kernel has pidfds.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }
}

/// Who a child runs as, and where.
struct Identity {
    /// User and group id (no supplementary groups); `None`: the agent's own (root).
    run_as: Option<u32>,
    /// Working directory; `None`: the agent's.
    cwd: Option<CString>,
}

/// Forks a child that waits at a gate, then execs `path` with `argv` (argv\[0\] included),
/// its stdout and stderr on a pipe and stdin on /dev/null, in a process group of its own
/// (the group's id is the child's pid); as user and group `run_as`
/// (no supplementary groups) when given, else with the agent's own credentials (root);
/// in directory `cwd` when given.
pub fn spawn_gated(
    path: &str,
    argv: &[String],
    run_as: Option<u32>,
    cwd: Option<&str>,
) -> Result<Gated, SpawnError> {
    let who = Identity {
        run_as,
        cwd: cwd
            .map(|d| CString::new(d).map_err(|_| SpawnError::Nul))
            .transpose()?,
    };
    let c_path = CString::new(path).map_err(|_| SpawnError::Nul)?;
    let c_argv = argv
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| SpawnError::Nul)?;
    let (gate_r, gate_w) = pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let (out_r, out_w) = pipe2(OFlag::O_CLOEXEC).map_err(SpawnError::Pipe)?;
    let null = File::open("/dev/null").ok();
    let exec_error_prefix = format!("guestscope-agent: exec {path}: ");

    // SAFETY: the agent is single-threaded, so the child may run ordinary code until exec.
    match unsafe { fork() }.map_err(SpawnError::Fork)? {
        ForkResult::Child => {
            drop(gate_w);
            drop(out_r);
            child(
                &gate_r,
                &out_w,
                null.as_ref(),
                &who,
                &c_path,
                &c_argv,
                &exec_error_prefix,
            )
        }
        ForkResult::Parent { child } => {
            // The child does the same; whichever runs first wins, so the group exists
            // before anyone signals it (EACCES once it has exec'd is harmless).
            let _ = setpgid(child, child);
            drop(gate_r);
            drop(out_w);
            if let Err(e) = set_nonblocking(out_r.as_raw_fd()) {
                tracing::warn!("output pipe stays blocking: {e}");
            }
            Ok(Gated {
                pid: child,
                gate: gate_w,
                output: out_r,
                pidfd: pidfd_open(child),
            })
        }
    }
}

/// The child side: set up signals and stdio, wait at the gate, exec. Never returns.
fn child(
    gate: &OwnedFd,
    out: &OwnedFd,
    null: Option<&File>,
    who: &Identity,
    path: &CString,
    argv: &[CString],
    prefix: &str,
) -> ! {
    // Everything but exec happens before the gate, so the traced part of the child's life
    // before exec (still the agent's image, comm "guestscope-agen") is as short as it can be.
    reset_signals();
    // Its own process group, so a timeout ends the workload's children with it.
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let _ = dup2(out.as_raw_fd(), 1);
    let _ = dup2(out.as_raw_fd(), 2);
    if let Some(null) = null {
        let _ = dup2(null.as_raw_fd(), 0);
    }
    if let Some(id) = who.run_as
        && let Err(e) = drop_privileges(id)
    {
        let message = format!("{prefix}cannot become user {id}: {e}\n");
        // SAFETY: fd 2 is the output pipe, owned by this process until it exits.
        let stderr = unsafe { BorrowedFd::borrow_raw(2) };
        let _ = write(stderr, message.as_bytes());
        exit_now(EXEC_FAILED);
    }
    // After the drop, so the directory is entered with the workload's own rights.
    if let Some(dir) = &who.cwd
        && let Err(e) = nix::unistd::chdir(dir.as_c_str())
    {
        let message = format!("{prefix}cannot enter directory {dir:?}: {e}\n");
        // SAFETY: fd 2 is the output pipe, owned by this process until it exits.
        let stderr = unsafe { BorrowedFd::borrow_raw(2) };
        let _ = write(stderr, message.as_bytes());
        exit_now(EXEC_FAILED);
    }
    let mut byte = [0u8; 1];
    let released = loop {
        match read(gate.as_raw_fd(), &mut byte) {
            Ok(1) => break true,
            Err(Errno::EINTR) => continue,
            // The agent went away without releasing us.
            _ => break false,
        }
    };
    if !released {
        exit_now(EXEC_FAILED);
    }
    let err = match execv(path, argv) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let message = format!("{prefix}{err}\n");
    // SAFETY: fd 2 is the output pipe, owned by this process until it exits.
    let stderr = unsafe { BorrowedFd::borrow_raw(2) };
    let _ = write(stderr, message.as_bytes());
    exit_now(EXEC_FAILED)
}

/// Becomes user and group `id` with no supplementary groups, for good (the saved ids
/// change too, so the workload cannot take root back).
fn drop_privileges(id: u32) -> nix::Result<()> {
    nix::unistd::setgroups(&[])?;
    let gid = nix::unistd::Gid::from_raw(id);
    let uid = nix::unistd::Uid::from_raw(id);
    nix::unistd::setresgid(gid, gid, gid)?;
    nix::unistd::setresuid(uid, uid, uid)
}

/// Ignored signals and the signal mask survive exec: Rust ignores SIGPIPE at start-up
/// and the guest's init shell may ignore others (SIGQUIT, ...). Give the workload the
/// defaults, as `posix_spawn` with `POSIX_SPAWN_SETSIGDEF` would.
fn reset_signals() {
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no handler code.
            let _ = unsafe { signal(sig, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Leaves the child without running the parent's atexit handlers or flushing its
/// copied stdio buffers.
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and always safe to call.
    unsafe { libc::_exit(code) }
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// A pidfd for `pid` (Linux ≥ 5.3), or `None`.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        tracing::debug!("pidfd_open: {}", io::Error::last_os_error());
        return None;
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
