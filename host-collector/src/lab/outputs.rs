//! Writing the outputs: the Perfetto trace, the report's figures, summary.json, report.md/html, stacks.folded and the guest's artifacts.

use super::*;
use crate::output::figure_data::FigureData;
use crate::run_files::header::{ClockFit, RunHeader};
use crate::run_files::host_time::{self, HostClock};
use crate::run_files::stacks::{StackLine, Stacks};

/// The run's data files for SQL engines: `stacks.jsonl`, the host time on every line
/// of `events.jsonl` (when the run has a clock fit: `host_epoch_unix_ns` is the wall
/// clock at the zero of its host axis), and `run.json`. Returns the stacks, which the
/// trace interns.
pub(super) fn write_run_files<W: io::Write>(
    dir: &Path,
    s: &summary::Summary,
    session: &Session<W>,
    timeline: Option<&Timeline>,
    host_epoch_unix_ns: i64,
) -> io::Result<Stacks> {
    let stacks = session_stacks(session);
    let mut text = Vec::new();
    stacks.write(&mut text)?;
    atomic::write(&dir.join("stacks.jsonl"), &text)?;
    let clock = timeline.map(|timeline| HostClock {
        timeline,
        launch_unix_ns: host_epoch_unix_ns,
    });
    let events = match &clock {
        Some(clock) => host_time::add_host_time(&dir.join("events.jsonl"), clock)?,
        None => s.stream.events_received,
    };
    let run = &s.run;
    let header = RunHeader {
        schema_version: crate::run_files::SCHEMA_VERSION,
        run_id: session.run_id().to_string(),
        guestscope_version: s.guestscope_version.clone(),
        started_unix_s: run.started_unix_s,
        host_name: crate::run_files::header::host_name(),
        accel: run.accel.clone(),
        cpus: run.cpus,
        memory_mb: run.memory_mb,
        kernel_release: run.kernel_release.clone(),
        unwinder: s
            .kernel
            .unwinder
            .and_then(|u| serde_json::to_value(u).ok())
            .and_then(|v| v.as_str().map(str::to_string)),
        events,
        stacks: stacks.len() as u64,
        clock: clock.as_ref().map(ClockFit::of),
    };
    let json = serde_json::to_vec_pretty(&header).map_err(io::Error::other)?;
    atomic::write(&dir.join("run.json"), &json)?;
    Ok(stacks)
}

/// Every stack the session received, symbolized, each spin_lock stack with the class
/// the spin_lock experiment counts it under.
fn session_stacks<W: io::Write>(session: &Session<W>) -> Stacks {
    let spin_lock: std::collections::BTreeSet<i32> = (0..session.workloads.len())
        .flat_map(|i| session.stacks_of(i, ProbeKind::SpinLock))
        .map(|(id, _)| id)
        .collect();
    let run_id = session.run_id();
    Stacks::from_lines(session.stack_ids().into_iter().map(|stack_id| {
        let frames = session.stack_frames(stack_id);
        let spin_lock_class = (spin_lock.contains(&stack_id) && !frames.is_empty()).then(|| {
            experiments::classify::SPIN_LOCK_RULES
                .classify(&frames)
                .class
                .to_string()
        });
        StackLine {
            run_id: run_id.to_string(),
            stack_id,
            frames,
            spin_lock_class,
        }
    }))
}

/// Writes `trace.perfetto-trace`: boot milestones (host clock), workloads and every
/// probe event (guest clock, its snapshots against the host's axis from
/// `timeline`), and the gdbstub's holds and snapshots (host clock).
pub(super) fn write_trace<W: io::Write>(
    dir: &Path,
    s: &summary::Summary,
    session: &Session<W>,
    stacks: &Stacks,
    timeline: Option<&Timeline>,
) -> io::Result<Option<summary::TraceInfo>> {
    let Some(timeline) = timeline else {
        return Ok(None);
    };
    let events_path = dir.join("events.jsonl");
    let (first, last) = guest_span(&events_path, session)?;
    let info = atomic::write_with(&dir.join("trace.perfetto-trace"), |out| {
        let mut w = crate::output::perfetto::TraceWriter::new(
            out,
            crate::output::perfetto::guest_clock::points(timeline, first, last),
        );
        let b = &s.boot;
        let ns = |v: f64| (v * 1e9) as u64;
        let phases = [
            (
                "firmware, kernel load and decompression",
                Some(0.0),
                b.kernel_banner_s,
            ),
            ("kernel init", b.kernel_banner_s, b.init_start_s),
            ("user space to agent ready", b.init_start_s, b.agent_ready_s),
        ];
        for (name, a, z) in phases {
            if let (Some(a), Some(z)) = (a, z) {
                w.slice(&crate::output::perfetto::Slice {
                    track: "boot (host clock)".into(),
                    name: name.into(),
                    start_ns: ns(a),
                    end_ns: ns(z),
                })?;
            }
        }
        for wl in &session.workloads {
            if let Some(x) = &wl.exited {
                w.workload(
                    wl.started.pid,
                    &wl.started.name,
                    wl.started.start_ns,
                    x.end_ns,
                )?;
            }
        }
        let (mut n_snapshots, mut n_holds) = (0, 0);
        if let Some(run) = s.timeline.snapshots.as_ref().and_then(|r| r.run.as_ref()) {
            for &(a, z, _) in &run.holds {
                w.slice(&crate::output::perfetto::Slice {
                    track: GDB_TRACK.into(),
                    name: "VM held (guest clock stopped)".into(),
                    start_ns: a,
                    end_ns: z,
                })?;
                n_holds += 1;
            }
            for snap in &run.snapshots {
                let mut args = vec![
                    ("pid".to_string(), snap.pid.to_string()),
                    ("tgid".to_string(), snap.tgid.to_string()),
                    ("comm".to_string(), snap.comm.clone()),
                    (
                        "cpu".to_string(),
                        snap.cpu.map_or_else(|| "?".into(), |c| c.to_string()),
                    ),
                ];
                args.extend(
                    snap.registers
                        .iter()
                        .map(|(r, v)| (r.clone(), format!("{v:#x}"))),
                );
                w.instant_on(
                    GDB_TRACK,
                    snap.host_ns,
                    &format!("gdbstub snapshot at {}", run.symbol),
                    &args,
                )?;
                n_snapshots += 1;
            }
        }
        let events = w.events_from_jsonl(io::BufReader::new(File::open(&events_path)?), stacks)?;
        let packets = w.packets;
        w.finish()?;
        Ok(summary::TraceInfo {
            file: "trace.perfetto-trace".into(),
            packets,
            events,
            snapshots: n_snapshots,
            holds: n_holds,
        })
    })?;
    Ok(Some(info))
}

/// The guest times the trace holds (every event's and workload's), for the guest
/// clock's snapshots: (earliest, latest), ns.
fn guest_span<W: io::Write>(events: &Path, session: &Session<W>) -> io::Result<(u64, u64)> {
    /// Only the time of an `events.jsonl` line.
    #[derive(serde::Deserialize)]
    struct Stamp {
        ts_ns: u64,
    }
    let (mut first, mut last) = (u64::MAX, 0);
    let mut see = |t: u64| {
        first = first.min(t);
        last = last.max(t);
    };
    for wl in &session.workloads {
        see(wl.started.start_ns);
        if let Some(x) = &wl.exited {
            see(x.end_ns);
        }
    }
    for line in io::BufRead::lines(io::BufReader::new(File::open(events)?)) {
        if let Ok(s) = serde_json::from_str::<Stamp>(&line?) {
            see(s.ts_ns);
        }
    }
    Ok(if first > last { (0, 0) } else { (first, last) })
}

/// The trace track of the gdbstub's holds and snapshots (host clock).
pub(super) const GDB_TRACK: &str = "gdbstub (host clock)";

/// Writes summary.json, report.md, report.html, stacks.folded and the guest's
/// artifacts (`guest/`) into `dir`, each whole or not at all.
pub(super) fn write_outputs<W: io::Write>(
    dir: &Path,
    s: &summary::Summary,
    session: &Session<W>,
) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(s).map_err(io::Error::other)?;
    atomic::write(&dir.join("summary.json"), &json)?;
    crate::output::reports::write(dir, s, &FigureData::of_session(session))?;
    let guest = dir.join("guest");
    std::fs::create_dir_all(&guest)?;
    for (name, a) in &session.artifacts {
        if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            atomic::write(&guest.join(name), &a.data)?;
        }
    }
    Ok(())
}
