//! Where the probes read a task's name from: `comm`'s offset in the running kernel's
//! `task_struct` (see [`guestscope_common::maps::TASK_COMM_OFFSET`]), found in its BTF
//! when the probes can read the name straight from the task.

use std::time::Instant;

use aya::util::KernelVersion;
use guestscope_common::maps::COMM_OFFSET_UNKNOWN;

use crate::btf_scan::member_offset;

/// The running kernel's BTF.
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// `comm`'s byte offset in the running kernel's `task_struct`, or
/// [`COMM_OFFSET_UNKNOWN`] (the probes then ask `bpf_get_current_comm`): on kernels
/// before 5.11 (no `bpf_get_current_task_btf`), without BTF, or if the offset is not a
/// multiple of 8 (the probes read the name as two words).
pub fn task_comm_offset() -> u32 {
    let unknown = |why: &str| {
        tracing::info!("the probes ask bpf_get_current_comm for task names: {why}");
        COMM_OFFSET_UNKNOWN
    };
    match KernelVersion::current() {
        Ok(v) if v >= KernelVersion::new(5, 11, 0) => {}
        Ok(v) => return unknown(&format!("kernel {v} has no bpf_get_current_task_btf")),
        Err(e) => return unknown(&format!("kernel version: {e}")),
    }
    let started = Instant::now();
    let raw = match std::fs::read(KERNEL_BTF) {
        Ok(raw) => raw,
        Err(e) => return unknown(&format!("{KERNEL_BTF}: {e}")),
    };
    let found = member_offset(&raw, "task_struct", "comm");
    drop(raw);
    match found {
        Ok(Some(offset)) if offset % 8 == 0 => {
            tracing::info!(
                offset,
                ms = started.elapsed().as_millis() as u64,
                "the probes read task names from task_struct.comm"
            );
            offset
        }
        Ok(Some(offset)) => unknown(&format!("task_struct.comm at {offset}, not word-aligned")),
        Ok(None) => unknown("no task_struct.comm in the kernel's BTF"),
        Err(e) => unknown(&format!("{KERNEL_BTF}: {e}")),
    }
}
