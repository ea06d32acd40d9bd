//! The `guestscope` binary.

use std::process::ExitCode;

use clap::Parser;
use guestscope::attach::{self, AttachOptions, Endpoint};
use guestscope::cli::AttachArgs;
use guestscope::cli::{Cli, Command};
use guestscope::lab::{self, LabError, LabOptions, LabOutcome};
use guestscope::run_end::RunEnd;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = guestscope::interrupt::install() {
        eprintln!("guestscope: error: installing the Ctrl-C/SIGTERM handler: {e}");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Command::Lab(args) => match lab_command(args, cli.quiet) {
            Ok(run) => run,
            Err(code) => return code,
        },
        Command::Deploy(args) => return deploy_command(args),
        Command::Bench(args) => return bench_command(args),
        Command::Probes(args) => return probes_command(args),
        Command::Report { dir } => return report_command(&dir, cli.quiet),
        Command::Completions { shell } => return completions_command(shell),
        Command::Man => return man_command(),
        Command::Attach(args) => match attach_command(args) {
            Ok(Some(r)) => r,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("guestscope: error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    match result {
        Ok(out) => finished(&out),
        Err(e) => {
            eprintln!("guestscope: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The final line of a run that ended, and its exit status: success only for a
/// complete run in which an experiment could run.
fn finished(out: &LabOutcome) -> ExitCode {
    // An attached agent refuses a --probe of its plan by running no workload.
    let refused =
        guestscope::lab::own_questions::refusals(out.summary.probes.iter().map(|p| &p.attach));
    if !refused.is_empty() {
        eprintln!("guestscope: error: {}", refused.join("; "));
        return ExitCode::from(2);
    }
    let o = &out.summary.run.outcome;
    let events = out.summary.stream.events_received;
    println!(
        "guestscope: {} events from {} workloads, {} ({:.1} s, {}); report: {}",
        events,
        out.summary.workloads.len(),
        losses_line(&out.summary.losses),
        out.summary.run.wall_s,
        out.summary.run.accel,
        out.out_dir.join("report.html").display()
    );
    let attach = out.summary.probes.iter().map(|p| &p.attach);
    for why in guestscope::experiments::support::unattached_builtins(attach) {
        eprintln!("guestscope: warning: {why}");
    }
    let interrupted = guestscope::interrupt::received();
    let skipped = &out.summary.skipped;
    if o.complete && interrupted.is_none() && guestscope::experiments::support::ran(skipped) == 0 {
        // Collected, but this kernel (or these options) let no experiment run.
        let why: Vec<String> = skipped
            .iter()
            .map(|x| format!("{}: {}", x.experiment, x.reason))
            .collect();
        eprintln!(
            "guestscope: error: no experiment could run ({})",
            why.join("; ")
        );
        ExitCode::FAILURE
    } else if o.complete && interrupted.is_none() {
        ExitCode::SUCCESS
    } else {
        let kept = if o.how == RunEnd::OutputWriteFailed {
            "events.jsonl keeps every whole line written before the failure"
        } else {
            "everything received was written"
        };
        eprintln!(
            "guestscope: run {}: {}{} ({kept})",
            if o.complete { "stopped" } else { "incomplete" },
            o.how,
            o.detail
                .as_deref()
                .map(|d| format!(": {d}"))
                .unwrap_or_default()
        );
        match interrupted {
            // The shell's convention for a process stopped by a signal.
            Some(signal) => ExitCode::from(128 + signal as u8),
            None => ExitCode::FAILURE,
        }
    }
}

/// `guestscope lab`: the run (or, with `--dry-run`, its plan printed); `Err` is the
/// exit status of a command that ended here.
fn lab_command(
    args: guestscope::cli::LabArgs,
    quiet: bool,
) -> Result<Result<LabOutcome, LabError>, ExitCode> {
    let dry_run = args.dry_run;
    let mut options: LabOptions = args.into();
    if quiet {
        options.progress = |_| {};
        options.live = false;
    }
    if dry_run {
        return Err(match lab::dry_run(&options) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("guestscope: error: {e}");
                ExitCode::from(2)
            }
        });
    }
    Ok(lab::run(&options))
}

/// `guestscope report DIR`.
fn report_command(dir: &std::path::Path, quiet: bool) -> ExitCode {
    match guestscope::report_again::report_again(dir) {
        Ok(_) => {
            if !quiet {
                eprintln!("guestscope: report: {}", dir.join("report.html").display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("guestscope: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `guestscope completions SHELL`.
fn completions_command(shell: clap_complete::Shell) -> ExitCode {
    let mut command = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut command, "guestscope", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `guestscope man`.
fn man_command() -> ExitCode {
    let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
    match man.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestscope: error: writing the manual page: {e}");
            ExitCode::from(2)
        }
    }
}

/// The final line's account of losses: "0 lost", or each kind of loss counted.
fn losses_line(l: &guestscope::output::summary::Losses) -> String {
    let parts: Vec<String> = [
        (l.ring_full, "to a full ring buffer"),
        (
            l.spool_dropped_events,
            "to a full spool while the link was down",
        ),
        (l.events_missing.unwrap_or(0), "sent but never received"),
        (l.nested, "nested probe hits skipped"),
        (l.records_missing, "records missing from the stream"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}"))
    .collect();
    if parts.is_empty() {
        "0 lost".to_string()
    } else {
        format!("lost: {}", parts.join(", "))
    }
}

/// Runs `guestscope deploy`: one line on what changed, one on how to collect; or one
/// line of error.
fn deploy_command(a: guestscope::cli::DeployArgs) -> ExitCode {
    use guestscope::rootfs::deploy::{self, DeployOptions};
    let fail = |e: String| {
        eprintln!("guestscope: error: deploy: {e}");
        ExitCode::from(2)
    };
    let Some(initrd) = a
        .initrd
        .clone()
        .or_else(|| guestscope::built_guest::file(guestscope::built_guest::INITRD))
    else {
        return fail("--initrd not given and this build has no target/guestscope/guest/base.cpio: run `cargo xtask image`".into());
    };
    let plan = match &a.plan {
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                serde_json::from_str::<guestscope_common::plan::RunPlan>(&t)
                    .map_err(|e| format!("not a run plan: {e}"))
            }) {
            Ok(plan) => Some(plan),
            Err(e) => return fail(format!("--plan {}: {e}", path.display())),
        },
        None => None,
    };
    let o = DeployOptions {
        image: a.rootfs.clone(),
        initrd,
        plan,
        new_plan: attach::default_plan(a.port),
    };
    let r = match deploy::deploy(&o) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let host_plan = a.write_plan.clone().unwrap_or_else(|| {
        let mut p = a.rootfs.clone().into_os_string();
        p.push(".plan.json");
        p.into()
    });
    let json = match serde_json::to_vec_pretty(&r.plan) {
        Ok(j) => j,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = write_private(&host_plan, &json) {
        return fail(format!("writing {}: {e}", host_plan.display()));
    }
    if r.written.is_empty() {
        println!(
            "guestscope: {} already has the agent ({}); nothing changed",
            a.rootfs.display(),
            r.init.name()
        );
    } else {
        println!(
            "guestscope: deployed into {} ({}): wrote {}; {} already in place",
            a.rootfs.display(),
            r.init.name(),
            r.written.join(", "),
            r.unchanged.len()
        );
    }
    println!(
        "guestscope: boot it with a vsock device (`guestscope attach --print-setup`) and collect with: guestscope attach --plan {} --vsock-uds PATH|--vsock-cid N",
        host_plan.display()
    );
    ExitCode::SUCCESS
}

/// Runs `guestscope bench` and prints where the results went.
fn bench_command(args: guestscope::cli::BenchArgs) -> ExitCode {
    let options: guestscope::bench::BenchOptions = args.into();
    match guestscope::bench::run(&options) {
        Ok(r) => {
            let out = options.out_dir.join("results.md");
            println!(
                "guestscope bench: {:.0} s; results: {}",
                r.wall_s,
                out.display()
            );
            for t in &r.targets {
                let met = match t.met {
                    Some(true) => "met",
                    Some(false) => "NOT met",
                    None => "not measured",
                };
                println!("  {}: {} (target {}): {met}", t.what, t.measured, t.target);
            }
            for p in &r.problems {
                println!("  problem: {p}");
            }
            // A lost boot leaves its comparisons with fewer samples than asked for:
            // the results are written, but the run does not pass for a complete one.
            let lost: Vec<&String> = r
                .problems
                .iter()
                .filter(|p| p.contains("boot incomplete"))
                .collect();
            if lost.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "guestscope bench: error: {} boot(s) ended early, so some figures have fewer samples than asked for: {}",
                    lost.len(),
                    lost.iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("guestscope bench: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `guestscope attach`; `Ok(None)` when it only printed or wrote setup.
fn attach_command(a: AttachArgs) -> Result<Option<Result<LabOutcome, LabError>>, String> {
    if let qemu_gdb_client::GdbEndpoint::Tcp(addr) = &a.gdb {
        if !addr.ip().is_loopback() {
            return Err(format!(
                "--gdb {addr}: the gdbstub must listen on loopback only (it gives full control of the guest)"
            ));
        }
        eprintln!(
            "guestscope: warning: --gdb {addr}: every local user can connect to a TCP gdbstub; prefer a Unix socket (--gdb {})",
            guestscope::attach::RECOMMENDED_SOCKET
        );
    }
    let endpoint = match (a.vsock_uds.clone(), a.vsock_cid) {
        (Some(p), None) => Some(Endpoint::Uds(p)),
        (None, Some(c)) => Some(Endpoint::Cid(c)),
        (Some(_), Some(_)) => {
            return Err("give one of --vsock-uds and --vsock-cid, not both".into());
        }
        (None, None) => None,
    };
    for p in &a.user_probes {
        p.parse::<guestscope_common::user_probe::UserProbe>()
            .map_err(|e| e.to_string())?;
    }
    if !a.user_probes.is_empty() && a.write_plan.is_none() {
        return Err("--probe goes into the plan: give --write-plan FILE too".into());
    }
    if let Some(path) = &a.write_plan {
        // A fresh secret: `attach --plan` requires it of the agent that reads this plan.
        let secret =
            guestscope_common::plan::new_secret().map_err(|e| format!("making a secret: {e}"))?;
        let plan = guestscope_common::plan::RunPlan {
            secret: Some(secret),
            user_probes: a.user_probes.clone(),
            ..attach::default_plan(a.port)
        };
        let json = serde_json::to_vec_pretty(&plan).map_err(|e| e.to_string())?;
        write_private(path, &json).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!(
            "guestscope: wrote {}; place it in the guest at /etc/guestscope/plan.json",
            path.display()
        );
    }
    if a.print_setup {
        let shown = endpoint.clone().unwrap_or(Endpoint::Cid(3));
        print!("{}", attach::setup_text(&shown, &a.gdb));
    }
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    if a.print_setup {
        return Ok(None);
    }
    let secret = match &a.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--plan {}: {e}", path.display()))?;
            let plan: guestscope_common::plan::RunPlan = serde_json::from_str(&text)
                .map_err(|e| format!("--plan {}: not a run plan: {e}", path.display()))?;
            Some(plan.secret.ok_or_else(|| {
                format!(
                    "--plan {}: the plan has no secret (write one with --write-plan)",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    Ok(Some(attach::run(&AttachOptions {
        endpoint,
        port: a.port,
        out_dir: a.out,
        timeout: std::time::Duration::from_secs(a.timeout),
        secret,
    })))
}

/// Writes a file readable by its owner only (it holds a secret).
fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// `guestscope probes [PATTERN]`: the functions `--probe` can attach to, from the
/// cached list of the kernel, or from one boot that fills the cache.
fn probes_command(a: guestscope::cli::ProbesArgs) -> ExitCode {
    use guestscope::built_guest;
    use guestscope::probe_catalog;

    let pattern = a.pattern.as_deref().unwrap_or("*");
    let query = match guestscope::probe_listing::Query::parse(pattern) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("guestscope: error: {e}");
            return ExitCode::from(2);
        }
    };
    let kernel = a
        .kernel
        .or_else(|| built_guest::file(built_guest::KERNEL))
        .unwrap_or_default();
    let cached = (!a.refresh)
        .then(|| probe_catalog::cached(None, &kernel))
        .flatten();
    let list = match cached {
        Some(list) => list,
        None => {
            let scratch = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("guestscope: error: a scratch directory: {e}");
                    return ExitCode::from(2);
                }
            };
            let o = LabOptions {
                kernel: kernel.clone(),
                initrd: a
                    .initrd
                    .or_else(|| built_guest::file(built_guest::INITRD))
                    .unwrap_or_default(),
                out_dir: scratch.path().join("out"),
                builtin_workloads: false,
                qemu: a.qemu,
                vhost_device_vsock: a.vhost_device_vsock,
                cr3: false,
                snapshots: false,
                boots: 0,
                progress: |step| eprintln!("guestscope: {step}"),
                ..LabOptions::default()
            };
            eprintln!("guestscope: booting the guest once to read its probe list");
            match guestscope::lab::probe_fetch::fetch(&o) {
                Ok(fetched) => {
                    match probe_catalog::store(None, &kernel, &fetched.list) {
                        Ok(path) => eprintln!("guestscope: cached in {}", path.display()),
                        Err(e) => eprintln!("guestscope: warning: not cached: {e}"),
                    }
                    if let Some(btf) = &fetched.btf
                        && let Err(e) = probe_catalog::store_btf(None, &kernel, btf)
                    {
                        eprintln!("guestscope: warning: the kernel's BTF not cached: {e}");
                    }
                    fetched.list
                }
                Err(e) => {
                    eprintln!("guestscope: error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let listing = query.list(&list);
    for line in &listing.lines {
        println!("{line}");
    }
    for note in &listing.notes {
        eprintln!("guestscope: {note}");
    }
    let shown = listing.lines.len();
    if shown == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
