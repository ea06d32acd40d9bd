//! Floods the probes: `dup` then `close` of one descriptor, N times, as fast as it can.
//!
//! Each iteration allocates a descriptor (one `alloc_fd`) and takes the file table's
//! spin lock at least twice (`_raw_spin_lock` in `alloc_fd` and in `close`), with no
//! I/O in between, so it produces probe events faster than any other workload. Run with
//! a small ring buffer, it overflows it: the test of the probes' `ring_full` accounting.
//!
//! Usage: `flood [--iterations N]` (default 100000).

use std::{fs::File, os::fd::AsRawFd, process::ExitCode, time::Instant};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str = "flood [--iterations N]";

fn main() -> ExitCode {
    main_with("flood", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let iterations = args.number("--iterations", 100_000)?;
    args.finish(USAGE)?;
    let file = File::open("/").map_err(|e| Error::runtime(format!("open /: {e}")))?;
    let fd = file.as_raw_fd();
    let start = Instant::now();
    for _ in 0..iterations {
        // SAFETY: dup of a descriptor this process owns; the copy is closed right away
        // and never used otherwise.
        let copy = unsafe { libc::dup(fd) };
        if copy < 0 {
            return Err(Error::runtime(format!("dup: {}", std::io::Error::last_os_error())));
        }
        // SAFETY: `copy` is the descriptor dup just returned, owned by nothing else.
        unsafe { libc::close(copy) };
    }
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("flood".into())),
            ("iterations", Value::Num(iterations)),
            ("elapsed_ns", Value::Num(elapsed_ns(start))),
        ])
    );
    Ok(())
}
