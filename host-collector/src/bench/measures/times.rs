//! Boot to agent-ready and the warm lab's wall time, from the boots' and the lab's
//! own records.

use super::*;

pub(in crate::bench) fn boot_times(
    boots: &[(String, Option<f64>, Option<f64>)],
    lab_summary: Option<&Path>,
) -> BootTimes {
    let mut samples: Vec<(String, f64)> = boots
        .iter()
        .filter_map(|(n, hello, _)| Some((format!("bench {n}"), (*hello)?)))
        .collect();
    let mut banners: Vec<f64> = boots.iter().filter_map(|(_, _, banner)| *banner).collect();
    if let Some(summary) = lab_summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
    {
        for s in summary["experiments"]["boot"]["samples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if let (Some(i), Some(t)) = (s["boot"].as_u64(), s["agent_hello_s"].as_f64()) {
                samples.push((format!("lab boot {i}"), t));
            }
            if let Some(t) = s["kernel_banner_s"].as_f64() {
                banners.push(t);
            }
        }
    }
    BootTimes {
        agent_ready_s: Spread::of(&samples.iter().map(|(_, t)| *t).collect::<Vec<_>>()),
        kernel_banner_s: Spread::of(&banners),
        samples,
    }
}

pub(in crate::bench) fn lab_timing(wall_s: f64, summary: Option<&Path>) -> LabTiming {
    let s = summary
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    LabTiming {
        wall_s,
        guestscope_lab_s: s.as_ref().and_then(|s| s["run"]["wall_s"].as_f64()),
        complete: s
            .as_ref()
            .and_then(|s| s["run"]["outcome"]["complete"].as_bool()),
    }
}
