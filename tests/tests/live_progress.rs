//! The live line on a terminal: `guestscope lab` run in a tmux pane redraws one line
//! with the events so far while a workload runs. Two captures of the pane a moment
//! apart must both show it, with more events in the second.

use std::process::Command;
use std::time::{Duration, Instant};

use guestscope_tests::{collector_binary, guest_artifacts, test_out_dir, workload_binary};

/// The tmux session of this test (killed when the test ends).
struct Tmux(String);

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

/// The events count of the live line in `screen`, if it is there.
fn live_events(screen: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let rest = l.split("running fopen (workload 1): ").nth(1)?;
        rest.split(" events").next()?.parse().ok()
    })
}

#[test]
fn the_live_line_counts_events_while_a_workload_runs() {
    let (kernel, initrd) = guest_artifacts();
    let out = test_out_dir("live-progress");
    let command = format!(
        "{} lab --kernel {} --initrd {} --out {} --no-builtin-workloads --no-cr3 --no-snapshots --boots 0 --workload '{} --iterations 60000'; sleep 600",
        collector_binary().display(),
        kernel.display(),
        initrd.display(),
        out.display(),
        workload_binary("fopen").display()
    );
    let session = Tmux(format!("guestscope-live-{}", std::process::id()));
    let started = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "30",
            "-s",
            &session.0,
            &command,
        ])
        .status()
        .expect("tmux (installed by cargo xtask deps)");
    assert!(started.success());
    let capture = || {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &session.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut seen: Vec<u64> = Vec::new();
    let mut screen = String::new();
    while Instant::now() < deadline && seen.len() < 2 {
        std::thread::sleep(Duration::from_millis(700));
        screen = capture();
        if let Some(n) = live_events(&screen)
            && seen.last() != Some(&n)
        {
            seen.push(n);
        }
        if screen.contains("report: ") {
            break;
        }
    }
    assert!(
        seen.len() >= 2 && seen[1] > seen[0],
        "the live line did not show growing counts (seen {seen:?}); screen:\n{screen}"
    );
    // Once the run is over the line is gone and the final line is there.
    while Instant::now() < deadline && !screen.contains("report: ") {
        std::thread::sleep(Duration::from_secs(1));
        screen = capture();
    }
    assert!(screen.contains("events from 1 workloads"), "{screen}");
    assert_eq!(live_events(&screen), None, "the live line stays: {screen}");
}
