//! A vsock stream whose vectored writes are one `sendmsg`: several spooled frames leave
//! in one system call, so the guest kernel makes one packet of them and wakes its
//! transmit worker once, where one `send` per frame cost a call, a packet and a
//! preemption of the agent each.

use std::{
    io::{self, IoSlice, Read, Write},
    os::fd::{AsFd, AsRawFd, BorrowedFd},
};

use nix::sys::socket::{MsgFlags, VsockAddr, sendmsg};
use vsock::VsockStream;

/// A connected vsock stream; `write_vectored` gathers its buffers into one `sendmsg`
/// (the `vsock` crate's stream writes only the first).
#[derive(Debug)]
pub struct GatherStream(pub VsockStream);

impl Read for GatherStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for GatherStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // MSG_NOSIGNAL as the crate's own `send`: a closed peer is an error, not SIGPIPE.
        sendmsg::<VsockAddr>(self.0.as_raw_fd(), bufs, &[], MsgFlags::MSG_NOSIGNAL, None)
            .map_err(io::Error::from)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl AsFd for GatherStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::{fd::OwnedFd, unix::net::UnixStream};

    use super::*;

    /// `sendmsg` and `recv` are the same calls on any stream socket: one end of a Unix
    /// socket pair stands in for the vsock socket (which needs a host end).
    fn pair() -> (GatherStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (GatherStream(VsockStream::from(OwnedFd::from(a))), b)
    }

    #[test]
    fn a_vectored_write_sends_every_buffer_in_order_in_one_call() {
        let (mut a, mut b) = pair();
        let bufs = [
            IoSlice::new(b"one "),
            IoSlice::new(b""),
            IoSlice::new(b"two "),
            IoSlice::new(b"three"),
        ];
        assert_eq!(a.write_vectored(&bufs).unwrap(), 13);
        a.write_all(b", four").unwrap();
        drop(a);
        let mut got = String::new();
        b.read_to_string(&mut got).unwrap();
        assert_eq!(got, "one two three, four");
    }

    #[test]
    fn writing_to_a_closed_peer_is_an_error_not_a_signal() {
        let (mut a, b) = pair();
        drop(b);
        let err = a.write_vectored(&[IoSlice::new(b"lost")]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
