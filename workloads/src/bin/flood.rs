//! Floods the probes: `dup` then `close` of one descriptor, N times, as fast as it can
//! or at a set rate.
//!
//! Each iteration allocates a descriptor (one `alloc_fd`) and takes the file table's
//! spin lock at least twice (`_raw_spin_lock` in `alloc_fd` and in `close`), with no
//! I/O in between, so it produces probe events faster than any other workload. Run with
//! a small ring buffer, it overflows it: the test of the probes' `ring_full` accounting.
//! With `--rate R` it paces itself to R iterations per second (in steps of a
//! millisecond, sleeping in between), so the rate at which the event stream starts to
//! lose events can be found. With `--realtime` it runs at `SCHED_FIFO` priority 1: on one
//! vCPU the agent then cannot read the ring buffer until the loop ends (or the kernel's
//! real-time throttle pauses it), so a small ring overflows however fast the host is.
//!
//! Usage: `flood [--iterations N] [--rate R] [--realtime]` (defaults 100000, 0: unpaced,
//! and the normal scheduler).

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::ExitCode,
    time::{Duration, Instant},
};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with, run_as_fifo};

const USAGE: &str = "flood [--iterations N] [--rate R] [--realtime]";

/// Pacing step: the loop checks its schedule (and sleeps) once per step.
const STEP: Duration = Duration::from_millis(1);

fn main() -> ExitCode {
    main_with("flood", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let iterations = args.number("--iterations", 100_000)?;
    let rate = args.number("--rate", 0)?;
    let realtime = args.flag("--realtime");
    args.finish(USAGE)?;
    if realtime {
        run_as_fifo(1)?;
    }
    let file = File::open("/").map_err(|e| Error::runtime(format!("open /: {e}")))?;
    let fd = file.as_raw_fd();
    let start = Instant::now();
    let mut done = 0u64;
    let mut sleeps = 0u64;
    while done < iterations {
        // Iterations due by now (all of them when unpaced).
        let due = if rate == 0 {
            iterations
        } else {
            let elapsed = start.elapsed().as_nanos();
            let due = (elapsed * u128::from(rate) / 1_000_000_000).saturating_add(1);
            due.min(u128::from(iterations)) as u64
        };
        if done >= due {
            // Ahead of schedule: sleep until the next step.
            std::thread::sleep(STEP);
            sleeps += 1;
            continue;
        }
        while done < due {
            dup_close(fd)?;
            done += 1;
        }
    }
    let elapsed = elapsed_ns(start);
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("flood".into())),
            ("iterations", Value::Num(iterations)),
            ("rate", Value::Num(rate)),
            ("realtime", Value::Bool(realtime)),
            ("sleeps", Value::Num(sleeps)),
            ("elapsed_ns", Value::Num(elapsed)),
        ])
    );
    Ok(())
}

fn dup_close(fd: i32) -> Result<(), Error> {
    // SAFETY: dup of a descriptor this process owns; the copy is closed right away
    // and never used otherwise.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        return Err(Error::runtime(format!(
            "dup: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `copy` is the descriptor dup just returned, owned by nothing else.
    unsafe { libc::close(copy) };
    Ok(())
}
