//! The running trace: the pid filter, and the pump that moves events from the ring
//! buffer into `Stack` and `Events` records.
//!
//! A [`Tracer`] may be inactive (the probes could not be loaded); every method then
//! does nothing, so workloads still run and the stream still completes.

use std::{
    os::fd::BorrowedFd,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray},
};
use guestscope_common::{ProbeCounters, wire::Totals};

use crate::{
    batch::{Batcher, MAX_AGE},
    counters,
    probes::Loaded,
    ringbuf::{EventReader, Read},
    stacks::{NoStack, StackTable, send_batch},
    stream::{Sink, Stream, StreamError},
};

/// Most ring-buffer records read in one [`Tracer::pump`] call, so a flood of events
/// cannot starve the rest of the loop (child exit, output pipe).
const PUMP_BUDGET: usize = 64 * 1024;

/// The pid filter could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// Inserting a pid into `TRACED_PIDS` failed.
    #[error("adding pid {pid} to TRACED_PIDS: {source}")]
    Insert {
        /// The pid.
        pid: u32,
        /// What failed.
        #[source]
        source: MapError,
    },
    /// Removing pids from `TRACED_PIDS` failed.
    #[error("clearing TRACED_PIDS: {0}")]
    Clear(#[source] MapError),
}

struct Active {
    /// Keeps the programs attached.
    _ebpf: Ebpf,
    events: EventReader<MapData>,
    traced: HashMap<MapData, u32, u8>,
    counters: PerCpuArray<MapData, ProbeCounters>,
}

/// The pid filter and the event pump.
pub struct Tracer {
    active: Option<Active>,
    batch: Batcher,
    stacks: StackTable,
    totals: Totals,
}

impl Tracer {
    /// A tracer over loaded (and attached) probes.
    pub fn new(loaded: Loaded) -> Tracer {
        let Loaded { ebpf, maps } = loaded;
        let active = Active {
            _ebpf: ebpf,
            events: EventReader::new(maps.events),
            traced: maps.traced,
            counters: maps.counters,
        };
        Tracer { active: Some(active), ..Tracer::inactive() }
    }

    /// A tracer without probes: nothing is filtered or read.
    pub fn inactive() -> Tracer {
        Tracer {
            active: None,
            batch: Batcher::default(),
            stacks: StackTable::default(),
            totals: Totals::default(),
        }
    }

    /// Whether probes are loaded.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// The ring buffer's fd (readable when events wait), if active.
    pub fn ring_fd(&self) -> Option<BorrowedFd<'_>> {
        self.active.as_ref().map(|a| a.events.fd())
    }

    /// Starts tracing process `pid` (and, through the fork probe, its children).
    pub fn trace(&mut self, pid: u32) -> Result<(), FilterError> {
        let Some(a) = self.active.as_mut() else { return Ok(()) };
        a.traced.insert(pid, 1, 0).map_err(|source| FilterError::Insert { pid, source })
    }

    /// Stops tracing every process (the workload and all the descendants the fork probe
    /// added); returns how many pids were removed.
    pub fn untrace_all(&mut self) -> Result<usize, FilterError> {
        let Some(a) = self.active.as_mut() else { return Ok(0) };
        let pids = a.traced.keys().collect::<Result<Vec<u32>, _>>().map_err(FilterError::Clear)?;
        let mut removed = 0;
        for pid in pids {
            match a.traced.remove(&pid) {
                Ok(()) => removed += 1,
                // Gone already (e.g. removed concurrently): fine.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(FilterError::Clear(e)),
            }
        }
        Ok(removed)
    }

    /// How long the caller may sleep before the current batch is due.
    pub fn poll_timeout(&self, now: Instant) -> Duration {
        match self.batch.deadline() {
            Some(d) => d.saturating_duration_since(now),
            None => MAX_AGE,
        }
    }

    /// Reads the records that are ready (up to a budget) and sends every batch that is
    /// full or old enough.
    /// A quiet stream gets a heartbeat, so the collector can tell an idle workload from a
    /// hung guest.
    pub fn pump<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        self.read(stream, PUMP_BUDGET)?;
        if self.batch.is_due(Instant::now()) {
            self.flush(stream)?;
        }
        stream.heartbeat_if_idle()?;
        stream.service();
        Ok(())
    }

    /// Reads the ring buffer until it is empty and sends everything.
    pub fn drain<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        while self.read(stream, PUMP_BUDGET)? == PUMP_BUDGET {}
        self.flush(stream)
    }

    /// Reads up to `budget` records; returns how many were read.
    fn read<W: Sink>(
        &mut self,
        stream: &mut Stream<W>,
        budget: usize,
    ) -> Result<usize, StreamError> {
        let mut n = 0;
        while n < budget {
            let Some(a) = self.active.as_mut() else { break };
            let Some(read) = a.events.read_next() else { break };
            n += 1;
            match read {
                Read::Event(record) => {
                    self.totals.events_read += 1;
                    let (e, stack) = self.stacks.resolve(&record);
                    match stack {
                        Ok(_) | Err(NoStack::Failed(_)) => {}
                        Err(why @ (NoStack::Unusable(_) | NoStack::TableFull)) => {
                            if self.totals.stacks_missing == 0 {
                                tracing::warn!("an event without its stack: {why}");
                            }
                            self.totals.stacks_missing += 1;
                        }
                    }
                    if self.batch.push(e, Instant::now()) {
                        self.flush(stream)?;
                    }
                }
                Read::Malformed(len) => {
                    self.totals.events_malformed += 1;
                    tracing::warn!(len, "skipping a ring-buffer record of the wrong size");
                }
            }
        }
        Ok(n)
    }

    /// Sends the waiting batch, preceded by the stacks it introduces.
    fn flush<W: Sink>(&mut self, stream: &mut Stream<W>) -> Result<(), StreamError> {
        let events = self.batch.take();
        let sent = send_batch(events, &mut self.stacks, stream)?;
        self.totals.events_sent += sent.events;
        self.totals.stacks_sent += sent.stacks;
        Ok(())
    }

    /// The run's totals: the probes' counters summed over CPUs, and the agent's counts.
    pub fn totals(&self) -> Totals {
        Totals {
            probes: counters::read_all(self.active.as_ref().map(|a| &a.counters)),
            ..self.totals.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inactive_tracer_runs_workloads_without_records() {
        let mut tracer = Tracer::inactive();
        let mut stream = Stream::new(Vec::new());
        assert!(!tracer.is_active());
        assert!(tracer.ring_fd().is_none());
        tracer.trace(42).unwrap();
        assert_eq!(tracer.untrace_all().unwrap(), 0);
        tracer.pump(&mut stream).unwrap();
        tracer.drain(&mut stream).unwrap();
        assert_eq!(stream.records(), 0);
        assert_eq!(tracer.poll_timeout(Instant::now()), MAX_AGE);
        let totals = tracer.totals();
        assert_eq!(totals.probes.len(), guestscope_common::ProbeKind::ALL.len());
        assert_eq!(totals.events_sent, 0);
    }
}
