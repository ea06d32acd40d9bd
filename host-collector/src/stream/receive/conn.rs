//! The transport a run's stream arrives on: one agent connection ([`Conn`]) and the
//! listener its connections come from ([`Accept`]), over vsock or a Unix socket.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::Duration;
/// One connection from the agent, both directions.
pub trait Conn: Read + Write + Send {
    /// A second handle on the same connection (to write acknowledgements with).
    fn clone_conn(&self) -> io::Result<Box<dyn Conn>>;
    /// Closes both directions (both handles).
    fn close(&self);
    /// Read and write timeouts.
    fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()>;
}

/// [`Conn`] for socket types with the same `try_clone`, `shutdown` and timeout
/// methods (Unix and vsock streams).
macro_rules! impl_conn {
    ($($stream:ty),+) => {$(
        impl Conn for $stream {
            fn clone_conn(&self) -> io::Result<Box<dyn Conn>> {
                Ok(Box::new(self.try_clone()?))
            }
            fn close(&self) {
                let _ = self.shutdown(Shutdown::Both);
            }
            fn set_timeouts(&self, read: Duration, write: Duration) -> io::Result<()> {
                self.set_nonblocking(false)?;
                self.set_read_timeout(Some(read))?;
                self.set_write_timeout(Some(write))
            }
        }
    )+};
}

impl_conn!(UnixStream, vsock::VsockStream);

/// Where the agent's connections arrive.
pub trait Accept {
    /// A connection already waiting, if any (never blocks).
    fn accept_now(&mut self) -> io::Result<Option<Box<dyn Conn>>>;
    /// Stops listening (new connections are refused) until [`Accept::resume`].
    fn pause(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Listens again after [`Accept::pause`].
    fn resume(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Accept for vsock::VsockListener {
    fn accept_now(&mut self) -> io::Result<Option<Box<dyn Conn>>> {
        self.set_nonblocking(true)?;
        match self.accept() {
            Ok((s, _)) => Ok(Some(Box::new(s))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }
}
