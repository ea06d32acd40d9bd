//! Breakpoints whose condition (the current tgid) is decided on the host: what such a
//! breakpoint costs per hit ([`measure_condition`]) and the lab's gdb method of tracing
//! one kernel function for one process ([`trace_function`]).

use std::time::Instant;

use qemu_gdb_client::Client;

use guest_kernel::btf::TaskOffsets;
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{CurrentReader, KernelLayout, MemoryPath};

use super::hit_loop::{HitLoop, with_breakpoint};
use super::{Cr3Error, Cr3Options, ENTRY_SYMBOL, HitSample, Millis, StepOver};
/// The cost of a breakpoint whose condition (the current tgid) is decided on the host.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConditionCost {
    /// Hits examined.
    pub hits: u64,
    /// Hits of the process the condition asks for.
    pub matching: u64,
    /// How hits continued.
    pub step_over: StepOver,
    /// How the condition was read (the last hit's path).
    pub condition_path: Option<MemoryPath>,
    /// Mean round trips per hit (stop + condition + step-over).
    pub round_trips_per_hit: f64,
    /// From resume to the next stop.
    pub run_to_hit: Millis,
    /// From a stop to the next resume (host-side condition + step-over).
    pub handling: Millis,
    /// Resume to resume.
    pub per_hit: Millis,
    /// First hits' identities.
    pub samples: Vec<HitSample>,
    /// Wall time.
    pub elapsed_ms: f64,
}

/// Measures `hits` breakpoint hits on `entry_SYSCALL_64` with the tgid condition
/// evaluated host-side and every hit resumed (none is treated as the target).
/// `tgid` only counts matches. The client stays attached; the breakpoint is removed.
pub fn measure_condition(
    client: &mut Client,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    tgid: u32,
    hits: u64,
    opts: &Cr3Options,
) -> Result<ConditionCost, Cr3Error> {
    let entry = kallsyms
        .by_name(ENTRY_SYMBOL)
        .ok_or(Cr3Error::MissingSymbol(ENTRY_SYMBOL))?
        .addr;
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    with_breakpoint(client, entry, |client| {
        let mut l = HitLoop::new(opts);
        let start = Instant::now();
        while l.hits < hits {
            if start.elapsed() >= opts.timeout {
                break;
            }
            let Some(hit) = l.next_hit(client, &mut reader, entry)? else {
                break;
            };
            l.step_over(client, entry, &hit)?;
            l.last_path = Some(hit.ids.path);
        }
        let matching = l.samples_all.iter().filter(|t| **t == tgid).count() as u64;
        Ok(ConditionCost {
            hits: l.hits,
            matching,
            step_over: opts.step_over,
            condition_path: l.last_path,
            round_trips_per_hit: l.round_trips_per_hit(),
            run_to_hit: Millis::of(&l.run_to_hit),
            handling: Millis::of(&l.handling),
            per_hit: Millis::of(&l.per_hit),
            samples: l.samples,
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
        })
    })
}

/// What the lab's gdb method saw tracing one kernel function for one process: a
/// hardware breakpoint on the function, the tgid condition decided on the host at every
/// hit (through `current_task`, as in [`measure_condition`]), every hit resumed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FunctionTrace {
    /// The traced function.
    pub symbol: String,
    /// Its run-time address (KASLR included).
    pub address: u64,
    /// The process the condition asks for.
    pub tgid: u32,
    /// Hits the run stopped after (of `tgid`).
    pub expected: u64,
    /// Hits examined (every process).
    pub hits: u64,
    /// Hits of `tgid`.
    pub matching: u64,
    /// How hits continued.
    pub step_over: StepOver,
    /// Host seconds from the first hit of `tgid` to its last: the traced part of the
    /// workload, on the host clock (the guest's clock stops while the stub holds it).
    pub matching_span_s: f64,
    /// Mean round trips per hit.
    pub round_trips_per_hit: f64,
    /// From resume to the next stop.
    pub run_to_hit: Millis,
    /// From a stop to the next resume (host-side condition + step-over).
    pub handling: Millis,
    /// Resume to resume.
    pub per_hit: Millis,
    /// Wall time with the breakpoint in place.
    pub elapsed_ms: f64,
    /// What ended it: all expected hits seen, or which limit.
    pub ended: String,
}

/// Traces `symbol` for process `tgid` by the lab's gdb method until `expected` hits of
/// it were seen (or a hit timeout / the time limit in `opts`). The client stays
/// attached; the breakpoint is removed.
pub fn trace_function(
    client: &mut Client,
    kallsyms: &Kallsyms,
    symbol: &'static str,
    offsets: &TaskOffsets,
    tgid: u32,
    expected: u64,
    opts: &Cr3Options,
) -> Result<FunctionTrace, Cr3Error> {
    let address = kallsyms
        .by_name(symbol)
        .ok_or(Cr3Error::MissingSymbol(symbol))?
        .addr;
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    with_breakpoint(client, address, |client| {
        let mut l = HitLoop::new(opts);
        let start = Instant::now();
        let (mut first, mut last, mut matching) = (None, None, 0u64);
        let ended = loop {
            if matching >= expected {
                break "every expected hit";
            }
            if start.elapsed() >= opts.timeout {
                break "time limit";
            }
            let Some(hit) = l.next_hit(client, &mut reader, address)? else {
                break "no hit within the hit timeout";
            };
            if hit.ids.tgid == tgid {
                matching += 1;
                first.get_or_insert(hit.stopped);
                last = Some(hit.stopped);
            }
            l.step_over(client, address, &hit)?;
        };
        Ok(FunctionTrace {
            symbol: symbol.to_string(),
            address,
            tgid,
            expected,
            hits: l.hits,
            matching,
            step_over: opts.step_over,
            matching_span_s: match (first, last) {
                (Some(a), Some(z)) => (z - a).as_secs_f64(),
                _ => 0.0,
            },
            round_trips_per_hit: l.round_trips_per_hit(),
            run_to_hit: Millis::of(&l.run_to_hit),
            handling: Millis::of(&l.handling),
            per_hit: Millis::of(&l.per_hit),
            elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
            ended: ended.to_string(),
        })
    })
}
