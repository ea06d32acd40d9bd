//! Kernel stacks: every probe record carries its event's frames (from `bpf_get_stack`);
//! the agent gives each distinct stack an id of its own and sends it once, as a `Stack`
//! record, before the first `Events` record that refers to it.
//!
//! Stacks are told apart by their full content (a hash map keyed by the frames), so two
//! stacks never share an id, and an id, once given, names the same stack for the whole
//! stream.
//!
//! A hit the probes' stack cache answered carries no frames, only the cache entry
//! ([`CachedEvent`]); the table remembers which stack id the walk that filled each
//! entry got, so such a hit costs one array read instead of a hash of its frames.

use hashbrown::HashTable;

use guestscope_common::{
    CacheSlot, CachedEvent, MAX_STACK_FRAMES, RawEvent, STACK_CACHE_ENTRIES,
    event::{NO_STACK, StackError, StackedEvent},
    maps::cache_entry_slot,
    wire::{Body, EventArgs, packed::PackedBatch},
};

use crate::stream::{Sink, Stream, StreamError};

/// Most distinct stacks one run may hold (a run of the built-in lab has about 500);
/// bounds the agent's memory at a few tens of MiB in the worst case.
pub const MAX_STACKS: usize = 1 << 16;

/// `stack_id` of an event whose walk reported a length that is not whole frames.
pub const BAD_LENGTH_ID: i32 = -libc::EINVAL;
/// `stack_id` of an event whose walk succeeded with no frame.
pub const EMPTY_ID: i32 = -libc::ENODATA;
/// `stack_id` of an event whose stack is new when [`MAX_STACKS`] are already known.
pub const TABLE_FULL_ID: i32 = -libc::ENOSPC;
/// `stack_id` of a cached hit whose cache entry no walk read so far filled (never
/// expected: a CPU's records arrive in the order its probes ran).
pub const UNKNOWN_SLOT_ID: i32 = -libc::ENOENT;
/// CPUs whose cache entries the table follows (a cached hit of a higher CPU number
/// gets [`UNKNOWN_SLOT_ID`]).
pub const MAX_CPUS: usize = 1024;

/// Why an event leaves the table without a stack id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoStack {
    /// The probe's walk failed; the probe counted it (`stack_failed`).
    #[error("{0}")]
    Failed(StackError),
    /// The probe recorded a stack the agent cannot use (empty, or a bad length).
    #[error("{0}")]
    Unusable(StackError),
    /// The stack is new and the table already holds [`MAX_STACKS`] stacks.
    #[error("more than {MAX_STACKS} distinct stacks")]
    TableFull,
    /// Stacks are off: the probe read nothing of the hit's stack (a short record naming
    /// no stack-cache entry, [`CacheSlot::NONE`]).
    #[error("stacks are off")]
    Off,
    /// A cached hit named a stack-cache entry that no walk read so far filled.
    #[error("a cached hit named stack-cache entry {index} of CPU {cpu}, which no walk filled")]
    UnknownCacheSlot {
        /// The hit's CPU.
        cpu: u32,
        /// The entry (or the raw tag when out of range).
        index: u32,
    },
}

/// What a stack-cache entry holds, as far as the agent is concerned: what the walk
/// that filled it resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotStack {
    outcome: Result<u32, NoStack>,
    /// [`stack_id`] of `outcome`, worked out once for all the entry's cached hits.
    id: i32,
    /// Whether the walk lacked the probed function's caller (put back).
    recovered: bool,
}

/// The hash of a stack's frames, its length included so a prefix hashes apart: a
/// multiply-rotate over 64-bit words, as rustc's FxHash. The standard SipHash resists
/// crafted keys, which kernel stacks are not, and costs several times more per event
/// under TCG.
fn frame_hash(frames: &[u64]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let add = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let h = frames.iter().fold(0, |h, &f| add(h, f));
    add(h, frames.len() as u64)
}

/// Whether two stacks are the same frames, compared a word at a time: the slices'
/// own `==` calls `memcmp`, which musl (the agent's libc) compares a byte at a time,
/// and which was a quarter of the agent's time per event.
fn same_frames(a: &[u64], b: &[u64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The stack ids given so far, and the new stacks not sent yet.
#[derive(Debug)]
pub struct StackTable {
    /// Each known stack's frames, at its id.
    stacks: Vec<Box<[u64]>>,
    /// The ids of the known stacks, found by [`frame_hash`] and [`same_frames`] of
    /// their frames.
    ids: HashTable<u32>,
    /// The stacks given an id and not sent yet, in id order.
    unsent: Vec<u32>,
    capacity: usize,
    callers_recovered: u64,
    /// What each stack-cache entry holds, at `cpu * STACK_CACHE_ENTRIES + index`
    /// (`None`: not filled yet); grows with the highest CPU seen.
    slots: Vec<Option<SlotStack>>,
}

impl Default for StackTable {
    fn default() -> Self {
        StackTable::with_capacity(MAX_STACKS)
    }
}

impl StackTable {
    /// A table that holds at most `capacity` distinct stacks.
    pub fn with_capacity(capacity: usize) -> Self {
        StackTable {
            stacks: Vec::new(),
            ids: HashTable::new(),
            unsent: Vec::new(),
            capacity,
            callers_recovered: 0,
            slots: Vec::new(),
        }
    }

    /// The id of the stack `frames`: the one it was given before, or the next free one
    /// (the stack is then queued to be sent).
    pub fn intern(&mut self, frames: &[u64]) -> Result<u32, NoStack> {
        let hash = frame_hash(frames);
        let stacks = &self.stacks;
        if let Some(&id) = self
            .ids
            .find(hash, |&id| same_frames(&stacks[id as usize], frames))
        {
            return Ok(id);
        }
        if self.stacks.len() >= self.capacity {
            return Err(NoStack::TableFull);
        }
        // Ids count up from 0; MAX_STACKS keeps them far below i32::MAX.
        let id = self.stacks.len() as u32;
        self.stacks.push(frames.into());
        let stacks = &self.stacks;
        self.ids
            .insert_unique(hash, id, |&id| frame_hash(&stacks[id as usize]));
        self.unsent.push(id);
        Ok(id)
    }

    /// The event of a probe record, its `stack_id` set: the stack's id, or a negative
    /// code saying why there is none (the walk's `-errno`, [`BAD_LENGTH_ID`],
    /// [`EMPTY_ID`], [`TABLE_FULL_ID`]). A walk that missed the probed function's
    /// caller gets it back first ([`guestscope_common::EntryCaller::recover`]).
    pub fn resolve(&mut self, record: &StackedEvent) -> (RawEvent, Result<u32, NoStack>) {
        // The buffer is made only for a walk that lacks its caller (every fentry and
        // kprobe event checks, few need it on an ORC kernel): zeroing 512 bytes per
        // event was a twentieth of the agent's time.
        let mut recovered = None;
        let mut put_back = false;
        let walk = record.frames().map(|frames| {
            if record.entry.missing_after(frames).is_none() {
                return frames;
            }
            let out = recovered.insert([0; MAX_STACK_FRAMES]);
            match record.entry.recover(frames, out) {
                Some(len) => {
                    put_back = true;
                    &out[..len]
                }
                None => frames,
            }
        });
        if put_back {
            self.callers_recovered += 1;
        }
        let outcome = match walk {
            Ok(frames) => self.intern(frames),
            Err(e @ StackError::Walk(_)) => Err(NoStack::Failed(e)),
            Err(e @ (StackError::BadLength(_) | StackError::Empty)) => Err(NoStack::Unusable(e)),
        };
        let id = stack_id(outcome);
        if let Some(index) = CacheSlot::index(record.cache_slot)
            && let Some(at) = slot_position(record.event.cpu, index)
        {
            if self.slots.len() <= at {
                let cpus = at / STACK_CACHE_ENTRIES as usize + 1;
                self.slots.resize(cpus * STACK_CACHE_ENTRIES as usize, None);
            }
            self.slots[at] = Some(SlotStack {
                outcome,
                id,
                recovered: put_back,
            });
        }
        let event = RawEvent {
            stack_id: id,
            ..record.event
        };
        (event, outcome)
    }

    /// The event of a cached hit, its `stack_id` set from [`StackTable::cached_stack`]
    /// (what the read loop packs, without making the event).
    #[cfg(test)]
    pub fn resolve_cached(&mut self, record: &CachedEvent) -> (RawEvent, Result<u32, NoStack>) {
        let (id, outcome) = self.cached_stack(record);
        let event = RawEvent {
            stack_id: id,
            ..record.event
        };
        (event, outcome)
    }

    /// The stack of a cached hit: the one the walk that filled the cache entry it names
    /// resolved to ([`NoStack::UnknownCacheSlot`] if none did), and the `stack_id` its
    /// event gets ([`stack_id`] of it, kept with the entry). No copy of the event is
    /// made: the agent's read loop packs the hit straight from the ring buffer.
    #[inline]
    pub fn cached_stack(&mut self, record: &CachedEvent) -> (i32, Result<u32, NoStack>) {
        if record.cache_slot == CacheSlot::NONE {
            return (NO_STACK, Err(NoStack::Off));
        }
        let cpu = record.event.cpu;
        let known = CacheSlot::index(record.cache_slot)
            .and_then(|index| slot_position(cpu, index))
            .and_then(|at| self.slots.get(at).copied().flatten());
        match known {
            Some(s) => {
                if s.recovered {
                    self.callers_recovered += 1;
                }
                (s.id, s.outcome)
            }
            None => (
                UNKNOWN_SLOT_ID,
                Err(NoStack::UnknownCacheSlot {
                    cpu,
                    index: CacheSlot::index(record.cache_slot).unwrap_or(record.cache_slot),
                }),
            ),
        }
    }

    /// Takes the stacks given an id since the last call, in id order.
    #[cfg(test)]
    pub fn take_unsent(&mut self) -> Vec<(u32, Vec<u64>)> {
        let unsent = std::mem::take(&mut self.unsent);
        unsent
            .into_iter()
            .map(|id| (id, self.stacks[id as usize].to_vec()))
            .collect()
    }

    /// Sends the stacks given an id since the last call, in id order, each as its
    /// `Stack` record (straight from the table: no copy of its frames); returns how
    /// many. After an error (the stream is broken then) the rest are dropped too.
    fn send_unsent<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<u64, StreamError> {
        let mut sent = 0;
        for id in self.unsent.drain(..) {
            stream.send_stack(id, &self.stacks[id as usize])?;
            sent += 1;
        }
        Ok(sent)
    }

    /// Events whose walk lacked the probed function's caller, which was put back.
    pub fn callers_recovered(&self) -> u64 {
        self.callers_recovered
    }

    /// Number of distinct stacks known.
    pub fn len(&self) -> usize {
        self.stacks.len()
    }

    /// Whether no stack is known yet.
    pub fn is_empty(&self) -> bool {
        self.stacks.is_empty()
    }
}

/// The `stack_id` an event gets for `outcome`: the stack's id, or the negative code of
/// why it has none.
fn stack_id(outcome: Result<u32, NoStack>) -> i32 {
    match outcome {
        // Ids stay below MAX_STACKS, far below i32::MAX.
        Ok(id) => id as i32,
        Err(NoStack::TableFull) => TABLE_FULL_ID,
        Err(NoStack::UnknownCacheSlot { .. }) => UNKNOWN_SLOT_ID,
        Err(NoStack::Off) => NO_STACK,
        Err(NoStack::Failed(e) | NoStack::Unusable(e)) => match e {
            StackError::Walk(errno) => errno,
            StackError::BadLength(_) => BAD_LENGTH_ID,
            StackError::Empty => EMPTY_ID,
        },
    }
}

/// Where entry `index` of CPU `cpu`'s stack cache is kept in [`StackTable`]'s slots,
/// in the tally book and in the `TALLIES` array ([`crate::tally_map`]): the probes'
/// layout of `TALLIES` ([`cache_entry_slot`], a row of entries per CPU), bounded here
/// by [`MAX_CPUS`] and the entries per CPU; `None` past them.
pub fn slot_position(cpu: u32, index: u32) -> Option<usize> {
    if cpu as usize >= MAX_CPUS || index >= STACK_CACHE_ENTRIES {
        return None;
    }
    cache_entry_slot(cpu, index).map(|slot| slot as usize)
}

/// What sending one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchSent {
    /// Events sent.
    pub events: u64,
    /// `Stack` records sent.
    pub stacks: u64,
}

/// Sends the stacks not sent yet, then the arguments of `events` that carry them
/// (`args`, one `Args` record), then `events` as one `Events` record (none when
/// `events` is empty): the host has both an event's stack and its arguments when the
/// event arrives.
///
/// Every event read is resolved against `table` just before it joins the batch, so the
/// new stacks of a batch are exactly the table's unsent ones: each goes out before the
/// first `Events` record that uses it.
pub fn send_batch<W: Sink>(
    events: &PackedBatch,
    args: Vec<EventArgs>,
    table: &mut StackTable,
    stream: &mut Stream<W>,
) -> Result<BatchSent, StreamError> {
    let mut sent = BatchSent {
        stacks: table.send_unsent(stream)?,
        ..BatchSent::default()
    };
    if !args.is_empty() {
        stream.send(Body::Args(args))?;
    }
    if events.is_empty() {
        return Ok(sent);
    }
    sent.events = events.len() as u64;
    stream.send_events(events)?;
    Ok(sent)
}

#[cfg(test)]
mod tests;
