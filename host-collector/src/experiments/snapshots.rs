//! gdbstub snapshots taken while the eBPF probes trace the same calls, and the check
//! that both saw the same thing.
//!
//! During the traced run the collector puts a hardware breakpoint on a probed kernel
//! function (`alloc_fd`, which the `alloc_fd` kprobe also watches) and, at each hit by
//! the workload, takes a snapshot: registers, and `current`'s pid and comm read
//! through the page tables (BTF offsets, as in [`super::syscall_cr3`]). Hits by other
//! processes are stepped over. Every stop is a hold: the guest's clock stands still
//! until the resume, so the holds go to the timeline ([`crate::timeline::holds`]).
//!
//! The cross-check ([`cross_check`]): for each snapshot, the eBPF event nearest in
//! time on the same CPU, on the one time line; the two must name the same task.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::syscall_cr3::{Cr3Error, Cr3Options, HitLoop, with_breakpoint};
use qemu_gdb_client::{Client, GdbEndpoint};

use crate::timeline::clock::Timeline;
use guest_kernel::btf::TaskOffsets;
use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{CurrentReader, KernelLayout};

pub use super::guest_ticks::GuestTicks;
use super::guest_ticks::TickSymbols;

/// The function the breakpoint goes on.
pub const SNAPSHOT_SYMBOL: &str = "alloc_fd";
/// Registers recorded in each snapshot.
pub const SNAPSHOT_REGISTERS: &[&str] =
    &["rip", "rsp", "rdi", "rsi", "cr3", "gs_base", "k_gs_base"];

/// Settings of a snapshot run.
#[derive(Clone, Debug)]
pub struct SnapshotOptions {
    /// Snapshots of the target to take.
    pub snapshots: usize,
    /// Hits of other processes allowed before giving up.
    pub max_other_hits: u64,
    /// Longest the breakpoint stays in.
    pub timeout: Duration,
    /// How often `done` is looked at while the target runs between hits (the target is
    /// not stopped for it).
    pub hit_timeout: Duration,
}

impl Default for SnapshotOptions {
    /// Few snapshots, by design: every stop also stops the VM's vhost-user vsock backend
    /// (QEMU stops vhost-user devices with the VM), and many stop/start cycles in quick
    /// succession have been seen to leave the guest's vsock link dead.
    fn default() -> SnapshotOptions {
        SnapshotOptions {
            snapshots: 8,
            max_other_hits: 200,
            timeout: Duration::from_secs(20),
            hit_timeout: Duration::from_millis(250),
        }
    }
}

/// One stop of the workload at the breakpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the stop was seen, host ns since QEMU's launch.
    pub host_ns: u64,
    /// The vCPU that stopped (gdb thread id − 1, the kernel's CPU number).
    pub cpu: Option<u32>,
    /// `current->pid` (thread id).
    pub pid: u32,
    /// `current->tgid`.
    pub tgid: u32,
    /// `current->comm`.
    pub comm: String,
    /// [`SNAPSHOT_REGISTERS`], by name.
    pub registers: Vec<(String, u64)>,
    /// The function the stop was at (empty: the run's one symbol).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// The `--read` expressions evaluated at the stop, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<ReadValue>,
    /// The guest's own clock around the stop, from its tick bookkeeping (none when the
    /// kernel's symbols lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticks: Option<GuestTicks>,
}

/// One `--read` expression at one stop: its value, or which step failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadValue {
    /// The expression.
    pub expr: String,
    /// Its value as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a snapshot run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRun {
    /// The function the breakpoint was on.
    pub symbol: String,
    /// Its run-time address.
    pub address: u64,
    /// The process snapshotted.
    pub target_tgid: u32,
    /// The snapshots, in order.
    pub snapshots: Vec<Snapshot>,
    /// Hits of other processes, stepped over.
    pub other_hits: u64,
    /// Every time the stub held the VM, host ns since QEMU's launch, as the host saw it
    /// (from a stop reply's arrival to a resume's sending), with the time single steps
    /// inside it ran the VM: `(from, to, stepping)`.
    pub holds: Vec<(u64, u64, u64)>,
    /// What ended it.
    pub ended: String,
    /// The functions of the user's stops (`--snapshot-at`), as asked; empty for the
    /// built-in snapshots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
}

impl SnapshotRun {
    /// Whether these are the user's stops (`--snapshot-at`), taken or not.
    pub fn user_stops(&self) -> bool {
        !self.sites.is_empty()
    }
}

/// Connects to the gdbstub, takes up to `opts.snapshots` snapshots of `tgid` at
/// [`SNAPSHOT_SYMBOL`] (stopping early once `done` is set: the process ended), and
/// detaches. Host times are measured from `launched`.
pub fn take(
    gdb: GdbEndpoint,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    tgid: u32,
    launched: Instant,
    done: &AtomicBool,
    opts: &SnapshotOptions,
) -> Result<SnapshotRun, Cr3Error> {
    with_client(gdb, launched, |client| {
        take_on(client, kallsyms, offsets, tgid, launched, done, opts)
    })
}

/// Connects to the gdbstub, runs `take` on the connection, detaches, and adds to the
/// run every hold of the VM, in host ns since `launched`. A failed detach keeps the
/// run (its `ended` says so).
pub(crate) fn with_client(
    gdb: GdbEndpoint,
    launched: Instant,
    take: impl FnOnce(&mut Client) -> Result<SnapshotRun, Cr3Error>,
) -> Result<SnapshotRun, Cr3Error> {
    let mut client = Client::connect(gdb, Default::default())?;
    let run = take(&mut client);
    let holds = client.detach_with_holds();
    let mut run = run?;
    match holds {
        Ok(holds) => {
            run.holds = holds
                .iter()
                .map(|h| {
                    (
                        since(launched, h.from),
                        since(launched, h.to),
                        h.stepping.as_nanos() as u64,
                    )
                })
                .collect()
        }
        // What was taken is kept; the time line goes without this run's holds.
        Err(e) => {
            tracing::warn!("detaching from the gdbstub: {e}");
            run.ended = format!(
                "{}; then detaching from the gdbstub failed ({e}): the time line lacks \
                 these holds of the VM",
                run.ended
            );
        }
    }
    Ok(run)
}

pub(crate) fn since(launched: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(launched).as_nanos() as u64
}

fn take_on(
    client: &mut Client,
    kallsyms: &Kallsyms,
    offsets: &TaskOffsets,
    tgid: u32,
    launched: Instant,
    done: &AtomicBool,
    opts: &SnapshotOptions,
) -> Result<SnapshotRun, Cr3Error> {
    let address = kallsyms
        .by_name(SNAPSHOT_SYMBOL)
        .ok_or(Cr3Error::MissingSymbol(SNAPSHOT_SYMBOL))?
        .addr;
    let mut reader = CurrentReader::new(KernelLayout::new(kallsyms, offsets.clone())?);
    let ticks_at = TickSymbols::find(kallsyms);
    let loop_opts = Cr3Options {
        hit_timeout: opts.hit_timeout,
        keep_samples: 0,
        ..Cr3Options::default()
    };
    with_breakpoint(client, address, |client| {
        let mut l = HitLoop::new(&loop_opts);
        let start = Instant::now();
        let mut snapshots = Vec::new();
        let ended = loop {
            if snapshots.len() >= opts.snapshots {
                break "every snapshot taken";
            }
            if l.resumed >= opts.max_other_hits + snapshots.len() as u64 {
                break "other-process hit limit";
            }
            if start.elapsed() >= opts.timeout {
                break "time limit";
            }
            if done.load(Ordering::Relaxed) {
                break "the process ended";
            }
            let Some(hit) = l.next_hit(client, &mut reader, address)? else {
                if done.load(Ordering::Relaxed) {
                    break "the process ended";
                }
                continue;
            };
            tracing::debug!(
                pid = hit.ids.pid,
                tgid = hit.ids.tgid,
                target = tgid,
                "alloc_fd hit"
            );
            if hit.ids.tgid == tgid {
                let regs = client.read_registers()?;
                let (comm, _) = reader.read_kernel(
                    client,
                    hit.ids.task + u64::from(reader.layout().task.comm),
                    16,
                    guest_kernel::kernel::Access::Auto,
                )?;
                let comm = comm
                    .split(|b| *b == 0)
                    .next()
                    .map(|c| String::from_utf8_lossy(c).into_owned())
                    .unwrap_or_default();
                let ticks = ticks_at.and_then(|t| t.read(client, &mut reader));
                snapshots.push(Snapshot {
                    host_ns: since(launched, hit.stopped),
                    cpu: hit.thread.map(|t| t.tid.saturating_sub(1) as u32),
                    pid: hit.ids.pid,
                    tgid: hit.ids.tgid,
                    comm,
                    registers: SNAPSHOT_REGISTERS
                        .iter()
                        .filter_map(|name| regs.get(name).map(|v| (name.to_string(), v)))
                        .collect(),
                    site: String::new(),
                    reads: Vec::new(),
                    ticks,
                });
            }
            l.step_over(client, address, &hit)?;
        };
        Ok(SnapshotRun {
            symbol: SNAPSHOT_SYMBOL.into(),
            address,
            target_tgid: tgid,
            other_hits: l.resumed.saturating_sub(snapshots.len() as u64),
            snapshots,
            holds: Vec::new(),
            ended: ended.into(),
            sites: Vec::new(),
        })
    })
}

/// An eBPF event, as the cross-check needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPoint {
    /// Guest CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    /// CPU it ran on.
    pub cpu: u32,
    /// Thread id.
    pub tid: u32,
    /// Process id.
    pub pid: u32,
    /// Probe name as in `events.jsonl` (`alloc_fd`, `kprobe:do_sys_openat2`).
    pub probe: String,
}

/// One snapshot against its nearest event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// Index of the snapshot.
    pub snapshot: usize,
    /// The snapshot's pid (thread id) and the event's.
    pub pids: (u32, u32),
    /// The event's probe.
    pub probe: String,
    /// Event time minus snapshot time on the guest clock, µs (positive: after).
    pub delta_us: f64,
    /// Whether the pids agree.
    pub agree: bool,
    /// The same call seen by eBPF: the stopped thread's first event, on the same CPU,
    /// of a probe on the stop's function, at or after the earliest guest time the stop
    /// can have (the guest's last tick before it, or the time line's estimate less its
    /// error bound); its thread id and how long after the estimated stop it was
    /// stamped, µs.
    pub same_call: Option<(u32, f64)>,
}

/// The cross-check of a snapshot run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CrossCheck {
    /// Snapshots compared (those with a CPU and an event on it).
    pub compared: usize,
    /// Of those, the ones whose nearest event names the same thread.
    pub agreed: usize,
    /// Snapshots with no event on their CPU.
    pub without_event: usize,
    /// Largest |delta|, µs.
    pub max_abs_delta_us: f64,
    /// Median |delta|, µs.
    pub median_abs_delta_us: f64,
    /// The probe on the breakpoint's function (for the user's stops: a `kprobe:` or
    /// `fentry:` probe on each stop's own function).
    pub same_call_probe: String,
    /// Snapshots followed on their CPU by that probe's event of the same thread.
    pub same_call_agreed: usize,
    /// Snapshots at a function some probe of the run watched (the others cannot be
    /// followed by the same call's event).
    #[serde(default)]
    pub same_call_possible: usize,
    /// Median time from a stop to that event on the guest clock, µs.
    pub same_call_median_us: f64,
    /// Largest, µs.
    pub same_call_max_us: f64,
    /// Snapshots placed with the guest's own tick bookkeeping ([`GuestTicks`]).
    #[serde(default)]
    pub placed_by_ticks: usize,
    /// Each comparison.
    pub matches: Vec<Match>,
}

/// What [`cross_check`] looks for after each stop: which event is the same call.
#[derive(Clone, Copy, Debug)]
pub enum SameCall<'a> {
    /// Every stop is at the function this probe watches (the built-in snapshots).
    Probe(&'a str),
    /// Each stop is at its own function ([`Snapshot::site`]); its probe is the user's
    /// `kprobe:SITE` or `fentry:SITE`.
    SiteProbes,
}

impl SameCall<'_> {
    /// What the report calls the probe.
    fn describe(&self) -> String {
        match self {
            SameCall::Probe(p) => (*p).to_string(),
            SameCall::SiteProbes => "kprobe:/fentry: on the stop's function".into(),
        }
    }

    /// Whether an event of `probe` is a call of the function `s` stopped at.
    fn matches(&self, s: &Snapshot, probe: &str) -> bool {
        match self {
            SameCall::Probe(p) => probe == *p,
            SameCall::SiteProbes => probe
                .strip_prefix("kprobe:")
                .or_else(|| probe.strip_prefix("fentry:"))
                .is_some_and(|f| f == s.site),
        }
    }
}

/// For each snapshot, the event nearest in time on its CPU, and the same call's event
/// ([`Match::same_call`]). Times are compared on the guest clock: a snapshot is the
/// guest instant its hold began, estimated by the time line and, where the stop read
/// the guest's ticks, kept at or after its last tick. `events` need not be sorted.
pub fn cross_check(
    snapshots: &[Snapshot],
    events: &[EventPoint],
    timeline: &Timeline,
    same: SameCall<'_>,
) -> CrossCheck {
    let mut by_cpu: std::collections::BTreeMap<u32, Vec<&EventPoint>> = Default::default();
    // The run's probes, each once: whether a stop's function was probed at all.
    let mut probes: std::collections::BTreeSet<&str> = Default::default();
    for e in events {
        by_cpu.entry(e.cpu).or_default().push(e);
        probes.insert(&e.probe);
    }
    for v in by_cpu.values_mut() {
        v.sort_by_key(|e| e.ts_ns);
    }
    let mut out = CrossCheck {
        same_call_probe: same.describe(),
        ..CrossCheck::default()
    };
    let bound = timeline.map.error_bound_ns.max(0.0);
    // Each call is one event: one already taken as an earlier stop's call is not
    // another's (two stops of a thread within one tick would otherwise share it).
    let mut taken: std::collections::HashSet<(u32, u64, u32)> = Default::default();
    for (i, s) in snapshots.iter().enumerate() {
        let Some(list) = s.cpu.and_then(|c| by_cpu.get(&c)) else {
            out.without_event += 1;
            continue;
        };
        let estimate = timeline.to_guest(s.host_ns as f64);
        // The earliest the stop can have been: after the guest's last tick (read at the
        // stop), or else the estimate less the time line's error bound. A probe's
        // timestamp is taken a little into the call, after the stop.
        let (at, from) = match s.ticks {
            Some(t) => {
                out.placed_by_ticks += 1;
                (estimate.max(t.last_ns as f64), t.last_ns as f64)
            }
            None => (estimate, estimate - bound),
        };
        let k = list.partition_point(|e| (e.ts_ns as f64) < at);
        let nearest = [k.checked_sub(1), Some(k)]
            .into_iter()
            .flatten()
            .filter_map(|j| list.get(j))
            .min_by(|a, b| {
                (a.ts_ns as f64 - at)
                    .abs()
                    .total_cmp(&(b.ts_ns as f64 - at).abs())
            });
        let Some(e) = nearest else {
            out.without_event += 1;
            continue;
        };
        let agree = e.tid == s.pid;
        let same_call = list[list.partition_point(|e| (e.ts_ns as f64) < from)..]
            .iter()
            .find(|e| {
                e.tid == s.pid
                    && same.matches(s, &e.probe)
                    && !taken.contains(&(e.cpu, e.ts_ns, e.tid))
            })
            .map(|e| {
                taken.insert((e.cpu, e.ts_ns, e.tid));
                (e.tid, (e.ts_ns as f64 - at) / 1e3)
            });
        out.compared += 1;
        out.agreed += usize::from(agree);
        out.same_call_agreed += usize::from(same_call.is_some());
        out.same_call_possible += usize::from(probes.iter().any(|p| same.matches(s, p)));
        out.matches.push(Match {
            snapshot: i,
            pids: (s.pid, e.tid),
            probe: e.probe.clone(),
            delta_us: (e.ts_ns as f64 - at) / 1e3,
            agree,
            same_call,
        });
    }
    let (median, max) = median_max(out.matches.iter().map(|m| m.delta_us.abs()));
    (out.median_abs_delta_us, out.max_abs_delta_us) = (median, max);
    let (median, max) = median_max(
        out.matches
            .iter()
            .filter_map(|m| m.same_call.map(|(_, d)| d)),
    );
    (out.same_call_median_us, out.same_call_max_us) = (median, max);
    out
}

/// Median and largest of `values` (0 for none).
fn median_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    (
        v.get(v.len() / 2).copied().unwrap_or(0.0),
        v.last().copied().unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::clock::{ClockMap, Timeline};
    use crate::timeline::holds::Holds;

    fn timeline(offset_ns: f64, holds: Vec<(u64, u64)>) -> Timeline {
        let map = ClockMap {
            offset_ns,
            drift: 0.0,
            guest_ref_ns: 0,
            error_bound_ns: 0.0,
            consistent: true,
            samples: 1,
            best_rtt_ns: 0,
            span_ns: 0,
        };
        Timeline {
            map,
            holds: Holds::new(holds),
        }
    }

    fn snap(host_ns: u64, cpu: u32, pid: u32) -> Snapshot {
        Snapshot {
            host_ns,
            cpu: Some(cpu),
            pid,
            tgid: pid,
            comm: "fopen".into(),
            registers: Vec::new(),
            site: String::new(),
            reads: Vec::new(),
            ticks: None,
        }
    }

    fn ev(ts_ns: u64, cpu: u32, tid: u32) -> EventPoint {
        probe_ev(ts_ns, cpu, tid, "alloc_fd")
    }

    fn probe_ev(ts_ns: u64, cpu: u32, tid: u32, probe: &str) -> EventPoint {
        EventPoint {
            ts_ns,
            cpu,
            tid,
            pid: tid,
            probe: probe.into(),
        }
    }

    fn stop_at(site: &str, host_ns: u64, pid: u32, ticks: Option<(u64, u64)>) -> Snapshot {
        Snapshot {
            site: site.into(),
            ticks: ticks.map(|(last_ns, next_ns)| GuestTicks { last_ns, next_ns }),
            ..snap(host_ns, 0, pid)
        }
    }

    #[test]
    fn nearest_event_on_the_same_cpu_is_compared_in_guest_time() {
        // Guest = host − 1 s before the hold at 5 s; the hold lasts 2 ms.
        let t = timeline(1.0e9, vec![(5_000_000_000, 5_002_000_000)]);
        let snaps = [snap(5_000_000_000, 0, 42), snap(7_000_000_000, 1, 43)];
        let events = [
            ev(4_000_010_000, 0, 42), // 10 µs after the stop, in guest time
            ev(4_000_005_000, 1, 99), // nearer in time but on the other CPU
            ev(5_998_000_000, 1, 7),  // the second snapshot's nearest: a different thread
        ];
        let c = cross_check(&snaps, &events, &t, SameCall::Probe("alloc_fd"));
        assert_eq!((c.compared, c.agreed, c.without_event), (2, 1, 0));
        assert!(
            (c.matches[0].delta_us - 10.0).abs() < 1e-6,
            "{:?}",
            c.matches[0]
        );
        assert!(!c.matches[1].agree);
        assert_eq!(c.matches[1].pids, (43, 7));
        // The same call: the next alloc_fd event on the CPU.
        assert_eq!(c.matches[0].same_call.map(|(tid, _)| tid), Some(42));
        assert_eq!(c.same_call_agreed, 1);
    }

    #[test]
    fn a_snapshot_without_events_on_its_cpu_is_counted_not_compared() {
        let t = timeline(0.0, Vec::new());
        let c = cross_check(
            &[snap(10, 3, 1)],
            &[ev(10, 0, 1)],
            &t,
            SameCall::Probe("alloc_fd"),
        );
        assert_eq!((c.compared, c.without_event), (0, 1));
    }

    #[test]
    fn a_stop_is_matched_only_with_a_probe_on_its_own_function() {
        // Guest = host − 1 s, no holds. Stops at show_cpuinfo at guest 1.000 s, and at
        // do_sys_openat2 at 2.000 s.
        let t = timeline(1.0e9, Vec::new());
        let snaps = [
            stop_at("show_cpuinfo", 2_000_000_000, 42, None),
            stop_at("do_sys_openat2", 3_000_000_000, 42, None),
        ];
        let events = [
            probe_ev(1_000_005_000, 0, 42, "kprobe:do_sys_openat2"), // not show_cpuinfo
            probe_ev(1_000_009_000, 0, 42, "kprobe:show_cpuinfo"),
            probe_ev(2_000_002_000, 0, 42, "kprobe:show_cpuinfo"),
            probe_ev(2_000_004_000, 0, 42, "fentry:do_sys_openat2"),
        ];
        let c = cross_check(&snaps, &events, &t, SameCall::SiteProbes);
        let same: Vec<_> = c.matches.iter().map(|m| m.same_call).collect();
        assert_eq!(same, [Some((42, 9.0)), Some((42, 4.0))]);
        assert_eq!((c.same_call_agreed, c.same_call_possible), (2, 2));
        assert_eq!(c.same_call_probe, "kprobe:/fentry: on the stop's function");
    }

    #[test]
    fn the_guests_tick_places_a_stop_the_time_line_put_too_late() {
        // The time line puts the stop at guest 1.010 s with a 2 ms bound, but the call's
        // event came at 1.001 s: the holds before it were longer for the guest than the
        // host saw. Read at the stop, the guest's last tick (1.000 s) is a hard floor.
        let mut t = timeline(1.0e9, Vec::new());
        t.map.error_bound_ns = 2.0e6;
        let events = [
            probe_ev(1_000_500_000, 0, 7, "kprobe:do_sys_openat2"), // another thread first
            probe_ev(1_001_000_000, 0, 42, "kprobe:do_sys_openat2"), // the call
            probe_ev(1_012_000_000, 0, 42, "kprobe:do_sys_openat2"), // its next call
        ];
        let late = |ticks| [stop_at("do_sys_openat2", 2_010_000_000, 42, ticks)];
        let without = cross_check(&late(None), &events, &t, SameCall::SiteProbes);
        assert_eq!(
            without.matches[0].same_call,
            Some((42, 2_000.0)),
            "the next call"
        );
        assert_eq!(without.placed_by_ticks, 0);
        let with = cross_check(
            &late(Some((1_000_000_000, 1_004_000_000))),
            &events,
            &t,
            SameCall::SiteProbes,
        );
        assert_eq!(with.matches[0].same_call, Some((42, -9_000.0)));
        assert_eq!(with.placed_by_ticks, 1);
    }

    #[test]
    fn one_event_is_the_same_call_of_one_stop_only() {
        // Two stops of a thread within one tick: the second is the later call.
        let t = timeline(1.0e9, Vec::new());
        let ticks = Some((1_000_000_000, 1_004_000_000));
        let snaps = [
            stop_at("do_sys_openat2", 2_000_100_000, 42, ticks),
            stop_at("do_sys_openat2", 2_000_300_000, 42, ticks),
        ];
        let events = [
            probe_ev(1_000_150_000, 0, 42, "kprobe:do_sys_openat2"),
            probe_ev(1_000_350_000, 0, 42, "kprobe:do_sys_openat2"),
        ];
        let c = cross_check(&snaps, &events, &t, SameCall::SiteProbes);
        let same: Vec<_> = c.matches.iter().map(|m| m.same_call).collect();
        assert_eq!(same, [Some((42, 50.0)), Some((42, 50.0))]);
    }
}
