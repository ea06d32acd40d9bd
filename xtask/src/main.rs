//! `cargo xtask`: guestscope's build orchestration.
//!
//! Subcommands, one module each (`Options` and one entry function):
//! - [`lab`]: build everything and run `guestscope lab` on the guest image;
//! - [`test`](mod@test): build everything and run all tests, the VM tests included;
//! - [`bench`](mod@bench): time a warm `lab`, then run `guestscope bench` (results in `bench/`);
//! - [`deps`]: check and install what the lab needs on the host;
//! - [`image`]: build the guest image only;
//! - [`perfetto_protos`]: regenerate the collector's Rust code for Perfetto's trace protos.
//!
//! Their building blocks: [`build_guest`] (cargo builds), [`kernel`] (the
//! Debian kernel and its modules), [`initramfs`] (the guest's base archive),
//! [`debian`] (the second test guest: a debootstrap rootfs with Debian's 6.12),
//! [`lints`] (rustfmt and clippy, as `test` runs them), [`paths`] (where artifacts go), [`cmd`] (running programs), [`steps`]
//! (timing), [`elf`] (static or dynamic executables), [`disk`] (free space before a
//! long run).

mod bench;
mod build_guest;
mod cmd;
mod debian;
mod deps;
mod disk;
mod elf;
mod exact_counts;
mod fuzz;
mod image;
mod initramfs;
mod instruction_counts;
mod kernel;
mod kernel_build;
mod kernel_fragment;
mod lab;
mod lints;
mod paths;
mod perfetto_protos;
mod shell_files;
mod steps;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// guestscope's build tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the guest image and the collector, then run `guestscope lab`.
    Lab(lab::Options),
    /// Build the guest image and the collector, then run every test (VM tests included).
    Test(test::Options),
    /// Benchmarks: a warm `lab` timed, then `guestscope bench`; writes bench/results.{json,md}.
    Bench(bench::Options),
    /// Check and install the host tools the lab needs.
    Deps(deps::Options),
    /// Build the guest image only (kernel and base initramfs).
    Image(image::Options),
    /// Build a guest kernel from source (default: Debian's linux-source-6.1), for
    /// `lab --kernel`.
    Kernel(kernel_build::Options),
    /// Regenerate the collector's Rust code for Perfetto's trace protos (prost-build).
    PerfettoProtos(perfetto_protos::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Lab(options) => lab::lab(options),
        Command::Test(options) => test::test(options),
        Command::Bench(options) => bench::bench(options),
        Command::Deps(options) => deps::deps(options),
        Command::Image(options) => image::image(options),
        Command::Kernel(options) => kernel_build::kernel(options),
        Command::PerfettoProtos(options) => perfetto_protos::perfetto_protos(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err
                .downcast_ref::<cmd::Failed>()
                .and_then(|failed| failed.status.code())
                .and_then(|code| u8::try_from(code).ok())
                .filter(|code| *code != 0);
            ExitCode::from(code.unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_passes_unknown_arguments_through() {
        let cli = Cli::try_parse_from([
            "xtask", "lab", "--out", "o", "--probes", "fd", "-v", "--out2",
        ])
        .unwrap();
        let Command::Lab(options) = cli.command else {
            panic!("not lab")
        };
        assert_eq!(options.out.as_deref(), Some(std::path::Path::new("o")));
        assert_eq!(options.args, ["--probes", "fd", "-v", "--out2"]);
        let cli = Cli::try_parse_from(["xtask", "lab", "--", "--out", "x"]).unwrap();
        let Command::Lab(options) = cli.command else {
            panic!("not lab")
        };
        assert_eq!(
            (options.out, options.args),
            (None, vec!["--out".to_string(), "x".to_string()])
        );
    }

    #[test]
    fn bench_passes_guestscope_arguments_through() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--no-lab", "--reps", "3"]).unwrap();
        let Command::Bench(options) = cli.command else {
            panic!("not bench")
        };
        assert!(options.no_lab);
        assert_eq!(options.args, ["--reps", "3"]);
    }

    #[test]
    fn test_passes_cargo_test_arguments_through() {
        let cli = Cli::try_parse_from(["xtask", "test", "boots", "--", "--nocapture"]).unwrap();
        let Command::Test(options) = cli.command else {
            panic!("not test")
        };
        assert_eq!(options.args, ["boots", "--", "--nocapture"]);
    }
}
