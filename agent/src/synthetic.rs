//! The synthetic producer ([`Tracing::Synthetic`]): events made by the agent itself,
//! sent through everything a probe's event goes through after the ring buffer (the
//! stack table, the batches, the stream, the link), as fast as the link takes them.
//! What it measures is the pipeline's own ceiling, with eBPF and a workload out of
//! it; the host sees a workload named as in the plan whose events carry a few
//! distinct kernel-like stacks. The records come as the probes make them with their
//! stack cache on (the default): one in [`WALK_EVERY`] with its walked stack (kept in
//! a cache entry, which the agent notes), the others naming that entry, staged in runs
//! of up to [`STAGED_EVENTS`] a record.
//!
//! [`Tracing::Synthetic`]: guestscope_common::plan::Tracing::Synthetic

use std::time::{Duration, Instant};

use guestscope_common::{
    CacheSlot, CachedEvent, EntryCaller, MAX_STACK_FRAMES, ProbeKind, RawEvent, STAGED_EVENTS,
    StackedEvent,
    wire::{Body, WorkloadExited, WorkloadStarted},
};

use crate::{
    clock::monotonic_ns,
    ringbuf::Record,
    stream::{Sink, Stream, StreamError},
    tracer::Tracer,
};

use guestscope_common::plan::{
    SYNTHETIC_FRAMES as FRAMES, SYNTHETIC_STACKS as STACKS, SYNTHETIC_WALK_EVERY as WALK_EVERY,
};

/// Events made between two reads of the clock and two services of the link.
const CHUNK: u64 = 1024;

/// Longest wait for the link to take the last events.
const WRITE_OUT_LIMIT: Duration = Duration::from_secs(60);

/// The walked record of synthetic event `i`: a spin_lock hit of the agent itself with
/// stack `i % STACKS` (kept in cache entry `i % STACKS` of CPU 0), at `ts_ns`.
pub fn record(i: u64, pid: u32, ts_ns: u64) -> StackedEvent {
    let stack = (i % STACKS as u64) as usize;
    let mut ips = [0u64; MAX_STACK_FRAMES];
    for (f, ip) in ips.iter_mut().take(FRAMES).enumerate() {
        // Kernel-text-like addresses, distinct per stack and frame.
        *ip = 0xffff_ffff_8100_0000 + ((stack as u64) << 16) + ((f as u64) << 8) + 5;
    }
    StackedEvent {
        event: RawEvent {
            arg: 0xffff_8880_0000_0000 + i % 64,
            ..RawEvent::new(ProbeKind::SpinLock, pid, ts_ns).with_comm("synthetic")
        },
        stack_bytes: (FRAMES * 8) as i32,
        cache_slot: CacheSlot::tag(stack as u32),
        entry: EntryCaller::default(),
        replaced_tally: 0,
        ips,
    }
}

/// Sends `events` synthetic events as workload `name` (its start and exit records
/// around them), timed from the first until the link has taken the last; returns its
/// exit record (with the time in its summary line; status 1 if the link did not take
/// them all within a minute) and how long the final flush took.
pub fn produce<W: Sink>(
    name: &str,
    events: u64,
    tracer: &mut Tracer,
    stream: &mut Stream<W>,
) -> Result<(WorkloadExited, Duration), StreamError> {
    let pid = std::process::id();
    let start_ns = monotonic_ns();
    stream.send(Body::WorkloadStarted(WorkloadStarted {
        name: name.to_string(),
        pid,
        argv: vec![format!("(synthetic: {events} events)")],
        start_ns,
    }))?;
    // One record per stack, made once: what is measured is the pipeline, not the
    // making of 608-byte records.
    let mut records: Vec<StackedEvent> = (0..STACKS as u64).map(|i| record(i, pid, 0)).collect();
    let cached: Vec<CachedEvent> = records
        .iter()
        .map(|r| CachedEvent {
            event: r.event,
            cache_slot: r.cache_slot,
            _pad: 0,
        })
        .collect();
    // The cached hits come in runs, as the probes stage them (`STAGED_EVENTS` a
    // record), cut short where a walked hit comes between.
    let mut run: Vec<CachedEvent> = Vec::with_capacity(STAGED_EVENTS);
    let started = Instant::now();
    let mut i = 0;
    while i < events {
        let (now, ts_ns) = (Instant::now(), monotonic_ns());
        let end = (i + CHUNK).min(events);
        for n in i..end {
            let stack = (n % STACKS as u64) as usize;
            // Each stack's first event, and one in WALK_EVERY, is walked.
            if n < STACKS as u64 || n % WALK_EVERY == 0 {
                if !run.is_empty() {
                    tracer.inject(Record::Cached(&run), now, stream)?;
                    run.clear();
                }
                let r = &mut records[stack];
                r.event.ts_ns = ts_ns + (n - i);
                tracer.inject(Record::Walked(r), now, stream)?;
            } else {
                let mut c = cached[stack];
                c.event.ts_ns = ts_ns + (n - i);
                run.push(c);
                if run.len() == STAGED_EVENTS {
                    tracer.inject(Record::Cached(&run), now, stream)?;
                    run.clear();
                }
            }
        }
        if !run.is_empty() {
            tracer.inject(Record::Cached(&run), now, stream)?;
            run.clear();
        }
        i = end;
        stream.service();
    }
    let flushed = Instant::now();
    tracer.flush_batch(stream)?;
    // Timed until the last byte is on the link: what the host could not take yet is
    // still queued in the agent, and the ceiling is the rate at which it takes them.
    let written = stream.write_out(WRITE_OUT_LIMIT);
    let elapsed = started.elapsed();
    let flush = flushed.elapsed();
    let exited = WorkloadExited {
        name: name.to_string(),
        pid,
        status: if written { 0 } else { 1 },
        end_ns: monotonic_ns(),
        // The summary line every measuring workload prints.
        output: format!(
            "{{\"workload\":\"synthetic\",\"events\":{events},\"elapsed_ns\":{},\"written_out\":{written}}}\n",
            elapsed.as_nanos()
        ),
        timed_out: false,
    };
    Ok((exited, flush))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hands each written frame's buffer back, as the link does on acknowledgement.
    struct Recycling(Vec<Vec<u8>>);
    impl crate::stream::Sink for Recycling {
        fn send_frame(
            &mut self,
            _seq: u64,
            mut frame: Vec<u8>,
            _events: &[u64; guestscope_common::ProbeKind::COUNT],
        ) -> std::io::Result<()> {
            std::hint::black_box(&frame);
            frame.clear();
            self.0.push(frame);
            Ok(())
        }
        fn spare_frame(&mut self) -> Vec<u8> {
            self.0.pop().unwrap_or_default()
        }
    }

    /// The agent's own cost per event, natively, with a stream that discards its
    /// frames (no link, no socket): where the pipeline's time goes, for profiling
    /// (`perf record` on the test binary).
    #[test]
    #[ignore = "a measurement: cargo test --release -p guestscope-agent synthetic_cost -- --ignored --nocapture"]
    fn synthetic_cost() {
        let mut tracer = Tracer::inactive();
        let mut stream = Stream::new(Recycling(Vec::new()));
        let n = 2_000_000;
        let t = Instant::now();
        let (exited, _) = produce("cost", n, &mut tracer, &mut stream).unwrap();
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        eprintln!(
            "{ns:.0} ns per event natively; {} bytes of stream",
            stream.bytes()
        );
        assert_eq!(exited.status, 0);
    }

    /// Most events name a cache entry; every one of them still gets its stack.
    #[test]
    fn cached_records_get_the_stack_their_entry_was_walked_with() {
        let mut tracer = Tracer::inactive();
        let mut stream = Stream::new(Recycling(Vec::new()));
        let n = 1000;
        let (exited, _) = produce("cached", n, &mut tracer, &mut stream).unwrap();
        assert_eq!(exited.status, 0);
        let totals = tracer.totals();
        assert_eq!(totals.events_read, n);
        assert_eq!(totals.stacks_missing, 0, "every cached record resolved");
    }

    #[test]
    fn events_cycle_through_a_few_whole_stacks() {
        let frames = |i| record(i, 7, 0).frames().unwrap().to_vec();
        assert_eq!(frames(0).len(), FRAMES);
        assert_eq!(frames(0), frames(STACKS as u64));
        let distinct: std::collections::BTreeSet<Vec<u64>> = (0..100).map(frames).collect();
        assert_eq!(distinct.len(), STACKS);
        let e = record(3, 7, 42).event;
        assert_eq!(
            (e.pid, e.ts_ns, e.probe()),
            (7, 42, Some(ProbeKind::SpinLock))
        );
    }
}
