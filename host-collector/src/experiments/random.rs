//! Experiment: /dev/random versus /dev/urandom (seed §7). Each device is read by
//! the `random` workload, which prints one JSON line per read with its latency;
//! `getrandom(GRND_NONBLOCK)` shows whether the kernel's CRNG was ready; the
//! guest's dmesg says when the CRNG was initialized in this boot.

use serde::Serialize;
use serde_json::Value;

/// Reads of one source.
#[derive(Clone, Debug, Default, Serialize)]
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
}

/// A read longer than this is counted as having blocked.
pub const BLOCKED_US: f64 = 100_000.0;

/// The experiment's result.
#[derive(Clone, Debug, Default, Serialize)]
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
pub fn parse_source(workload: &str, output: &str) -> Source {
    let mut s = Source { workload: workload.to_string(), ..Source::default() };
    for line in output.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        if let Some(m) = v.get("method").and_then(Value::as_str) {
            s.method = m.to_string();
            continue;
        }
        let Some(ns) = v.get("latency_ns").and_then(Value::as_u64) else { continue };
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
    let pct = |p: f64| (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize]);
    s.p50_us = pct(0.5);
    s.p99_us = pct(0.99);
    s.max_us = sorted.last().copied();
    s.blocked = s.max_us.is_some_and(|m| m > BLOCKED_US);
    s
}

/// Finds the CRNG-ready message in dmesg (`random: crng init done` on 6.x).
pub fn crng_ready(dmesg: &str) -> Option<(String, Option<f64>)> {
    let line = dmesg.lines().find(|l| l.contains("crng init done") || l.contains("crng ready"))?;
    Some((line.trim().to_string(), crate::qemu::serial::printk_timestamp(line)))
}

/// Builds the experiment from the workloads' outputs and guest artifacts.
pub fn analyze(outputs: &[(String, String)], dmesg: &str, entropy_avail: Option<&str>, init_kernel_s: Option<f64>) -> Option<RandomExperiment> {
    if outputs.is_empty() {
        return None;
    }
    let (line, ts) = crng_ready(dmesg).map(|(l, t)| (Some(l), t)).unwrap_or((None, None));
    Some(RandomExperiment {
        sources: outputs.iter().map(|(w, o)| parse_source(w, o)).collect(),
        crng_ready_line: line,
        crng_ready_s: ts,
        init_kernel_s,
        entropy_avail: entropy_avail.and_then(|s| s.trim().parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reads_errors_and_percentiles() {
        let out = "{\"read\":0,\"bytes\":32,\"latency_ns\":2000}\n{\"read\":1,\"bytes\":32,\"latency_ns\":4000}\n\
                   {\"read\":2,\"error\":\"Resource temporarily unavailable (os error 11)\",\"latency_ns\":900}\n\
                   {\"workload\":\"random\",\"method\":\"/dev/urandom\",\"reads\":3}\n";
        let s = parse_source("urandom", out);
        assert_eq!((s.reads, s.errors), (2, 1));
        assert_eq!(s.method, "/dev/urandom");
        assert_eq!(s.max_us, Some(4.0));
        assert!(!s.blocked);
        assert!(s.error_texts[0].contains("os error 11"));
    }

    #[test]
    fn finds_crng_ready_time() {
        let d = "[    0.000000] Linux version\n[    1.234567] random: crng init done\n";
        assert_eq!(crng_ready(d), Some(("[    1.234567] random: crng init done".into(), Some(1.234567))));
        assert!(crng_ready("nothing").is_none());
    }
}
