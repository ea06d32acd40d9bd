//! Reads random bytes N times and reports each read's latency, for the /dev/random
//! experiment.
//!
//! Usage: `random [--device /dev/random|/dev/urandom] [--reads N] [--bytes B] [--getrandom-nonblock]`
//! (defaults `/dev/random`, 10 reads, 32 bytes). With `--getrandom-nonblock` the reads are
//! `getrandom(buf, B, GRND_NONBLOCK)` calls instead of device reads (`EAGAIN` is reported,
//! not fatal: it means the kernel's pool is not initialised).
//!
//! Output: one JSON line per read, `{"read":i,"bytes":n,"latency_ns":t}` (or with
//! `"error"`), then a summary line `{"workload":"random",...}`.

use std::{fs::File, io::Read, process::ExitCode, time::Instant};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str =
    "random [--device /dev/random|/dev/urandom] [--reads N] [--bytes B] [--getrandom-nonblock]";

fn main() -> ExitCode {
    main_with("random", run)
}

enum Source {
    Device(File),
    GetrandomNonblock,
}

impl Source {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Source::Device(f) => f.read(buf),
            Source::GetrandomNonblock => {
                // SAFETY: the buffer is valid for buf.len() bytes.
                let n = unsafe {
                    libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK)
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }
        }
    }
}

fn run(mut args: Args) -> Result<(), Error> {
    let device = args
        .value("--device")?
        .unwrap_or_else(|| "/dev/random".into());
    let reads = args.number("--reads", 10)?;
    let bytes = args.number("--bytes", 32)?;
    let nonblock = args.flag("--getrandom-nonblock");
    args.finish(USAGE)?;
    if device != "/dev/random" && device != "/dev/urandom" {
        return Err(Error::usage(format!(
            "--device must be /dev/random or /dev/urandom, not {device:?}"
        )));
    }
    if bytes == 0 || bytes > 1 << 20 {
        return Err(Error::usage("--bytes must be between 1 and 1048576"));
    }
    let mut source = if nonblock {
        Source::GetrandomNonblock
    } else {
        Source::Device(
            File::open(&device).map_err(|e| Error::runtime(format!("open {device}: {e}")))?,
        )
    };
    let method = if nonblock {
        "getrandom-nonblock".to_string()
    } else {
        device.clone()
    };

    let mut buf = vec![0u8; bytes as usize];
    let (mut total_bytes, mut errors, mut total_ns, mut max_ns) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    for i in 0..reads {
        let t = Instant::now();
        let result = source.read(&mut buf);
        let ns = elapsed_ns(t);
        total_ns += ns;
        max_ns = max_ns.max(ns);
        let line = match result {
            Ok(n) => {
                total_bytes += n as u64;
                json_line(&[
                    ("read", Value::Num(i)),
                    ("bytes", Value::Num(n as u64)),
                    ("latency_ns", Value::Num(ns)),
                ])
            }
            Err(e) => {
                errors += 1;
                json_line(&[
                    ("read", Value::Num(i)),
                    ("error", Value::Str(e.to_string())),
                    ("latency_ns", Value::Num(ns)),
                ])
            }
        };
        println!("{line}");
    }
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("random".into())),
            ("method", Value::Str(method)),
            ("reads", Value::Num(reads)),
            ("bytes_per_read", Value::Num(bytes)),
            ("bytes", Value::Num(total_bytes)),
            ("errors", Value::Num(errors)),
            (
                "mean_latency_ns",
                Value::Num(total_ns.checked_div(reads).unwrap_or(0))
            ),
            ("max_latency_ns", Value::Num(max_ns)),
            ("elapsed_ns", Value::Num(elapsed_ns(start))),
        ])
    );
    Ok(())
}
