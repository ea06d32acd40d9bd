//! Experiment: wall-clock versus kernel boot time (seed §3.4, Table 1).
//!
//! Each boot is timed on the host from QEMU's launch, at four console
//! milestones, and on the guest's own clock (printk timestamps and the agent's
//! CLOCK_MONOTONIC reading in its hello). The difference between the two clocks
//! is split into the time before the kernel's clock starts (firmware, loading and
//! decompressing the kernel) and any drift while it runs.

use guestscope_common::wire::Hello;
use serde::{Deserialize, Serialize};

use crate::qemu::serial::BootMarks;
use crate::run_end::Outcome;

/// One boot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootSample {
    /// 1-based boot number.
    pub boot: u32,
    /// Host s from launch to the first console byte.
    pub first_byte_s: Option<f64>,
    /// Host s from launch to the kernel banner (the kernel clock reads ~0 here).
    pub kernel_banner_s: Option<f64>,
    /// Host s from launch to init's first line.
    pub init_s: Option<f64>,
    /// Kernel clock when init started (last printk timestamp before it).
    pub init_kernel_s: Option<f64>,
    /// Host s from launch to the arrival of the agent's hello (its first record).
    pub agent_hello_s: Option<f64>,
    /// Kernel clock (CLOCK_MONOTONIC) written in that hello: the same instant on
    /// the guest's clock, give or take the vsock transit (well under 1 ms).
    pub agent_hello_kernel_s: Option<f64>,
    /// Whether the boot reached the agent.
    pub ok: bool,
}

impl BootSample {
    /// Builds a sample from one boot's milestones and the agent's hello.
    pub fn from_run(
        boot: u32,
        m: &BootMarks,
        hello: Option<&Hello>,
        hello_host_s: Option<f64>,
        outcome: &Outcome,
    ) -> BootSample {
        BootSample {
            boot,
            first_byte_s: m.first_byte_s,
            kernel_banner_s: m.kernel_banner_s,
            init_s: m.init_start_s,
            init_kernel_s: m.init_start_kernel_s,
            agent_hello_s: hello_host_s,
            agent_hello_kernel_s: hello.map(|h| h.monotonic_ns as f64 / 1e9),
            ok: outcome.complete,
        }
    }
}

/// Mean and sample standard deviation of a column.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one sample).
    pub sd: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// Samples.
    pub n: usize,
}

impl Stat {
    /// Statistics of the present values; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Stat> {
        let v: Vec<f64> = values.into_iter().flatten().collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Stat {
            mean,
            sd: var.sqrt(),
            min,
            max,
            n,
        })
    }
}

/// The experiment over all boots.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootExperiment {
    /// Every boot.
    pub samples: Vec<BootSample>,
    /// Host time to the agent's hello.
    pub wall_to_hello: Option<Stat>,
    /// Kernel clock at the agent's hello.
    pub kernel_at_hello: Option<Stat>,
    /// Wall minus kernel at the agent's hello: the gap the lab saw.
    pub gap: Option<Stat>,
    /// Host time before the kernel clock starts (launch → banner): firmware,
    /// kernel load and decompression.
    pub before_kernel_clock: Option<Stat>,
    /// Host time to the first console byte.
    pub to_first_byte: Option<Stat>,
    /// Host time banner → init minus kernel time to init: clock drift while the
    /// kernel boots (≈0 means the guest clock keeps up with the host).
    pub drift_to_init: Option<Stat>,
    /// Host time init → agent hello (user space: modules, agent start).
    pub userspace: Option<Stat>,
    /// Share of the gap explained by the time before the kernel clock starts.
    pub explained_by_pre_kernel: Option<f64>,
    /// How many boots ran at once (each QEMU on a host core of its own); 1 in runs
    /// from before boots ran side by side.
    #[serde(default = "one")]
    pub at_once: usize,
}

/// What [`BootExperiment::at_once`] was before it was recorded.
fn one() -> usize {
    1
}

/// Summarizes the boots, which ran `at_once` at a time; `None` when there were none.
pub fn analyze(samples: Vec<BootSample>, at_once: usize) -> Option<BootExperiment> {
    if samples.is_empty() {
        return None;
    }
    let sub = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    let gap = Stat::of(
        samples
            .iter()
            .map(|s| sub(s.agent_hello_s, s.agent_hello_kernel_s)),
    );
    let before = Stat::of(samples.iter().map(|s| s.kernel_banner_s));
    let explained = match (gap, before) {
        (Some(g), Some(b)) if g.mean > 0.0 => Some(b.mean / g.mean),
        _ => None,
    };
    Some(BootExperiment {
        wall_to_hello: Stat::of(samples.iter().map(|s| s.agent_hello_s)),
        kernel_at_hello: Stat::of(samples.iter().map(|s| s.agent_hello_kernel_s)),
        gap,
        before_kernel_clock: before,
        to_first_byte: Stat::of(samples.iter().map(|s| s.first_byte_s)),
        drift_to_init: Stat::of(
            samples
                .iter()
                .map(|s| Some(sub(s.init_s, s.kernel_banner_s)? - s.init_kernel_s?)),
        ),
        userspace: Stat::of(samples.iter().map(|s| sub(s.agent_hello_s, s.init_s))),
        explained_by_pre_kernel: explained,
        at_once,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: u32, banner: f64, init: f64, init_k: f64, ready: f64, ready_k: f64) -> BootSample {
        BootSample {
            boot: i,
            first_byte_s: Some(0.05),
            kernel_banner_s: Some(banner),
            init_s: Some(init),
            init_kernel_s: Some(init_k),
            agent_hello_s: Some(ready),
            agent_hello_kernel_s: Some(ready_k),
            ok: true,
        }
    }

    #[test]
    fn stats_are_mean_and_sample_sd() {
        let s = Stat::of([Some(1.0), Some(3.0), None]).unwrap();
        assert_eq!((s.mean, s.n, s.min, s.max), (2.0, 2, 1.0, 3.0));
        assert!((s.sd - 2f64.sqrt()).abs() < 1e-12);
        assert!(Stat::of([None]).is_none());
    }

    #[test]
    fn a_summary_from_before_at_once_reads_as_one_at_a_time() {
        let e = analyze(vec![sample(1, 2.0, 3.6, 1.5, 4.0, 1.9)], 3).unwrap();
        let mut json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["at_once"], 3);
        json.as_object_mut().unwrap().remove("at_once");
        let old: BootExperiment = serde_json::from_value(json).unwrap();
        assert_eq!(old.at_once, 1);
    }

    #[test]
    fn the_gap_is_split_into_pre_kernel_time_and_drift() {
        let e = analyze(
            vec![
                sample(1, 2.0, 3.6, 1.5, 4.0, 1.9),
                sample(2, 2.2, 3.8, 1.5, 4.2, 1.9),
            ],
            2,
        )
        .unwrap();
        assert_eq!(e.at_once, 2);
        let gap = e.gap.unwrap();
        assert!((gap.mean - 2.2).abs() < 1e-9);
        assert!((e.before_kernel_clock.unwrap().mean - 2.1).abs() < 1e-9);
        assert!((e.drift_to_init.unwrap().mean - 0.1).abs() < 1e-9);
        assert!((e.explained_by_pre_kernel.unwrap() - 2.1 / 2.2).abs() < 1e-9);
        assert!(analyze(vec![], 1).is_none());
    }
}
