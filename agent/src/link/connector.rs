//! Making connections to the collector: the [`Connector`] the link reconnects with,
//! its vsock implementation, and the non-blocking connect's progress.

use std::{
    io::{self, Read, Write},
    os::fd::{AsFd, AsRawFd},
};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
/// Makes connections to the collector.
pub trait Connector {
    /// A connection.
    type Conn: Read + Write + AsFd;
    /// Starts connecting without blocking (once; the link paces retries). The
    /// connection may still be in progress: [`connect_state`] says when it is made.
    fn start(&mut self) -> io::Result<Self::Conn>;
}

/// Whether a connection from [`Connector::start`] is made: `Ok(true)` made,
/// `Ok(false)` still in progress, `Err` failed.
pub fn connect_state<T: AsFd>(conn: &T) -> io::Result<bool> {
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(0) => return Ok(false),
        Ok(_) => {}
        Err(e) => return Err(e.into()),
    }
    match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::SocketError)? {
        0 => Ok(true),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Connects over vsock to the host.
#[derive(Debug, Clone, Copy)]
pub struct VsockConnector {
    /// Host CID.
    pub cid: u32,
    /// Port.
    pub port: u32,
}

impl Connector for VsockConnector {
    // Small writes keep each vsock packet in one buffer (see crate::packet_size).
    type Conn = crate::packet_size::SmallWrites<crate::gather::GatherStream>;
    /// A non-blocking connect: a blocking one waits seconds for an absent host, while
    /// the probes' ring buffer fills.
    fn start(&mut self) -> io::Result<Self::Conn> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, VsockAddr, connect, socket};
        let fd = socket(
            AddressFamily::Vsock,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        match connect(fd.as_raw_fd(), &VsockAddr::new(self.cid, self.port)) {
            Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(crate::packet_size::SmallWrites(
            crate::gather::GatherStream(vsock::VsockStream::from(fd)),
        ))
    }
}

/// Puts `conn` in non-blocking mode.
pub(super) fn set_nonblocking<T: AsFd>(conn: &T) -> io::Result<()> {
    let fd = conn.as_fd().as_raw_fd();
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}
