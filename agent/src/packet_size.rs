//! Keeps every vsock packet the guest kernel sends in one buffer.
//!
//! Since Linux commit 6693731487a8 ("vsock/virtio: Allocate nonlinear SKBs for
//! handling large transmit buffers", merged for 6.17 and picked up by stable
//! kernels: with Debian's 6.12.117 the stream stalled without this), a packet with more than about 32 KiB of payload is sent as
//! a header plus page fragments, i.e. a chain of several descriptors. The
//! vhost-user vsock device on the host (rust-vmm's vhost-device-vsock, through
//! its virtio-vsock crate, rust-vmm/vm-virtio#216) only parses one- or
//! two-descriptor chains, drops the rest, and the stream stalls. The kernel makes
//! packets no larger than the `write` that produced them, so capping each write
//! at [`MAX_WRITE`] keeps every packet linear, on every kernel.

use std::{
    io::{self, IoSlice, Read, Write},
    os::fd::{AsFd, BorrowedFd},
};

/// Largest write handed to the socket: under the 32 KiB linear-buffer limit (less
/// the buffer's own overhead and the packet header), with 4 KiB to spare.
pub const MAX_WRITE: usize = 28 * 1024;

/// Most buffers passed on in one vectored write (Linux's `UIO_MAXIOV` is 1024).
pub const MAX_SLICES: usize = 256;

/// A connection whose writes pass at most [`MAX_WRITE`] bytes to `W` per call;
/// reads and the file descriptor are `W`'s own.
#[derive(Debug)]
pub struct SmallWrites<W>(pub W);

impl<W: Read> Read for SmallWrites<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<W: AsFd> AsFd for SmallWrites<W> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl<W: Write> Write for SmallWrites<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(&buf[..buf.len().min(MAX_WRITE)])
    }

    /// Passes on the leading buffers that fit in [`MAX_WRITE`] bytes (the one that
    /// crosses it cut there), or the first one cut, as one vectored write.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut room = MAX_WRITE;
        let mut fit = Vec::with_capacity(bufs.len().min(MAX_SLICES));
        for buf in bufs.iter().take(MAX_SLICES) {
            if room == 0 {
                break;
            }
            let take = buf.len().min(room);
            fit.push(IoSlice::new(&buf[..take]));
            room -= take;
        }
        self.0.write_vectored(&fit)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the size of every write it gets.
    struct Sizes(Vec<usize>);

    impl Write for Sizes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.push(buf.len());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_vectored_write_passes_on_at_most_max_write_bytes_in_order() {
        let mut w = SmallWrites(Vec::new());
        let big = vec![1u8; MAX_WRITE - 10];
        let next = vec![2u8; 100];
        let bufs = [
            IoSlice::new(b"abc"),
            IoSlice::new(&big),
            IoSlice::new(&next),
        ];
        let n = w.write_vectored(&bufs).unwrap();
        assert_eq!(n, MAX_WRITE);
        assert_eq!(&w.0[..3], b"abc");
        assert_eq!(w.0[3..].iter().filter(|&&b| b == 1).count(), MAX_WRITE - 10);
        assert_eq!(w.0[3..].iter().filter(|&&b| b == 2).count(), 7);
        // A first buffer larger than the limit is cut too.
        let mut w = SmallWrites(Vec::new());
        let huge = vec![3u8; 3 * MAX_WRITE];
        assert_eq!(w.write_vectored(&[IoSlice::new(&huge)]).unwrap(), MAX_WRITE);
    }

    #[test]
    fn buffered_output_reaches_the_socket_in_small_writes() {
        let mut w = io::BufWriter::with_capacity(256 * 1024, SmallWrites(Sizes(Vec::new())));
        w.write_all(&vec![7u8; 200 * 1024]).unwrap();
        w.flush().unwrap();
        let sizes = &w.get_ref().0.0;
        assert_eq!(sizes.iter().sum::<usize>(), 200 * 1024);
        assert!(sizes.iter().all(|s| *s <= MAX_WRITE), "{sizes:?}");
    }
}
