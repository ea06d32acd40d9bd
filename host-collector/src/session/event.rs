//! One event of the stream: counted per probe, its user probe named, attributed to
//! its workload (counts per probe, stack, named lock, page-fault access and time
//! bin), and written to `events.jsonl`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;

use guestscope_common::event::{NO_STACK, ProbeKind, RawEvent, USER_ARGS};

use super::{ArgValues, Session, TIMELINE_BIN_NS, UNKNOWN_PROBE, user_probe_name};
use crate::run_files::event_line_writer::{EventFields, write_event_line};

/// What one event is, once named: its kind, the name it is counted under, and what
/// the agent sent with it.
struct Named {
    probe: Option<ProbeKind>,
    /// The kind's name for a built-in probe, `kprobe:FUNCTION` and the like for a
    /// user probe.
    name: Cow<'static, str>,
    args: Option<[u64; USER_ARGS]>,
    lock: Option<String>,
}

impl<W: Write> Session<W> {
    /// Applies one event. I/O errors writing `events.jsonl` are returned.
    pub(super) fn event(&mut self, e: &RawEvent) -> std::io::Result<()> {
        self.events_received += 1;
        self.heard_at(e.ts_ns);
        let named = self.name(e);
        let idx = self.workload_of(e.pid);
        if e.stack_id >= 0 && !self.stacks_raw.contains_key(&(e.stack_id as u32)) {
            self.events_stack_unknown += 1;
        }
        match idx {
            Some(i) => self.count_in_workload(i, e, &named),
            None => self.events_unattributed += 1,
        }
        self.write_line(e, &named, idx)?;
        self.write_stack_once(e.stack_id)
    }

    /// Names the event, counts it per probe kind (what the probes' counters count) and
    /// keeps a user probe's argument values.
    fn name(&mut self, e: &RawEvent) -> Named {
        let probe = e.probe();
        let kind_name = probe.map(ProbeKind::name).unwrap_or(UNKNOWN_PROBE);
        count_by_name(&mut self.events_by_probe, kind_name, 1);
        let user_name = probe.filter(|k| k.is_user()).map(|k| match k {
            ProbeKind::Tracepoint => match self.tracepoint_names.get(&e.flags) {
                Some(t) => format!("tracepoint:{t}"),
                None => format!("tracepoint:#{}", e.flags),
            },
            _ => user_probe_name(k, e.ip, self.kallsyms.as_ref()),
        });
        let args = probe
            .filter(|k| k.carries_args())
            .and_then(|_| self.pending_args.remove(&(e.tid, e.ts_ns)));
        if let Some(name) = &user_name {
            let seen = self.user_probe_values.entry(name.clone()).or_default();
            let all = std::iter::once(e.arg).chain(args.into_iter().flatten());
            for (n, value) in all.enumerate() {
                if seen.len() <= n {
                    seen.push(ArgValues::default());
                }
                seen[n].add(value);
            }
        }
        let lock = match (probe, &self.kallsyms) {
            (Some(ProbeKind::SpinLock), Some(k)) => k.exact(e.arg).map(|s| s.name.clone()),
            _ => None,
        };
        Named {
            probe,
            name: user_name.map_or(Cow::Borrowed(kind_name), Cow::Owned),
            args,
            lock,
        }
    }

    /// Counts the event in workload `i`.
    fn count_in_workload(&mut self, i: usize, e: &RawEvent, named: &Named) {
        let w = &mut self.workloads[i];
        let name = &named.name;
        count_by_name(&mut w.events, name, 1);
        w.pids.insert(e.pid);
        if named.probe.is_some() {
            *w.stack_counts
                .entry((name.clone(), e.stack_id))
                .or_default() += 1;
        }
        if is_fault(named.probe) {
            let access = guest_kernel::page_fault::access(e.flags);
            *w.fault_accesses.entry(access).or_default() += 1;
        }
        if let Some(l) = &named.lock {
            *w.named_locks.entry(l.clone()).or_default() += 1;
            *w.named_locks_by_stack
                .entry(e.stack_id)
                .or_default()
                .entry(l.clone())
                .or_default() += 1;
        }
        let bin = e.ts_ns.saturating_sub(w.started.start_ns) / TIMELINE_BIN_NS;
        let bins = match w.timeline.get_mut(name.as_ref()) {
            Some(bins) => bins,
            None => w.timeline.entry(name.to_string()).or_default(),
        };
        *bins.entry(bin).or_default() += 1;
        w.first_event_ns.get_or_insert(e.ts_ns);
        w.last_event_ns = Some(e.ts_ns);
    }

    /// Writes the event's line of `events.jsonl`.
    fn write_line(
        &mut self,
        e: &RawEvent,
        named: &Named,
        idx: Option<usize>,
    ) -> std::io::Result<()> {
        let workload = idx.map(|i| self.workloads[i].started.name.as_str());
        let comm = String::from_utf8_lossy(e.comm_bytes());
        let fault = is_fault(named.probe);
        let args = named.args.map(|rest| {
            let mut all = [e.arg; USER_ARGS + 1];
            all[1..].copy_from_slice(&rest);
            all
        });
        let fields = EventFields {
            ts_ns: e.ts_ns,
            host_unix_ns: None,
            probe: &named.name,
            cpu: e.cpu,
            pid: e.pid,
            tid: e.tid,
            comm: &comm,
            workload,
            arg: e.arg,
            args: args.as_ref().map(|a| &a[..]),
            lock: named.lock.as_deref(),
            ip: fault.then_some(e.ip),
            error_code: fault.then_some(e.flags),
            stack_id: if e.stack_id == NO_STACK {
                -1
            } else {
                e.stack_id
            },
        };
        self.line.clear();
        write_event_line(&mut self.line, &self.run_id, &fields);
        self.events_out.write_all(&self.line)
    }
}

/// Adds `n` to `name`'s count in `counts`; the name is copied only the first time.
pub(super) fn count_by_name(counts: &mut BTreeMap<String, u64>, name: &str, n: u64) {
    match counts.get_mut(name) {
        Some(c) => *c += n,
        None => {
            counts.insert(name.to_string(), n);
        }
    }
}

/// Whether the event is a page fault (its `ip` and error code are kept).
fn is_fault(probe: Option<ProbeKind>) -> bool {
    matches!(
        probe,
        Some(ProbeKind::PageFaultUser | ProbeKind::PageFaultKernel)
    )
}
