//! The processes under study as the probes see them: `TRACED_TGIDS`, one byte per
//! thread-group id ([`guestscope_common::maps::TRACED_TGIDS`]), mapped into the agent's
//! memory. The fork probe sets its children's bytes in the same words meanwhile; a
//! byte store leaves the other bytes of a word alone, so neither side needs an atomic
//! read-modify-write.

use aya::maps::Map;
use guestscope_common::maps::{traced_in, traced_slot};

use crate::mapped_array::{Access, MappedArray, MappedArrayError};

/// A thread-group id past what the set covers (the kernel's `pid_max` when the probes
/// were loaded).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "pid {0} is past the pids the filter covers (the kernel's pid_max was raised after the probes were loaded)"
)]
pub struct PidOutOfRange(pub u32);

/// Memory of 8-byte words whose bytes can be stored one by one: the mapped array, or a
/// plain one in tests.
pub trait ByteWords {
    /// Words.
    fn words(&self) -> usize;
    /// Word `index` now (0 past the end).
    fn load(&self, index: usize) -> u64;
    /// Stores `value` in byte `byte` (memory order) of word `index`; false if it cannot.
    fn store_byte(&self, index: usize, byte: usize, value: u8) -> bool;
}

impl ByteWords for MappedArray {
    fn words(&self) -> usize {
        self.len()
    }

    fn load(&self, index: usize) -> u64 {
        MappedArray::load(self, index)
    }

    fn store_byte(&self, index: usize, byte: usize, value: u8) -> bool {
        MappedArray::store_byte(self, index, byte, value)
    }
}

/// The set, over its memory.
pub struct TracedSet<M = MappedArray>(M);

impl TracedSet {
    /// Maps `map` (an array of `u64` made with `BPF_F_MMAPABLE`) read-write.
    pub fn new(map: Map) -> Result<TracedSet, MappedArrayError> {
        MappedArray::new(map, Access::ReadWrite).map(TracedSet)
    }
}

impl<M: ByteWords> TracedSet<M> {
    /// Adds `tgid`.
    pub fn insert(&self, tgid: u32) -> Result<(), PidOutOfRange> {
        let (word, byte) = traced_slot(tgid);
        if self.0.store_byte(word as usize, byte as usize, 1) {
            Ok(())
        } else {
            Err(PidOutOfRange(tgid))
        }
    }

    /// Empties the set; returns how many ids it held. Words are read first and only
    /// the non-zero bytes of non-zero words written (a pid the fork probe adds while
    /// this runs may survive it, as with any filter cleared while processes fork).
    pub fn clear(&self) -> usize {
        let mut removed = 0;
        for word in 0..self.0.words() {
            let w = self.0.load(word);
            if w == 0 {
                continue;
            }
            for byte in 0..size_of::<u64>() {
                if traced_in(w, byte as u32) {
                    self.0.store_byte(word, byte, 0);
                    removed += 1;
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Plain words, little-endian bytes as on x86-64.
    struct Words(RefCell<Vec<u64>>);

    impl ByteWords for Words {
        fn words(&self) -> usize {
            self.0.borrow().len()
        }

        fn load(&self, index: usize) -> u64 {
            self.0.borrow().get(index).copied().unwrap_or(0)
        }

        fn store_byte(&self, index: usize, byte: usize, value: u8) -> bool {
            let mut w = self.0.borrow_mut();
            let Some(word) = w.get_mut(index) else {
                return false;
            };
            let mut bytes = word.to_le_bytes();
            bytes[byte] = value;
            *word = u64::from_le_bytes(bytes);
            true
        }
    }

    /// What the probes see (`is_traced` in probes-ebpf/src/maps.rs).
    fn probes_see(set: &TracedSet<Words>, tgid: u32) -> bool {
        let (word, byte) = traced_slot(tgid);
        traced_in(set.0.load(word as usize), byte)
    }

    #[test]
    fn pids_are_added_one_byte_each_and_cleared_together() {
        let set = TracedSet(Words(RefCell::new(vec![0; 4])));
        // Neighbours share a word; each keeps its own byte.
        for tgid in [1, 7, 8, 31] {
            set.insert(tgid).unwrap();
        }
        for tgid in 0..32 {
            assert_eq!(
                probes_see(&set, tgid),
                [1, 7, 8, 31].contains(&tgid),
                "{tgid}"
            );
        }
        // Past the pids covered: refused, and nothing else changes.
        assert_eq!(set.insert(32), Err(PidOutOfRange(32)));
        assert_eq!(set.clear(), 4);
        assert!((0..32).all(|t| !probes_see(&set, t)));
        assert_eq!(set.clear(), 0);
    }
}
