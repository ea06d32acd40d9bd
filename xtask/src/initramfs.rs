//! The guest's base initramfs, `target/guestscope/guest/base.cpio`: an
//! uncompressed newc archive with `/init` (`init.sh`), busybox, the kernel
//! modules in load order, the agent and the workloads. The collector appends a
//! second archive per run (the plan, user workloads); the kernel unpacks both.
//!
//! Also copies the kernel image and its config next to it and writes its release. Nothing is
//! rewritten when no input changed: a stamp lists every input (size and mtime
//! of files, a hash of generated contents) and the image is rebuilt only when
//! the listing differs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context as _, Result, bail};

use crate::build_guest::GuestBinaries;
use crate::elf;
use crate::kernel::Kernel;
use crate::paths::Layout;

/// The guest's init script.
const INIT_SCRIPT: &str = include_str!("init.sh");

/// Bump when the archive's layout changes in a way the stamp cannot see.
const LAYOUT_VERSION: u32 = 1;

/// Where guestscope's workloads go (`guestscope_common::plan::BUILTIN_WORKLOAD_DIR`).
pub const BUILTIN_WORKLOAD_DIR: &str = "/usr/lib/guestscope/workloads";
/// Where the collector puts user workloads (`guestscope_common::plan::USER_WORKLOAD_DIR`).
pub const USER_WORKLOAD_DIR: &str = "/usr/lib/guestscope/user";
/// The module load order, one path per line relative to `/lib/modules/<release>`.
pub const MODULES_ORDER_PATH: &str = "/etc/guestscope/modules.order";
/// The load order of the modules that show the guest the host's files, loaded only
/// for a run of host programs (`guestscope lab -- CMD`).
pub const HOSTFS_ORDER_PATH: &str = "/etc/guestscope/hostfs-modules.order";
/// The load order of the modules that mount a root file system image that brings no
/// modules for this kernel (`guestscope lab --rootfs`).
pub const ROOTFS_ORDER_PATH: &str = "/etc/guestscope/rootfs-modules.order";
/// The agent's path in the guest (the init script runs it).
pub const AGENT_PATH: &str = "/bin/guestscope-agent";

/// Empty directories the guest needs (mount points, the collector's layer, busybox's applets).
const DIRS: &[(&str, u32)] = &[
    ("/bin", 0o755),
    ("/sbin", 0o755),
    ("/usr/bin", 0o755),
    ("/usr/sbin", 0o755),
    ("/dev", 0o755),
    ("/proc", 0o555),
    ("/sys", 0o555),
    ("/tmp", 0o1777),
    ("/root", 0o700),
    ("/etc/guestscope", 0o755),
    (USER_WORKLOAD_DIR, 0o755),
    (BUILTIN_WORKLOAD_DIR, 0o755),
];

/// What goes into the guest image.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The kernel and its modules.
    pub kernel: &'a Kernel,
    /// A static busybox.
    pub busybox: &'a Path,
    /// The agent and the workloads.
    pub guest: &'a GuestBinaries,
}

/// Whether [`write()`] had anything to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The image was (re)written.
    Written,
    /// The stamp matched: nothing was touched.
    UpToDate,
}

/// Where an archive entry's contents come from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    Dir,
    File(PathBuf),
    Bytes(Vec<u8>),
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// One archive entry: its path in the guest (no leading `/`), permissions, contents.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    path: String,
    perm: u32,
    source: Source,
}

/// Writes the guest image (initramfs, kernel copy, release file) unless the stamp says it is current.
pub fn write(layout: &Layout, inputs: &Inputs<'_>) -> Result<Outcome> {
    let entries = plan(inputs);
    let stamp = stamp(&entries, inputs.kernel)?;
    let outputs = [
        layout.initrd(),
        layout.kernel(),
        layout.kernel_config(),
        layout.kernel_release_file(),
    ];
    let current = fs::read_to_string(layout.image_stamp()).ok();
    if current.as_deref() == Some(stamp.as_str()) && outputs.iter().all(|p| p.is_file()) {
        eprintln!("    up to date: {}", layout.initrd().display());
        return Ok(Outcome::UpToDate);
    }

    let guest_dir = layout.guest_dir();
    fs::create_dir_all(&guest_dir)
        .with_context(|| format!("cannot create {}", guest_dir.display()))?;
    let _ = fs::remove_file(layout.image_stamp());
    replace(&layout.kernel(), |tmp| {
        fs::copy(&inputs.kernel.vmlinuz, tmp)
            .with_context(|| format!("cannot copy {}", inputs.kernel.vmlinuz.display()))
            .map(drop)
    })?;
    replace(&layout.kernel_config(), |tmp| {
        fs::copy(&inputs.kernel.config, tmp)
            .with_context(|| format!("cannot copy {}", inputs.kernel.config.display()))
            .map(drop)
    })?;
    replace(&layout.kernel_release_file(), |tmp| {
        Ok(fs::write(tmp, format!("{}\n", inputs.kernel.release))?)
    })?;
    replace(&layout.initrd(), |tmp| write_archive(&entries, tmp))?;
    fs::write(layout.image_stamp(), stamp)?;
    let size = fs::metadata(layout.initrd())?.len();
    eprintln!(
        "    wrote {} ({} entries, {:.1} MiB)",
        layout.initrd().display(),
        entries.len(),
        size as f64 / (1024.0 * 1024.0)
    );
    Ok(Outcome::Written)
}

/// Writes `path` through a temporary file renamed into place (named by
/// process id, so concurrent xtask runs never write the same file).
fn replace(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if let Err(err) = write(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Every entry of the archive, directories first (parents before children).
fn plan(inputs: &Inputs<'_>) -> Vec<Entry> {
    let kernel = inputs.kernel;
    let modules_dir = format!("lib/modules/{}", kernel.release);
    let mut files = vec![
        Entry {
            path: "init".into(),
            perm: 0o755,
            source: Source::Bytes(INIT_SCRIPT.into()),
        },
        Entry {
            path: "bin/busybox".into(),
            perm: 0o755,
            source: Source::File(inputs.busybox.into()),
        },
        Entry {
            path: "bin/sh".into(),
            perm: 0o777,
            source: Source::Symlink("busybox".into()),
        },
        Entry {
            path: "dev/console".into(),
            perm: 0o600,
            source: Source::CharDevice { major: 5, minor: 1 },
        },
        Entry {
            path: rel(AGENT_PATH),
            perm: 0o755,
            source: Source::File(inputs.guest.agent.clone()),
        },
    ];
    for (name, path) in &inputs.guest.workloads {
        files.push(Entry {
            path: format!("{}/{name}", rel(BUILTIN_WORKLOAD_DIR)),
            perm: 0o755,
            source: Source::File(path.clone()),
        });
    }
    let mut modules: Vec<&String> = kernel.load_order.iter().collect();
    for m in kernel.hostfs_order.iter().chain(&kernel.rootfs_order) {
        if !modules.contains(&m) {
            modules.push(m);
        }
    }
    for module in modules {
        files.push(Entry {
            path: format!("{modules_dir}/{module}"),
            perm: 0o644,
            source: Source::File(kernel.modules_dir.join(module)),
        });
    }
    let order: String = kernel.load_order.iter().map(|m| format!("{m}\n")).collect();
    files.push(Entry {
        path: rel(MODULES_ORDER_PATH),
        perm: 0o644,
        source: Source::Bytes(order.into()),
    });
    let hostfs: String = kernel
        .hostfs_order
        .iter()
        .map(|m| format!("{m}\n"))
        .collect();
    files.push(Entry {
        path: rel(HOSTFS_ORDER_PATH),
        perm: 0o644,
        source: Source::Bytes(hostfs.into()),
    });
    let rootfs: String = kernel
        .rootfs_order
        .iter()
        .map(|m| format!("{m}\n"))
        .collect();
    files.push(Entry {
        path: rel(ROOTFS_ORDER_PATH),
        perm: 0o644,
        source: Source::Bytes(rootfs.into()),
    });

    // Sorted by path, so every parent comes before its children.
    let explicit: Vec<(String, u32)> = DIRS.iter().map(|(d, p)| (rel(d), *p)).collect();
    let implied: Vec<String> = explicit
        .iter()
        .map(|(d, _)| d.as_str())
        .chain(files.iter().map(|f| f.path.as_str()))
        .flat_map(ancestors)
        .chain([modules_dir.as_str()])
        .map(str::to_string)
        .collect();
    let mut dirs: BTreeMap<String, u32> = explicit.into_iter().collect();
    for dir in implied {
        dirs.entry(dir).or_insert(0o755);
    }
    let mut entries: Vec<Entry> = dirs
        .into_iter()
        .map(|(path, perm)| Entry {
            path,
            perm,
            source: Source::Dir,
        })
        .collect();
    entries.extend(files);
    entries
}

/// `path` without its leading `/`.
fn rel(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// The proper ancestors of a relative path, outermost first: `a/b/c` → `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// The stamp text: every entry with what identifies its contents, and the kernel.
fn stamp(entries: &[Entry], kernel: &Kernel) -> Result<String> {
    let mut text = format!("layout {LAYOUT_VERSION}\nrelease {}\n", kernel.release);
    writeln!(text, "vmlinuz {}", file_identity(&kernel.vmlinuz)?)?;
    writeln!(text, "config {}", file_identity(&kernel.config)?)?;
    for entry in entries {
        let what = match &entry.source {
            Source::Dir => "dir".to_string(),
            Source::File(path) => format!("file {}", file_identity(path)?),
            Source::Bytes(bytes) => format!("bytes {:016x}", fnv1a(bytes)),
            Source::Symlink(target) => format!("symlink {target}"),
            Source::CharDevice { major, minor } => format!("chr {major}:{minor}"),
        };
        writeln!(text, "{} {:o} {what}", entry.path, entry.perm)?;
    }
    Ok(text)
}

/// A file's path, size and modification time: enough to notice a rebuilt input.
fn file_identity(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mtime = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    Ok(format!("{} {} {mtime}", path.display(), meta.len()))
}

/// 64-bit FNV-1a: a stable hash of generated contents for the stamp.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An entry's data; executables must not need a dynamic loader.
fn contents(entry: &Entry) -> Result<Vec<u8>> {
    Ok(match &entry.source {
        Source::Dir | Source::CharDevice { .. } => Vec::new(),
        Source::Bytes(bytes) => bytes.clone(),
        Source::Symlink(target) => target.clone().into_bytes(),
        Source::File(source) => {
            let data =
                fs::read(source).with_context(|| format!("cannot read {}", source.display()))?;
            if entry.perm & 0o111 != 0 && elf::classify(&data) == elf::Kind::Dynamic {
                bail!(
                    "{} is dynamically linked, but the guest has no libc: build it static (musl)",
                    source.display()
                );
            }
            data
        }
    })
}

/// Writes the entries as a newc archive with a trailer.
fn write_archive(entries: &[Entry], path: &Path) -> Result<()> {
    use cpio::newc::{Builder, ModeFileType, trailer};

    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    for (index, entry) in entries.iter().enumerate() {
        let builder = Builder::new(&entry.path)
            .ino(index as u32 + 1)
            .mode(entry.perm);
        let builder = match &entry.source {
            Source::Dir => builder.set_mode_file_type(ModeFileType::Directory).nlink(2),
            Source::File(_) | Source::Bytes(_) => builder.set_mode_file_type(ModeFileType::Regular),
            Source::Symlink(_) => builder.set_mode_file_type(ModeFileType::Symlink),
            Source::CharDevice { major, minor } => builder
                .set_mode_file_type(ModeFileType::Char)
                .rdev_major(*major)
                .rdev_minor(*minor),
        };
        let data = contents(entry)?;
        let size =
            u32::try_from(data.len()).with_context(|| format!("{} is over 4 GiB", entry.path))?;
        let mut writer = builder.write(&mut out, size);
        writer.write_all(&data)?;
        writer.finish()?;
    }
    trailer(&mut out)?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn kernel() -> Kernel {
        Kernel {
            release: "6.1.0-48-amd64".into(),
            vmlinuz: "/k/boot/vmlinuz-6.1.0-48-amd64".into(),
            config: "/k/boot/config-6.1.0-48-amd64".into(),
            modules_dir: "/k/lib/modules/6.1.0-48-amd64".into(),
            load_order: vec![
                "kernel/drivers/virtio/virtio.ko".into(),
                "kernel/drivers/virtio/virtio_pci.ko".into(),
            ],
            hostfs_order: vec!["kernel/fs/overlayfs/overlay.ko".into()],
            rootfs_order: vec!["kernel/fs/ext4/ext4.ko".into()],
        }
    }

    fn guest() -> GuestBinaries {
        GuestBinaries {
            agent: "/b/agent".into(),
            workloads: vec![
                ("cpuinfo".into(), "/b/cpuinfo".into()),
                ("random".into(), "/b/random".into()),
            ],
        }
    }

    #[test]
    fn paths_match_the_common_crate() {
        assert_eq!(
            BUILTIN_WORKLOAD_DIR,
            guestscope_common::plan::BUILTIN_WORKLOAD_DIR
        );
        assert_eq!(
            USER_WORKLOAD_DIR,
            guestscope_common::plan::USER_WORKLOAD_DIR
        );
        let plan = guestscope_common::plan::PLAN_PATH;
        assert!(INIT_SCRIPT.contains(&format!("{AGENT_PATH} --plan {plan}")));
        assert!(INIT_SCRIPT.contains(MODULES_ORDER_PATH));
    }

    #[test]
    fn plan_has_every_parent_directory_before_its_children() {
        let (kernel, guest) = (kernel(), guest());
        let entries = plan(&Inputs {
            kernel: &kernel,
            busybox: Path::new("/bin/busybox"),
            guest: &guest,
        });
        let mut seen = BTreeSet::new();
        for entry in &entries {
            for parent in ancestors(&entry.path) {
                assert!(
                    seen.contains(parent),
                    "{} before its parent {parent}",
                    entry.path
                );
            }
            assert!(seen.insert(entry.path.clone()), "{} twice", entry.path);
        }
        let find = |path: &str| {
            entries
                .iter()
                .find(|e| e.path == path)
                .unwrap_or_else(|| panic!("no {path}"))
        };
        assert_eq!(find("tmp").perm, 0o1777);
        assert_eq!(
            find("usr/lib/guestscope/workloads/random").source,
            Source::File("/b/random".into())
        );
        assert_eq!(
            find("lib/modules/6.1.0-48-amd64/kernel/drivers/virtio/virtio_pci.ko").source,
            Source::File(
                "/k/lib/modules/6.1.0-48-amd64/kernel/drivers/virtio/virtio_pci.ko".into()
            )
        );
        assert_eq!(
            find("etc/guestscope/modules.order").source,
            Source::Bytes(
                b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n".to_vec()
            )
        );
        // The host-files modules are in the image, in an order file of their own.
        assert_eq!(
            find("etc/guestscope/hostfs-modules.order").source,
            Source::Bytes(b"kernel/fs/overlayfs/overlay.ko\n".to_vec())
        );
        find("lib/modules/6.1.0-48-amd64/kernel/fs/overlayfs/overlay.ko");
        assert_eq!(
            find("etc/guestscope/rootfs-modules.order").source,
            Source::Bytes(b"kernel/fs/ext4/ext4.ko\n".to_vec())
        );
        find("lib/modules/6.1.0-48-amd64/kernel/fs/ext4/ext4.ko");
        for dir in [
            "proc",
            "sys",
            "dev",
            "root",
            "usr/lib/guestscope/user",
            "sbin",
            "usr/sbin",
        ] {
            assert_eq!(find(dir).source, Source::Dir);
        }
        assert_eq!(find("bin/guestscope-agent").perm, 0o755);
    }

    #[test]
    fn stamp_changes_with_inputs() {
        let dir = std::env::temp_dir().join(format!("xtask-stamp-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agent");
        fs::write(&file, b"one").unwrap();
        let mut kernel = kernel();
        kernel.vmlinuz = file.clone();
        kernel.config = file.clone();
        let entries = vec![
            Entry {
                path: "bin/agent".into(),
                perm: 0o755,
                source: Source::File(file.clone()),
            },
            Entry {
                path: "init".into(),
                perm: 0o755,
                source: Source::Bytes(b"#!/bin/sh\n".to_vec()),
            },
        ];
        let first = stamp(&entries, &kernel).unwrap();
        assert_eq!(
            first,
            stamp(&entries, &kernel).unwrap(),
            "same inputs, same stamp"
        );
        fs::write(&file, b"three").unwrap();
        let second = stamp(&entries, &kernel).unwrap();
        assert_ne!(first, second, "a rewritten input changes the stamp");
        let mut changed = entries.clone();
        changed[1].source = Source::Bytes(b"#!/bin/sh\nexit 1\n".to_vec());
        assert_ne!(
            second,
            stamp(&changed, &kernel).unwrap(),
            "generated contents are hashed"
        );
        kernel.release = "other".into();
        assert_ne!(second, stamp(&entries, &kernel).unwrap());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn archive_reads_back() {
        let dir = std::env::temp_dir().join(format!("xtask-cpio-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("agent");
        fs::write(&script, b"#!/bin/sh\necho agent\n").unwrap();
        let entries = vec![
            Entry {
                path: "bin".into(),
                perm: 0o755,
                source: Source::Dir,
            },
            Entry {
                path: "bin/agent".into(),
                perm: 0o755,
                source: Source::File(script),
            },
            Entry {
                path: "bin/sh".into(),
                perm: 0o777,
                source: Source::Symlink("busybox".into()),
            },
            Entry {
                path: "dev/console".into(),
                perm: 0o600,
                source: Source::CharDevice { major: 5, minor: 1 },
            },
        ];
        let archive = dir.join("a.cpio");
        write_archive(&entries, &archive).unwrap();
        let bytes = fs::read(&archive).unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let mut reader = &bytes[..];
        let mut seen = Vec::new();
        loop {
            let mut entry = cpio::newc::Reader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            let e = entry.entry();
            seen.push((e.name().to_string(), e.mode(), e.rdev_major(), data));
            reader = entry.finish().unwrap();
        }
        assert_eq!(seen[0], ("bin".into(), 0o040755, 0, vec![]));
        assert_eq!(
            seen[1],
            (
                "bin/agent".into(),
                0o100755,
                0,
                b"#!/bin/sh\necho agent\n".to_vec()
            )
        );
        assert_eq!(seen[2], ("bin/sh".into(), 0o120777, 0, b"busybox".to_vec()));
        assert_eq!(seen[3], ("dev/console".into(), 0o020600, 5, vec![]));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dynamic_executables_are_refused() {
        let Ok(_) = fs::metadata("/bin/dash") else {
            return;
        };
        let dir = std::env::temp_dir().join(format!("xtask-dyn-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let entries = vec![Entry {
            path: "bin/dash".into(),
            perm: 0o755,
            source: Source::File("/bin/dash".into()),
        }];
        let err = write_archive(&entries, &dir.join("a.cpio")).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
