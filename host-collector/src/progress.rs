//! The live line while the guest runs its workloads: events so far and their rate,
//! the workload running, records missing from the stream, how long the run has
//! gone — redrawn in place on stderr (indicatif) at most every
//! [`REDRAW_EVERY`], and drawn only when stderr is a terminal and the user did not
//! ask for quiet (`-q`), so logs and pipes get the plain step lines only.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::session::Session;

/// Shortest time between two redraws.
pub const REDRAW_EVERY: Duration = Duration::from_millis(250);

/// The live line of one boot.
pub struct LiveLine {
    bar: ProgressBar,
    started: Instant,
    last_drawn: Option<Instant>,
    /// (time, events) of the previous redraw, for the rate.
    previous: (Instant, u64),
}

/// What the live line shows, taken from the session.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    /// Events received so far.
    pub events: u64,
    /// The workload running (the last one started and not exited), if any.
    pub workload: Option<String>,
    /// Workloads started so far.
    pub workloads_started: usize,
    /// Records missing from the stream so far.
    pub missing: u64,
}

impl Counts {
    /// The counts of `session` now.
    pub fn of<W: std::io::Write>(session: &Session<W>) -> Counts {
        Counts {
            events: session.events_received,
            workload: session
                .workloads
                .last()
                .filter(|w| w.exited.is_none())
                .map(|w| w.started.name.clone()),
            workloads_started: session.workloads.len(),
            missing: session.seq.missing,
        }
    }
}

impl LiveLine {
    /// A live line, drawn on stderr if `shown` and stderr is a terminal.
    pub fn new(shown: bool) -> LiveLine {
        let target = if shown {
            // indicatif draws nothing when stderr is not a terminal.
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .expect("a constant template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        let now = Instant::now();
        LiveLine {
            bar,
            started: now,
            last_drawn: None,
            previous: (now, 0),
        }
    }

    /// Redraws with `counts` unless the last redraw was less than [`REDRAW_EVERY`] ago.
    pub fn update(&mut self, counts: &Counts) {
        let now = Instant::now();
        if self
            .last_drawn
            .is_some_and(|t| now.duration_since(t) < REDRAW_EVERY)
        {
            return;
        }
        let (then, events_then) = self.previous;
        let seconds = now.duration_since(then).as_secs_f64();
        let rate = if seconds > 0.0 {
            counts.events.saturating_sub(events_then) as f64 / seconds
        } else {
            0.0
        };
        self.bar.set_message(line(
            counts,
            rate,
            now.duration_since(self.started).as_secs_f64(),
        ));
        self.bar.tick();
        self.last_drawn = Some(now);
        self.previous = (now, counts.events);
    }

    /// Takes the line off the screen (the step lines and the final line follow).
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// The text of the live line.
pub fn line(c: &Counts, events_per_s: f64, elapsed_s: f64) -> String {
    let running = match &c.workload {
        Some(w) => format!("running {w} (workload {})", c.workloads_started),
        None if c.workloads_started == 0 => "booting".to_string(),
        None => format!("{} workloads done", c.workloads_started),
    };
    format!(
        "{running}: {} events, {:.0}/s, {} missing, {elapsed_s:.0} s",
        c.events, events_per_s, c.missing
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_what_runs_and_how_much_came() {
        let mut c = Counts {
            events: 12_345,
            workload: Some("fopen".into()),
            workloads_started: 6,
            missing: 0,
        };
        assert_eq!(
            line(&c, 4321.4, 12.2),
            "running fopen (workload 6): 12345 events, 4321/s, 0 missing, 12 s"
        );
        c.workload = None;
        assert!(line(&c, 0.0, 1.0).starts_with("6 workloads done:"));
        c.workloads_started = 0;
        assert!(line(&c, 0.0, 1.0).starts_with("booting:"));
    }

    #[test]
    fn a_hidden_line_takes_updates_without_drawing() {
        let mut live = LiveLine::new(false);
        let c = Counts {
            events: 1,
            workload: None,
            workloads_started: 0,
            missing: 0,
        };
        live.update(&c);
        assert!(live.bar.is_hidden());
        live.finish();
    }
}
