//! The vsock device when the host has no `/dev/vhost-vsock`: rust-vmm's
//! `vhost-device-vsock`, a vhost-user backend QEMU connects to over a Unix socket.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::child::ChildGuard;

/// How the guest's vsock device is provided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VsockBackend {
    /// The kernel's vhost-vsock (`/dev/vhost-vsock`): `-device vhost-vsock-pci`.
    /// Host side uses AF_VSOCK directly.
    Kernel,
    /// vhost-device-vsock with hybrid Unix sockets.
    VhostUser {
        /// Control socket QEMU connects to.
        control: PathBuf,
        /// Base path of the hybrid-vsock Unix sockets.
        uds: PathBuf,
    },
}

/// Why the vsock device could not be started.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// The program is not installed.
    #[error(
        "vhost-device-vsock not found ({0}); run `cargo xtask lab` once, or `cargo install vhost-device-vsock@0.3.0`"
    )]
    NotFound(String),
    /// It started but never created its socket.
    #[error("vhost-device-vsock did not create {0} within 10 s")]
    NoSocket(PathBuf),
    /// It exited at start.
    #[error("vhost-device-vsock exited at start ({0})")]
    Exited(String),
}

/// Makes a child create its files readable and writable by their owner only.
trait OwnerOnly {
    fn umask_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for Command {
    fn umask_owner_only(&mut self) -> &mut Self {
        // SAFETY: the closure runs in the child between fork and exec and only calls
        // umask, which is async-signal-safe and cannot fail.
        unsafe {
            self.pre_exec(|| {
                libc::umask(0o177);
                Ok(())
            })
        }
    }
}

/// The control socket QEMU connects to and the hybrid-vsock socket the host's end
/// of the guest's vsock listens under, in the run directory `dir`.
fn sockets(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("vhost.sock"), dir.join("vm.vsock"))
}

/// vhost-device-vsock's arguments for guest `cid`, its sockets in `dir`.
pub fn args(dir: &Path, cid: u32) -> Vec<std::ffi::OsString> {
    let (control, uds) = sockets(dir);
    vec![
        "--guest-cid".into(),
        cid.to_string().into(),
        "--socket".into(),
        control.into(),
        "--uds-path".into(),
        uds.into(),
    ]
}

/// Starts `vhost-device-vsock` for guest CID `cid`, with its sockets in `dir`
/// (created owner-only: mode 0600, from a umask of 0177; it creates no directory).
pub fn start(
    program: &Path,
    dir: &Path,
    cid: u32,
) -> Result<(ChildGuard, VsockBackend), VhostError> {
    let (control, uds) = sockets(dir);
    let mut command = Command::new(program);
    super::child::die_with_parent(&mut command);
    let child = command
        .args(args(dir, cid))
        // Its own process group, like QEMU's: a Ctrl-C reaches the collector only.
        .process_group(0)
        // Its sockets (the control socket, the hybrid-vsock one) for the owner only:
        // whoever reaches them talks to the guest.
        .umask_owner_only()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| VhostError::NotFound(format!("{}: {e}", program.display())))?;
    let mut guard = ChildGuard::new("vhost-device-vsock", child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !control.exists() {
        if let Ok(Some(status)) = guard.try_wait() {
            return Err(VhostError::Exited(status.to_string()));
        }
        if Instant::now() > deadline {
            return Err(VhostError::NoSocket(control));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((guard, VsockBackend::VhostUser { control, uds }))
}
