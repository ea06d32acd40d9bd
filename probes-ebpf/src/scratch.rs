//! This CPU's working memory for the hit being handled, found with one map lookup per
//! hit and claimed for the hit's length: the event waiting for its stack
//! ([`Pending`]), the stack cache's search ([`Search`]), the cached hits staged for
//! the ring buffer ([`Staged`]), and what never changes for a
//! CPU (its id, the ring buffer's size), asked of the kernel once.
//!
//! Every helper call costs tens of nanoseconds under TCG, and a cached spin-lock hit
//! made eight of them for these alone: a flag, the pending event, the search (three
//! times), the CPU's id, the ring's size.
//!
//! The claim is also the guard against nesting: `_raw_spin_lock` is taken inside
//! helpers and map updates, so without it the spin-lock probe would record the probes
//! themselves, and a nested stack walk would compete with the outer one for the
//! kernel's per-CPU callchain buffer and this CPU's scratch.

use aya_ebpf::{
    bindings::BPF_RB_RING_SIZE, helpers::bpf_get_smp_processor_id, macros::map, maps::PerCpuArray,
};

use crate::{emit::Pending, maps::EVENTS, stack_cache::Search, staging::Staged};

/// One CPU's scratch.
#[repr(C)]
pub struct Scratch {
    /// Non-zero while a guestscope probe runs on this CPU.
    busy: u32,
    /// This CPU's id plus one; 0 until first asked.
    cpu_plus_one: u32,
    /// The `EVENTS` ring's data size in bytes; 0 until first asked.
    ring_bytes: u64,
    /// The event being recorded.
    pending: Pending,
    /// The stack cache's search and lookups.
    search: Search,
    /// Cached hits waiting to be written to the ring buffer together.
    staged: Staged,
}

/// Every CPU's [`Scratch`].
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's scratch, claimed until dropped.
pub struct Claim(*mut Scratch);

/// Why [`Claim::take`] did not return a claim.
pub enum NotClaimed {
    /// Another guestscope probe is running on this CPU.
    Nested,
    /// The per-CPU slot could not be looked up (never expected).
    NoSlot,
}

impl Claim {
    /// Claims this CPU's scratch, unless another guestscope probe holds it.
    #[inline(always)]
    pub fn take() -> Result<Claim, NotClaimed> {
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(NotClaimed::NoSlot)?;
        // SAFETY: `scratch` points at this CPU's slot of a per-CPU array, valid for the
        // program's run; programs run with migration disabled, so no other CPU touches
        // it, and a nested probe on this CPU sees the flag and leaves.
        unsafe {
            if (*scratch).busy != 0 {
                return Err(NotClaimed::Nested);
            }
            (*scratch).busy = 1;
        }
        Ok(Claim(scratch))
    }

    /// The event being recorded.
    #[inline(always)]
    pub fn pending(&self) -> *mut Pending {
        // SAFETY: see `take`; a field's address, nothing read.
        unsafe { &raw mut (*self.0).pending }
    }

    /// The stack cache's search.
    #[inline(always)]
    pub fn search(&self) -> *mut Search {
        // SAFETY: see `take`; a field's address, nothing read.
        unsafe { &raw mut (*self.0).search }
    }

    /// The cached hits staged on this CPU.
    #[inline(always)]
    pub fn staged(&self) -> *mut Staged {
        // SAFETY: see `take`; a field's address, nothing read.
        unsafe { &raw mut (*self.0).staged }
    }

    /// This CPU's id.
    #[inline(always)]
    pub fn cpu(&self) -> u32 {
        // SAFETY: see `take`; the slot is this CPU's, so its id never changes.
        unsafe {
            let known = (*self.0).cpu_plus_one;
            if known != 0 {
                return known - 1;
            }
            let cpu = bpf_get_smp_processor_id();
            (*self.0).cpu_plus_one = cpu + 1;
            cpu
        }
    }

    /// The `EVENTS` ring's data size in bytes (fixed when the agent loads the object).
    #[inline(always)]
    pub fn ring_bytes(&self) -> u64 {
        // SAFETY: see `take`.
        unsafe {
            let known = (*self.0).ring_bytes;
            if known != 0 {
                return known;
            }
            let bytes = EVENTS.query(u64::from(BPF_RB_RING_SIZE));
            (*self.0).ring_bytes = bytes;
            bytes
        }
    }
}

impl Drop for Claim {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: see `take`; the pointer stays valid for the program's run.
        unsafe { (*self.0).busy = 0 }
    }
}
