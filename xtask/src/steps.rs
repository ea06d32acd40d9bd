//! Named, timed steps: each prints its start, its duration, and a summary at the end.

use std::time::{Duration, Instant};

use anyhow::Result;

/// The steps run so far and how long each took.
#[derive(Debug, Default)]
pub struct Steps {
    done: Vec<(String, Duration)>,
}

impl Steps {
    /// Runs `f` as the step `name`, printing when it starts and how long it took.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("==> {name}");
        let start = Instant::now();
        let result = f();
        let took = start.elapsed();
        match &result {
            Ok(_) => eprintln!("==> {name}: done in {}", seconds(took)),
            Err(_) => eprintln!("==> {name}: FAILED after {}", seconds(took)),
        }
        self.done.push((name.to_string(), took));
        result
    }

    /// Whether the step `name` has run (done or failed).
    pub fn has_run(&self, name: &str) -> bool {
        self.done.iter().any(|(done, _)| done == name)
    }

    /// One line listing every step with its duration.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .done
            .iter()
            .map(|(name, took)| format!("{name} {}", seconds(*took)))
            .collect();
        let total: Duration = self.done.iter().map(|(_, took)| *took).sum();
        format!("{} (total {})", parts.join(", "), seconds(total))
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_steps_in_order() {
        let mut steps = Steps::default();
        steps.run("a", || Ok(())).unwrap();
        assert!(
            steps
                .run("b", || -> Result<()> { anyhow::bail!("no") })
                .is_err()
        );
        let summary = steps.summary();
        assert!(summary.starts_with("a 0.0"), "{summary}");
        assert!(summary.contains(", b 0.0"), "{summary}");
        assert!(summary.contains("(total "), "{summary}");
    }

    #[test]
    fn a_step_that_ran_is_known_whether_it_failed_or_not() {
        let mut steps = Steps::default();
        assert!(!steps.has_run("deps"));
        steps.run("deps", || Ok(())).unwrap();
        let _ = steps.run("lints", || -> Result<()> { anyhow::bail!("no") });
        assert!(steps.has_run("deps"));
        assert!(steps.has_run("lints"));
        assert!(!steps.has_run("build"));
    }
}
