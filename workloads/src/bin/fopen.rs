//! Creates a file, writes one line and closes it, N times, in a fresh directory — the
//! seed's fopen/fprintf/fclose loop (Listing 10).
//!
//! Each iteration makes exactly one `open` (so exactly one `alloc_fd`); setup and cleanup
//! use only `mkdir`, `unlink` and `rmdir`, which allocate no descriptor.
//!
//! Usage: `fopen [--iterations N] [--dir DIR] [--start-delay-ms MS]` (defaults 200,
//! `$TMPDIR` or `/tmp`, and 0). `--start-delay-ms` sleeps before the loop (outside the
//! timed part), so a host-side tracer can be set up once the pid is known.

use std::{
    fs::{self, File},
    io::Write,
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str = "fopen [--iterations N] [--dir DIR] [--start-delay-ms MS]";

fn main() -> ExitCode {
    main_with("fopen", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let iterations = args.number("--iterations", 200)?;
    let base = args
        .value("--dir")?
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let delay_ms = args.number("--start-delay-ms", 0)?;
    args.finish(USAGE)?;
    std::thread::sleep(Duration::from_millis(delay_ms));

    let dir = base.join(format!("guestscope-fopen-{}", std::process::id()));
    fs::create_dir_all(&dir)
        .map_err(|e| Error::runtime(format!("mkdir {}: {e}", dir.display())))?;
    let path = dir.join("file.txt");
    let start = Instant::now();
    let result = (0..iterations).try_for_each(|i| {
        let mut f = File::create(&path)
            .map_err(|e| Error::runtime(format!("create {}: {e}", path.display())))?;
        // One write per iteration, like fprintf's buffered line reaching fclose.
        let line = format!("guestscope fopen iteration {i}\n");
        f.write_all(line.as_bytes())
            .map_err(|e| Error::runtime(format!("write: {e}")))
        // `f` is closed here.
    });
    let elapsed = elapsed_ns(start);
    // Not remove_dir_all: it opens directories, which would add alloc_fd events.
    let _ = fs::remove_file(&path);
    let _ = fs::remove_dir(&dir);
    result?;
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("fopen".into())),
            ("iterations", Value::Num(iterations)),
            ("elapsed_ns", Value::Num(elapsed)),
        ])
    );
    Ok(())
}
