//! Where the traced loop's time goes: in the peers boot, Debian's `perf` samples the
//! whole guest (cpu-clock, every CPU, with call chains) while guestscope traces a long
//! fopen loop, once per [`RECORDINGS`] entry; a second workload prints `perf report`,
//! and the host groups its rows by what the guest was doing: the loop's own work, the
//! probes (trampolines, programs, ring buffer, stack reads, entering and leaving a
//! program), the agent, the kernel's threads, idle.
//!
//! Under TCG there is no PMU: a cpu-clock sample is a timer interrupt, so time with
//! interrupts off is counted where they come back on (a ring-buffer reservation's
//! lock at its `_raw_spin_unlock_irqrestore`, which `perf` puts under the
//! reservation). Shares are of all the samples of the recording, µs per event over
//! the loop's events (its iterations times the events per iteration of guestscope's
//! every-probe runs in the same boot).

use super::*;
use crate::bench::results::{GuestProfile, ProfileShare};

/// Where the peers boot's root file system has Debian's perf (`linux-perf`).
pub(super) const PERF: &str = "/usr/bin/perf";
/// Samples per second: enough for a share of a percent, few enough that perf's own
/// interrupts stay a small part of the recording.
pub(super) const HZ: u32 = 1000;
/// The recording's loop runs this many times the peers' iterations (about 1.5 s).
pub(super) const ITERATIONS_FACTOR: u64 = 10;
/// Rows of `perf report` below this share (of their time with children) are left out.
const PERCENT_LIMIT: &str = "0.05";
/// The recordings: workload name, the peers condition guestscope traces the loop
/// with ([`condition_tracing`]), and that condition in words. The first is the loop
/// with no program attached: the traced recordings' rows are compared with it
/// ([`ProfileShare::over_untraced_us`]), so a row says what tracing added, not what
/// the loop does anyway (the files it closes are freed through RCU, for one).
pub(super) const RECORDINGS: [(&str, &str, &str); 3] = [
    (
        UNTRACED_RECORDING,
        "off",
        "untraced: no program attached (the baseline)",
    ),
    (
        "fopen-profile",
        "all",
        "every probe, stacks cached, a record per hit",
    ),
    (
        "fopen-profile-tallied",
        "tallied",
        "every probe, the cached hits tallied per stack (`--stacks tallied`)",
    ),
];
/// The recording of the untraced loop.
const UNTRACED_RECORDING: &str = "fopen-profile-untraced";
/// What ends the name of a recording's report workload.
const REPORT_SUFFIX: &str = "-report";
/// The agent's task name as the kernel keeps it (15 bytes).
const AGENT_COMM: &str = "guestscope-agen";
/// The loop's task name.
const LOOP_COMM: &str = "fopen";

/// Whether workload `name` is a recording's report (it runs no loop).
pub(super) fn is_report(name: &str) -> bool {
    RECORDINGS
        .iter()
        .any(|(recording, _, _)| name.strip_suffix(REPORT_SUFFIX) == Some(recording))
}

/// The name of recording `name`'s report workload.
pub(super) fn report_name(name: &str) -> String {
    format!("{name}{REPORT_SUFFIX}")
}

/// Each recording's two workloads: `perf record` of the whole guest around the fopen
/// loop (`iterations` of it) traced as the recording says, then `perf report` of it,
/// untraced.
pub(super) fn workloads(fopen: &str, iterations: u64) -> Vec<WorkloadSpec> {
    RECORDINGS
        .iter()
        .flat_map(|(name, condition, _)| {
            let data = format!("/tmp/guestscope-{name}.data");
            let record = perf_workload(
                name,
                &[
                    "record".to_string(),
                    "-a".into(),
                    "-g".into(),
                    "-F".into(),
                    HZ.to_string(),
                    "-o".into(),
                    data.clone(),
                    "--".into(),
                    fopen.into(),
                    "--iterations".into(),
                    iterations.to_string(),
                ],
                condition_tracing(condition),
            );
            let report = perf_workload(
                &report_name(name),
                &args(&[
                    "report",
                    "-i",
                    &data,
                    "--stdio",
                    "--children",
                    "--sort",
                    "comm,sym",
                    "-g",
                    "none",
                    "--percent-limit",
                    PERCENT_LIMIT,
                ]),
                no_probes(),
            );
            [record, report]
        })
        .collect()
}

/// Workload `name`: [`PERF`] with `arguments`, traced as `tracing` says.
fn perf_workload(name: &str, arguments: &[String], tracing: Tracing) -> WorkloadSpec {
    WorkloadSpec {
        path: PERF.into(),
        origin: WorkloadOrigin::User,
        timeout_ms: Some(300_000),
        ..spec(name, "fopen", arguments, tracing)
    }
}

/// One row of `perf report --children --sort comm,sym -g none --stdio`.
#[derive(Clone, Debug, PartialEq)]
pub struct PerfRow {
    /// Share of the samples in this symbol or below it, %.
    pub children: f64,
    /// Share of the samples in this symbol itself, %.
    pub own: f64,
    /// The task's name.
    pub comm: String,
    /// Whether the symbol is the kernel's (`[k]`; `[.]` is user space).
    pub kernel: bool,
    /// The symbol.
    pub symbol: String,
}

/// What `perf report` printed: the recording's event count (for cpu-clock, ns of CPU
/// time sampled) and its rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PerfReport {
    /// `# Event count (approx.): N`.
    pub event_count: Option<u64>,
    /// The rows, as printed.
    pub rows: Vec<PerfRow>,
}

/// Parses `perf report --children --sort comm,sym -g none --stdio` output; other lines
/// (comments, warnings) are skipped. `None` when no row was found.
pub fn parse_report(text: &str) -> Option<PerfReport> {
    let mut report = PerfReport::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(count) = line.strip_prefix("# Event count (approx.):") {
            report.event_count = count.trim().parse().ok();
            continue;
        }
        if let Some(row) = parse_row(line) {
            report.rows.push(row);
        }
    }
    (!report.rows.is_empty()).then_some(report)
}

/// One row: `75.72%  0.15%  fopen  [k] do_syscall_64` (a task name may hold spaces).
fn parse_row(line: &str) -> Option<PerfRow> {
    let percent = |s: &str| s.strip_suffix('%')?.parse::<f64>().ok();
    let mut words = line.split_whitespace();
    let children = percent(words.next()?)?;
    let own = percent(words.next()?)?;
    let rest: Vec<&str> = words.collect();
    let at = rest
        .iter()
        .position(|w| matches!(*w, "[k]" | "[.]" | "[g]" | "[u]" | "[H]"))?;
    if at == 0 || at + 1 >= rest.len() {
        return None;
    }
    Some(PerfRow {
        children,
        own,
        comm: rest[..at].join(" "),
        kernel: rest[at] == "[k]",
        symbol: rest[at + 1..].join(" "),
    })
}

/// The samples grouped: what each share is (in words) and its % of all the samples,
/// in the order the report shows them.
pub fn breakdown(report: &PerfReport) -> Vec<(String, f64)> {
    let in_loop = |r: &&PerfRow| r.comm == LOOP_COMM;
    let rows: Vec<&PerfRow> = report.rows.iter().filter(in_loop).collect();
    let children_of = |names: &[&str]| -> f64 {
        rows.iter()
            .filter(|r| names.contains(&r.symbol.as_str()))
            .map(|r| r.children)
            .fold(0.0, f64::max)
    };
    let sum = |keep: &dyn Fn(&PerfRow) -> bool, value: &dyn Fn(&PerfRow) -> f64| -> f64 {
        rows.iter().filter(|r| keep(r)).map(|r| value(r)).sum()
    };
    let loop_total = sum(&|_| true, &|r| r.own);
    // The probes: their programs with the helpers they call, the trampolines' calls
    // into and out of a program, and the trampolines' own instructions where perf
    // names them (`bpf_trampoline_*`; in module space it may not, and they count as
    // the loop's). A probe hit inside another probe's helper would count twice; the
    // claim on the scratch makes such hits leave at once.
    let programs = sum(&|r| r.symbol.starts_with("bpf_prog_"), &|r| r.children);
    let programs_own = sum(&|r| r.symbol.starts_with("bpf_prog_"), &|r| r.own);
    let ring = children_of(&["bpf_ringbuf_reserve", "__bpf_ringbuf_reserve"])
        + children_of(&["bpf_ringbuf_submit"])
        + children_of(&["bpf_ringbuf_query"]);
    let reads = children_of(&["bpf_probe_read_kernel"]);
    let helpers = (programs - programs_own - ring - reads).max(0.0);
    let enter_exit = sum(
        &|r| r.symbol.starts_with("__bpf_prog_enter") || r.symbol.starts_with("__bpf_prog_exit"),
        &|r| r.children,
    );
    let trampolines = sum(&|r| r.symbol.starts_with("bpf_trampoline_"), &|r| r.own);
    let probes = programs + enter_exit + trampolines;
    let by_comm = |keep: &dyn Fn(&PerfRow) -> bool| -> f64 {
        report.rows.iter().filter(|r| keep(r)).map(|r| r.own).sum()
    };
    let agent_user = by_comm(&|r| r.comm == AGENT_COMM && !r.kernel);
    let agent_kernel = by_comm(&|r| r.comm == AGENT_COMM && r.kernel);
    let idle = by_comm(&|r| r.comm == "swapper");
    let perf = by_comm(&|r| r.comm.starts_with("perf"));
    let others = by_comm(&|r| {
        ![LOOP_COMM, AGENT_COMM, "swapper"].contains(&r.comm.as_str())
            && !r.comm.starts_with("perf")
    });
    vec![
        (
            "the loop, outside the probes (its own user and kernel work)".into(),
            (loop_total - probes).max(0.0),
        ),
        ("the probes, in all (in the loop's task)".into(), probes),
        ("· the programs' own instructions".into(), programs_own),
        (
            "· the ring buffer (reserve, with its lock; submit; query)".into(),
            ring,
        ),
        (
            "· stack reads (`bpf_probe_read_kernel`: the stack cache's checks, the caller)".into(),
            reads,
        ),
        (
            "· entering and leaving a program (`__bpf_prog_enter`/`exit`: RCU, migration)".into(),
            enter_exit,
        ),
        (
            "· other helpers (task name, clock, map lookups, stack walks)".into(),
            helpers,
        ),
        (
            "· the trampolines' own instructions (where perf names them)".into(),
            trampolines,
        ),
        ("the agent, user space".into(), agent_user),
        (
            "the agent, in the kernel (vsock sends, polls)".into(),
            agent_kernel,
        ),
        (
            "the kernel's threads (vsock's worker, softirqs, RCU)".into(),
            others,
        ),
        ("perf itself".into(), perf),
        ("idle".into(), idle),
        (
            format!("rows under the report's {PERCENT_LIMIT}% limit"),
            (100.0 - by_comm(&|_| true)).max(0.0),
        ),
    ]
}

/// Each recording of the peers boot, its report parsed and grouped, per event over
/// `loop_events` (`None` when the loop's events are unknown); a recording that did
/// not run is left out (a problem when it failed). The traced recordings' rows are
/// compared with the untraced one's ([`over_untraced`]).
pub(super) fn guest_profiles(
    runs: &BTreeMap<String, Ran>,
    iterations: u64,
    loop_events: Option<f64>,
    problems: &mut Vec<String>,
) -> Vec<GuestProfile> {
    let mut profiles: Vec<GuestProfile> = RECORDINGS
        .iter()
        .filter_map(|(name, _, condition)| {
            let recorded = runs.get(*name)?;
            let report = runs.get(&report_name(name))?;
            if !recorded.ok() || !report.ok() {
                problems.push(format!(
                    "{name}: perf record exited {:?}, perf report {:?}",
                    recorded.status, report.status
                ));
                return None;
            }
            let Some(parsed) = parse_report(&report.output) else {
                problems.push(format!("{name}: perf report printed no rows"));
                return None;
            };
            Some(grouped(
                &parsed,
                name == &UNTRACED_RECORDING,
                condition,
                iterations,
                recorded,
                loop_events,
            ))
        })
        .collect();
    over_untraced(&mut profiles);
    profiles
}

/// Fills each traced profile's rows with how much more they took per loop event than
/// the same rows of the untraced profile (left `None` without one).
fn over_untraced(profiles: &mut [GuestProfile]) {
    let Some(baseline) = profiles.iter().find(|p| p.untraced).cloned() else {
        return;
    };
    for profile in profiles.iter_mut().filter(|p| !p.untraced) {
        for share in &mut profile.shares {
            let untraced = baseline
                .shares
                .iter()
                .find(|b| b.what == share.what)
                .and_then(|b| b.us_per_event);
            share.over_untraced_us = share.us_per_event.zip(untraced).map(|(t, u)| t - u);
        }
    }
}

/// One recording's profile.
fn grouped(
    parsed: &PerfReport,
    untraced: bool,
    condition: &str,
    iterations: u64,
    recorded: &Ran,
    loop_events: Option<f64>,
) -> GuestProfile {
    let sampled_ns = parsed.event_count;
    let shares = breakdown(parsed)
        .into_iter()
        .map(|(what, percent)| {
            // + 0.0: no "-0.0" for an empty group.
            let percent = percent + 0.0;
            ProfileShare {
                what,
                percent,
                // % of the sampled ns, per event, in µs.
                us_per_event: sampled_ns
                    .zip(loop_events.filter(|e| *e > 0.0))
                    .map(|(ns, events)| percent / 100.0 * ns as f64 / events / 1e3),
                over_untraced_us: None,
            }
        })
        .collect();
    GuestProfile {
        condition: condition.into(),
        untraced,
        iterations,
        hz: HZ,
        sampled_ms: sampled_ns.map(|ns| ns as f64 / 1e6),
        loop_ms: recorded.elapsed_s().map(|s| s * 1e3),
        events: loop_events,
        shares,
        stack_cache_percent: if untraced {
            None
        } else {
            recorded.stack_cache_share().map(|s| s * 100.0)
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as Debian's perf 6.1 printed them in a guest running the fopen loop under
    /// guestscope (trimmed).
    const REPORT_TEXT: &str = "\
# To display the perf.data header info, please use --header/--header-only options.
#
# Samples: 25K of event 'cpu-clock:pppH'
# Event count (approx.): 6314250000
#
# Children      Self  Command          Symbol
# ........  ........  ...............  ......
#
    81.00%     0.15%  fopen            [k] do_syscall_64
    13.78%     0.27%  fopen            [k] bpf_trampoline_6442461409
    11.49%     4.11%  fopen            [k] bpf_prog_5c18d739ade8ab8b_spin_lock_fentry
     3.69%     0.98%  fopen            [k] bpf_probe_read_kernel
     4.45%     2.14%  fopen            [k] __bpf_ringbuf_reserve
     2.90%     0.16%  fopen            [k] __this_module+0x404e
     2.50%     1.32%  fopen            [k] bpf_prog_7437752d0c7ad078_alloc_fd_fentry
     1.20%     0.86%  fopen            [k] __bpf_prog_enter_recur
     0.25%     0.25%  fopen            [k] __bpf_prog_exit_recur
    60.00%    60.00%  fopen            [k] path_openat
     0.64%     0.64%  guestscope-agen  guestscope-agent  [.] guestscope_agent::ringbuf::EventReader<T>::read_next
     4.17%     2.00%  guestscope-agen  [k] do_syscall_64
     2.27%     2.27%  rcu_preempt      [k] rcu_gp_kthread
     1.00%     1.00%  kworker/0:1-vir  [k] worker_thread
     0.95%     0.95%  perf             [k] perf_poll
     0.50%     0.50%  swapper          [k] default_idle
Warning: a line perf may print
";

    #[test]
    fn only_the_reports_run_no_loop() {
        assert!(is_report("fopen-profile-report"));
        assert!(is_report("fopen-profile-untraced-report"));
        assert!(is_report("fopen-profile-tallied-report"));
        assert!(!is_report("fopen-profile"));
        assert!(!is_report("fopen-all-0-report"));
        let names: Vec<String> = workloads("/w/fopen", 10)
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(
            names,
            [
                "fopen-profile-untraced",
                "fopen-profile-untraced-report",
                "fopen-profile",
                "fopen-profile-report",
                "fopen-profile-tallied",
                "fopen-profile-tallied-report"
            ]
        );
    }

    #[test]
    fn traced_rows_are_compared_with_the_same_rows_of_the_untraced_loop() {
        let share = |what: &str, us: Option<f64>| ProfileShare {
            what: what.into(),
            percent: 0.0,
            us_per_event: us,
            over_untraced_us: None,
        };
        let profile = |untraced: bool, shares: Vec<ProfileShare>| GuestProfile {
            untraced,
            shares,
            ..GuestProfile::default()
        };
        let mut profiles = vec![
            profile(
                false,
                vec![
                    share("the loop", Some(19.5)),
                    share("the kernel's threads", Some(1.5)),
                    share("the agent", Some(0.5)),
                    share("idle", None),
                ],
            ),
            profile(
                true,
                vec![
                    share("the loop", Some(18.0)),
                    share("the kernel's threads", Some(1.25)),
                    share("idle", Some(0.1)),
                ],
            ),
        ];
        over_untraced(&mut profiles);
        let over: Vec<Option<f64>> = profiles[0]
            .shares
            .iter()
            .map(|s| s.over_untraced_us)
            .collect();
        // A row the baseline lacks, or a time either side lacks, stays unknown.
        assert_eq!(over, [Some(1.5), Some(0.25), None, None]);
        assert!(
            profiles[1]
                .shares
                .iter()
                .all(|s| s.over_untraced_us.is_none())
        );
        // Without a baseline nothing is filled.
        let mut alone = vec![profiles[0].clone()];
        alone[0]
            .shares
            .iter_mut()
            .for_each(|s| s.over_untraced_us = None);
        over_untraced(&mut alone);
        assert!(alone[0].shares.iter().all(|s| s.over_untraced_us.is_none()));
    }

    #[test]
    fn reads_rows_and_the_event_count() {
        let r = parse_report(REPORT_TEXT).expect("rows");
        assert_eq!(r.event_count, Some(6_314_250_000));
        assert_eq!(r.rows.len(), 16);
        assert_eq!(
            r.rows[0],
            PerfRow {
                children: 81.0,
                own: 0.15,
                comm: "fopen".into(),
                kernel: true,
                symbol: "do_syscall_64".into(),
            }
        );
        let agent = &r.rows[10];
        assert_eq!(agent.comm, "guestscope-agen guestscope-agent");
        assert!(!agent.kernel);
        assert_eq!(
            agent.symbol,
            "guestscope_agent::ringbuf::EventReader<T>::read_next"
        );
        assert_eq!(parse_report("# nothing\nperf: no samples\n"), None);
    }

    #[test]
    fn groups_the_samples_by_what_the_guest_did() {
        let mut r = parse_report(REPORT_TEXT).expect("rows");
        // The sort is comm,sym: a dso column only with --sort comm,dso,sym.
        r.rows.retain(|row| !row.comm.contains(' '));
        let shares: BTreeMap<String, f64> = breakdown(&r).into_iter().collect();
        let get = |prefix: &str| {
            shares
                .iter()
                .find(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("no share {prefix}"))
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let programs = 11.49 + 2.50;
        let enter_exit = 1.20 + 0.25;
        // Only the trampoline perf named counts as one.
        let probes = programs + enter_exit + 0.27;
        assert!(close(get("the probes"), probes));
        assert!(close(get("· the programs"), 4.11 + 1.32));
        assert!(close(get("· the ring buffer"), 4.45));
        assert!(close(get("· stack reads"), 3.69));
        assert!(close(get("· entering"), enter_exit));
        assert!(close(get("· the trampolines"), 0.27));
        assert!(close(
            get("· other helpers"),
            programs - (4.11 + 1.32) - 4.45 - 3.69
        ));
        let loop_own: f64 = [0.15, 0.27, 4.11, 0.98, 2.14, 0.16, 1.32, 0.86, 0.25, 60.0]
            .iter()
            .sum();
        assert!(close(get("the loop, outside"), loop_own - probes));
        assert!(close(get("the agent, in the kernel"), 2.0));
        assert!(close(get("the kernel's threads"), 2.27 + 1.0));
        assert!(close(get("perf itself"), 0.95));
        assert!(close(get("idle"), 0.5));
        let listed: f64 = r.rows.iter().map(|row| row.own).sum();
        assert!(close(get("rows under"), 100.0 - listed));
    }
}
