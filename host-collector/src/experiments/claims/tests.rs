//! The claims' verdicts on hand-built experiments: each rule confirmed, contradicted
//! and left untested where it should be.

use std::collections::BTreeMap;

use super::*;
use crate::experiments::spinlock::{ClassCount, Through, WorkloadSpinLocks};

/// malloc's scheduler class with these (landmark, hits).
fn malloc_scheduler(through: &[(&str, u64)]) -> Experiments {
    let stack = |l: &str| vec!["_raw_spin_lock+0x5".to_string(), format!("{l}+0x10")];
    Experiments {
        spin_lock: vec![WorkloadSpinLocks {
            workload: "malloc".into(),
            hits: 100,
            no_stack: 0,
            classes: vec![ClassCount {
                class: "scheduler".into(),
                hits: 100,
                stacks: 3,
                named_locks: BTreeMap::new(),
                decided_by: None,
                representative: stack("__schedule"),
                representative_hits: 50,
                through: through
                    .iter()
                    .map(|(l, hits)| {
                        let t = Through {
                            hits: *hits,
                            stack: stack(l),
                        };
                        (l.to_string(), t)
                    })
                    .collect(),
            }],
        }],
        ..Experiments::default()
    }
}

#[test]
fn a_switch_inside_a_fault_confirms_the_scheduler_claim_with_or_without_pte_alloc_one() {
    // A frame-pointer 6.1 build without transparent huge pages: switches in
    // faults, none in pte_alloc_one.
    let fp = scheduler_claim(&malloc_scheduler(&[
        ("exc_page_fault", 311),
        ("exc_page_fault>__schedule", 31),
    ]));
    assert_eq!(fp.verdict, Verdict::Confirmed, "{}", fp.evidence);
    assert!(
        fp.evidence.starts_with("31 context switches"),
        "{}",
        fp.evidence
    );
    assert!(
        fp.evidence.contains("none in pte_alloc_one"),
        "{}",
        fp.evidence
    );
    // Debian's kernel: some of them in pte_alloc_one.
    let orc = scheduler_claim(&malloc_scheduler(&[
        ("exc_page_fault", 111),
        ("exc_page_fault>__schedule", 28),
        ("pte_alloc_one", 7),
    ]));
    assert_eq!(orc.verdict, Verdict::Confirmed);
    assert!(
        orc.evidence
            .contains("7 of the scheduler-lock hits were in pte_alloc_one")
    );
}

#[test]
fn scheduler_locks_in_faults_without_a_switch_contradict_it_and_none_leave_it_untested() {
    // Only the timer tick's runqueue lock inside faults: no context switch.
    let tick = scheduler_claim(&malloc_scheduler(&[("exc_page_fault", 110)]));
    assert_eq!(tick.verdict, Verdict::Contradicted, "{}", tick.evidence);
    assert!(tick.evidence.contains("none of them in __schedule"));
    let none = scheduler_claim(&malloc_scheduler(&[("__schedule", 40)]));
    assert_eq!(none.verdict, Verdict::NotTested);
}

#[test]
fn by_caller_the_scheduler_claim_is_untested_and_says_why() {
    let e = malloc_scheduler(&[("exc_page_fault", 311), ("exc_page_fault>__schedule", 31)]);
    let claims = |stacks| check(&e, Some(stacks));
    let find = |cs: &[Claim], section: &str| {
        cs.iter()
            .find(|c| c.section == section)
            .cloned()
            .expect(section)
    };
    let (caller, cached) = (claims(StackMode::Caller), claims(StackMode::Cached));
    let scheduler = find(&caller, "5 (scheduler)");
    assert_eq!(
        (scheduler.verdict, scheduler.evidence.as_str()),
        (Verdict::NotTested, BY_CALLER)
    );
    assert_eq!(find(&cached, "5 (scheduler)").verdict, Verdict::Confirmed);
    // Each hit's caller is its own: the claims it decides stand as with checked
    // stacks, and with every hit walked too (caller-checked) nothing changes.
    for section in ["5 (timers)", "5 (file system)"] {
        assert_eq!(
            find(&caller, section).evidence,
            find(&cached, section).evidence
        );
    }
    let checked = find(&claims(StackMode::CallerChecked), "5 (scheduler)");
    assert_eq!(checked.verdict, Verdict::Confirmed);
    // Tallied by caller, the hits counted carry the same stacks as by caller.
    let tallied = claims(StackMode::CallerTallied);
    assert_eq!(find(&tallied, "5 (scheduler)").evidence, scheduler.evidence);
    assert_eq!(
        find(&tallied, "5 (timers)").evidence,
        find(&cached, "5 (timers)").evidence
    );
}

#[test]
fn without_stacks_the_claims_stacks_decide_are_untested_and_say_why() {
    let e = malloc_scheduler(&[("exc_page_fault", 311), ("exc_page_fault>__schedule", 31)]);
    let scheduler = |stacks| {
        check(&e, stacks)
            .into_iter()
            .find(|c| c.section == "5 (scheduler)")
            .expect("the scheduler claim")
    };
    for known in [None, Some(StackMode::Cached), Some(StackMode::Tallied)] {
        assert_eq!(scheduler(known).verdict, Verdict::Confirmed, "{known:?}");
    }
    let off = check(&e, Some(StackMode::Off));
    for section in ["5 (timers)", "5 (file system)", "5 (scheduler)"] {
        let c = off.iter().find(|c| c.section == section).expect(section);
        assert_eq!(
            (c.verdict, c.evidence.as_str()),
            (Verdict::NotTested, NO_STACKS),
            "{section}"
        );
    }
    // The claims that stacks do not decide are left as they were.
    let pci = |stacks| check(&e, stacks).into_iter().find(|c| c.section == "3.5");
    assert_eq!(
        pci(Some(StackMode::Off)).map(|c| c.evidence),
        pci(None).map(|c| c.evidence)
    );
}

#[test]
fn the_kernel_clocks_pace_is_worded_by_its_sign() {
    assert_eq!(kernel_clock_pace(0.07), "lagged the host by only 0.07 s");
    assert_eq!(kernel_clock_pace(-0.07), "ran ahead of the host by 0.07 s");
    assert_eq!(
        kernel_clock_pace(-0.001),
        "kept pace with the host to within 0.01 s"
    );
}
