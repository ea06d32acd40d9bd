//! Where a gdbstub listens, and the connected byte stream to it.
//!
//! The gdbstub gives code execution in the guest, so whoever can connect to it
//! owns the VM. Put it on a Unix socket in a private (0700) directory
//! ([`GdbEndpoint::Unix`]): no other local user can reach it. A TCP address
//! ([`GdbEndpoint::Tcp`]) is accepted on loopback only; every local account can
//! reach a loopback port.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// The address of a gdbstub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbEndpoint {
    /// A Unix socket (QEMU: `-chardev socket,path=…,server=on,wait=off,id=ID -gdb chardev:ID`).
    Unix(PathBuf),
    /// A TCP address, loopback only (QEMU: `-gdb tcp:127.0.0.1:PORT`).
    Tcp(SocketAddr),
}

impl GdbEndpoint {
    /// The QEMU arguments that make the gdbstub listen here.
    pub fn qemu_args(&self) -> Vec<String> {
        match self {
            GdbEndpoint::Unix(path) => vec![
                "-chardev".into(),
                format!(
                    "socket,id=gdbstub,path={},server=on,wait=off",
                    path.display()
                ),
                "-gdb".into(),
                "chardev:gdbstub".into(),
            ],
            GdbEndpoint::Tcp(addr) => vec!["-gdb".into(), format!("tcp:{addr}")],
        }
    }

    /// The TCP port, for a TCP endpoint.
    pub fn tcp_port(&self) -> Option<u16> {
        match self {
            GdbEndpoint::Tcp(addr) => Some(addr.port()),
            GdbEndpoint::Unix(_) => None,
        }
    }

    /// The socket's path, for a Unix endpoint.
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        match self {
            GdbEndpoint::Unix(path) => Some(path),
            GdbEndpoint::Tcp(_) => None,
        }
    }
}

impl fmt::Display for GdbEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbEndpoint::Unix(path) => write!(f, "{}", path.display()),
            GdbEndpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// Text that names no gdbstub.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is neither a Unix socket path (with a '/') nor a HOST:PORT address")]
pub struct EndpointParseError(pub String);

impl std::str::FromStr for GdbEndpoint {
    type Err = EndpointParseError;

    /// A path (anything with a `/`) is a Unix socket; otherwise `HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains('/') {
            return Ok(GdbEndpoint::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(GdbEndpoint::Tcp)
            .map_err(|_| EndpointParseError(s.to_string()))
    }
}

impl From<SocketAddr> for GdbEndpoint {
    fn from(addr: SocketAddr) -> Self {
        GdbEndpoint::Tcp(addr)
    }
}

impl From<PathBuf> for GdbEndpoint {
    fn from(path: PathBuf) -> Self {
        GdbEndpoint::Unix(path)
    }
}

/// A connected stream to a gdbstub, over TCP or a Unix socket.
#[derive(Debug)]
pub enum Transport {
    /// TCP (`TCP_NODELAY` set by the client).
    Tcp(TcpStream),
    /// A Unix socket.
    Unix(UnixStream),
}

impl Transport {
    /// Sets the read timeout of the underlying socket.
    pub fn set_read_timeout(&self, limit: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(limit),
            Transport::Unix(s) => s.set_read_timeout(limit),
        }
    }
}

impl From<TcpStream> for Transport {
    fn from(stream: TcpStream) -> Self {
        Transport::Tcp(stream)
    }
}

impl From<UnixStream> for Transport {
    fn from(stream: UnixStream) -> Self {
        Transport::Unix(stream)
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Unix(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_arguments_for_each_kind() {
        let unix = GdbEndpoint::Unix("/run/x/gdb.sock".into());
        assert_eq!(
            unix.qemu_args(),
            [
                "-chardev",
                "socket,id=gdbstub,path=/run/x/gdb.sock,server=on,wait=off",
                "-gdb",
                "chardev:gdbstub"
            ]
        );
        assert_eq!(unix.tcp_port(), None);
        let tcp = GdbEndpoint::from(SocketAddr::from(([127, 0, 0, 1], 1234)));
        assert_eq!(tcp.qemu_args(), ["-gdb", "tcp:127.0.0.1:1234"]);
        assert_eq!(tcp.tcp_port(), Some(1234));
        assert_eq!(tcp.to_string(), "127.0.0.1:1234");
    }

    #[test]
    fn parses_paths_and_addresses() {
        assert_eq!(
            "/run/g/gdb.sock".parse::<GdbEndpoint>(),
            Ok(GdbEndpoint::Unix("/run/g/gdb.sock".into()))
        );
        assert_eq!(
            "./gdb.sock".parse::<GdbEndpoint>(),
            Ok(GdbEndpoint::Unix("./gdb.sock".into()))
        );
        assert_eq!(
            "127.0.0.1:1234".parse::<GdbEndpoint>(),
            Ok(GdbEndpoint::Tcp(([127, 0, 0, 1], 1234).into()))
        );
        let err = "gdb.sock".parse::<GdbEndpoint>().unwrap_err();
        assert!(
            err.to_string().contains("neither a Unix socket path"),
            "{err}"
        );
    }
}
