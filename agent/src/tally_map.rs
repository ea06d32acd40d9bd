//! The `TALLIES` array mapped into the agent's memory: the probes' per-entry counts
//! ([`guestscope_common::maps::TALLIES`]) read with plain loads, not one
//! `bpf_map_lookup_elem` per entry (each a system call of tens of µs under TCG).

use aya::maps::Map;

use crate::mapped_array::{Access, MappedArray, MappedArrayError};

/// A read-only mapping of `TALLIES`.
pub struct TallyMap(MappedArray);

impl TallyMap {
    /// Maps the whole of `map` (an array of `u64` made with `BPF_F_MMAPABLE`) read-only.
    pub fn new(map: Map) -> Result<TallyMap, MappedArrayError> {
        MappedArray::new(map, Access::Read).map(TallyMap)
    }

    /// The count of entry `index` of `cpu` now; 0 outside the array.
    pub fn get(&self, cpu: u32, index: u32) -> u64 {
        crate::stacks::slot_position(cpu, index).map_or(0, |slot| self.0.load(slot))
    }
}
