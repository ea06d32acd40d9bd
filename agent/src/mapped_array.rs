//! An eBPF array of `u64` made with `BPF_F_MMAPABLE`, mapped into the agent's memory:
//! its slots read (and written) with plain atomic loads and stores instead of one
//! `bpf_map_lookup_elem` or `bpf_map_update_elem` system call each (tens of µs under
//! TCG). The probes write the same memory concurrently, so every access is atomic.

use std::{
    num::NonZeroUsize,
    os::fd::AsFd,
    ptr::NonNull,
    sync::atomic::{AtomicU8, AtomicU64, Ordering},
};

use aya::maps::{Map, MapData, MapError};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Why an array could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MappedArrayError {
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

/// How the agent may use a mapped array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Loads only.
    Read,
    /// Loads and stores.
    ReadWrite,
}

/// A mapping of a whole `u64` array, kept with the map it maps.
pub struct MappedArray {
    /// The map; the mapping keeps it alive in the kernel too, this keeps its fd.
    _map: MapData,
    /// Start of the mapping.
    base: NonNull<u8>,
    /// Slots mapped.
    slots: usize,
    /// Bytes mapped.
    len: NonZeroUsize,
    /// Whether stores are allowed.
    access: Access,
}

impl MappedArray {
    /// Maps the whole of `map` (an array of `u64` made with `BPF_F_MMAPABLE`).
    pub fn new(map: Map, access: Access) -> Result<MappedArray, MappedArrayError> {
        let Map::Array(map) = map else {
            return Err(MappedArrayError::NotArray);
        };
        let slots = map.info().map_err(MappedArrayError::Info)?.max_entries() as usize;
        let len = NonZeroUsize::new(slots * size_of::<u64>()).ok_or(MappedArrayError::Empty)?;
        let prot = match access {
            Access::Read => ProtFlags::PROT_READ,
            Access::ReadWrite => ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
        };
        // SAFETY: a new shared mapping of the map's fd at offset 0, of the array's size
        // (the kernel rounds it to pages); nothing else in this process uses that
        // address range.
        let base = unsafe { mmap(None, len, prot, MapFlags::MAP_SHARED, map.fd().as_fd(), 0) }
            .map_err(MappedArrayError::Mmap)?;
        Ok(MappedArray {
            _map: map,
            base: base.cast(),
            slots,
            len,
            access,
        })
    }

    /// Slots in the array.
    pub fn len(&self) -> usize {
        self.slots
    }

    /// Whether the array has no slot (never: [`MappedArray::new`] refuses one).
    pub fn is_empty(&self) -> bool {
        self.slots == 0
    }

    /// Slot `index` now (0 past the array).
    pub fn load(&self, index: usize) -> u64 {
        if index >= self.slots {
            return 0;
        }
        // SAFETY: slot `index` is within the mapping, which lives as long as `self`, and
        // 8-byte aligned (the mapping is page-aligned); it is only ever accessed
        // atomically (the probes' loads and stores are single instructions).
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().cast::<u64>().add(index)) }
            .load(Ordering::Relaxed)
    }

    /// Stores `value` in byte `byte` (0 to 7, memory order) of slot `index`; false past
    /// the array or in a read-only mapping.
    pub fn store_byte(&self, index: usize, byte: usize, value: u8) -> bool {
        if index >= self.slots || byte >= size_of::<u64>() || self.access != Access::ReadWrite {
            return false;
        }
        // SAFETY: the byte is within a writable mapping that lives as long as `self`,
        // and only ever accessed atomically (see `load`).
        unsafe { AtomicU8::from_ptr(self.base.as_ptr().add(index * size_of::<u64>() + byte)) }
            .store(value, Ordering::Relaxed);
        true
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of `len` bytes, not used after this.
        if let Err(e) = unsafe { munmap(self.base.cast(), self.len.get()) } {
            tracing::warn!("munmap of a mapped array: {e}");
        }
    }
}
