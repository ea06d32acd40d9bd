"""Query the data files of several guestscope runs at once, with the SQL engines a
site already runs: DuckDB (PyPI `duckdb`) and ClickHouse's engine (PyPI `chdb`).

Usage: python3 sql_check.py RUN_DIR [RUN_DIR ...]

Each run folder holds `events.jsonl` (one event per line, `stack_id` into
`stacks.jsonl`), `stacks.jsonl` (each stack once, with its spin_lock class) and
`run.json` (run id, machine, kernel); every line carries its `run_id`, so the files of
many runs (many VMs) are read as one table. Prints one JSON object: per engine, the
answers of three queries, rows sorted; an engine that is not installed is reported
as missing, not skipped silently.
"""

import json
import os
import sys

# Events per run, workload and probe (what summary.json's workloads[].events counts).
EVENTS_BY_PROBE = """
select run_id, workload, probe, count(*) as n
from {events}
where workload is not null
group by run_id, workload, probe
"""

# spin_lock hits per run, workload and subsystem: the events joined to their stacks
# (what summary.json's experiments.spin_lock[].classes[].hits counts).
SPIN_LOCK_CLASSES = """
select e.run_id, e.workload, s.spin_lock_class as class, count(*) as n
from {events} as e
join {stacks} as s on e.run_id = s.run_id and e.stack_id = s.stack_id
where e.probe = 'spin_lock' and e.workload is not null
  and s.spin_lock_class is not null
group by e.run_id, e.workload, s.spin_lock_class
"""

# Events per guest machine and kernel: the run header joined in, and the span of the
# host wall-clock times each run's events were mapped to.
BY_MACHINE = """
select r.run_id, r.kernel_release, r.cpus, count(*) as n,
       min(e.host_unix_ns) as first_host_ns, max(e.host_unix_ns) as last_host_ns
from {events} as e
join {runs} as r on e.run_id = r.run_id
group by r.run_id, r.kernel_release, r.cpus
"""

QUERIES = {
    "events_by_probe": EVENTS_BY_PROBE,
    "spin_lock_classes": SPIN_LOCK_CLASSES,
    "by_machine": BY_MACHINE,
}


def rows(result):
    return sorted([list(r) for r in result], key=lambda r: [str(x) for x in r])


def with_duckdb(dirs):
    import duckdb

    def files(name):
        paths = ", ".join(f"'{os.path.join(d, name)}'" for d in dirs)
        return f"read_json([{paths}], format = 'newline_delimited')"

    con = duckdb.connect()
    tables = {"events": files("events.jsonl"), "stacks": files("stacks.jsonl"),
              "runs": f"read_json([{', '.join(repr(os.path.join(d, 'run.json')) for d in dirs)}])"}
    return {name: rows(con.sql(q.format(**tables)).fetchall()) for name, q in QUERIES.items()}


def with_chdb(dirs):
    import chdb

    def files(name, fmt):
        # ClickHouse's file() takes one glob; {a,b} names the runs' folders.
        parent = os.path.commonpath([os.path.abspath(d) for d in dirs])
        names = ",".join(os.path.relpath(os.path.abspath(d), parent) for d in dirs)
        return f"file('{parent}/{{{names}}}/{name}', '{fmt}')"

    # One run header per folder, each read on its own with the columns the queries
    # use: read through one glob, with its schema inferred from the first file, a
    # header was once left out of the join (chdb 4.4, a 1-vCPU and a 2-vCPU run).
    runs = " union all ".join(
        f"select run_id, kernel_release, cpus from file('{os.path.abspath(d)}/run.json', 'JSONEachRow')"
        for d in dirs)
    tables = {"events": files("events.jsonl", "JSONEachRow"),
              "stacks": files("stacks.jsonl", "JSONEachRow"),
              "runs": f"({runs})"}
    out = {}
    for name, q in QUERIES.items():
        text = chdb.query(q.format(**tables), "JSONCompact").bytes()
        out[name] = rows(json.loads(text)["data"])
    return out


def main():
    dirs = sys.argv[1:]
    if not dirs:
        sys.exit("usage: sql_check.py RUN_DIR [RUN_DIR ...]")
    answers = {}
    for engine, run in (("duckdb", with_duckdb), ("chdb", with_chdb)):
        try:
            answers[engine] = run(dirs)
        except ImportError as e:
            answers[engine] = {"missing": str(e)}
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
