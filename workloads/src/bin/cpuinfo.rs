//! Reads `/proc/cpuinfo` N times (open, read to the end, close), like the seed's Listing 7.
//!
//! Usage: `cpuinfo [--iterations N]` (default 100).

use std::{fs::File, io::Read, process::ExitCode, time::Instant};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str = "cpuinfo [--iterations N]";

fn main() -> ExitCode {
    main_with("cpuinfo", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let iterations = args.number("--iterations", 100)?;
    args.finish(USAGE)?;
    let start = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut bytes = 0u64;
    for _ in 0..iterations {
        let mut f = File::open("/proc/cpuinfo")
            .map_err(|e| Error::runtime(format!("open /proc/cpuinfo: {e}")))?;
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::runtime(format!("read /proc/cpuinfo: {e}"))),
            }
        }
    }
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("cpuinfo".into())),
            ("iterations", Value::Num(iterations)),
            ("bytes", Value::Num(bytes)),
            ("elapsed_ns", Value::Num(elapsed_ns(start))),
        ])
    );
    Ok(())
}
