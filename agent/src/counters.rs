//! The probes' own counters (`COUNTERS`, one slot per CPU and probe kind), summed.

use std::borrow::Borrow;

use aya::maps::{MapData, PerCpuArray};
use guestscope_common::{ProbeCounters, ProbeKind};

/// Sums one probe's counters over CPUs.
pub fn sum(per_cpu: &[ProbeCounters]) -> ProbeCounters {
    per_cpu
        .iter()
        .fold(ProbeCounters::default(), |mut total, c| {
            total.add(c);
            total
        })
}

/// Every probe kind's counters summed over CPUs, by probe name, in id order. Kinds
/// whose slot cannot be read (or all, without a map) report zeros.
pub fn read_all<T: Borrow<MapData>>(
    map: Option<&PerCpuArray<T, ProbeCounters>>,
) -> Vec<(String, ProbeCounters)> {
    ProbeKind::ALL
        .into_iter()
        .map(|kind| {
            let total = match map.map(|m| m.get(&(kind as u32), 0)) {
                Some(Ok(values)) => sum(&values),
                Some(Err(e)) => {
                    tracing::warn!(probe = kind.name(), "reading counters: {e}");
                    ProbeCounters::default()
                }
                None => ProbeCounters::default(),
            };
            (kind.name().to_string(), total)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_field_over_cpus() {
        let a = ProbeCounters {
            matched: 1,
            emitted: 2,
            ring_full: 3,
            stack_failed: 4,
            nested: 5,
            stack_cached: 6,
            stack_cache_wrong: 7,
            tallied: 8,
        };
        let b = ProbeCounters {
            matched: 10,
            emitted: 20,
            ring_full: 30,
            stack_failed: 40,
            nested: 50,
            stack_cached: 60,
            stack_cache_wrong: 70,
            tallied: 80,
        };
        assert_eq!(
            sum(&[a, b]),
            ProbeCounters {
                matched: 11,
                emitted: 22,
                ring_full: 33,
                stack_failed: 44,
                nested: 55,
                stack_cached: 66,
                stack_cache_wrong: 77,
                tallied: 88,
            }
        );
        assert_eq!(sum(&[]), ProbeCounters::default());
    }

    #[test]
    fn without_a_map_every_kind_is_zero() {
        let all = read_all::<MapData>(None);
        assert_eq!(all.len(), ProbeKind::ALL.len());
        assert_eq!(all[0].0, "spin_lock");
        assert!(all.iter().all(|(_, c)| *c == ProbeCounters::default()));
    }
}
