//! Running a workload at a real-time priority, so that on one vCPU nothing in user space
//! that is not real-time (the agent included) runs until it blocks or ends.

use crate::Error;

/// Moves the calling thread to `SCHED_FIFO` at `priority` (1–99).
///
/// The kernel still throttles real-time tasks to `kernel.sched_rt_runtime_us` of every
/// second (950 ms by default) unless the caller lifts that itself.
pub fn run_as_fifo(priority: i32) -> Result<(), Error> {
    // SAFETY: sched_param is plain integers (musl's has more fields than glibc's);
    // all-zero is valid.
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // musl's sched_setscheduler is a stub (ENOSYS): make the system call itself.
    // SAFETY: the call reads a valid sched_param; pid 0 is this thread.
    if unsafe { libc::syscall(libc::SYS_sched_setscheduler, 0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(Error::runtime(format!(
            "sched_setscheduler(SCHED_FIFO, {priority}): {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
