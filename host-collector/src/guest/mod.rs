//! Knowledge about the guest kernel gathered from what the agent sends.
//!
//! - [`kallsyms`]: the guest's `/proc/kallsyms`, for symbolizing kernel addresses
//!   at their run-time (KASLR-shifted) location.

pub mod btf;
pub mod kallsyms;
