//! Sends N bytes of plain data to the host over vsock, as fast as it can: the raw
//! throughput of the guest → host transport, with no framing, probe or agent involved.
//!
//! It connects to the host (CID 2) on `--port`, writes `--bytes` bytes in `--chunk`-byte
//! writes, then closes. The host side counts the bytes and times them; the summary line
//! carries the guest's view (its write loop's duration).
//!
//! Usage: `blast --port P [--bytes N] [--chunk B]` (defaults 64 MiB and 16 KiB, the
//! agent's own largest write, so both see the same vsock packets).

use std::{io, process::ExitCode, time::Instant};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str = "blast --port P [--bytes N] [--chunk B]";

/// The host's vsock CID, as seen from a guest.
const HOST_CID: u32 = 2;

fn main() -> ExitCode {
    main_with("blast", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let port = args
        .value("--port")?
        .ok_or_else(|| Error::usage(format!("--port is required; usage: {USAGE}")))?;
    let port: u32 = port
        .parse()
        .map_err(|_| Error::usage(format!("--port: {port:?} is not a port")))?;
    let bytes = args.number("--bytes", 64 << 20)?;
    let chunk = args.number("--chunk", 16 << 10)?.clamp(1, 16 << 20) as usize;
    args.finish(USAGE)?;

    let sock = Vsock::connect(HOST_CID, port)
        .map_err(|e| Error::runtime(format!("connecting to vsock {HOST_CID}:{port}: {e}")))?;
    let buf = vec![0x5au8; chunk];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let want = (bytes - sent).min(chunk as u64) as usize;
        sent += sock
            .write(&buf[..want])
            .map_err(|e| Error::runtime(format!("write after {sent} bytes: {e}")))?
            as u64;
    }
    let elapsed = elapsed_ns(start);
    drop(sock);
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("blast".into())),
            ("bytes", Value::Num(sent)),
            ("chunk", Value::Num(chunk as u64)),
            ("elapsed_ns", Value::Num(elapsed)),
        ])
    );
    Ok(())
}

/// A connected `AF_VSOCK` stream socket, closed on drop.
struct Vsock(i32);

impl Vsock {
    fn connect(cid: u32, port: u32) -> io::Result<Vsock> {
        // SAFETY: socket() takes plain integer arguments.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = Vsock(fd);
        // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        addr.svm_cid = cid;
        addr.svm_port = port;
        // SAFETY: `addr` is a valid sockaddr_vm and its size is passed with it.
        let rc = unsafe {
            libc::connect(
                sock.0,
                (&raw const addr).cast::<libc::sockaddr>(),
                size_of::<libc::sockaddr_vm>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn write(&self, data: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: `data` is valid for reads of data.len() bytes.
            let n = unsafe { libc::write(self.0, data.as_ptr().cast(), data.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by this value and closed once.
        unsafe { libc::close(self.0) };
    }
}
