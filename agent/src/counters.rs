//! The probes' own counters (`COUNTERS`, one slot per CPU and probe kind), summed.

use std::borrow::Borrow;

use aya::maps::{Array, MapData};
use guestscope_common::{ProbeCounters, ProbeKind, maps::counter_slot};

/// Sums one probe's counters over CPUs.
pub fn sum(per_cpu: &[ProbeCounters]) -> ProbeCounters {
    per_cpu
        .iter()
        .fold(ProbeCounters::default(), |mut total, c| {
            total.add(c);
            total
        })
}

/// Every probe kind's counters summed over CPUs, by probe name, in id order: each of
/// the array's rows is a CPU's (see [`counter_slot`]). A slot that cannot be read
/// counts as zeros, as does every kind without a map.
pub fn read_all<T: Borrow<MapData>>(
    map: Option<&Array<T, ProbeCounters>>,
) -> Vec<(String, ProbeCounters)> {
    let cpus = map.map_or(0, |m| m.len() / ProbeKind::COUNT as u32);
    ProbeKind::ALL
        .into_iter()
        .map(|kind| {
            let per_cpu: Vec<ProbeCounters> = (0..cpus)
                .filter_map(|cpu| {
                    let slot = counter_slot(cpu, kind as u32)?;
                    map?.get(&slot, 0)
                        .inspect_err(|e| {
                            tracing::warn!(probe = kind.name(), cpu, "reading counters: {e}")
                        })
                        .ok()
                })
                .collect();
            (kind.name().to_string(), sum(&per_cpu))
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
