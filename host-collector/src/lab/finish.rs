//! The end of a run: the analysis assembled into the summary, the outputs written.

use super::*;

/// The error for outputs that could not be written, saying what `events.jsonl` kept.
pub fn outputs_error(dir: &Path, e: &io::Error) -> LabError {
    let kept =
        std::fs::read(dir.join("events.jsonl")).map(|b| b.iter().filter(|&&c| c == b'\n').count());
    let kept = kept
        .map(|n| format!("; events.jsonl keeps the {n} events written before"))
        .unwrap_or_default();
    LabError::Outputs {
        dir: dir.to_path_buf(),
        source: io::Error::new(e.kind(), e.to_string()),
        kept,
    }
}

/// Analyzes a collected run, checks the lab's claims and writes every output
/// (`summary.json`, `report.md`, `report.html`, `trace.perfetto-trace`,
/// `stacks.jsonl`, `run.json`, the host times in `events.jsonl`, guest artifacts)
/// to `dir`.
pub fn finish(
    dir: &Path,
    c: &mut Collected,
    mut run: summary::RunInfo,
    after: AfterBoots,
) -> io::Result<summary::Summary> {
    let session = &mut c.session;
    let _ = session.flush();
    run.kernel_release = session.hello.as_ref().map(|h| h.kernel_release.clone());
    let (probes, workloads, losses, mut stream) = summary::collect(session);
    let experiments = analyze_experiments(c, after);
    let session = &mut c.session;
    stream.bytes = c.bytes;
    stream.decode_error = c.decode_error.clone();
    stream.link = c.link.clone();
    let mut summary = summary::Summary {
        guestscope_version: env!("CARGO_PKG_VERSION").to_string(),
        run,
        boot: c.marks.clone(),
        stream,
        losses,
        probes,
        user_probes: crate::output::user_probes::collect(session, &workloads),
        workloads,
        experiments,
        kernel: Default::default(),
        skipped: Vec::new(),
        claims: Vec::new(),
        timeline: Default::default(),
        trace: None,
        agent_messages: session
            .agent_logs
            .iter()
            .map(|(l, m)| format!("{l}: {m}"))
            .collect(),
    };
    let attach: Vec<_> = summary.probes.iter().map(|p| p.attach.clone()).collect();
    let btf = session
        .artifacts
        .get("btf")
        .is_some_and(|a| !a.data.is_empty());
    summary.kernel = experiments::support::kernel_support(&attach, btf, session.kallsyms.as_ref());
    summary.kernel.callers_recovered = session.totals.as_ref().map(|t| t.callers_recovered);
    let ran_workloads = summary.workloads.iter().any(|w| w.status.is_some());
    summary.skipped = experiments::support::skipped(&attach, &summary.experiments, ran_workloads);
    summary.claims = experiments::claims::check(&summary.experiments, summary.run.stacks);
    let timeline = timeline_of(c, &mut summary.timeline);
    if let Some(t) = &timeline {
        cross_check_snapshots(dir, t, &mut summary.timeline);
    }
    let stacks = write_run_files(
        dir,
        &summary,
        &c.session,
        timeline.as_ref(),
        c.host_epoch_unix_ns,
    )?;
    let session = &mut c.session;
    // The trace is the largest output: if it cannot be written (a full disk), the
    // summary and the reports still are, and then the error is returned.
    let trace = write_trace(dir, &summary, session, &stacks, timeline.as_ref());
    let (trace, trace_error) = match trace {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e)),
    };
    summary.trace = trace;
    write_outputs(dir, &summary, session)?;
    match trace_error {
        Some(e) => Err(io::Error::new(
            e.kind(),
            format!("trace.perfetto-trace: {e}"),
        )),
        None => Ok(summary),
    }
}

/// The lab's experiments, each answered from the traced run `c` (the boot-time
/// boots' samples and the CR3 boots' results come from their own boots).
fn analyze_experiments(c: &mut Collected, after: AfterBoots) -> summary::Experiments {
    let AfterBoots {
        boots,
        cr3: syscall_cr3,
        at_once,
    } = after;
    let session = &mut c.session;
    let mut experiments = summary::Experiments {
        boot: experiments::boot::analyze(boots, at_once),
        pci: experiments::pci::analyze(
            &session.artifact_text("pci").unwrap_or_default(),
            &session.artifact_text("dmesg").unwrap_or_default(),
        ),
        random: experiments::random::analyze(
            &session
                .workloads
                .iter()
                .filter(|w| RANDOM_WORKLOADS.contains(&w.started.name.as_str()))
                .filter_map(|w| {
                    Some((
                        w.started.name.clone(),
                        w.started.start_ns,
                        w.exited.as_ref()?.output.clone(),
                    ))
                })
                .collect::<Vec<_>>(),
            &session.artifact_text("dmesg").unwrap_or_default(),
            session.artifact_text("entropy_avail").as_deref(),
            c.marks.init_start_kernel_s,
        ),
        syscall_cr3,
        spin_lock: experiments::spinlock::analyze(session),
        page_faults: experiments::faults::analyze(session),
    };
    if let Some(r) = experiments.random.as_mut() {
        experiments::random::annotate_with_stacks(r, session);
    }
    experiments
}

/// Checks the gdbstub's snapshots against the eBPF events of the same moments
/// (`events.jsonl` in `dir`, on the time line `t`), into `report`.
fn cross_check_snapshots(dir: &Path, t: &Timeline, report: &mut summary::TimelineReport) {
    if let Some(sr) = report.snapshots.as_mut()
        && let Some(run) = &sr.run
    {
        match read_event_points(&dir.join("events.jsonl")) {
            Ok(events) => {
                // The built-in snapshots stop where the alloc_fd probe fires; the user's
                // stops where their kprobes or fentry probes on the same function do.
                let same_call = if run.user_stops() {
                    snapshots::SameCall::SiteProbes
                } else {
                    snapshots::SameCall::Probe(ProbeKind::AllocFd.name())
                };
                sr.cross_check = Some(snapshots::cross_check(
                    &run.snapshots,
                    &events,
                    t,
                    same_call,
                ))
            }
            Err(e) => sr.error = Some(format!("reading events.jsonl for the cross-check: {e}")),
        }
    }
}

/// Guest time onto host time for this run: the clock-sync round trips fitted in
/// running time (the gdbstub's holds taken out), or, with no round trip answered, the
/// agent's hello alone. Fills `report` with what was measured.
pub(super) fn timeline_of(c: &Collected, report: &mut summary::TimelineReport) -> Option<Timeline> {
    report.probes = c.clock.counts.clone();
    report.samples = c.clock.samples.clone();
    let run = c.snapshots.as_ref().and_then(|r| r.as_ref().ok());
    let host_holds = run.map(|r| r.holds.clone()).unwrap_or_default();
    report.snapshots = c.snapshots.as_ref().map(|r| match r {
        Ok(run) => summary::SnapshotsReport {
            run: Some(run.clone()),
            ..Default::default()
        },
        Err(e) => summary::SnapshotsReport {
            error: Some(e.clone()),
            ..Default::default()
        },
    });
    let holds = Holds::with_slack(host_holds);
    report.holds = holds.len();
    report.held_ms = holds.total_ns() as f64 / 1e6;
    if let Some(map) = clock::fit(&c.clock.samples, &holds) {
        report.fit = Some(map);
        if !holds.is_empty() {
            report.error_bound_ignoring_holds_ns =
                clock::fit(&c.clock.samples, &Holds::default()).map(|m| m.error_bound_ns);
        }
        report.method = format!(
            "{} clock-sync round trips over vsock (host probe, guest CLOCK_MONOTONIC echo), one offset-and-drift line \
             through every round trip's window{}",
            map.samples,
            if holds.is_empty() {
                String::new()
            } else {
                format!(
                    ", with the {} gdbstub holds taken out (as the host saw them; the {:.1} ms their single steps took may have \
                     run the guest's clock, so each may have been that much shorter)",
                    holds.len(),
                    holds.slack_total_ns() as f64 / 1e6
                )
            }
        );
        return Some(Timeline { map, holds });
    }
    let (hello, host_s) = (c.session.hello.as_ref()?, c.hello_host_s?);
    report.method = "no clock-sync round trip was answered: one sample, the agent's hello (guest stamp against its arrival), \
                     error within the vsock transit time"
        .into();
    let map = clock::ClockMap {
        offset_ns: host_s * 1e9 - hello.monotonic_ns as f64,
        drift: 0.0,
        guest_ref_ns: hello.monotonic_ns,
        error_bound_ns: f64::NAN,
        consistent: true,
        samples: 0,
        best_rtt_ns: 0,
        span_ns: 0,
    };
    Some(Timeline { map, holds })
}

/// The events of `events.jsonl` as the snapshot cross-check needs them.
pub(super) fn read_event_points(path: &Path) -> io::Result<Vec<snapshots::EventPoint>> {
    let mut out = Vec::new();
    for l in crate::run_files::events::read_events(io::BufReader::new(File::open(path)?)) {
        let l = l?;
        // Events of probes this build knows (a user probe's as `kprobe:FUNCTION`).
        if ProbeKind::of_event(&l.probe).is_none() {
            continue;
        }
        out.push(snapshots::EventPoint {
            ts_ns: l.ts_ns,
            cpu: l.cpu,
            tid: l.tid,
            pid: l.pid,
            probe: l.probe.into_owned(),
        });
    }
    Ok(out)
}
