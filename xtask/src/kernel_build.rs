//! `cargo xtask kernel`: builds a guest kernel from source, for `--kernel`.
//!
//! Out of tree (`make O=`), in `~/.cache/guestscope/kernels/<key>/` (kept across
//! clones: [`Layout::user_cache_dir`]), where the key is
//! a digest of the source tree's path and the configuration fragments: a second
//! call with nothing changed runs make, which rebuilds nothing; a changed fragment
//! gets a build directory of its own. The configuration is `defconfig` +
//! `kvm_guest.config` + what guestscope needs, built in ([`OUR_FRAGMENT`]: eBPF
//! with BTF, kprobes and ftrace, virtio-pci/blk/vsock, 9p, overlayfs, ext4, the lab's
//! debug options), then the user's fragment on top, merged with the tree's own
//! `scripts/kconfig/merge_config.sh` and settled with `make olddefconfig`. What the
//! agent cannot do without is checked in the result, since olddefconfig drops an
//! option whose dependencies are missing (BTF without pahole) without a word, and
//! so is every setting of the user's fragment ([`kernel_fragment`]), which is
//! parsed before anything else happens. make's whole output goes to
//! `<build dir>/build.log`; a failed build ends on the compiler's last `error:`
//! line and that log's path.
//!
//! Without `--source`, Debian's `linux-source-6.1` package is the source.

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use sha2::{Digest as _, Sha256};

use crate::cmd::{self, cmd};
use crate::deps;
use crate::kernel_fragment::{self, Setting};
use crate::paths::{self, Layout};

/// What guestscope needs of a kernel, as a configuration fragment.
pub const OUR_FRAGMENT: &str = include_str!("kernel.config");

/// Options of `cargo xtask kernel` (the default: Debian's 6.1 source, our fragment).
#[derive(Debug, Default, clap::Args)]
pub struct Options {
    /// The kernel source tree [default: Debian's linux-source-6.1, installed and
    /// unpacked into ~/.cache/guestscope].
    #[arg(long, value_name = "DIR")]
    pub source: Option<PathBuf>,
    /// A configuration fragment of yours, merged over guestscope's.
    #[arg(long, value_name = "FILE")]
    pub config_fragment: Option<PathBuf>,
    /// Parallel jobs for make [default: the number of CPUs].
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// The Debian packages a kernel build needs (pahole is in dwarves).
const BUILD_PACKAGES: &[&str] = &[
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
];
/// The Debian package of the default source.
const SOURCE_PACKAGE: &str = "linux-source-6.1";
/// Its tarball.
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// Options the agent and the lab cannot do without (`=y` in the final `.config`).
const REQUIRED: &[&str] = &[
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_JIT",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_KPROBES",
    "CONFIG_FUNCTION_TRACER",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_VSOCKETS",
    "CONFIG_DEVTMPFS",
];

/// make's stderr lines shown when it fails.
const TAIL_LINES: usize = 30;

/// The user's fragment: where it came from, its text and its settings.
struct UserFragment<'a> {
    /// The path given to `--config-fragment`.
    path: &'a Path,
    /// Its contents.
    text: String,
    /// Its settings, parsed.
    settings: Vec<Setting>,
}

/// A progress line at most this often while make runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(20);

/// Entry point of `cargo xtask kernel`.
pub fn kernel(options: &Options) -> Result<()> {
    let layout = Layout::discover()?;
    let started = Instant::now();
    let image = build(&layout, options)?;
    eprintln!(
        "    kernel built in {:.0} s: {}\n    use it: cargo xtask lab -- --kernel {}",
        started.elapsed().as_secs_f64(),
        image.display(),
        image.display()
    );
    println!("{}", image.display());
    Ok(())
}

/// Builds (or finds built) the kernel `options` describe; its bzImage.
pub fn build(layout: &Layout, options: &Options) -> Result<PathBuf> {
    // The fragment first: a typo in it is worth no package installation.
    let user = match &options.config_fragment {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--config-fragment {}", path.display()))?;
            let settings = kernel_fragment::parse(&text)
                .with_context(|| format!("--config-fragment {}", path.display()))?;
            Some(UserFragment {
                path,
                text,
                settings,
            })
        }
        None => None,
    };
    let mut packages: Vec<&str> = BUILD_PACKAGES.to_vec();
    if options.source.is_none() {
        packages.push(SOURCE_PACKAGE);
    }
    let missing = deps::missing_debian(&packages);
    if !missing.is_empty() {
        deps::install_debian(&missing)?;
    }
    let source = match &options.source {
        Some(dir) => paths::absolute(dir)?,
        None => debian_source(&layout.user_cache_dir())?,
    };
    if !source.join("Makefile").is_file() || !source.join("Kconfig").is_file() {
        bail!(
            "--source {}: not a kernel source tree (no Makefile and Kconfig at its top)",
            source.display()
        );
    }
    let key = cache_key(&source, user.as_ref().map(|u| u.text.as_str()));
    let build = layout.user_cache_dir().join("kernels").join(&key);
    std::fs::create_dir_all(&build)?;
    configure(&source, &build, user.as_ref())?;
    let config = std::fs::read_to_string(build.join(".config"))?;
    let lacking = missing_options(&config);
    if !lacking.is_empty() {
        bail!(
            "the configuration in {} lacks {} (=y): a dependency is missing (BTF needs pahole, kprobes need modules) or your fragment turns it off",
            build.display(),
            lacking.join(", ")
        );
    }
    let jobs = options.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    make_with_progress(&source, &build, jobs, &["bzImage"])?;
    let image = build.join("arch/x86/boot/bzImage");
    if !image.is_file() {
        bail!("make finished but left no {}", image.display());
    }
    Ok(image)
}

/// The build directory's name: a digest of the source's path and both fragments.
pub fn cache_key(source: &Path, user_fragment: Option<&str>) -> String {
    let mut h = Sha256::new();
    h.update(source.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(OUR_FRAGMENT);
    h.update([0]);
    h.update(user_fragment.unwrap_or(""));
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The options of [`REQUIRED`] that `config` (a `.config`) does not set to `y`.
pub fn missing_options(config: &str) -> Vec<&'static str> {
    REQUIRED
        .iter()
        .copied()
        .filter(|opt| {
            !config
                .lines()
                .any(|l| l.strip_prefix(opt).is_some_and(|rest| rest == "=y"))
        })
        .collect()
}

/// defconfig, kvm_guest.config, our fragment, the user's, olddefconfig — once per
/// build directory (a stamp marks it done, and only once the user's settings
/// are found in the result).
fn configure(source: &Path, build: &Path, user: Option<&UserFragment<'_>>) -> Result<()> {
    let stamp = build.join(".guestscope-configured");
    if stamp.is_file() && build.join(".config").is_file() {
        return Ok(());
    }
    let make = |targets: &[&str]| {
        cmd::run(
            cmd("make")
                .arg("-C")
                .arg(source)
                .arg(format!("O={}", build.display()))
                .args(targets),
        )
    };
    make(&["defconfig", "kvm_guest.config"])?;
    let ours = build.join("guestscope.config");
    std::fs::write(&ours, OUR_FRAGMENT)?;
    let mut merge = cmd(source.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(source)
        .arg("-m")
        .arg("-O")
        .arg(build)
        .arg(build.join(".config"))
        .arg(&ours);
    if let Some(user) = user {
        let theirs = build.join("user.config");
        std::fs::write(&theirs, &user.text)?;
        merge.arg(&theirs);
    }
    cmd::run(&mut merge)?;
    make(&["olddefconfig"])?;
    if let Some(user) = user {
        check_user_settings(source, build, user)?;
    }
    std::fs::write(&stamp, "")?;
    Ok(())
}

/// Refuses, in one line, every setting of the user's fragment that is not in the
/// final `.config`: options this kernel does not have, and values olddefconfig
/// did not keep.
fn check_user_settings(source: &Path, build: &Path, user: &UserFragment<'_>) -> Result<()> {
    let config = std::fs::read_to_string(build.join(".config"))?;
    let symbols = kernel_fragment::kconfig_symbols(source, kernel_fragment::SRCARCH)?;
    let version = std::fs::read_to_string(source.join("Makefile"))
        .ok()
        .and_then(|m| kernel_fragment::source_version(&m))
        .unwrap_or_else(|| source.display().to_string());
    let problems = kernel_fragment::problems(&user.settings, &config, &symbols, &version);
    if !problems.is_empty() {
        bail!(
            "--config-fragment {}: {}",
            user.path.display(),
            problems.join("; ")
        );
    }
    Ok(())
}

/// Runs make on `targets`, printing a line of progress every [`PROGRESS_EVERY`] (the
/// steps done and the latest) instead of thousands of lines, writing all of its
/// output to `<build>/build.log`, and when it fails showing the last lines of its
/// stderr and ending on its last `error:` line and the log's path.
fn make_with_progress(source: &Path, build: &Path, jobs: usize, targets: &[&str]) -> Result<()> {
    let log_path = build.join("build.log");
    let log =
        File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let log = Arc::new(Mutex::new(BufWriter::new(log)));
    let mut command = cmd("make");
    command
        .arg("-C")
        .arg(source)
        .arg(format!("O={}", build.display()))
        .arg(format!("-j{jobs}"))
        .args(targets)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("    $ {}", cmd::display(&command));
    let mut child = command.spawn().context("cannot start make")?;
    // stderr (warnings, errors) is collected on a thread so neither pipe fills up;
    // both go to the log as they come.
    let stderr = child.stderr.take().expect("piped");
    let stderr_log = Arc::clone(&log);
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .inspect(|l| log_line(&stderr_log, l))
            .collect::<Vec<_>>()
    });
    let stdout = child.stdout.take().expect("piped");
    let (mut steps, mut last_shown, mut latest) = (0usize, Instant::now(), String::new());
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        log_line(&log, &line);
        if is_step(&line) {
            steps += 1;
            latest = line.trim().to_string();
        }
        if last_shown.elapsed() >= PROGRESS_EVERY {
            eprintln!("    make: {steps} steps, now {latest}");
            last_shown = Instant::now();
        }
    }
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    let flushed = log.lock().map(|mut w| w.flush());
    if !matches!(flushed, Ok(Ok(()))) {
        eprintln!("    (could not write all of {})", log_path.display());
    }
    if !status.success() {
        for l in errors.iter().rev().take(TAIL_LINES).rev() {
            eprintln!("    {l}");
        }
        let error = last_error_line(&errors).map_or(String::new(), |e| format!(": {e}"));
        bail!(
            "make {} failed ({status}){error}; full log: {}",
            targets.join(" "),
            log_path.display()
        );
    }
    eprintln!("    make: {steps} steps");
    Ok(())
}

/// Appends a line to the build log (a write error is noticed at the flush).
fn log_line(log: &Mutex<BufWriter<File>>, line: &str) {
    if let Ok(mut w) = log.lock() {
        let _ = writeln!(w, "{line}");
    }
}

/// The last line of a failed build's stderr that reports an error (`error:`,
/// `fatal error:`, as gcc, clang and ld.lld print them), trimmed; make's own
/// `*** [...] Error 2` lines, the failure's echo and not its cause, do not match.
pub fn last_error_line(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.to_ascii_lowercase().contains("error:"))
}

/// Whether a line of make's output is a build step (`  CC      fs/ext4/inode.o`).
fn is_step(line: &str) -> bool {
    line.starts_with("  ")
        && line.split_whitespace().next().is_some_and(|w| {
            w.len() >= 2
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
}

/// Debian's linux-source-6.1, unpacked once into `cache`.
fn debian_source(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("linux-source-6.1");
    let stamp = cache.join("linux-source-6.1.unpacked");
    if stamp.is_file() && dir.join("Makefile").is_file() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache)?;
    let _ = std::fs::remove_dir_all(&dir);
    cmd::run(
        cmd("tar")
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(cache),
    )?;
    std::fs::write(&stamp, "")?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_source_and_the_fragments() {
        let a = cache_key(Path::new("/src/linux"), None);
        assert_eq!(a, cache_key(Path::new("/src/linux"), None));
        assert_eq!(a.len(), 16);
        assert_ne!(a, cache_key(Path::new("/src/other"), None));
        assert_ne!(a, cache_key(Path::new("/src/linux"), Some("CONFIG_X=y\n")));
        assert_ne!(
            cache_key(Path::new("/src/linux"), Some("CONFIG_X=y\n")),
            cache_key(Path::new("/src/linux"), Some("CONFIG_X=n\n"))
        );
    }

    #[test]
    fn a_config_without_what_the_agent_needs_is_named() {
        let full: String = REQUIRED.iter().map(|o| format!("{o}=y\n")).collect();
        assert!(missing_options(&full).is_empty());
        let no_btf = full.replace(
            "CONFIG_DEBUG_INFO_BTF=y",
            "# CONFIG_DEBUG_INFO_BTF is not set",
        );
        assert_eq!(missing_options(&no_btf), ["CONFIG_DEBUG_INFO_BTF"]);
        // A module is not built in; a longer name is another option.
        let modular = full.replace(
            "CONFIG_VIRTIO_PCI=y",
            "CONFIG_VIRTIO_PCI=m\nCONFIG_VIRTIO_PCI_LEGACY=y",
        );
        assert_eq!(missing_options(&modular), ["CONFIG_VIRTIO_PCI"]);
    }

    #[test]
    fn our_fragment_asks_for_every_required_option() {
        for opt in REQUIRED {
            assert!(OUR_FRAGMENT.contains(&format!("\n{opt}=y\n")), "{opt}");
        }
    }

    #[test]
    fn the_last_compiler_error_is_picked() {
        let lines: Vec<String> = [
            "fs/ext4/inode.c: In function 'ext4_iget':",
            "fs/ext4/inode.c:4801:9: warning: unused variable 'x' [-Wunused-variable]",
            "fs/ext4/super.c:12:1: error: unknown type name 'foo'",
            "fs/ext4/inode.c:4810:5: error: expected ';' before '}' token",
            " 4810 |     }",
            "      |     ^",
            "make[4]: *** [scripts/Makefile.build:250: fs/ext4/inode.o] Error 1",
            "make[1]: *** [/src/Makefile:2012: .] Error 2",
            "make: *** [Makefile:226: __sub-make] Error 2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            last_error_line(&lines),
            Some("fs/ext4/inode.c:4810:5: error: expected ';' before '}' token")
        );
        let fatal = ["  drivers/x.c:3:10: fatal error: y.h: No such file or directory".into()];
        assert_eq!(
            last_error_line(&fatal),
            Some("drivers/x.c:3:10: fatal error: y.h: No such file or directory")
        );
        assert_eq!(last_error_line(&lines[..3]), Some(lines[2].as_str()));
        assert_eq!(last_error_line(&lines[..2]), None);
        assert_eq!(last_error_line(&lines[6..]), None);
    }

    #[test]
    fn build_steps_are_told_from_other_output() {
        assert!(is_step("  CC      fs/ext4/inode.o"));
        assert!(is_step("  LD [M]  fs/ext4/ext4.ko"));
        assert!(is_step("  BTF     .btf.vmlinux.bin.o"));
        assert!(!is_step("make[1]: Entering directory '/b'"));
        assert!(!is_step("  GEN     Makefile".to_lowercase().as_str()));
        assert!(!is_step("Kernel: arch/x86/boot/bzImage is ready  (#1)"));
    }
}
