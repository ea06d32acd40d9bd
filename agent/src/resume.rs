//! What a restarted agent takes over from the one before it.
//!
//! The guest's init restarts an agent that dies (killed, crashed). The new agent runs
//! the same plan, so without a record it would run every workload again. Before each
//! workload starts, the agent writes how many workloads of this plan have started to a
//! root-only state file; a new agent with the same plan skips those. The file goes
//! when the run completes, so the next run (a new plan, or the same plan deployed
//! again) starts from the first workload. The collector takes the new agent's stream
//! as the continuation of the run (the plan's secret vouches for it).

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use guestscope_common::plan::RunPlan;

/// Where the state lives: a tmpfs on most systems, so a reboot forgets it.
pub const STATE_DIR: &str = "/run/guestscope-agent";

/// The run's progress as the state file keeps it.
#[derive(Debug)]
pub struct RunState {
    path: PathBuf,
    plan_digest: u64,
}

impl RunState {
    /// The state for `plan` in `dir`, and how many of its workloads an earlier agent
    /// of this run already started (0 for a new run).
    pub fn open(dir: &Path, plan: &RunPlan) -> (RunState, usize) {
        let plan_digest = digest(plan);
        let path = dir.join("progress");
        let started = fs::read_to_string(&path)
            .ok()
            .and_then(|text| parse(&text))
            .filter(|(d, _)| *d == plan_digest)
            .map_or(0, |(_, n)| n);
        (RunState { path, plan_digest }, started)
    }

    /// Records that `n` workloads have started; a failure is logged, not fatal (a
    /// restart would then run them again).
    pub fn started(&self, n: usize) {
        if let Err(e) = self.write(n) {
            tracing::warn!(
                "recording the run's progress in {}: {e}",
                self.path.display()
            );
        }
    }

    fn write(&self, n: usize) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                io::Write::write_all(
                    &mut f,
                    format!("{:016x} {n}\n", self.plan_digest).as_bytes(),
                )
            })?;
        fs::rename(&tmp, &self.path)
    }

    /// The run is complete: the next agent starts a new one.
    pub fn finish(self) {
        let _ = fs::remove_file(&self.path);
    }
}

fn digest(plan: &RunPlan) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_string(plan).unwrap_or_default().hash(&mut h);
    h.finish()
}

fn parse(text: &str) -> Option<(u64, usize)> {
    let (digest, n) = text.trim().split_once(' ')?;
    Some((u64::from_str_radix(digest, 16).ok()?, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(port: u32) -> RunPlan {
        RunPlan::new(port, Vec::new())
    }

    #[test]
    fn a_restart_of_the_same_plan_resumes_and_a_new_plan_starts_over() {
        let dir = std::env::temp_dir().join(format!(
            "guestscope-resume-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let state_dir = dir.join("state");
        let (first, started) = RunState::open(&state_dir, &plan(1));
        assert_eq!(started, 0);
        first.started(1);
        first.started(2);
        let (again, started) = RunState::open(&state_dir, &plan(1));
        assert_eq!(started, 2, "the restarted agent skips what began");
        let (_, other) = RunState::open(&state_dir, &plan(2));
        assert_eq!(other, 0, "another plan is another run");
        again.finish();
        let (_, after) = RunState::open(&state_dir, &plan(1));
        assert_eq!(after, 0, "a finished run leaves nothing to resume");
        let mode = fs::metadata(&state_dir).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damaged_state_is_a_new_run() {
        assert_eq!(parse("zz 3"), None);
        assert_eq!(parse("00000000000000ff 3\n"), Some((255, 3)));
        assert_eq!(parse(""), None);
    }
}
