//! The one definition of every type that crosses a boundary in guestscope.
//!
//! - [`event`]: the fixed-layout records the eBPF probes write into the ring buffer
//!   and the counters they keep (eBPF ↔ agent). `no_std`, `#[repr(C)]`.
//! - [`cached_event`]: the short records of a hit the probes' stack cache answered.
//! - [`maps`]: the names and sizes of the eBPF maps both sides refer to.
//! - [`wire`] (feature `std`): the versioned, framed stream the agent sends to the
//!   host collector over vsock (guest ↔ host), with its decoder.
//! - [`plan`] (feature `std`): what the host asks the agent to run (host → guest).
//! - [`user_probe`] (feature `std`): the probes the user names (`--probe kprobe:FUNC`).
//! - [`probe_list`] (feature `std`): what a kernel lets those probes attach to.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]

pub mod cached_event;
pub mod event;
pub mod maps;
#[cfg(feature = "std")]
pub mod plan;
pub mod probe_counters;
pub mod probe_kind;
#[cfg(feature = "std")]
pub mod probe_list;
#[cfg(feature = "std")]
pub mod user_probe;
#[cfg(feature = "std")]
pub mod wire;

pub use cached_event::{
    CacheSlot, CachedArgsEvent, CachedEvent, STACK_CACHE_ENTRIES, STAGED_EVENTS,
};
pub use event::{EntryCaller, MAX_STACK_FRAMES, ProbeCounters, ProbeKind, RawEvent, StackedEvent};
