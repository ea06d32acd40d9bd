//! A workload's own [`Tracing`]: what is attached while it runs (instead of the plan's
//! probes), and the report of what was attached and counted, sent as artifact
//! `tracing-<workload>` before its `WorkloadExited` record.

use std::time::Duration;

use guestscope_common::{
    ProbeCounters, ProbeKind,
    plan::{FtraceHits, StackMode, TRACING_ARTIFACT_PREFIX, Tracing, WorkloadTracing},
};

use crate::{
    artifacts,
    ftrace::{KprobeEvent, StackTraces},
    stream::{Sink, Stream, StreamError},
    tracer::{Attached, Tracer},
};

/// A workload's tracing, set up; [`TracingMode::finish`] restores the plan's probes.
pub struct TracingMode {
    usage_before: OwnUsage,
    user: bool,
    stacks: StackMode,
    attached: Attached,
    errors: Vec<String>,
    counters_before: Vec<(String, ProbeCounters)>,
    read_sent_before: (u64, u64),
    /// The ftrace kprobe events made, with their counts at the start.
    ftrace: Vec<(KprobeEvent, (u64, u64))>,
    /// Whether they are an ftrace peer ([`Tracing::FtracePeer`]), and its stack option.
    peer: bool,
    stack_traces: Option<StackTraces>,
}

/// What this process has used so far, by its own resource usage (`getrusage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OwnUsage {
    /// CPU time, user + system, ns.
    pub cpu_ns: u64,
    /// Minor page faults.
    pub minor_faults: u64,
    /// Voluntary context switches (waits).
    pub voluntary_switches: u64,
    /// Involuntary context switches (preemptions).
    pub involuntary_switches: u64,
}

impl OwnUsage {
    /// This process's usage now; all zero if it cannot be read.
    pub fn now() -> OwnUsage {
        // SAFETY: an all-zero rusage is valid; getrusage only writes into it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return OwnUsage::default();
        }
        let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        OwnUsage {
            cpu_ns: ns(usage.ru_utime) + ns(usage.ru_stime),
            minor_faults: usage.ru_minflt as u64,
            voluntary_switches: usage.ru_nvcsw as u64,
            involuntary_switches: usage.ru_nivcsw as u64,
        }
    }

    /// What was used from `before` to `self`, field by field (never below zero).
    pub fn since(&self, before: &OwnUsage) -> OwnUsage {
        OwnUsage {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            minor_faults: self.minor_faults.saturating_sub(before.minor_faults),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(before.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(before.involuntary_switches),
        }
    }
}

/// The value in KiB of `field` (e.g. `VmHWM`) in the text of `/proc/<pid>/status`.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `after - before`, field by field (never below zero).
pub fn counters_delta(after: &ProbeCounters, before: &ProbeCounters) -> ProbeCounters {
    ProbeCounters {
        matched: after.matched.saturating_sub(before.matched),
        emitted: after.emitted.saturating_sub(before.emitted),
        ring_full: after.ring_full.saturating_sub(before.ring_full),
        stack_failed: after.stack_failed.saturating_sub(before.stack_failed),
        nested: after.nested.saturating_sub(before.nested),
        stack_cached: after.stack_cached.saturating_sub(before.stack_cached),
        stack_cache_wrong: after
            .stack_cache_wrong
            .saturating_sub(before.stack_cache_wrong),
        tallied: after.tallied.saturating_sub(before.tallied),
    }
}

/// What [`Tracing`] asks to attach (the ftrace kprobe aside): the named probes, with
/// the fork follower whenever any probe is on; nothing for the ftrace method.
/// `None` for [`Tracing::Plan`]. The plan's check has made sure every name is known.
pub fn wanted(tracing: &Tracing) -> Option<Attached> {
    match tracing {
        Tracing::Plan => None,
        Tracing::Probes(names) | Tracing::ProbesWith(names, _) => {
            let mut kinds: Vec<ProbeKind> = names
                .iter()
                .filter_map(|n| ProbeKind::from_name(n))
                .collect();
            kinds.sort();
            kinds.dedup();
            let fork_follower = !kinds.is_empty();
            Some(Attached {
                kinds,
                fork_follower,
            })
        }
        Tracing::UserProbes(_) => Some(Attached {
            kinds: Vec::new(),
            fork_follower: true,
        }),
        Tracing::FtraceKprobe(_) | Tracing::FtracePeer { .. } | Tracing::Synthetic(_) => {
            Some(Attached::default())
        }
    }
}

impl TracingMode {
    /// Sets up `tracing` on `tracer`; `None` for [`Tracing::Plan`] (nothing to change).
    pub fn begin(tracing: &Tracing, tracer: &mut Tracer) -> Option<TracingMode> {
        let want = wanted(tracing)?;
        let mut errors = tracer.set_attached(&want);
        let stacks = match tracing {
            Tracing::ProbesWith(_, mode) => *mode,
            _ => tracer.plan_stack_mode(),
        };
        if let Err(e) = tracer.set_stack_mode(stacks) {
            errors.push(format!("setting the stack mode {stacks:?}: {e}"));
        }
        let user = match tracing {
            Tracing::UserProbes(specs) => {
                let probes: Vec<_> = specs.iter().filter_map(|s| s.parse().ok()).collect();
                errors.extend(tracer.attach_user(&probes));
                true
            }
            _ => false,
        };
        let (functions, comm, stack_traces) = match tracing {
            Tracing::FtraceKprobe(function) => (std::slice::from_ref(function), None, false),
            Tracing::FtracePeer {
                functions,
                comm,
                stacktrace,
            } => (functions.as_slice(), Some(comm.as_str()), *stacktrace),
            _ => (&[][..], None, false),
        };
        let stack_traces = stack_traces
            .then(|| StackTraces::on().map_err(|e| errors.push(format!("ftrace stacks: {e}"))))
            .and_then(Result::ok);
        let ftrace = functions
            .iter()
            .filter_map(|function| match KprobeEvent::create_for(function, comm) {
                Ok(event) => match event.profile() {
                    Ok(start) => Some((event, start)),
                    Err(e) => {
                        errors.push(format!("ftrace kprobe {}: {e}", event.event()));
                        None
                    }
                },
                Err(e) => {
                    errors.push(format!("ftrace kprobe on {function}: {e}"));
                    None
                }
            })
            .collect();
        for e in &errors {
            tracing::warn!("workload tracing: {e}");
        }
        Some(TracingMode {
            usage_before: OwnUsage::now(),
            user,
            stacks,
            attached: tracer.attached(),
            errors,
            counters_before: tracer.counters(),
            read_sent_before: tracer.events_read_sent(),
            ftrace,
            peer: comm.is_some(),
            stack_traces,
        })
    }

    /// Reads what was counted, removes the ftrace event, attaches the plan's probes again,
    /// and sends the report as artifact `tracing-<workload>`.
    /// `drain` is how long the agent drained the ring after the workload exited.
    pub fn finish<W: Sink>(
        self,
        workload: &str,
        drain: Duration,
        tracer: &mut Tracer,
        stream: &mut Stream<W>,
    ) -> Result<WorkloadTracing, StreamError> {
        let used = OwnUsage::now().since(&self.usage_before);
        let TracingMode {
            attached,
            stacks,
            mut errors,
            counters_before,
            read_sent_before,
            ftrace,
            peer,
            stack_traces,
            user,
            ..
        } = self;
        let counters = tracer
            .counters()
            .into_iter()
            .map(|(name, after)| {
                let before = counters_before
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                let delta = counters_delta(&after, &before);
                (name, delta)
            })
            .collect();
        let (read, sent) = tracer.events_read_sent();
        drop(stack_traces);
        let mut ftrace: Vec<FtraceHits> = ftrace
            .into_iter()
            .filter_map(|(event, (hits0, misses0))| {
                let hits = match event.profile() {
                    Ok((hits, misses)) => Some(FtraceHits {
                        event: event.event(),
                        function: event.function().to_string(),
                        hits: hits.saturating_sub(hits0),
                        misses: misses.saturating_sub(misses0),
                    }),
                    Err(e) => {
                        errors.push(format!("ftrace kprobe {}: {e}", event.event()));
                        None
                    }
                };
                let name = event.event();
                if let Err(e) = event.remove() {
                    errors.push(format!("removing ftrace kprobe {name}: {e}"));
                }
                hits
            })
            .collect();
        if user {
            errors.extend(tracer.detach_user());
        }
        errors.extend(tracer.restore_plan());
        if let Err(e) = tracer.restore_stack_mode() {
            errors.push(format!("setting the plan's stack mode again: {e}"));
        }
        let report = WorkloadTracing {
            probes: attached
                .kinds
                .iter()
                .map(|k| k.name().to_string())
                .collect(),
            stacks,
            fork_follower: attached.fork_follower,
            errors,
            counters,
            events_read: read - read_sent_before.0,
            events_sent: sent - read_sent_before.1,
            ftrace: if peer { None } else { ftrace.pop() },
            ftrace_peer: if peer { ftrace } else { Vec::new() },
            agent_peak_rss_kib: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| status_kib(&s, "VmHWM"))
                .unwrap_or(0),
            agent_cpu_ns: used.cpu_ns,
            drain_ns: drain.as_nanos() as u64,
            agent_minor_faults: used.minor_faults,
            agent_voluntary_switches: used.voluntary_switches,
            agent_involuntary_switches: used.involuntary_switches,
        };
        let json = serde_json::to_vec(&report).unwrap_or_default();
        artifacts::send_bytes(
            stream,
            &format!("{TRACING_ARTIFACT_PREFIX}{workload}"),
            &json,
        )?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_counts_this_process_faults_waits_and_cpu() {
        let before = OwnUsage::now();
        // Fresh pages, each touched: one minor fault per page at least once mapped.
        let mut pages = vec![0u8; 64 << 20];
        for i in (0..pages.len()).step_by(4096) {
            pages[i] = 1;
        }
        std::hint::black_box(&pages);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let used = OwnUsage::now().since(&before);
        assert!(used.minor_faults >= 1000, "{used:?}");
        assert!(used.voluntary_switches >= 1, "{used:?}");
        assert!(used.cpu_ns > 0, "{used:?}");
        assert_eq!(before.since(&OwnUsage::now()).cpu_ns, 0, "never below zero");
    }

    #[test]
    fn deltas_are_per_field_and_never_negative() {
        let before = ProbeCounters {
            matched: 5,
            emitted: 4,
            ring_full: 1,
            stack_failed: 0,
            nested: 2,
            stack_cached: 7,
            stack_cache_wrong: 0,
            tallied: 3,
        };
        let after = ProbeCounters {
            matched: 15,
            emitted: 12,
            ring_full: 3,
            stack_failed: 0,
            nested: 1,
            stack_cached: 9,
            stack_cache_wrong: 1,
            tallied: 8,
        };
        assert_eq!(
            counters_delta(&after, &before),
            ProbeCounters {
                matched: 10,
                emitted: 8,
                ring_full: 2,
                stack_failed: 0,
                nested: 0,
                stack_cached: 2,
                stack_cache_wrong: 1,
                tallied: 5,
            }
        );
    }

    #[test]
    fn status_fields_in_kib() {
        let status =
            "Name:\tguestscope-agen\nVmPeak:\t   12000 kB\nVmHWM:\t    3456 kB\nVmRSS:\t 3000 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(3456));
        assert_eq!(status_kib(status, "VmRSS"), Some(3000));
        assert_eq!(status_kib(status, "Vm"), None);
        assert_eq!(status_kib(status, "RssAnon"), None);
    }

    #[test]
    fn wanted_sets() {
        assert_eq!(wanted(&Tracing::Plan), None);
        assert_eq!(wanted(&Tracing::Probes(vec![])), Some(Attached::default()));
        assert_eq!(
            wanted(&Tracing::Probes(vec![
                "alloc_fd".into(),
                "spin_lock".into(),
                "alloc_fd".into()
            ])),
            Some(Attached {
                kinds: vec![ProbeKind::SpinLock, ProbeKind::AllocFd],
                fork_follower: true
            })
        );
        assert_eq!(
            wanted(&Tracing::FtraceKprobe("alloc_fd".into())),
            Some(Attached::default())
        );
        assert_eq!(
            wanted(&Tracing::ProbesWith(
                vec!["alloc_fd".into()],
                StackMode::Off
            )),
            Some(Attached {
                kinds: vec![ProbeKind::AllocFd],
                fork_follower: true
            })
        );
    }
}
