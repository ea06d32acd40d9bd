//! The `TALLIES` array mapped into the agent's memory: the probes' per-entry counts
//! ([`guestscope_common::maps::TALLIES`]) read with plain loads, not one
//! `bpf_map_lookup_elem` per entry (each a system call of tens of µs under TCG).

use std::{num::NonZeroUsize, os::fd::AsFd, ptr::NonNull};

use aya::maps::{Map, MapData, MapError};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Why the array could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum TallyMapError {
    /// The kernel's description of the map could not be read.
    #[error("reading the map's info: {0}")]
    Info(#[source] MapError),
    /// The map is not a plain array.
    #[error("not an array map")]
    NotArray,
    /// The map is empty.
    #[error("the map has no entries")]
    Empty,
    /// `mmap` failed (a map without `BPF_F_MMAPABLE`, say).
    #[error("mmap: {0}")]
    Mmap(#[source] nix::Error),
}

/// A read-only mapping of `TALLIES`, kept with the map it maps.
pub struct TallyMap {
    /// The map; the mapping keeps it alive in the kernel too, this keeps its fd.
    _map: MapData,
    /// Start of the mapping.
    base: NonNull<u64>,
    /// Slots mapped.
    slots: usize,
    /// Bytes mapped.
    len: NonZeroUsize,
}

impl TallyMap {
    /// Maps the whole of `map` (an array of `u64` made with `BPF_F_MMAPABLE`) read-only.
    pub fn new(map: Map) -> Result<TallyMap, TallyMapError> {
        let Map::Array(map) = map else {
            return Err(TallyMapError::NotArray);
        };
        let slots = map.info().map_err(TallyMapError::Info)?.max_entries() as usize;
        let len = NonZeroUsize::new(slots * size_of::<u64>()).ok_or(TallyMapError::Empty)?;
        // SAFETY: a new shared, read-only mapping of the map's fd at offset 0, of the
        // array's size (the kernel rounds it to pages); nothing else in this process
        // uses that address range.
        let base = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                map.fd().as_fd(),
                0,
            )
        }
        .map_err(TallyMapError::Mmap)?;
        Ok(TallyMap {
            _map: map,
            base: base.cast(),
            slots,
            len,
        })
    }

    /// The count of entry `index` of `cpu` now; 0 outside the array.
    pub fn get(&self, cpu: u32, index: u32) -> u64 {
        let Some(slot) = crate::tallies::position(cpu, index).filter(|&s| s < self.slots) else {
            return 0;
        };
        // SAFETY: `slot` is within the mapping, which lives as long as `self`; the
        // probes write the slot concurrently, so it is read volatile (an aligned u64
        // load is whole on x86-64).
        unsafe { self.base.add(slot).read_volatile() }
    }
}

impl Drop for TallyMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of `len` bytes, not used after this.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.len.get()) } {
            tracing::warn!("munmap of TALLIES: {e}");
        }
    }
}
