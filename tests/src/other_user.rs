//! What another local account can reach: a Unix-socket connect made as that user.

use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::Command;

/// The unprivileged account tests connect as (`nobody` on Debian; no passwd entry needed).
pub const NOBODY: u32 = 65534;

/// Tries to connect to the Unix socket at `path` as user and group `id`, with no
/// supplementary groups. `Ok(())` when the connection was made; otherwise the
/// error the kernel gave (`PermissionDenied` for a socket or directory the user
/// may not enter).
///
/// The connect runs in a forked child that changes its credentials and never
/// execs, so no program has to be readable by that user.
pub fn connect_as(id: u32, path: &Path) -> io::Result<()> {
    // SAFETY: sockaddr_un is plain old data; all-zero is a valid (empty) value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "path too long"));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let mut cmd = Command::new("/bin/true");
    // SAFETY: the closure runs in the forked child and calls only async-signal-safe
    // functions (setgroups, setgid, setuid, socket, connect, _exit) on data prepared
    // before the fork; it never returns, so nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            let code = if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(id) != 0
                || libc::setuid(id) != 0
            {
                100
            } else {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                if fd < 0 {
                    101
                } else if libc::connect(
                    fd,
                    &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                ) == 0
                {
                    0
                } else {
                    // errno values are small: they fit an exit code.
                    *libc::__errno_location()
                }
            };
            libc::_exit(code);
        });
    }
    let status = cmd.status()?;
    match status.code() {
        Some(0) => Ok(()),
        Some(100) => Err(io::Error::other("could not take the other user's identity")),
        Some(101) => Err(io::Error::other("socket() failed")),
        Some(errno) => Err(io::Error::from_raw_os_error(errno)),
        None => Err(io::Error::other(format!(
            "the connecting child died of signal {:?}",
            status.signal()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_user_is_refused_a_private_socket_and_reaches_an_open_one() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            // Changing to another user needs root: what CI and `cargo xtask test` run as.
            panic!("this test needs root (it connects as user {NOBODY})");
        }
        let dir = tempfile::Builder::new().tempdir().unwrap();
        let open_dir = dir.path().join("open");
        let private_dir = dir.path().join("private");
        for (d, mode) in [(&open_dir, 0o755), (&private_dir, 0o700)] {
            std::fs::create_dir(d).unwrap();
            std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
        }
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let open = open_dir.join("s");
        let private = private_dir.join("s");
        let _l1 = std::os::unix::net::UnixListener::bind(&open).unwrap();
        let _l2 = std::os::unix::net::UnixListener::bind(&private).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        connect_as(NOBODY, &open).expect("an open socket in an open directory");
        let err = connect_as(NOBODY, &private).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied, "{err}");
    }
}
