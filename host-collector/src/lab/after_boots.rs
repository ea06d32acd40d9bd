//! The boots after the traced run — the boot-time boots and the CR3 boots — run a few
//! at a time. None of them traces a workload, and each QEMU runs its one vCPU on a
//! thread of its own, so on a host with a core per QEMU they do not slow each other
//! (measured: two bzImage boots side by side reach init in the same 5.2–5.8 s as one
//! after the other, on two cores).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// What the boots after the traced run found.
pub struct AfterBoots {
    /// The boot-time boots, in order.
    pub boots: Vec<experiments::boot::BootSample>,
    /// The CR3 boots (PTI on, then off), or the one entry saying why they were skipped.
    pub cr3: Vec<summary::Cr3Run>,
    /// How many boots ran at once.
    pub at_once: usize,
}

impl AfterBoots {
    /// No boot after the traced run (a run collected from a VM started elsewhere).
    pub fn none() -> AfterBoots {
        AfterBoots {
            boots: Vec::new(),
            cr3: Vec::new(),
            at_once: 1,
        }
    }
}

/// One boot after the traced run.
enum Job {
    /// Boot-time boot `i` (from 1).
    BootTime(u32),
    /// A CR3 boot: its label and `-cpu` model.
    Cr3((&'static str, Option<&'static str>)),
}

/// One boot's result, with its place in the job list.
enum Done {
    BootTime(Result<experiments::boot::BootSample, LabError>),
    Cr3(Box<summary::Cr3Run>),
}

/// How many boots may run at once: one per host core the guest's vCPUs leave (every
/// vCPU is a host thread under TCG and KVM alike), one when the gdbstub has a fixed
/// port (two QEMUs cannot listen on it).
pub(super) fn boots_at_once(o: &LabOptions, v: &Validated) -> usize {
    if v.gdb_port.is_some() {
        return 1;
    }
    (o.parallel_boots / o.cpus.max(1) as usize).max(1)
}

/// Runs the boot-time boots and (if asked) the CR3 boots after the traced run `c`, at
/// most [`boots_at_once`] at a time. A boot-time boot that cannot start ends the lab
/// with its error, as before any other boot starts; an interrupt starts no new boot.
pub(super) fn after_boots(
    o: &LabOptions,
    v: &Validated,
    c: &Collected,
) -> Result<AfterBoots, LabError> {
    let mut jobs: Vec<Job> = (1..=boot_time_count(o, c)).map(Job::BootTime).collect();
    let interrupted = || crate::interrupt::received().is_some();
    let mut cr3 = Vec::new();
    let cr3_setup = (o.cr3 && !interrupted()).then(|| cr3_setup(o, v, &c.session));
    match &cr3_setup {
        Some(Cr3Setup::Ready { .. }) => jobs.extend(CR3_BOOTS.map(Job::Cr3)),
        Some(Cr3Setup::Skipped(run)) => cr3.push(run.as_ref().clone()),
        None => {}
    }
    let at_once = boots_at_once(o, v).min(jobs.len()).max(1);
    if at_once > 1 {
        (o.progress)(&format!("{} boots, {at_once} at a time", jobs.len()));
    }
    let boot_plan = boot_time_plan(o, v);
    let run = |job: &Job| match (job, &cr3_setup) {
        (Job::BootTime(i), _) => Done::BootTime(boot_time_boot(o, v, &boot_plan, *i)),
        (Job::Cr3(which), Some(Cr3Setup::Ready { plan, offsets })) => {
            Done::Cr3(Box::new(cr3_boot(o, v, plan, offsets, *which)))
        }
        (Job::Cr3(_), _) => unreachable!("CR3 jobs are only made when the setup is ready"),
    };
    let mut done = run_at_most(at_once, &jobs, &run, interrupted);

    let mut boots = Vec::new();
    done.sort_by_key(|(k, _)| *k);
    for (_, d) in done {
        match d {
            Done::BootTime(sample) => boots.push(sample?),
            Done::Cr3(run) => cr3.push(*run),
        }
    }
    Ok(AfterBoots {
        boots,
        cr3,
        at_once,
    })
}

/// Runs `run` on each job, `width` at a time, each result with its job's index. Stops
/// starting jobs once `stop()` says so or a boot-time boot failed.
fn run_at_most(
    width: usize,
    jobs: &[Job],
    run: &(dyn Fn(&Job) -> Done + Sync),
    stop: impl Fn() -> bool + Sync,
) -> Vec<(usize, Done)> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..width {
            s.spawn(|| {
                loop {
                    if stop() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(k) else { break };
                    let d = run(job);
                    if matches!(d, Done::BootTime(Err(_))) {
                        failed.store(true, Ordering::SeqCst);
                    }
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((k, d));
                }
            });
        }
    });
    done.into_inner().unwrap_or_else(|p| p.into_inner())
}
