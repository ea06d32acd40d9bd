//! guestscope's eBPF programs.
//!
//! Every event probe follows the same path (see [`emit`]): drop the hit unless the
//! current process is in `TRACED_TGIDS`, skip it if another guestscope probe is already
//! running on this CPU, and write one [`guestscope_common::StackedEvent`] (the event and
//! its kernel stack, from `bpf_get_stack`) into the `EVENTS` ring buffer, counting every
//! outcome in `COUNTERS`.
//!
//! - [`map_value`]: a map value's fields read and written past the compiler.
//! - [`maps`]: the map definitions (names and sizes from `guestscope_common::maps`).
//! - [`emit`]: the shared filter / guard / stack / ring-buffer path.
//! - [`scratch`]: each CPU's working memory for one hit, claimed by the guard.
//! - [`staging`]: cached hits written to the ring buffer several at a time, and the
//!   `flush_staged` program the agent runs to write a CPU's out.
//! - [`spinlock`]: `_raw_spin_lock` (fentry, and a kprobe fallback).
//! - [`fd`]: `alloc_fd` (kprobe).
//! - [`fault`]: `exceptions:page_fault_user` and `exceptions:page_fault_kernel`.
//! - [`fork`]: `sched:sched_process_fork`, which adds a traced process's children.
//! - [`user`]: the kprobe and kretprobe the user points at functions of their choice.
#![no_std]
#![no_main]

mod emit;
mod entry_caller;
mod fault;
mod fd;
mod fork;
mod map_value;
mod maps;
mod scratch;
mod spinlock;
mod stack_cache;
mod staging;
mod task_name;
mod user;

/// The kernel lets only GPL-compatible programs call `bpf_get_stack`,
/// `bpf_probe_read_kernel` and attach as fentry; the object declares a dual licence.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // eBPF cannot unwind or abort; the verifier rejects any path that reaches here.
    loop {}
}
