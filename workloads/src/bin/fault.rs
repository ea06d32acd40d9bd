//! Breaks the guest on purpose, for the collector's fault tests (it needs root, which the
//! built-in guest gives its workloads).
//!
//! - `fault panic [--opens N] [--wait-ms MS]`: opens `/` N times (traced `alloc_fd`
//!   events), waits MS milliseconds so the agent can send them, then crashes the kernel
//!   through `/proc/sysrq-trigger` (`c`: "Kernel panic - not syncing: sysrq triggered
//!   crash").
//! - `fault hang [--opens N] [--wait-ms MS] [--seconds S]`: the same opens and wait,
//!   then lifts the real-time throttle (`kernel.sched_rt_runtime_us = -1`) and spins at
//!   SCHED_FIFO priority 99 for S seconds (default 600) without a system call. On one
//!   vCPU nothing else in user space runs meanwhile, the agent included: to the host the
//!   guest is hung, though its kernel still takes interrupts.
//!
//! Defaults: 100 opens, 500 ms.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    process::ExitCode,
    time::{Duration, Instant},
};

use guestscope_workloads::{Args, Error, main_with, run_as_fifo};

const USAGE: &str = "fault panic|hang [--opens N] [--wait-ms MS] [--seconds S]";

fn main() -> ExitCode {
    main_with("fault", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let hang = args.flag("hang");
    let panic = args.flag("panic");
    let opens = args.number("--opens", 100)?;
    let wait_ms = args.number("--wait-ms", 500)?;
    let seconds = args.number("--seconds", 600)?;
    args.finish(USAGE)?;
    if hang == panic {
        return Err(Error::usage(format!("say panic or hang; usage: {USAGE}")));
    }
    for _ in 0..opens {
        File::open("/").map_err(|e| Error::runtime(format!("open /: {e}")))?;
    }
    println!(
        "fault: {opens} opens done; {} in {wait_ms} ms",
        if panic { "panic" } else { "hang" }
    );
    std::thread::sleep(Duration::from_millis(wait_ms));
    if panic {
        write("/proc/sysrq-trigger", "c")?;
        Err(Error::runtime("the kernel survived sysrq c"))
    } else {
        write("/proc/sys/kernel/sched_rt_runtime_us", "-1")?;
        run_as_fifo(99)?;
        let until = Instant::now() + Duration::from_secs(seconds);
        // Instant::now reads the vDSO clock: no system call, no chance to reschedule.
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

fn write(path: &str, text: &str) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::runtime(format!("writing {text:?} to {path}: {e}")))
}
