//! guestscope's host side: boots (or attaches to) a guest, receives the agent's
//! event stream, and writes the trace and the report.
//!
//! Modules, in the order an event passes through them (each uses only the ones
//! above it, and the helpers):
//! - [`qemu`]: QEMU, its accelerator, serial console and vsock device (the VM).
//! - [`stream`]: the hybrid-vsock listener, the frames received, sequence accounting
//!   and the clock probes (collect).
//! - [`session`]: applies the stream's records, keeps the aggregates, writes each
//!   event's line as it arrives.
//! - [`run_files`]: `events.jsonl`, `stacks.jsonl` and `run.json`, each written and
//!   read through one type, for SQL engines.
//! - [`timeline`]: guest-to-host clock mapping.
//! - [`experiments`]: the lab's questions and claims, answered from the session
//!   (analyze).
//! - [`output`]: the summary model and what is written from it: `summary.json`,
//!   `report.md`, `report.html`, the Perfetto trace, `stacks.folded`.
//! - The commands, boot → collect → analyze → write: [`lab`] (one run, end to end;
//!   its own questions and the probe list's boot), [`attach`] (a VM started
//!   elsewhere), [`bench`](mod@bench) (`guestscope bench`), [`report_again`] (`guestscope
//!   report DIR`), [`probe_listing`] (`guestscope probes PATTERN`).
//!
//! Helpers: [`inputs`] (checks on user input, one clear error each), [`image`] (the
//! per-run initramfs layer), [`rootfs`] (`--rootfs`, `deploy`), [`host_program`]
//! (`-- CMD`), [`run_end`] (how a run ended), [`built_guest`] (the guest `cargo xtask`
//! built), [`probe_catalog`] (the cached probe lists), [`progress`] (the live line),
//! [`interrupt`] (Ctrl-C and SIGTERM), [`cli`] (the command line).
//!
//! Two crates of the workspace serve it and know nothing of guestscope's runs:
//! `qemu-gdb-client` (QEMU's gdbstub protocol) and `guestscope-guest-kernel`
//! (`guest_kernel`: kallsyms, BTF offsets, reads of the stopped kernel).
#![deny(missing_docs)]

pub mod attach;
pub mod bench;
pub mod built_guest;
pub mod cli;
pub mod experiments;
pub mod host_program;
pub mod image;
pub mod inputs;
pub mod interrupt;
pub mod lab;
pub mod output;
pub mod probe_catalog;
pub mod probe_listing;
pub mod progress;
pub mod qemu;
pub mod report_again;
pub mod rootfs;
pub mod run_end;
pub mod run_files;
pub mod session;
pub mod stream;
pub mod timeline;
