//! The loop overheads' figures from made-up runs: the agent's marginal cost, the
//! ftrace and bpftrace peers.

use guestscope_common::{ProbeCounters, plan::WorkloadTracing};

use super::*;

/// A run of `matched` events (all counted as spin_lock) in `loop_ms`, the agent
/// using `agent_ms` of CPU.
fn ran(matched: u64, loop_ms: u64, agent_ms: u64) -> Ran {
    Ran {
        status: Some(0),
        elapsed_ns: Some(loop_ms * 1_000_000),
        tracing: Some(WorkloadTracing {
            counters: vec![(
                "spin_lock".into(),
                ProbeCounters {
                    matched,
                    ..ProbeCounters::default()
                },
            )],
            probes: vec!["spin_lock".into()],
            agent_cpu_ns: agent_ms * 1_000_000,
            ..WorkloadTracing::default()
        }),
        ..Ran::default()
    }
}

#[test]
fn the_agents_marginal_cost_per_event_leaves_out_what_every_workload_costs_it() {
    let mut runs = BTreeMap::new();
    // Rep 0: 10,000 loop events (10,100 matched, 100 of them process start and exit),
    // 30 ms of agent CPU traced against 5 ms untraced; rep 1: 20,000, 50 ms against 10.
    for (rep, (events, all_ms, off_ms)) in [(10_000, 30, 5), (20_000, 50, 10)].iter().enumerate() {
        runs.insert(format!("fopen-base-{rep}"), ran(100, 1, 1));
        runs.insert(format!("fopen-off-{rep}"), ran(0, 70, *off_ms));
        let mut all = ran(events + 100, 150, *all_ms);
        // 101 page faults and 202 waits in each traced run, 303 preemptions in rep 1.
        let t = all.tracing.as_mut().unwrap();
        (t.agent_minor_faults, t.agent_voluntary_switches) = (101, 202);
        t.agent_involuntary_switches = 303 * rep as u64;
        runs.insert(format!("fopen-all-{rep}"), all);
    }
    let mut problems = Vec::new();
    let o = loop_overhead("fopen", 2000, 2, false, &runs, &mut problems);
    // Per thousand matched events: 10 and 5.02... faults, twice that many waits.
    let a = &o.agent_activity;
    let (faults, waits) = (a.faults.as_ref().unwrap(), a.waits.as_ref().unwrap());
    assert_eq!((faults.max, faults.n), (10.0, 2));
    assert!((faults.min - 101e3 / 20_100.0).abs() < 1e-9, "{faults:?}");
    assert_eq!((waits.max, waits.min), (20.0, 2.0 * faults.min));
    assert_eq!(a.preemptions.as_ref().unwrap().min, 0.0);
    let gross = o.agent_cpu_us_per_event.unwrap();
    let marginal = o.agent_cpu_marginal_us_per_event.unwrap();
    // Gross: 30 ms / 10,100 and 50 ms / 20,100 matched events.
    assert!((gross.median - (30e3 / 10_100.0 + 50e3 / 20_100.0) / 2.0).abs() < 1e-6);
    // Marginal: (30 − 5) ms / 10,000 = 2.5 µs and (50 − 10) ms / 20,000 = 2.0 µs.
    assert!((marginal.median - 2.25).abs() < 1e-9, "{marginal:?}");
    assert_eq!((marginal.min, marginal.max, marginal.n), (2.0, 2.5, 2));
}

#[test]
fn the_ftrace_peer_is_paired_with_the_untraced_loop_over_guestscopes_events() {
    use guestscope_common::plan::FtraceHits;
    let mut runs = BTreeMap::new();
    for rep in 0..2 {
        runs.insert(format!("fopen-base-{rep}"), ran(0, 1, 1));
        runs.insert(format!("fopen-off-{rep}"), ran(0, 100, 5));
        // guestscope saw 10,000 events in the loop.
        runs.insert(format!("fopen-all-{rep}"), ran(10_000, 160, 30));
        let mut peer = ran(0, 130 + 10 * rep as u64, 5);
        peer.tracing.as_mut().unwrap().ftrace_peer = vec![
            FtraceHits {
                hits: 9_000,
                ..FtraceHits::default()
            },
            FtraceHits {
                hits: 2_000,
                ..FtraceHits::default()
            },
        ];
        runs.insert(format!("fopen-ftpeer-{rep}"), peer);
    }
    let o = loop_overhead("fopen", 2000, 2, true, &runs, &mut Vec::new());
    let peer = o
        .peers
        .iter()
        .find(|p| p.tracer.starts_with("ftrace kprobes, comm filter, no"))
        .unwrap();
    // 130 and 140 ms against 100: 1.3x and 1.4x; 3 and 4 µs over 10,000 events.
    let ratio = peer.ratio.as_ref().unwrap();
    assert!((ratio.median - 1.35).abs() < 1e-9, "{ratio:?}");
    let per = peer.us_per_event.as_ref().unwrap();
    assert!((per.median - 3.5).abs() < 1e-9, "{per:?}");
    // 11,000 hits over 2000 iterations.
    assert!((peer.hits_per_iteration.as_ref().unwrap().median - 5.5).abs() < 1e-9);
    let ours = &o.peers[0];
    assert!((ours.ratio.as_ref().unwrap().median - 1.6).abs() < 1e-9);
    // guestscope's own hits of the same functions: its spin_lock probe's 10,000.
    assert!((ours.hits_per_iteration.as_ref().unwrap().median - 5.0).abs() < 1e-9);
    // A condition that did not run has no figures (the ftrace peer with stacks, and
    // guestscope with each cached hit a record of its own).
    let row = |tracer: &str| {
        o.peers
            .iter()
            .find(|p| p.tracer.starts_with(tracer))
            .unwrap_or_else(|| panic!("no row {tracer}"))
    };
    assert!(row("ftrace kprobes, comm filter + options").ratio.is_none());
    assert!(
        row("guestscope, every probe, stacks (cached), each")
            .ratio
            .is_none()
    );
    // bpftrace's printed count is its hits, in the peers boot's table.
    for rep in 0..2 {
        let mut count = ran(0, 110, 5);
        count.output = "Attaching 2 probes...\n@n: 12000\n".into();
        runs.insert(format!("fopen-bpfcount-{rep}"), count);
    }
    let rows = PeerRows {
        workload: "fopen",
        reps: 2,
        iterations: 2000.0,
        off: &[Some(100.0), Some(100.0)],
        loop_events: &[Some(10_000.0), Some(10_000.0)],
    }
    .measure(&runs, &PEER_ROWS);
    let bpf = rows
        .iter()
        .find(|r| r.tracer == "bpftrace kprobes, comm filter, @ = count()")
        .expect("bpftrace's count row");
    assert!((bpf.hits_per_iteration.as_ref().unwrap().median - 6.0).abs() < 1e-9);
    assert!((bpf.us_per_event.as_ref().unwrap().median - 1.0).abs() < 1e-9);
}

#[test]
fn the_tallied_loop_is_paired_with_the_untraced_one_and_its_hits_accounted_for() {
    let mut runs = BTreeMap::new();
    for rep in 0..2 {
        runs.insert(format!("fopen-base-{rep}"), ran(0, 1, 1));
        runs.insert(format!("fopen-off-{rep}"), ran(0, 100, 5));
        runs.insert(format!("fopen-all-{rep}"), ran(10_000, 160, 30));
        // 10,000 hits: 8,000 tallied, 2,000 recorded; the host got all of them.
        let mut tallied = ran(10_000, 110 + 10 * rep as u64, 7);
        let t = tallied.tracing.as_mut().unwrap();
        t.counters[0].1.tallied = 8_000;
        t.counters[0].1.emitted = 2_000;
        let probe = t.counters[0].0.clone();
        tallied.received.insert(probe, 10_000 - rep as u64);
        runs.insert(format!("fopen-tallied-{rep}"), tallied);
    }
    let o = loop_overhead("fopen", 2000, 2, true, &runs, &mut Vec::new());
    let t = o.tallied.unwrap();
    // 110 and 120 ms against 100 over 10,000 loop events: 1 and 2 µs per event.
    assert!((t.us_per_event.unwrap().median - 1.5).abs() < 1e-9);
    assert!((t.ratio.unwrap().median - 1.15).abs() < 1e-9);
    assert!((t.share.unwrap().median - 0.8).abs() < 1e-9);
    // The agent: (7 − 5) ms over 10,000 events.
    assert!((t.agent_cpu_marginal_us_per_event.unwrap().median - 0.2).abs() < 1e-9);
    // The second run's host lacked one hit.
    assert_eq!(t.unaccounted, 1);
}

#[test]
fn what_staging_saves_is_paired_with_the_staged_run_of_the_same_repetition() {
    let mut runs = BTreeMap::new();
    for rep in 0..2u64 {
        runs.insert(format!("fopen-base-{rep}"), ran(0, 1, 1));
        runs.insert(format!("fopen-off-{rep}"), ran(0, 100, 5));
        // Staged: 160 ms, 30 ms of agent CPU; unstaged 170 and 180 ms, 34 and 38 ms.
        runs.insert(format!("fopen-all-{rep}"), ran(10_000, 160, 30));
        runs.insert(
            format!("fopen-unstaged-{rep}"),
            ran(10_000, 170 + 10 * rep, 34 + 4 * rep),
        );
    }
    let o = loop_overhead("fopen", 2000, 2, true, &runs, &mut Vec::new());
    let g = o.staging.unwrap();
    // 10 and 20 ms over 10,000 loop events: 1 and 2 µs per event.
    assert!((g.saved_us_per_event.unwrap().median - 1.5).abs() < 1e-9);
    assert!((g.ratio.unwrap().median - 1.09375).abs() < 1e-9);
    assert!((g.unstaged_ms.unwrap().median - 175.0).abs() < 1e-9);
    // The agent: 4 and 8 ms over 10,000 events.
    assert!((g.agent_cpu_saved_us_per_event.unwrap().median - 0.6).abs() < 1e-9);
    // Without the peers' conditions (cpuinfo), nothing.
    let bare = loop_overhead("fopen", 2000, 2, false, &runs, &mut Vec::new());
    assert!(bare.staging.is_none());
}

/// The gdb method's share of the limit comes from the long loop's runs (untraced over
/// traced, paired), the short loop's share next to it; none without a gdb run.
#[test]
fn the_share_of_the_limit_is_the_long_loops_and_the_short_loops_is_kept_beside_it() {
    use crate::experiments::syscall_cr3::{FunctionTrace, StepOver};
    let o = BenchOptions::default();
    let mut runs = BTreeMap::new();
    for rep in 0..o.reps {
        // 2000 iterations: 80 ms untraced, 88 ms under the alloc_fd probe (90.9%).
        runs.insert(format!("fopen-off-{rep}"), ran(0, 80, 1));
        runs.insert(format!("fopen-fd-{rep}"), ran(2000, 88, 1));
    }
    for rep in 0..o.gdb_reps {
        // 200 iterations: 8 ms untraced, 10 ms traced (80%).
        runs.insert(format!("short-off-{rep}"), ran(0, 8, 1));
        runs.insert(format!("short-fd-{rep}"), ran(200, 10, 1));
    }
    let trace = |span_s: f64| FunctionTrace {
        symbol: GDB_SYMBOL.into(),
        address: 0,
        tgid: 1,
        expected: o.gdb_iterations,
        hits: o.gdb_iterations,
        matching: o.gdb_iterations,
        step_over: StepOver::Reinsert,
        matching_span_s: span_s,
        round_trips_per_hit: 6.0,
        run_to_hit: Default::default(),
        handling: Default::default(),
        per_hit: Default::default(),
        elapsed_ms: span_s * 1e3,
        ended: "every hit".into(),
    };
    let mut problems = Vec::new();
    let none = gdb_comparison(&o, &runs, &BTreeMap::new(), &mut problems);
    assert_eq!(none.share_of_limit, None, "no limit without the gdb method");
    assert_eq!(none.long_iterations, 0);
    let traces: BTreeMap<String, FunctionTrace> = (0..o.gdb_reps)
        .map(|rep| (format!("gdb-{rep}"), trace(4.0)))
        .collect();
    let g = gdb_comparison(&o, &runs, &traces, &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let share = g.share_of_limit.expect("a share").median;
    assert!((share - 80.0 / 88.0).abs() < 1e-9, "{share}");
    let short = g.share_of_limit_short.expect("the short share").median;
    assert!((short - 0.8).abs() < 1e-9, "{short}");
    assert_eq!(g.long_iterations, o.fopen_iterations);
    let long = g
        .long_untraced_ms_per_iteration
        .expect("long untraced")
        .median;
    assert!((long - 0.04).abs() < 1e-9, "{long}");
}

#[test]
fn ring_bytes_count_a_cached_record_short_and_a_walked_one_long() {
    let c = ProbeCounters {
        matched: 100,
        emitted: 100,
        stack_cached: 97,
        ..ProbeCounters::default()
    };
    assert_eq!(
        ring_record_bytes(&c),
        97 * size_of::<CachedEvent>() as u64 + 3 * size_of::<StackedEvent>() as u64
    );
    // Hits lost to a full ring are taken off the cached ones.
    let lossy = ProbeCounters {
        matched: 100,
        emitted: 90,
        ring_full: 10,
        stack_cached: 97,
        ..ProbeCounters::default()
    };
    assert_eq!(
        ring_record_bytes(&lossy),
        87 * size_of::<CachedEvent>() as u64 + 3 * size_of::<StackedEvent>() as u64
    );
    // Without the cache every record is a walk.
    let walked = ProbeCounters {
        emitted: 10,
        ..ProbeCounters::default()
    };
    assert_eq!(
        ring_record_bytes(&walked),
        10 * size_of::<StackedEvent>() as u64
    );
}

#[test]
fn guestscopes_peer_hits_are_its_spin_lock_and_alloc_fd_probes_only() {
    let mut r = ran(100, 1, 1);
    let t = r.tracing.as_mut().unwrap();
    // spin_lock and alloc_fd are the peers' functions; a page fault is not.
    for (probe, matched) in [("alloc_fd", 20), ("page_fault_user", 500)] {
        t.counters.push((
            probe.into(),
            ProbeCounters {
                matched,
                ..ProbeCounters::default()
            },
        ));
    }
    assert_eq!(peer_function_hits(&r), Some(120.0));
    // A run that attached none of them (bpftrace's, say) has no such count, not 0.
    r.tracing.as_mut().unwrap().probes = vec!["page_fault_user".into()];
    assert_eq!(peer_function_hits(&r), None);
}

#[test]
fn each_synthetic_run_is_paired_with_the_blast_before_it() {
    let o = BenchOptions {
        blast_bytes: 64_000_000,
        ..BenchOptions::default()
    };
    // The events 64 MB hold in 64-byte records.
    let events = plans::synthetic_events(o.blast_bytes);
    assert_eq!(events, 1_000_000);
    let mut runs = BTreeMap::new();
    // Run 0: a million events in 1 s (64 MB/s in records), 16 MB on the stream; run 1
    // in 2 s, with one event lost on the way.
    for (rep, (seconds, received)) in [(1, events), (2, events - 1)].into_iter().enumerate() {
        let mut r = ran(0, seconds * 1000, 0);
        r.received.insert("spin_lock".into(), received);
        r.bytes_at_start = 1_000;
        r.bytes_at_exit = 1_000 + 16_000_000;
        // 300 page faults, 2,000 waits and 50 preemptions per run.
        let t = r.tracing.as_mut().unwrap();
        (
            t.agent_minor_faults,
            t.agent_voluntary_switches,
            t.agent_involuntary_switches,
        ) = (300, 2_000, 50);
        // The collector's CPU was read at run 0's start and exit only.
        r.collector_cpu_ns = (rep == 0).then_some(250_000_000);
        runs.insert(format!("synthetic-{rep}"), r);
    }
    let mut problems = Vec::new();
    // Blast 0 ran at 128 MB/s, blast 1 at 40.
    let p = pipeline_ceiling(&o, &runs, &[Some(128.0), Some(40.0)], &mut problems).unwrap();
    let fractions: Vec<_> = p.runs.iter().map(|r| r.fraction_of_raw).collect();
    // 64 MB/s of records against 128; 31.999968 against 40.
    assert!((fractions[0].unwrap() - 0.5).abs() < 1e-9, "{fractions:?}");
    assert!(
        (fractions[1].unwrap() - 0.799_999_2).abs() < 1e-9,
        "{fractions:?}"
    );
    // The stream's bytes: 16 MB/s against 128, 8 against 40.
    let stream: Vec<_> = p.runs.iter().map(|r| r.stream_fraction_of_raw).collect();
    assert_eq!(stream, [Some(0.125), Some(0.2)]);
    assert!((p.wire_mb_s.unwrap().median - 12.0).abs() < 1e-9);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("synthetic-1:"), "{problems:?}");
    // Per thousand of each run's events: 0.3 faults, 2 waits, 0.05 preemptions.
    let median = |s: &Option<Spread>| s.as_ref().unwrap().median;
    let a = &p.agent_activity;
    assert!((median(&a.faults) - 0.3).abs() < 1e-6);
    assert!((median(&a.waits) - 2.0).abs() < 1e-5);
    assert!((median(&a.preemptions) - 0.05).abs() < 1e-6);
    assert_eq!(p.runs[1].agent_minor_faults, Some(300));
    // The collector: 0.25 s of CPU over run 0's million events; run 1 not measured.
    let collector: Vec<_> = p
        .runs
        .iter()
        .map(|r| r.collector_cpu_us_per_event)
        .collect();
    assert_eq!(collector, [Some(0.25), None]);
    assert_eq!(p.collector_cpu_us_per_event.unwrap().n, 1);
    // A blast that did not deliver leaves its run without a fraction.
    let p = pipeline_ceiling(&o, &runs, &[None, Some(40.0)], &mut Vec::new()).unwrap();
    assert_eq!(p.fraction_of_raw.unwrap().n, 1);
}

#[test]
fn the_stack_cache_share_counts_tallied_hits_with_the_recorded_ones() {
    let counters = |stack_cached, emitted, tallied| ProbeCounters {
        matched: emitted + tallied,
        stack_cached,
        emitted,
        tallied,
        ..ProbeCounters::default()
    };
    let mut r = ran(0, 1, 1);
    let t = r.tracing.as_mut().unwrap();
    // spin_lock: 90 of 100 recorded from the cache, and 300 tallied (always cached);
    // alloc_fd: 10 recorded, none cached.
    t.counters = vec![
        ("spin_lock".into(), counters(390, 100, 300)),
        ("alloc_fd".into(), counters(0, 10, 0)),
    ];
    assert_eq!(r.stack_cache_share(), Some(390.0 / 410.0));
    for (_, c) in &mut r.tracing.as_mut().unwrap().counters {
        *c = ProbeCounters::default();
    }
    assert_eq!(r.stack_cache_share(), None, "no hit: no share");
    assert_eq!(Ran::default().stack_cache_share(), None, "no counters");
}
