//! Stops the user asks for: `--snapshot-at FUNCTION` puts a hardware breakpoint on
//! each function while a workload runs, and at each hit whose task passes the
//! condition (the workload's process, or `--snapshot-comm NAME`) the collector reads
//! the registers, `current` and every `--read` expression through the gdbstub —
//! the lab's `break FUNC if $lx_current().pid == N`, `p $lx_current().comm`, with the
//! condition decided on the host, so it needs nothing of the guest kernel.
//!
//! Hits that fail the condition are stepped over. Each stop is a hold on the one time
//! line (the run's [`SnapshotRun::holds`]), and each stop is cross-checked against the
//! eBPF events like the built-in snapshots ([`super::snapshots::cross_check`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use guest_kernel::btf::{Btf, TaskOffsets};
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{Access, CurrentReader, CurrentTask, KernelLayout};
use guest_kernel::read_expr::{Memory, ReadExpr, Stop};
use qemu_gdb_client::{Client, GdbEndpoint, ThreadId};

use super::guest_ticks::TickSymbols;
use super::snapshots::{ReadValue, SNAPSHOT_REGISTERS, Snapshot, SnapshotRun, since, with_client};
use super::syscall_cr3::Cr3Error;

/// Most stop sites: x86 has four debug registers for hardware breakpoints.
pub const MAX_SITES: usize = 4;

/// Which stops are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The task's process is this one (the workload).
    Tgid(u32),
    /// The task's `comm` is this name (any process).
    Comm(String),
}

/// What to stop at and what to read there.
#[derive(Clone, Debug)]
pub struct StopsRequest {
    /// Functions to stop at.
    pub sites: Vec<String>,
    /// Expressions read at every stop.
    pub reads: Vec<ReadExpr>,
    /// Stops kept per site.
    pub per_site: usize,
    /// Which hits are kept.
    pub condition: Condition,
    /// Hits that fail the condition before giving up.
    pub max_other_hits: u64,
    /// How often `done` is looked at while the target runs between hits (the target is
    /// not stopped for it).
    pub hit_timeout: Duration,
    /// When the workload's start arrived and how long the agent holds it before its
    /// exec: breakpoints that go in later may have missed its first calls, and the run
    /// says so in its `ended`.
    pub hold: Option<(Instant, Duration)>,
}

/// The stopped kernel's memory, through the gdbstub and the page-table walk.
struct GdbMemory<'a> {
    client: &'a mut Client,
    reader: &'a mut CurrentReader,
}

impl Memory for GdbMemory<'_> {
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        self.reader
            .read_kernel(self.client, addr, len, Access::Auto)
            .map(|(bytes, _)| bytes)
            .map_err(|e| e.to_string())
    }
}

/// Connects to the gdbstub, stops at `req.sites` until each has `req.per_site` stops
/// or `done` is set (the workload ended), and detaches. Host times are measured from
/// `launched`.
pub fn take(
    gdb: GdbEndpoint,
    kallsyms: &Kallsyms,
    btf: &Btf,
    offsets: &TaskOffsets,
    req: &StopsRequest,
    launched: Instant,
    done: &AtomicBool,
) -> Result<SnapshotRun, Cr3Error> {
    // QEMU holds the VM from the connect on: the workload's hold stops counting then.
    let late = req
        .hold
        .and_then(|(arrived, hold)| late_by(arrived.elapsed(), hold));
    let mut run = with_client(gdb, launched, |client| {
        take_on(client, kallsyms, btf, offsets, req, launched, done)
    })?;
    if let Some(late) = late {
        tracing::warn!("the stops of {:?}: {late}", req.condition);
        run.ended = format!("{} ({late})", run.ended);
    }
    Ok(run)
}

/// What to say of stops whose gdbstub connection came `after` the workload's start
/// arrived, when that is past its `hold` before exec (`None`: in time).
fn late_by(after: Duration, hold: Duration) -> Option<String> {
    (after > hold).then(|| {
        format!(
            "the gdbstub held the VM {} ms after the workload's start arrived, past its \
             {} ms hold before exec: its first calls may have run before the breakpoints",
            after.as_millis(),
            hold.as_millis()
        )
    })
}

fn take_on(
    client: &mut Client,
    kallsyms: &Kallsyms,
    btf: &Btf,
    offsets: &TaskOffsets,
    req: &StopsRequest,
    launched: Instant,
    done: &AtomicBool,
) -> Result<SnapshotRun, Cr3Error> {
    let mut sites: Vec<(String, u64, usize)> = Vec::new();
    for name in &req.sites {
        let sym = kallsyms
            .by_name(name)
            .ok_or_else(|| Cr3Error::NoFunction(name.clone()))?;
        sites.push((name.clone(), sym.addr, 0));
    }
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    if client.is_running() {
        client.interrupt()?;
    }
    for (_, addr, _) in &sites {
        client.insert_hw_breakpoint(*addr)?;
    }
    tracing::debug!(
        at_ms = launched.elapsed().as_millis() as u64,
        sites = ?req.sites,
        "the stops' breakpoints are in"
    );
    let guest = Guest {
        launched,
        kallsyms,
        btf,
        ticks_at: TickSymbols::find(kallsyms),
    };
    // From here on a failure of the gdbstub ends the run but keeps what it took: the
    // error goes in `ended`.
    let mut taken = Taken::default();
    let looped = stop_loop(
        client,
        &mut reader,
        &guest,
        req,
        &mut sites,
        done,
        &mut taken,
    );
    // The VM is stopped and the breakpoints left are removed by the detach
    // (`with_client`), which keeps this run if it fails.
    let ended = match looped {
        Ok(why) => why.to_string(),
        Err(e) => {
            tracing::warn!("the stops ended on a gdbstub error: {e}");
            format!("a gdbstub error after {} stops: {e}", taken.snapshots.len())
        }
    };
    Ok(SnapshotRun {
        symbol: req.sites.join(", "),
        address: sites.first().map_or(0, |s| s.1),
        target_tgid: match req.condition {
            Condition::Tgid(t) => t,
            Condition::Comm(_) => 0,
        },
        snapshots: taken.snapshots,
        other_hits: taken.other_hits,
        holds: Vec::new(),
        ended,
        sites: req.sites.clone(),
    })
}

/// What a run of stops has taken so far.
#[derive(Default)]
struct Taken {
    /// The stops kept, in order.
    snapshots: Vec<Snapshot>,
    /// Hits that failed the condition, stepped over.
    other_hits: u64,
}

/// What the reads resolve names against (the guest's symbols and types), and the zero
/// of the stops' host times.
struct Guest<'a> {
    /// QEMU's launch.
    launched: Instant,
    kallsyms: &'a Kallsyms,
    btf: &'a Btf,
    /// Where its tick bookkeeping is, read at every stop kept.
    ticks_at: Option<TickSymbols>,
}

fn stop_loop(
    client: &mut Client,
    reader: &mut CurrentReader,
    guest: &Guest<'_>,
    req: &StopsRequest,
    sites: &mut [(String, u64, usize)],
    done: &AtomicBool,
    taken: &mut Taken,
) -> Result<&'static str, Cr3Error> {
    let Taken {
        snapshots,
        other_hits,
    } = taken;
    let ended = loop {
        if sites.iter().all(|(_, _, taken)| *taken >= req.per_site) {
            break "every stop taken";
        }
        if *other_hits >= req.max_other_hits {
            break "other-process hit limit";
        }
        if done.load(Ordering::Relaxed) {
            break "the workload ended";
        }
        // A wait that found no hit leaves the target running: it is not stopped just to
        // look at `done` (each stop and start of the VM also stops and starts its
        // vhost-user vsock device, and adds a hold to the time line).
        if !client.is_running() {
            client.resume()?;
        }
        let Some(stop) = client.wait_stop(req.hit_timeout)? else {
            continue;
        };
        let stopped = Instant::now();
        let thread = stop.thread();
        if let Some(t) = thread {
            client.select_thread(t)?;
        }
        let rip = client.read_register("rip")?;
        let Some(site) = sites.iter().position(|(_, addr, _)| *addr == rip) else {
            // Not at one of the sites: go on.
            continue;
        };
        let CurrentTask {
            ids,
            comm,
            per_cpu_base,
        } = reader.current(client)?;
        let wanted = match &req.condition {
            Condition::Tgid(t) => ids.tgid == *t,
            Condition::Comm(c) => comm == *c,
        };
        if wanted && sites[site].2 < req.per_site {
            let ticks = guest.ticks_at.and_then(|t| t.read(client, reader));
            let regs = client.read_registers()?;
            let register = |name: &str| regs.get(name);
            let symbol = |name: &str| guest.kallsyms.by_name(name).map(|s| s.addr);
            let at = Stop {
                btf: guest.btf,
                function: Some(&sites[site].0),
                current: ids.task,
                register: &register,
                symbol: &symbol,
                per_cpu_base,
            };
            let mut memory = GdbMemory {
                client: &mut *client,
                reader: &mut *reader,
            };
            let reads = req
                .reads
                .iter()
                .map(|expr| match at.read(expr, &mut memory) {
                    Ok(v) => ReadValue {
                        expr: expr.text.clone(),
                        value: Some(v),
                        error: None,
                    },
                    Err(e) => ReadValue {
                        expr: expr.text.clone(),
                        value: None,
                        error: Some(e),
                    },
                })
                .collect();
            snapshots.push(Snapshot {
                host_ns: since(guest.launched, stopped),
                cpu: thread.map(|t| t.tid.saturating_sub(1) as u32),
                pid: ids.pid,
                tgid: ids.tgid,
                comm,
                registers: SNAPSHOT_REGISTERS
                    .iter()
                    .filter_map(|name| regs.get(name).map(|v| (name.to_string(), v)))
                    .collect(),
                site: sites[site].0.clone(),
                reads,
                ticks,
            });
            sites[site].2 += 1;
        } else {
            *other_hits += 1;
        }
        step_over(client, thread, sites[site].1, sites[site].2 < req.per_site)?;
    };
    Ok(ended)
}

/// Leaves the breakpoint: remove it, one instruction on the stopped vCPU, and put it
/// back if the site wants more stops.
fn step_over(
    client: &mut Client,
    thread: Option<ThreadId>,
    addr: u64,
    again: bool,
) -> Result<(), Cr3Error> {
    client.remove_hw_breakpoint(addr)?;
    match thread {
        Some(t) => drop(client.step_thread(t)?),
        None => drop(client.step()?),
    }
    if again {
        client.insert_hw_breakpoint(addr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_armed_past_the_hold_say_so_and_in_time_say_nothing() {
        let ms = Duration::from_millis;
        assert_eq!(late_by(ms(12), ms(1000)), None);
        assert_eq!(late_by(ms(1000), ms(1000)), None);
        let late = late_by(ms(1340), ms(1000)).expect("late");
        assert!(late.contains("1340 ms after"), "{late}");
        assert!(late.contains("1000 ms hold"), "{late}");
    }
}
