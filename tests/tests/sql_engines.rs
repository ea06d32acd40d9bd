//! The fleet route: the data files of two runs (two guests, one with two vCPUs) read
//! at once by the SQL engines a site already runs, DuckDB and ClickHouse's engine
//! (chdb), through `tests/tests/sql_check.py` (the documented route, which also runs
//! by hand on any run folders). Their answers must equal each run's `summary.json`:
//! events per workload and probe, spin_lock hits per subsystem (events joined to
//! `stacks.jsonl`), and events per machine (joined to `run.json`).

use std::collections::BTreeSet;

use guestscope::lab::LabOptions;
use guestscope_tests::{RunOutput, run_lab, workload_binary};
use serde_json::{Value, json};

/// One short run of `workload` on a guest with `cpus` vCPUs.
fn run(name: &str, workload: &str, cpus: u32) -> RunOutput {
    let opts = LabOptions {
        builtin_workloads: false,
        workloads: vec![workload_binary(workload).display().to_string()],
        cpus,
        ..LabOptions::default()
    };
    run_lab(name, opts)
}

/// The run id of a run folder (`run.json`), checked against its events' ids.
fn run_id(r: &RunOutput) -> String {
    let header: Value =
        serde_json::from_slice(&std::fs::read(r.dir.join("run.json")).unwrap()).unwrap();
    let id = header["run_id"].as_str().unwrap().to_string();
    assert!(
        r.events.iter().all(|e| e["run_id"] == id),
        "an event of {} has another run id than run.json's {id}",
        r.dir.display()
    );
    assert_eq!(header["events"].as_u64().unwrap(), r.events.len() as u64);
    id
}

/// What summary.json says the queries must answer, rows as the script sorts them.
fn expected(runs: &[(&RunOutput, String)]) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut by_probe, mut classes) = (BTreeSet::new(), BTreeSet::new());
    for (r, id) in runs {
        for w in r.summary["workloads"].as_array().unwrap() {
            for (probe, n) in w["events"].as_object().unwrap() {
                by_probe.insert(json!([id, w["name"], probe, n]).to_string());
            }
        }
        for w in r.summary["experiments"]["spin_lock"].as_array().unwrap() {
            for c in w["classes"].as_array().unwrap() {
                classes.insert(json!([id, w["workload"], c["class"], c["hits"]]).to_string());
            }
        }
    }
    (by_probe, classes)
}

fn rows(answer: &Value) -> BTreeSet<String> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("not rows: {answer}"))
        .iter()
        .map(Value::to_string)
        .collect()
}

#[test]
fn duckdb_and_chdb_answer_what_the_summaries_say_across_two_runs() {
    let a = run("sql-a", "fopen", 1);
    let b = run("sql-b", "cpuinfo", 2);
    let runs = [(&a, run_id(&a)), (&b, run_id(&b))];
    assert_ne!(runs[0].1, runs[1].1, "two runs, two ids");
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(include_str!("sql_check.py"))
        .arg(&a.dir)
        .arg(&b.dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "sql_check.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (by_probe, classes) = expected(&runs);
    assert!(
        by_probe.len() >= 4 && classes.len() >= 2,
        "{by_probe:?} {classes:?}"
    );
    let mut engines = 0;
    for (engine, answer) in answers.as_object().unwrap() {
        if let Some(missing) = answer.get("missing") {
            // DuckDB is installed by `cargo xtask deps`; chdb too where its wheel installs.
            assert_ne!(engine, "duckdb", "DuckDB is missing: {missing}");
            eprintln!("{engine} not installed here: {missing}");
            continue;
        }
        engines += 1;
        assert_eq!(
            rows(&answer["events_by_probe"]),
            by_probe,
            "{engine}: events per probe"
        );
        assert_eq!(
            rows(&answer["spin_lock_classes"]),
            classes,
            "{engine}: spin_lock classes"
        );
        let machines = answer["by_machine"].as_array().unwrap();
        assert_eq!(machines.len(), 2, "{engine}: {machines:?}");
        for (r, id) in &runs {
            let m = machines
                .iter()
                .find(|m| m[0] == id.as_str())
                .unwrap_or_else(|| panic!("{engine}: no row for {id}: {machines:?}"));
            assert_eq!(m[1], r.summary["run"]["kernel_release"], "{engine}");
            assert_eq!(m[2], r.summary["run"]["cpus"], "{engine}");
            assert_eq!(m[3], r.summary["stream"]["events_received"], "{engine}");
            // Every event's host time falls inside the run's wall-clock span.
            let started = r.summary["run"]["started_unix_s"].as_f64().unwrap() * 1e9;
            let ended = started + (r.summary["run"]["wall_s"].as_f64().unwrap() + 1.0) * 1e9;
            let (first, last) = (m[4].as_f64().unwrap(), m[5].as_f64().unwrap());
            assert!(
                started <= first && first <= last && last <= ended,
                "{engine}: host times {first}..{last} outside the run's {started}..{ended}"
            );
        }
    }
    assert!(engines >= 1);
    eprintln!(
        "{engines} engines agree with summary.json: {} probe rows, {} class rows",
        by_probe.len(),
        classes.len()
    );
}
