//! `cargo xtask bench --exact-counts`: where a traced event's instructions go in the
//! guest kernel, counted exactly. QEMU runs with guestscope's instruction-counting
//! plugin (`xtask/plugins/insn_count.c`, built here with the C compiler), which counts
//! every kernel instruction the guest runs; four boots of `guestscope lab` run the
//! fopen loop, untraced and with every probe, for [`ITERATIONS`] iterations and for
//! twice as many; [`crate::instruction_counts`] sums the counts per function and
//! writes `exact-counts.md`.
//!
//! Unlike the bench's perf profile (a sample every million instructions), nothing here
//! is sampled, and the guest's clock counts instructions (`-icount`), so the host's
//! load moves no count. What still differs between runs of one build is the guest's
//! own: stack walks of the hits the cache did not answer (preemptions, interrupts) and
//! boot-time calibration loops; three runs gave 1,585 to 1,628 instructions per event
//! in the functions only the traced loop runs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cmd};
use crate::image::Image;
use crate::instruction_counts::{self as counts, Pair};
use crate::paths::Layout;
use crate::steps::Steps;
use guest_kernel::kallsyms::Kallsyms;

/// Iterations of the short runs (the long ones make twice as many).
pub const ITERATIONS: u64 = 20_000;
/// Rows of the table before the rest is summed.
const SHOWN: usize = 25;
/// The only built-in probe the untraced runs attach: it fires on kernel page faults,
/// which the fopen loop does not take (a run needs at least one probe).
const UNTRACED_PROBE: &str = "page_fault_kernel";

/// Builds the plugin, runs the four boots and writes `out/exact-counts.md`.
pub fn run(
    layout: &Layout,
    steps: &mut Steps,
    image: &Image,
    collector: &Path,
    out: &Path,
) -> Result<()> {
    let work = layout.guestscope_dir().join("bench/exact-counts");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let plugin = steps.run("instruction-counting plugin", || {
        build_plugin(layout, &work)
    })?;
    let qemu = wrapper(&work)?;
    let fopen = image
        .workloads
        .iter()
        .find_map(|(name, path)| (name == "fopen").then_some(path))
        .context("the guest image has no fopen workload")?;
    let kernel = image.kernel_elf.as_ref().unwrap_or(&image.kernel);
    let mut runs = Vec::new();
    for traced in [false, true] {
        for iterations in [ITERATIONS, 2 * ITERATIONS] {
            let name = format!(
                "{}-{iterations}",
                if traced { "traced" } else { "untraced" }
            );
            let run = Run {
                dir: work.join(&name),
                counts: work.join(format!("{name}.counts")),
            };
            steps.run(&format!("boot {name}"), || {
                let _ = std::fs::remove_dir_all(&run.dir);
                let mut lab = cmd(collector);
                lab.arg("lab")
                    .arg("--kernel")
                    .arg(kernel)
                    .arg("--initrd")
                    .arg(&image.initrd)
                    .arg("--qemu")
                    .arg(&qemu)
                    .args(["--no-cr3", "--boots", "0", "--no-snapshots"])
                    .args(["--no-builtin-workloads", "--workload"])
                    .arg(format!(
                        "fopen={} --iterations {iterations}",
                        fopen.display()
                    ))
                    .arg("--out")
                    .arg(&run.dir)
                    .arg("-q")
                    .env("GUESTSCOPE_INSN_PLUGIN", &plugin)
                    .env("GUESTSCOPE_INSN_OUT", &run.counts);
                if !traced {
                    lab.args(["--probes", UNTRACED_PROBE]);
                }
                cmd::run(&mut lab)
            })?;
            runs.push(run);
        }
    }
    let table = steps.run("sum per function", || report(&runs))?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("exact-counts.md");
    std::fs::write(&path, table).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("exact counts: {}", path.display());
    Ok(())
}

/// One boot's output directory and the plugin's counts of it.
struct Run {
    dir: PathBuf,
    counts: PathBuf,
}

impl Run {
    /// Instructions per function, named with the boot's own kallsyms.
    fn per_function(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        let kallsyms = self.dir.join("guest/kallsyms");
        let symbols = Kallsyms::parse(&read(&kallsyms)?)
            .with_context(|| format!("reading the symbols of {}", kallsyms.display()))?;
        counts::per_function(&read(&self.counts)?, &symbols)
            .with_context(|| format!("summing {}", self.counts.display()))
    }

    /// The boot's `summary.json`.
    fn summary(&self) -> Result<serde_json::Value> {
        let path = self.dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Events a boot's stream delivered, from its `summary.json`.
fn events(summary: &serde_json::Value) -> Result<u64> {
    summary["stream"]["events_received"]
        .as_u64()
        .context("summary.json has no stream.events_received")
}

/// `exact-counts.md` from the four runs (untraced short, long; traced short, long).
fn report(runs: &[Run]) -> Result<String> {
    let [untraced_short, untraced_long, traced_short, traced_long] = runs else {
        bail!("expected four runs, got {}", runs.len());
    };
    let (us, ul) = (
        untraced_short.per_function()?,
        untraced_long.per_function()?,
    );
    let (ts, tl) = (traced_short.per_function()?, traced_long.per_function()?);
    let long_summary = traced_long.summary()?;
    let events = events(&long_summary)?
        .checked_sub(events(&traced_short.summary()?)?)
        .context("the long traced run recorded fewer events than the short one")?;
    let rows = counts::added_per_event(
        &Pair {
            short: &ts,
            long: &tl,
        },
        &Pair {
            short: &us,
            long: &ul,
        },
        ITERATIONS,
        events,
    );
    let kernel = long_summary["run"]["kernel_release"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let per_iteration = events as f64 / ITERATIONS as f64;
    let mut md = String::from("# Where a traced event's instructions go, counted exactly\n\n");
    writeln!(
        md,
        "Written by `cargo xtask bench --exact-counts`. Guest kernel {kernel}, TCG, 1 vCPU. \
         QEMU counted every kernel instruction the guest ran (guestscope's plugin, \
         `xtask/plugins/insn_count.c`: an inline add per instruction, nothing sampled). \
         The fopen loop ran {ITERATIONS} and {} iterations untraced (only the \
         `{UNTRACED_PROBE}` probe attached, which the loop does not hit) and with every \
         probe (stacks cached, the default), one boot each; per function, the long run \
         less the short one is what {ITERATIONS} iterations took, and the traced \
         difference less the untraced one is what tracing added. Per event: over the \
         {events} events ({per_iteration:.2} per iteration) the traced runs' difference \
         recorded. User space (the loop's own code, the agent) is not counted.\n",
        2 * ITERATIONS
    )?;
    let (own, shared) = counts::split(&rows);
    writeln!(
        md,
        "Added per event: {:.1} kernel instructions; {own:.1} of them in the functions \
         only the traced loop ran (the probes' own path: their programs, the helpers \
         they call, the trampolines, the stack walks of hits the stack cache did not \
         answer), {shared:.1} in functions the untraced loop runs too (more of the \
         loop's own work, scheduling, and boot-time calibration loops such as \
         `pit_hpet_ptimer_calibrate_cpu`, whose length follows the host's timing and \
         differs from boot to boot: their rows are noise).\n",
        own + shared
    )?;
    md += &counts::markdown(&rows, SHOWN);
    Ok(md)
}

/// Compiles the plugin into `work` with the C compiler (`cc`).
fn build_plugin(layout: &Layout, work: &Path) -> Result<PathBuf> {
    let source = layout.root.join("xtask/plugins/insn_count.c");
    let plugin = work.join("insn_count.so");
    cmd::run(
        cmd("cc")
            .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
            .arg(&plugin)
            .arg(&source),
    )
    .context("building the instruction-counting plugin (is a C compiler installed?)")?;
    Ok(plugin)
}

/// A QEMU for `guestscope lab --qemu` that loads the plugin, which writes its counts to
/// `$GUESTSCOPE_INSN_OUT`.
fn wrapper(work: &Path) -> Result<PathBuf> {
    let path = work.join("qemu-with-insn-count");
    let script = "#!/bin/sh\n\
                  exec qemu-system-x86_64 \"$@\" -icount shift=0 \
                  -plugin \"$GUESTSCOPE_INSN_PLUGIN,out=$GUESTSCOPE_INSN_OUT\"\n";
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(path)
}
