//! Knowledge about the guest kernel: what the agent sends, and what the host reads
//! of the stopped kernel through QEMU's gdbstub ([`qemu_gdb_client`]).
//!
//! - [`kallsyms`]: the guest's `/proc/kallsyms`, for symbolizing kernel addresses
//!   at their run-time (KASLR-shifted) location.
//! - [`btf`]: struct member offsets from the guest's BTF.
//! - [`dwarf_lines`]: file:line and inlined frames of kernel addresses, from a vmlinux
//!   with DWARF.
//! - [`read_expr`]: `--read` expressions (`current->mm->pgd`, `arg0->f_path`, `$cr3`),
//!   resolved against the BTF and read from the stopped kernel.
//! - [`type_names`]: types spelled as C does, and function signatures from BTF.
//! - [`type_graph`]: the check that makes a BTF type table safe to walk.
//! - [`unwinder`]: which stack unwinder the kernel uses (ORC, frame pointers).
//! - [`page_fault`]: what a faulting access was, from the x86 error code.
//! - [`kernel`]: reads of a stopped x86_64 kernel: per-cpu base, page-table walks,
//!   the current task.

pub mod btf;
pub mod dwarf_lines;
pub mod kallsyms;
pub mod kernel;
pub mod page_fault;
pub mod read_expr;
pub mod type_graph;
pub mod type_names;
pub mod unwinder;
