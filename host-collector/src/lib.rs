//! guestscope's host side: boots (or attaches to) a guest, receives the agent's
//! event stream, and writes the trace and the report.
//!
//! Modules, in the order an event passes through them:
//! - [`inputs`]: checks on user input, one clear error each.
//! - [`image`]: the per-run initramfs layer (run plan, user workloads).
//! - [`qemu`]: QEMU, its accelerator, serial console and vsock device.
//! - [`stream`]: the hybrid-vsock listener and sequence accounting.
//! - [`experiments`]: the lab's questions, answered from the collected data.
//! - [`timeline`]: guest-to-host clock mapping.
//! - [`session`]: applies the stream's records; writes `events.jsonl`.
//! - [`run_files`]: `events.jsonl`, `stacks.jsonl` and `run.json`, each written and
//!   read through one type, for SQL engines.
//! - [`output`]: `summary.json` and `report.md`.
//! - [`lab`]: one run, end to end.
//! - [`own_questions`]: the lab's side of `--probe`, `--snapshot-at` and `--read`.
//! - [`progress`]: the live line on a terminal while the workloads run.
//! - [`probe_catalog`]: the guest kernel's probe list, fetched once and cached (`probes`).
//! - [`probe_listing`]: what `guestscope probes PATTERN` prints from that list.
//! - [`attach`]: collect from a VM started outside guestscope.
//! - [`report_again`]: `guestscope report DIR`, a run folder's report rendered again.
//! - [`bench`]: the benchmarks (`guestscope bench`).
//! - [`rootfs`]: the user's own root file system image (`--rootfs`, `deploy`).
//! - [`run_end`]: how a run ended (one enum, shown as fixed text).
//! - [`built_guest`]: the guest `cargo xtask` built, the default `--kernel` and `--initrd`.
//! - [`cli`]: the command line.
//! - [`interrupt`]: Ctrl-C and SIGTERM stop a run cleanly.
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
pub mod own_questions;
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
