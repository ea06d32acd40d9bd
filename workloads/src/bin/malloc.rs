//! Allocates M MiB, writes one byte in every page, frees it; R times — the seed's
//! malloc loop (Listing 12), made large enough that every round takes fresh page faults
//! (allocations this big are mmap'ed and returned to the kernel on free).
//!
//! With transparent huge pages (Debian's default), one fault can map 2 MiB; `--no-thp`
//! asks for 4 KiB pages (`MADV_NOHUGEPAGE`), so every page touched is one fault.
//!
//! Usage: `malloc [--mib M] [--repeat R] [--no-thp]` (defaults 16 and 4).

use std::{
    alloc::{Layout, alloc, dealloc},
    process::ExitCode,
    time::Instant,
};

use guestscope_workloads::{Args, Error, Value, elapsed_ns, json_line, main_with};

const USAGE: &str = "malloc [--mib M] [--repeat R] [--no-thp]";
const PAGE: usize = 4096;

fn main() -> ExitCode {
    main_with("malloc", run)
}

fn run(mut args: Args) -> Result<(), Error> {
    let mib = args.number("--mib", 16)?;
    let repeat = args.number("--repeat", 4)?;
    let no_thp = args.flag("--no-thp");
    args.finish(USAGE)?;
    if mib == 0 || mib > 1 << 20 {
        return Err(Error::usage(format!(
            "--mib must be between 1 and {}",
            1 << 20
        )));
    }
    let size = usize::try_from(mib)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .ok_or_else(|| Error::usage("--mib too large"))?;
    let layout =
        Layout::from_size_align(size, PAGE).map_err(|e| Error::usage(format!("--mib: {e}")))?;

    let start = Instant::now();
    let mut pages = 0u64;
    let mut checksum = 0u64;
    for round in 0..repeat {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc(layout) };
        if p.is_null() {
            return Err(Error::runtime(format!(
                "allocating {mib} MiB failed in round {round}"
            )));
        }
        if no_thp {
            // SAFETY: madvise only changes paging advice for this allocation's pages.
            if unsafe { libc::madvise(p.cast(), size, libc::MADV_NOHUGEPAGE) } != 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: allocated above with the same layout.
                unsafe { dealloc(p, layout) };
                return Err(Error::runtime(format!("madvise(MADV_NOHUGEPAGE): {e}")));
            }
        }
        for offset in (0..size).step_by(PAGE) {
            // SAFETY: offset < size, inside the allocation.
            unsafe {
                p.add(offset)
                    .write_volatile(round as u8 ^ (offset >> 12) as u8)
            };
            pages += 1;
        }
        // Read one byte back so the writes cannot be optimised away.
        // SAFETY: inside the allocation, written above.
        checksum = checksum.wrapping_add(u64::from(unsafe { p.add(size - PAGE).read_volatile() }));
        // SAFETY: allocated above with the same layout.
        unsafe { dealloc(p, layout) };
    }
    println!(
        "{}",
        json_line(&[
            ("workload", Value::Str("malloc".into())),
            ("mib", Value::Num(mib)),
            ("repeat", Value::Num(repeat)),
            ("thp", Value::Bool(!no_thp)),
            ("pages_touched", Value::Num(pages)),
            ("checksum", Value::Num(checksum)),
            ("elapsed_ns", Value::Num(elapsed_ns(start))),
        ])
    );
    Ok(())
}
