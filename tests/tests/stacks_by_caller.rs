//! `--stacks caller`: the stack cache answers a hit by its probed function, its caller
//! and how it entered the kernel (reading nothing of its stack in a system call, its
//! outermost frame outside one), so a hit gets the walk of the first hit with the same
//! three. The lab classifies a spin-lock hit by the innermost frame a rule names (the
//! caller, for most hits): in the fopen loop, a caller whose hits all fall in one
//! class in a run whose every cached stack was checked against the hit's own
//! (`cached`) must put its hits in that class by caller too, each alloc_fd hit must
//! still be one per open on a stack through alloc_fd, and `caller-checked`, which
//! walks every hit too, counts the answers that differ from the walk and says so in
//! the report.

use std::collections::{BTreeMap, BTreeSet};

use guestscope::experiments::classify::SPIN_LOCK_RULES;
use guestscope_common::plan::StackMode;
use guestscope_tests::{
    RunOutput, assert_every_hit_accounted, frame_function, run_fopen, stack_has,
};

const OPENS: u64 = 200;

/// The fopen loop's spin-lock hits as (caller, class): the caller is the function
/// past `_raw_spin_lock` in the hit's stack (what keys the stack cache), the class the
/// lab's rules give the whole stack.
fn classified(r: &RunOutput) -> Vec<(String, &'static str)> {
    r.events_of("fopen", "spin_lock")
        .filter_map(|e| {
            let frames: Vec<String> = e["stack"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect();
            let caller = frame_function(e, 1)?.to_string();
            Some((caller, SPIN_LOCK_RULES.classify(&frames).class))
        })
        .collect()
}

/// A probe's counter from summary.json.
fn counter(r: &RunOutput, probe: &str, name: &str) -> u64 {
    r.probe(probe)["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: no {name} for {probe}", r.dir.display()))
}

/// One alloc_fd event per open, each on a stack through alloc_fd.
fn alloc_fd_per_open(r: &RunOutput) {
    let alloc: Vec<_> = r.events_of("fopen", "alloc_fd").collect();
    assert!(
        alloc.len() as u64 >= OPENS && alloc.iter().all(|e| stack_has(e, "alloc_fd")),
        "{}: {} alloc_fd events",
        r.dir.display(),
        alloc.len()
    );
}

#[test]
fn classes_by_caller_agree_with_checked_stacks() {
    let cached = run_fopen("stacks-cached", OPENS, StackMode::Cached);
    let caller = run_fopen("stacks-by-caller", OPENS, StackMode::Caller);
    for r in [&cached, &caller] {
        assert_every_hit_accounted(r);
        alloc_fd_per_open(r);
        assert_eq!(r.spin_lock_experiment("fopen")["no_stack"], 0);
    }
    let (matched, by_caller) = (
        counter(&caller, "spin_lock", "matched"),
        counter(&caller, "spin_lock", "stack_cached"),
    );
    assert!(
        by_caller * 5 > matched * 4,
        "the cache answers most spin_lock hits by caller: {by_caller} of {matched}"
    );
    // Each caller's classes where every stack was checked; a caller seen in more than
    // one class there is one whose class depends on frames past it.
    let mut classes_of: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
    for (f, class) in classified(&cached) {
        classes_of.entry(f).or_default().insert(class);
    }
    let (mut agree, mut differ, mut undecided, mut unseen) = (0, Vec::new(), 0, 0);
    for (f, class) in classified(&caller) {
        match classes_of.get(&f) {
            None => unseen += 1,
            Some(c) if c.len() > 1 => undecided += 1,
            Some(c) if c.contains(class) => agree += 1,
            Some(c) => differ.push(format!("{f}: {class}, checked {c:?}")),
        }
    }
    eprintln!(
        "by caller: {agree} hits in their caller's class, {} in another, {undecided} of callers with several classes, {unseen} of callers the checked run did not see",
        differ.len()
    );
    // A caller seen in one class in the checked run may still have others, rarer: an
    // interrupt's handler on the task's stack is classed by what it interrupted (3 of
    // 1,255 hits in one run, 0 of 1,251 in another). At most 1% may fall outside.
    assert!(
        differ.len() * 100 <= agree && agree > undecided + unseen,
        "hits by caller outside their caller's class: {differ:?} ({agree} agree)"
    );
    assert!(
        caller
            .report
            .contains("with the walk of the first hit with their function, caller and way into"),
        "{}: the report says the stacks were taken by caller",
        caller.dir.display()
    );
}

#[test]
fn caller_checked_counts_the_answers_that_differ_from_the_walk() {
    let r = run_fopen("stacks-caller-checked", OPENS, StackMode::CallerChecked);
    assert_every_hit_accounted(&r);
    alloc_fd_per_open(&r);
    let total = |name: &str| -> u64 {
        [
            "spin_lock",
            "alloc_fd",
            "page_fault_user",
            "page_fault_kernel",
        ]
        .iter()
        .map(|p| counter(&r, p, name))
        .sum()
    };
    let (cached, wrong) = (total("stack_cached"), total("stack_cache_wrong"));
    eprintln!(
        "{wrong} of {cached} answers by caller differ from the walk (spin_lock: {} of {})",
        counter(&r, "spin_lock", "stack_cache_wrong"),
        counter(&r, "spin_lock", "stack_cached")
    );
    assert!(cached > OPENS, "{}: {cached} answers", r.dir.display());
    let row = format!("{wrong} of {cached} |");
    assert!(
        r.report.contains(&row),
        "{}: the report counts the differences ({row})",
        r.dir.display()
    );
}
