//! The Unix socket on which the guest's vsock connection arrives.
//!
//! With a vhost-user vsock device (vhost-device-vsock, the "hybrid vsock"
//! convention of Firecracker and Cloud Hypervisor), a guest connecting to host
//! CID 2, port P reaches the Unix socket `<uds-path>_P` on the host.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::receive::{Accept, Conn};

/// Why no connection was accepted.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Binding the socket failed.
    #[error("cannot listen on {path}: {source}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Accepting failed.
    #[error("accepting the guest connection: {0}")]
    Accept(#[source] io::Error),
    /// The deadline passed with no connection.
    #[error("the guest agent did not connect within {0:?}")]
    Timeout(Duration),
    /// The caller's liveness check said to stop waiting.
    #[error("stopped waiting for the guest agent: {0}")]
    Abandoned(String),
}

/// Path of the socket for `port` under the hybrid-vsock convention.
pub fn port_socket_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut s = uds_path.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// A listening socket for one vsock port, readable and writable by its owner only.
pub struct PortListener {
    /// None while paused.
    listener: Option<UnixListener>,
    path: PathBuf,
}

fn bind_path(path: &Path) -> Result<UnixListener, ListenError> {
    let bind_err = |source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

impl PortListener {
    /// Binds `<uds_path>_<port>` with mode 0600.
    pub fn bind(uds_path: &Path, port: u32) -> Result<PortListener, ListenError> {
        let path = port_socket_path(uds_path, port);
        Ok(PortListener {
            listener: Some(bind_path(&path)?),
            path,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for a connection. `keep_waiting` is polled every
    /// 50 ms; returning `Err(reason)` abandons the wait (e.g. QEMU exited).
    pub fn accept_within(
        &self,
        timeout: Duration,
        mut keep_waiting: impl FnMut() -> Result<(), String>,
    ) -> Result<UnixStream, ListenError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.listener.as_ref().map(UnixListener::accept) {
                Some(Ok((stream, _))) => {
                    stream.set_nonblocking(false).map_err(ListenError::Accept)?;
                    return Ok(stream);
                }
                None => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Some(Err(e)) => return Err(ListenError::Accept(e)),
            }
            keep_waiting().map_err(ListenError::Abandoned)?;
            if Instant::now() >= deadline {
                return Err(ListenError::Timeout(timeout));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Accept for PortListener {
    fn accept_now(&mut self) -> io::Result<Option<Box<dyn Conn>>> {
        let Some(listener) = self.listener.as_ref() else {
            return Ok(None);
        };
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                Ok(Some(Box::new(stream)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes the socket and removes its file: a connection attempt now fails.
    fn pause(&mut self) -> io::Result<()> {
        if self.listener.take().is_some() {
            std::fs::remove_file(&self.path)?;
        }
        Ok(())
    }

    fn resume(&mut self) -> io::Result<()> {
        if self.listener.is_none() {
            self.listener = Some(bind_path(&self.path).map_err(io::Error::other)?);
        }
        Ok(())
    }
}

impl Drop for PortListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn hybrid_path_appends_the_port() {
        assert_eq!(
            port_socket_path(Path::new("/tmp/x/vm.vsock"), 5000),
            PathBuf::from("/tmp/x/vm.vsock_5000")
        );
    }

    #[test]
    fn accepts_a_connection_and_socket_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.vsock");
        let l = PortListener::bind(&uds, 7).unwrap();
        let mode = std::fs::metadata(l.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let path = l.path().to_path_buf();
        let t = thread::spawn(move || {
            let mut c = UnixStream::connect(path).unwrap();
            c.write_all(b"hi").unwrap();
        });
        let mut s = l.accept_within(Duration::from_secs(5), || Ok(())).unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        t.join().unwrap();
    }

    #[test]
    fn times_out_and_can_be_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let l = PortListener::bind(&dir.path().join("v"), 1).unwrap();
        assert!(matches!(
            l.accept_within(Duration::from_millis(120), || Ok(())),
            Err(ListenError::Timeout(_))
        ));
        assert!(matches!(
            l.accept_within(Duration::from_secs(5), || Err("qemu exited".into())),
            Err(ListenError::Abandoned(_))
        ));
    }

    #[test]
    fn binding_twice_fails_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("v");
        let _a = PortListener::bind(&uds, 1).unwrap();
        let err = PortListener::bind(&uds, 1).err().unwrap().to_string();
        assert!(err.contains("v_1"), "{err}");
    }
}
