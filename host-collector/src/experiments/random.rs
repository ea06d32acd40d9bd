//! Experiment: /dev/random versus /dev/urandom (seed §7). Each device is read by
//! the `random` workload, which prints one JSON line per read with its latency;
//! `getrandom(GRND_NONBLOCK)` shows whether the kernel's CRNG was ready; the
//! guest's dmesg says when the CRNG was initialized in this boot.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Reads of one source.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Source {
    /// Workload name.
    pub workload: String,
    /// `/dev/random`, `/dev/urandom` or `getrandom(GRND_NONBLOCK)`.
    pub method: String,
    /// Successful reads.
    pub reads: u64,
    /// Failed reads (EAGAIN from a non-blocking source means: not ready).
    pub errors: u64,
    /// Distinct error texts.
    pub error_texts: Vec<String>,
    /// Latencies of every read, µs.
    pub latencies_us: Vec<f64>,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// Longest read, µs.
    pub max_us: Option<f64>,
    /// Whether any read took longer than [`BLOCKED_US`] (i.e. it waited).
    pub blocked: bool,
    /// Reads that took longer than [`BLOCKED_US`].
    pub blocked_reads: u64,
    /// Kernel clock (s) when the workload started.
    pub start_s: f64,
    /// Kernel clock (s), approximately, when the longest read returned (start plus
    /// the latencies of the reads up to it).
    pub longest_read_end_s: Option<f64>,
    /// Probe events of this workload whose kernel stack passes through
    /// [`JITTER_FN`]: the reader itself generating entropy.
    pub jitter_events: u64,
    /// One such stack.
    pub jitter_stack: Vec<String>,
}

/// The kernel function that generates entropy from CPU timing jitter in the
/// reading process when the CRNG is not ready (Linux 5.18+).
pub const JITTER_FN: &str = "try_to_generate_entropy";

/// A read longer than this is counted as having blocked.
pub const BLOCKED_US: f64 = 100_000.0;

/// The experiment's result.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RandomExperiment {
    /// One entry per source read.
    pub sources: Vec<Source>,
    /// The dmesg line saying the CRNG is ready, if present.
    pub crng_ready_line: Option<String>,
    /// Kernel seconds at which the CRNG became ready.
    pub crng_ready_s: Option<f64>,
    /// Kernel seconds at which init (the first user-space process) started.
    pub init_kernel_s: Option<f64>,
    /// `/proc/sys/kernel/random/entropy_avail` at the end of the run.
    pub entropy_avail: Option<u64>,
}

/// Parses one `random` workload's output.
pub fn parse_source(workload: &str, start_ns: u64, output: &str) -> Source {
    let mut s = Source {
        workload: workload.to_string(),
        start_s: start_ns as f64 / 1e9,
        ..Source::default()
    };
    let mut elapsed_us = 0.0;
    let mut longest = 0.0;
    for line in output.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(m) = v.get("method").and_then(Value::as_str) {
            s.method = m.to_string();
            continue;
        }
        let Some(ns) = v.get("latency_ns").and_then(Value::as_u64) else {
            continue;
        };
        elapsed_us += ns as f64 / 1e3;
        if ns as f64 / 1e3 > longest {
            longest = ns as f64 / 1e3;
            s.longest_read_end_s = Some(s.start_s + elapsed_us / 1e6);
        }
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            s.errors += 1;
            if !s.error_texts.iter().any(|t| t == e) {
                s.error_texts.push(e.to_string());
            }
        } else {
            s.reads += 1;
            s.latencies_us.push(ns as f64 / 1e3);
        }
    }
    let mut sorted = s.latencies_us.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize])
    };
    s.p50_us = pct(0.5);
    s.p99_us = pct(0.99);
    s.max_us = sorted.last().copied();
    s.blocked = s.max_us.is_some_and(|m| m > BLOCKED_US);
    s.blocked_reads = s.latencies_us.iter().filter(|l| **l > BLOCKED_US).count() as u64;
    s
}

/// Finds the CRNG-ready message in dmesg (`random: crng init done` on 6.x).
pub fn crng_ready(dmesg: &str) -> Option<(String, Option<f64>)> {
    let line = dmesg
        .lines()
        .find(|l| l.contains("crng init done") || l.contains("crng ready"))?;
    Some((
        line.trim().to_string(),
        crate::qemu::serial::printk_timestamp(line),
    ))
}

/// Builds the experiment from the workloads' outputs and guest artifacts.
pub fn analyze(
    outputs: &[(String, u64, String)],
    dmesg: &str,
    entropy_avail: Option<&str>,
    init_kernel_s: Option<f64>,
) -> Option<RandomExperiment> {
    if outputs.is_empty() {
        return None;
    }
    let (line, ts) = crng_ready(dmesg)
        .map(|(l, t)| (Some(l), t))
        .unwrap_or((None, None));
    Some(RandomExperiment {
        sources: outputs
            .iter()
            .map(|(w, t, o)| parse_source(w, *t, o))
            .collect(),
        crng_ready_line: line,
        crng_ready_s: ts,
        init_kernel_s,
        entropy_avail: entropy_avail.and_then(|s| s.trim().parse().ok()),
    })
}

/// Counts, per source, the probe events whose stacks pass through [`JITTER_FN`].
pub fn annotate_with_stacks<W: std::io::Write>(
    r: &mut RandomExperiment,
    session: &mut crate::session::Session<W>,
) {
    for src in &mut r.sources {
        let Some(i) = session
            .workloads
            .iter()
            .position(|w| w.started.name == src.workload)
        else {
            continue;
        };
        for kind in guestscope_common::event::ProbeKind::ALL {
            for (id, count) in session.stacks_of(i, kind) {
                let frames = session.stack(id);
                if frames
                    .iter()
                    .any(|f| guest_kernel::kallsyms::frame_function(f) == JITTER_FN)
                {
                    src.jitter_events += count;
                    if src.jitter_stack.is_empty() {
                        src.jitter_stack = frames.to_vec();
                    }
                }
            }
        }
    }
}

/// A plain-language reading of the measurements, every figure from this run.
pub fn explain(r: &RandomExperiment) -> String {
    let mut out = String::from(
        "Since Linux 5.6, `/dev/random` blocks only until the kernel's CRNG is initialized (once per boot) and then \
         behaves exactly like `/dev/urandom`; the entropy estimate no longer gates reads. This run: ",
    );
    let mut parts = Vec::new();
    for s in &r.sources {
        let what = if s.method.contains("getrandom") {
            if s.errors > 0 {
                format!(
                    "`{}`: {} of {} non-blocking `getrandom` calls failed ({}): the CRNG was not ready yet",
                    s.workload,
                    s.errors,
                    s.errors + s.reads,
                    s.error_texts.join("; ")
                )
            } else {
                format!(
                    "`{}`: all {} non-blocking `getrandom` calls succeeded: the CRNG was ready",
                    s.workload, s.reads
                )
            }
        } else if s.blocked {
            let when = match (s.longest_read_end_s, r.crng_ready_s) {
                (Some(end), Some(crng)) => format!(
                    ", returning at ≈{end:.3} s on the kernel clock, next to the CRNG becoming ready at {crng:.3} s"
                ),
                _ => String::new(),
            };
            let jitter = if s.jitter_events > 0 {
                format!(
                    " — it was not waiting for outside entropy: {} probe events of that read have `{JITTER_FN}` on their kernel stack, \
                     i.e. the reading process itself ran the kernel's CPU-jitter entropy generator until the CRNG was seeded",
                    s.jitter_events
                )
            } else {
                String::new()
            };
            format!(
                "`{}` ({}) blocked on {} of {} reads, the longest for {:.0} ms{}{}; its median read took {:.1} µs",
                s.workload,
                s.method,
                s.blocked_reads,
                s.reads,
                s.max_us.unwrap_or(0.0) / 1e3,
                when,
                jitter,
                s.p50_us.unwrap_or(0.0)
            )
        } else {
            format!(
                "`{}` ({}) never blocked: {} reads, longest {:.1} µs",
                s.workload,
                s.method,
                s.reads,
                s.max_us.unwrap_or(0.0)
            )
        };
        parts.push(what);
    }
    out.push_str(&parts.join("; "));
    out.push('.');
    let random_blocked = r
        .sources
        .iter()
        .any(|s| s.method == "/dev/random" && s.blocked);
    let crng_before_random = match (
        r.sources.iter().find(|s| s.method == "/dev/random"),
        r.crng_ready_s,
    ) {
        (Some(s), Some(c)) => c <= s.start_s,
        _ => false,
    };
    if !random_blocked && crng_before_random {
        out.push_str(
            " `/dev/random` did not block because the CRNG was already initialized when it was read — not because \
             the VM lacked a hardware RNG or had \"enough entropy\".",
        );
    }
    if r.sources
        .iter()
        .any(|s| s.method == "/dev/urandom" && s.blocked)
    {
        out.push_str(
            " Since Linux 5.18 a `/dev/urandom` read before the CRNG is ready does not return weak bytes either: it first \
             tries to seed the CRNG from CPU timing jitter, which is the wait measured above.",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reads_errors_and_percentiles() {
        let out = "{\"read\":0,\"bytes\":32,\"latency_ns\":2000}\n{\"read\":1,\"bytes\":32,\"latency_ns\":4000}\n\
                   {\"read\":2,\"error\":\"Resource temporarily unavailable (os error 11)\",\"latency_ns\":900}\n\
                   {\"workload\":\"random\",\"method\":\"/dev/urandom\",\"reads\":3}\n";
        let s = parse_source("urandom", 2_000_000_000, out);
        assert_eq!((s.reads, s.errors), (2, 1));
        assert_eq!(s.method, "/dev/urandom");
        assert_eq!(s.max_us, Some(4.0));
        assert!(!s.blocked);
        assert!(s.error_texts[0].contains("os error 11"));
        assert_eq!(s.blocked_reads, 0);
        assert!((s.longest_read_end_s.unwrap() - (2.0 + 6e-6)).abs() < 1e-9);
    }

    #[test]
    fn finds_crng_ready_time() {
        let d = "[    0.000000] Linux version\n[    1.234567] random: crng init done\n";
        assert_eq!(
            crng_ready(d),
            Some((
                "[    1.234567] random: crng init done".into(),
                Some(1.234567)
            ))
        );
        assert!(crng_ready("nothing").is_none());
    }
}
