//! Free disk space before a long run: `cargo xtask test` writes about 12 GiB when
//! nothing is cached (its build and test outputs under `target/`, the kernel built
//! from source under the user cache), and a file system that fills up mid-run fails
//! tests far from the cause. The figure is printed at the start, with a warning when
//! it is short, so that a failure of that kind is read for what it is.

use std::path::Path;

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cmd};

/// What a cold `cargo xtask test` wrote on this project's machines, GiB: `target/`
/// 6.0 (builds 3.3, the Debian guest and test outputs 2.7) and the user cache 5.6 (the
/// kernel source 1.5, its build with debug info 4.1).
pub const COLD_TEST_GIB: f64 = 12.0;

/// Bytes free to an unprivileged writer in the file system holding `path` (its
/// nearest existing ancestor), from `df`.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .context("no existing ancestor")?;
    let out = cmd::stdout_of(cmd("df").args(["--output=avail", "-B1"]).arg(existing))?;
    parse_df_avail(&out).with_context(|| format!("reading df's output for {}", existing.display()))
}

/// The number in `df --output=avail -B1`'s output (a header line, then one value).
fn parse_df_avail(out: &str) -> Result<u64> {
    let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(_header), Some(value)) => value
            .parse()
            .with_context(|| format!("not a byte count: {value:?}")),
        _ => bail!("expected a header and a value, got {out:?}"),
    }
}

/// Prints the free space for each of `dirs` and warns when the least of them is under
/// [`COLD_TEST_GIB`] (they are usually one file system). Never fails the run:
/// a warm run needs far less, and `df` missing is no reason to stop.
pub fn report(dirs: &[(&str, &Path)]) {
    let mut least = f64::INFINITY;
    for (what, dir) in dirs {
        match free_bytes(dir) {
            Ok(bytes) => {
                let gib = bytes as f64 / (1u64 << 30) as f64;
                least = least.min(gib);
                eprintln!("disk: {gib:.1} GiB free for {what} ({})", dir.display());
            }
            Err(e) => eprintln!("disk: free space of {} unknown: {e:#}", dir.display()),
        }
    }
    if least < COLD_TEST_GIB {
        eprintln!(
            "disk: warning: a run with nothing cached writes about {COLD_TEST_GIB:.0} GiB; \
             {least:.1} GiB free may not be enough (No space left on device mid-run)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dfs_avail_column_is_read() {
        assert_eq!(
            parse_df_avail("   Avail\n53687091200\n").unwrap(),
            53_687_091_200
        );
        assert!(parse_df_avail("Avail\n").is_err());
        assert!(parse_df_avail("Avail\n12G\n").is_err());
    }

    #[test]
    fn this_machines_free_space_is_a_real_figure() {
        let free = free_bytes(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(free > 0);
        // A path that does not exist yet is measured at its nearest ancestor.
        let deeper = Path::new(env!("CARGO_MANIFEST_DIR")).join("no/such/dir");
        assert!(free_bytes(&deeper).unwrap() > 0);
    }
}
