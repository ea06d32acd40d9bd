//! The guest kernel: Debian's current 6.1 kernel package, resolved at run time
//! from `linux-image-amd64`'s dependency (`apt-cache show`), downloaded with `apt-get download`
//! (no root needed) into `target/guestscope/cache/`, unpacked with `dpkg-deb`,
//! and the dependency-ordered list of the modules the guest must load.
//!
//! Cached: the download is skipped when the resolved version's `.deb` is
//! present, the unpacking when its tree is complete. [`download`] fetches the
//! kernel of another meta package the same way (the Debian test guest's 6.12).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, cmd};
use crate::deps;
use crate::paths::Layout;

/// The Debian meta package whose dependency names the current kernel.
const META_PACKAGE: &str = "linux-image-amd64";

/// The modules the guest loads (their dependencies come along): the virtio PCI
/// transport and the vsock transport over it, which the agent talks through.
pub const WANTED_MODULES: &[&str] = &["virtio_pci", "vmw_vsock_virtio_transport"];

/// The modules the guest loads only to see the host's files (`guestscope lab -- CMD`):
/// 9p over virtio, and overlayfs for the tmpfs that takes the writes.
pub const HOSTFS_MODULES: &[&str] = &["9p", "9pnet_virtio", "overlay"];

/// The modules the guest loads to mount a user's root file system image that has no
/// modules for this kernel (`guestscope lab --rootfs` with a Buildroot-style image):
/// the virtio disk, ext4, and the crc32c it asks the crypto API for at mount (a
/// request that would need modprobe).
pub const ROOTFS_MODULES: &[&str] = &["virtio_blk", "crc32c_generic", "ext4"];

/// Marks an unpacked tree as complete; holds the kernel release.
const UNPACKED_MARKER: &str = ".unpacked";

/// A kernel ready to go into the guest image.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The release, as `uname -r` prints it in the guest (e.g. `6.1.0-48-amd64`).
    pub release: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// The kernel's build configuration.
    pub config: PathBuf,
    /// `lib/modules/<release>` of the unpacked tree.
    pub modules_dir: PathBuf,
    /// The modules to load, in load order, relative to [`Kernel::modules_dir`].
    pub load_order: Vec<String>,
    /// The modules to load after those to see the host's files ([`HOSTFS_MODULES`]
    /// and what they need that [`Kernel::load_order`] does not load already).
    pub hostfs_order: Vec<String>,
    /// The modules to load after those to mount a root file system image without
    /// modules of its own ([`ROOTFS_MODULES`], likewise).
    pub rootfs_order: Vec<String>,
}

/// A Debian binary package, as apt resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Package {
    name: String,
    version: String,
    arch: String,
}

impl Package {
    /// The file name `apt-get download` gives the package.
    fn deb_file_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }

    /// The cache directory the package is unpacked into.
    fn tree_dir_name(&self) -> String {
        format!("{}_{}", self.name, self.version.replace(':', "%3a"))
    }
}

/// Resolves, downloads (if not cached) and unpacks the kernel, and orders its modules.
pub fn prepare(layout: &Layout) -> Result<Kernel> {
    let cache = layout.cache_dir();
    let (package, deb) = fetch_retrying(&cache, META_PACKAGE)?;
    let tree = unpack(&cache, &package, &deb)?;
    prune_other_versions(&cache, &package)?;

    let release = fs::read_to_string(tree.join(UNPACKED_MARKER))?
        .trim()
        .to_string();
    let modules_dir = tree.join("lib/modules").join(&release);
    let modules_dep = fs::read_to_string(modules_dir.join("modules.dep"))
        .with_context(|| format!("cannot read modules.dep in {}", modules_dir.display()))?;
    let builtin = fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    let dep = parse_modules_dep(&modules_dep)?;
    let builtin = parse_builtin(&builtin);
    let load_order = load_order(&dep, WANTED_MODULES, &builtin)?;
    let hostfs_order: Vec<String> = load_order_of(&dep, HOSTFS_MODULES, &builtin)?
        .into_iter()
        .filter(|m| !load_order.contains(m))
        .collect();
    let rootfs_order: Vec<String> = load_order_of(&dep, ROOTFS_MODULES, &builtin)?
        .into_iter()
        .filter(|m| !load_order.contains(m))
        .collect();
    check_uncompressed(&load_order)?;
    check_uncompressed(&hostfs_order)?;
    check_uncompressed(&rootfs_order)?;
    eprintln!(
        "    kernel {release} ({} {}), modules: {}",
        package.name,
        package.version,
        load_order
            .iter()
            .map(|p| module_name(p))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok(Kernel {
        vmlinuz: tree.join("boot").join(format!("vmlinuz-{release}")),
        config: tree.join("boot").join(format!("config-{release}")),
        release,
        modules_dir,
        load_order,
        hostfs_order,
        rootfs_order,
    })
}

/// Like [`load_order`], for modules a kernel may not have as modules at all (built
/// in, or not configured): those are left out rather than refused, and the guest says
/// so when it needs them.
fn load_order_of(
    dep: &ModulesDep,
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let present: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| dep.by_name.contains_key(&w.replace('-', "_")))
        .collect();
    load_order(dep, &present, builtin)
}

/// A kernel package downloaded into a cache directory.
#[derive(Clone, Debug)]
pub struct Downloaded {
    /// Package name (`linux-image-<abi>-<flavour>`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// The `.deb`.
    pub deb: PathBuf,
}

/// Downloads (unless cached in `cache`) the kernel package the meta package `meta`
/// depends on (`linux-image-amd64`, `linux-image-6.12-amd64`, ...).
pub fn download(cache: &Path, meta: &str) -> Result<Downloaded> {
    let (package, deb) = fetch_retrying(cache, meta)?;
    Ok(Downloaded {
        name: package.name,
        version: package.version,
        deb,
    })
}

/// [`fetch`], after one `apt-get update` when the first try fails and we are root.
fn fetch_retrying(cache: &Path, meta: &str) -> Result<(Package, PathBuf)> {
    fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
    match fetch(cache, meta) {
        Ok(found) => Ok(found),
        Err(err) if cmd::is_root() => {
            eprintln!("    {err:#}");
            eprintln!(
                "    apt's package lists may be missing or stale: running apt-get update once and retrying"
            );
            deps::apt_update()?;
            fetch(cache, meta)
        }
        Err(err) => Err(err.context(
            "apt's package lists may be missing or stale: run `sudo apt-get update` and retry",
        )),
    }
}

/// Resolves the kernel package and downloads its `.deb` unless cached.
fn fetch(cache: &Path, meta: &str) -> Result<(Package, PathBuf)> {
    let package = resolve(meta)?;
    let deb = cache.join(package.deb_file_name());
    if deb.is_file() {
        eprintln!("    cached: {}", deb.display());
        return Ok((package, deb));
    }
    // Download into a scratch directory, so an interrupted download never
    // looks like a cached package.
    let partial = cache.join(format!("partial.{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    let mut download = cmd("apt-get");
    if cmd::is_root() {
        // apt's sandbox user cannot write into the cache; download as root
        // instead of printing a warning about it.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download
        .args(["download", &format!("{}={}", package.name, package.version)])
        .current_dir(&partial);
    let downloaded = cmd::run(&mut download)
        .with_context(|| format!("cannot download {}", package.name))
        .and_then(|()| {
            let file = package.deb_file_name();
            fs::rename(partial.join(&file), &deb)
                .with_context(|| format!("apt-get download did not produce {file}"))
        });
    let _ = fs::remove_dir_all(&partial);
    downloaded.map(|()| (package, deb))
}

/// Asks apt which kernel the meta package `meta` currently depends on, and its version.
fn resolve(meta: &str) -> Result<Package> {
    let show = |name: &str| {
        cmd::stdout_of(cmd("apt-cache").args(["show", "--no-all-versions", name]))
            .with_context(|| format!("apt does not know {name}"))
    };
    let field = |stanza: &str, name: &str, key: &str| {
        control_field(stanza, key).with_context(|| format!("apt-cache show {name} has no {key}"))
    };
    let stanza = show(meta)?;
    let depends = field(&stanza, meta, "Depends")?;
    let (name, version) = parse_kernel_dependency(&depends, meta)
        .with_context(|| format!("{meta} depends on no kernel image: {depends}"))?;
    let arch = field(&stanza, meta, "Architecture")?;
    // The meta package pins the exact version; ask apt only if it does not.
    let version = match version {
        Some(version) => version,
        None => field(&show(&name)?, &name, "Version")?,
    };
    Ok(Package {
        name,
        version,
        arch,
    })
}

/// The `linux-image-<abi>-<flavour>` package in a `Depends:` value, with the
/// version it is pinned to (`(= version)`), if any.
fn parse_kernel_dependency(depends: &str, meta: &str) -> Option<(String, Option<String>)> {
    depends.split([',', '|']).find_map(|alternative| {
        let alternative = alternative.trim();
        let (name, constraint) = match alternative.split_once('(') {
            Some((name, constraint)) => {
                (name.trim(), Some(constraint.trim_end_matches(')').trim()))
            }
            None => (alternative, None),
        };
        let name = name.split(':').next().unwrap_or(name);
        if !name.starts_with("linux-image-") || name == meta {
            return None;
        }
        let version = constraint
            .and_then(|c| c.strip_prefix('='))
            .map(|v| v.trim().to_string());
        Some((name.to_string(), version))
    })
}

/// The value of `key` in the first stanza of Debian control data (`apt-cache show`).
fn control_field(stanza: &str, key: &str) -> Option<String> {
    stanza
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// Unpacks the `.deb` into the cache (once), keeping only the kernel image, its
/// config and its modules, and generates `modules.dep` with `depmod`.
fn unpack(cache: &Path, package: &Package, deb: &Path) -> Result<PathBuf> {
    let tree = cache.join(package.tree_dir_name());
    if tree.join(UNPACKED_MARKER).is_file() {
        return Ok(tree);
    }
    // Unpacked under a name of this process's own, then renamed into place, so
    // neither an interrupted run nor a concurrent one leaves a half tree.
    let scratch = cache.join(format!(
        "{}.partial.{}",
        package.tree_dir_name(),
        std::process::id()
    ));
    if scratch.exists() {
        fs::remove_dir_all(&scratch)
            .with_context(|| format!("cannot remove {}", scratch.display()))?;
    }
    eprintln!("    unpacking {}", deb.display());
    cmd::run(cmd("dpkg-deb").arg("-x").arg(deb).arg(&scratch))?;
    let release = release_of(&scratch.join("boot"))?;
    prune_tree(&scratch)?;
    let modules_dir = scratch.join("lib/modules").join(&release);
    if !modules_dir.is_dir() {
        bail!("{} has no lib/modules/{release}", deb.display());
    }
    cmd::run(cmd("depmod").arg("-b").arg(&scratch).arg(&release))?;
    fs::write(scratch.join(UNPACKED_MARKER), format!("{release}\n"))?;
    if fs::rename(&scratch, &tree).is_err() {
        if tree.join(UNPACKED_MARKER).is_file() {
            // Another run finished the same tree first.
            fs::remove_dir_all(&scratch)?;
        } else {
            // A leftover without its marker: replace it.
            fs::remove_dir_all(&tree)
                .with_context(|| format!("cannot remove {}", tree.display()))?;
            fs::rename(&scratch, &tree)
                .with_context(|| format!("cannot rename into {}", tree.display()))?;
        }
    }
    Ok(tree)
}

/// The release named by the single `vmlinuz-<release>` in `boot`.
fn release_of(boot: &Path) -> Result<String> {
    let mut releases = Vec::new();
    for entry in fs::read_dir(boot).with_context(|| format!("cannot read {}", boot.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(release) = name.strip_prefix("vmlinuz-") {
            releases.push(release.to_string());
        }
    }
    match releases.as_slice() {
        [release] => Ok(release.clone()),
        _ => bail!(
            "expected one vmlinuz-* in {}, found {releases:?}",
            boot.display()
        ),
    }
}

/// Deletes everything but `boot/vmlinuz-*`, `boot/config-*` and `lib/modules`.
fn prune_tree(root: &Path) -> Result<()> {
    let keep = |dir: &str, name: &str| match dir {
        "" => name == "boot" || name == "lib",
        "boot" => name.starts_with("vmlinuz-") || name.starts_with("config-"),
        "lib" => name == "modules",
        _ => true,
    };
    for dir in ["", "boot", "lib"] {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep(dir, &name) {
                continue;
            }
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes other kernel versions' packages and trees from the cache once the
/// current one is unpacked (everything named after the current version stays).
fn prune_other_versions(cache: &Path, current: &Package) -> Result<()> {
    let prefix = current.tree_dir_name();
    for entry in fs::read_dir(cache)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("linux-image-") || name.starts_with(&prefix) {
            continue;
        }
        eprintln!("    removing the superseded {name} from the cache");
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fs::remove_dir_all(&path)?;
        } else {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// `modules.dep`: each module's path (relative to `lib/modules/<release>`) and
/// the paths of the modules it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

/// Parses `modules.dep` (`path: dep dep ...` per line).
pub fn parse_modules_dep(text: &str) -> Result<ModulesDep> {
    let mut parsed = ModulesDep::default();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (module, deps) = line
            .split_once(':')
            .with_context(|| format!("modules.dep line {}: no ':' in {line:?}", number + 1))?;
        let module = module.trim().to_string();
        parsed.by_name.insert(module_name(&module), module.clone());
        parsed.deps.insert(
            module,
            deps.split_whitespace().map(str::to_string).collect(),
        );
    }
    Ok(parsed)
}

/// The names in `modules.builtin` (modules compiled into the kernel).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(module_name)
        .collect()
}

/// A module's name from its path: file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// The paths of `wanted` and everything they need, each after its
/// dependencies, each once; built-in modules are skipped.
pub fn load_order(
    dep: &ModulesDep,
    wanted: &[&str],
    builtin: &BTreeSet<String>,
) -> Result<Vec<String>> {
    #[derive(PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        dep: &ModulesDep,
        path: &str,
        marks: &mut BTreeMap<String, Mark>,
        order: &mut Vec<String>,
    ) -> Result<()> {
        match marks.get(path) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => bail!("modules.dep has a dependency cycle through {path}"),
            None => {}
        }
        marks.insert(path.to_string(), Mark::Visiting);
        let needs = dep.deps.get(path).with_context(|| {
            format!("modules.dep has no entry for {path}, which another module needs")
        })?;
        for need in needs {
            visit(dep, need, marks, order)?;
        }
        marks.insert(path.to_string(), Mark::Done);
        order.push(path.to_string());
        Ok(())
    }

    let mut marks = BTreeMap::new();
    let mut order = Vec::new();
    for name in wanted {
        let name = name.replace('-', "_");
        match dep.by_name.get(&name) {
            Some(path) => visit(dep, path, &mut marks, &mut order)?,
            None if builtin.contains(&name) => {}
            None => bail!("module {name} is neither in modules.dep nor built in"),
        }
    }
    Ok(order)
}

/// Fails on compressed modules: the guest loads them with busybox `insmod`,
/// which takes plain `.ko` files (Debian 6.1 ships them uncompressed).
fn check_uncompressed(paths: &[String]) -> Result<()> {
    if let Some(path) = paths.iter().find(|p| !p.ends_with(".ko")) {
        bail!(
            "module {path} is compressed; the guest's busybox insmod needs plain .ko files \
             and xtask does not decompress modules yet"
        );
    }
    Ok(())
}

/// The start of an xz stream: a bzImage's compressed payload (Debian builds with
/// `CONFIG_KERNEL_XZ`).
const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";

/// Whether `elf` carries Xen's `PHYS32_ENTRY` note (type 18, name `Xen`): the PVH entry
/// point QEMU boots an uncompressed kernel through (`CONFIG_PVH`).
pub fn has_pvh_entry(elf: &[u8]) -> bool {
    // Note header: namesz 4, descsz (4 or 8), type 18, then the name "Xen\0".
    elf.windows(16)
        .any(|w| w[0..4] == [4, 0, 0, 0] && w[8..12] == [18, 0, 0, 0] && &w[12..16] == b"Xen\0")
}

/// Unpacks the uncompressed kernel from `bzimage` (its xz payload is the kernel's ELF)
/// to `dest` with `xz`, if it has a PVH entry; returns false (and writes nothing) if
/// the image has no xz payload or its kernel no PVH entry.
pub fn unpack_elf(bzimage: &Path, dest: &Path) -> Result<bool> {
    let image = fs::read(bzimage).with_context(|| format!("cannot read {}", bzimage.display()))?;
    let Some(start) = image.windows(XZ_MAGIC.len()).position(|w| w == XZ_MAGIC) else {
        return Ok(false);
    };
    let tmp = dest.with_extension(format!("tmp{}", std::process::id()));
    let mut child = std::process::Command::new("xz")
        // The payload is followed by the decompressor's trailer: ignore what follows the stream.
        .args(["--decompress", "--stdout", "--single-stream", "--format=xz"])
        .stdin(std::process::Stdio::piped())
        .stdout(fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?)
        .spawn()
        .context("cannot run xz (Debian package xz-utils)")?;
    let mut stdin = child.stdin.take().context("xz's stdin")?;
    let payload = image[start..].to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &payload));
    let status = child.wait()?;
    // xz stops reading after the stream: a broken pipe here is expected.
    let _ = writer.join();
    let elf = fs::read(&tmp).unwrap_or_default();
    if !status.success() || elf.get(..4) != Some(b"\x7fELF") || !has_pvh_entry(&elf) {
        let _ = fs::remove_file(&tmp);
        return Ok(false);
    }
    fs::rename(&tmp, dest).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
";

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn orders_dependencies_first_and_each_once() {
        let dep = parse_modules_dep(DEP).unwrap();
        let order = load_order(&dep, WANTED_MODULES, &BTreeSet::new()).unwrap();
        assert_eq!(order.len(), 8, "{order:?}");
        let unique: BTreeSet<_> = order.iter().collect();
        assert_eq!(unique.len(), order.len());
        for (before, after) in [
            ("virtio_ring", "virtio_pci"),
            ("virtio", "virtio_pci"),
            ("virtio_pci_modern_dev", "virtio_pci"),
            ("vsock", "vmw_vsock_virtio_transport_common"),
            (
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
            ),
        ] {
            assert!(
                position(&order, before) < position(&order, after),
                "{before} after {after}: {order:?}"
            );
        }
        assert!(order.iter().all(|p| !p.contains("fat")));
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_fail() {
        let dep = parse_modules_dep("kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n").unwrap();
        let builtin = parse_builtin("kernel/drivers/virtio/virtio-pci.ko\n");
        assert_eq!(
            load_order(&dep, &["a", "virtio_pci"], &builtin).unwrap(),
            ["kernel/b.ko", "kernel/a.ko"]
        );
        let err = load_order(&dep, &["nope"], &builtin).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn missing_entries_and_cycles_fail() {
        let dangling = parse_modules_dep("kernel/a.ko: kernel/gone.ko\n").unwrap();
        assert!(load_order(&dangling, &["a"], &BTreeSet::new()).is_err());
        let cycle =
            parse_modules_dep("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n").unwrap();
        let err = load_order(&cycle, &["a"], &BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
        assert!(parse_modules_dep("no colon here\n").is_err());
    }

    #[test]
    fn module_names_drop_extensions_and_dashes() {
        assert_eq!(
            module_name("kernel/drivers/virtio/virtio_pci.ko"),
            "virtio_pci"
        );
        assert_eq!(module_name("kernel/x/snd-hda-intel.ko.xz"), "snd_hda_intel");
        assert_eq!(module_name("kernel/x/vsock.ko.zst"), "vsock");
    }

    #[test]
    fn pvh_entry_note_is_found() {
        let mut elf = vec![0u8; 40];
        elf.extend_from_slice(&[4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0]);
        elf.extend_from_slice(b"Xen\0\x00\x00\x00\x01");
        assert!(has_pvh_entry(&elf));
        let other_note = [4, 0, 0, 0, 8, 0, 0, 0, 17, 0, 0, 0, b'X', b'e', b'n', 0];
        assert!(!has_pvh_entry(&other_note));
        assert!(!has_pvh_entry(b"no notes here at all"));
    }

    #[test]
    fn compressed_modules_are_refused() {
        assert!(check_uncompressed(&["a.ko".into(), "b.ko".into()]).is_ok());
        let err = check_uncompressed(&["a.ko".into(), "b.ko.xz".into()]).unwrap_err();
        assert!(err.to_string().contains("b.ko.xz"), "{err}");
    }

    #[test]
    fn parses_the_kernel_dependency() {
        assert_eq!(
            parse_kernel_dependency("linux-image-6.1.0-56-amd64 (= 6.1.192-2)", META_PACKAGE),
            Some((
                "linux-image-6.1.0-56-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        assert_eq!(
            parse_kernel_dependency(
                "initramfs-tools | linux-initramfs-tool, linux-image-6.1.0-48-amd64:amd64 (>= 6.1.172-1)",
                META_PACKAGE
            ),
            Some(("linux-image-6.1.0-48-amd64".into(), None))
        );
        assert_eq!(
            parse_kernel_dependency("linux-image-6.1.0-48-amd64", META_PACKAGE),
            Some(("linux-image-6.1.0-48-amd64".into(), None))
        );
        assert_eq!(
            parse_kernel_dependency("firmware-linux-free, linux-image-amd64", META_PACKAGE),
            None
        );
        assert_eq!(parse_kernel_dependency("", META_PACKAGE), None);
    }

    #[test]
    fn parses_the_6_12_series_dependency() {
        assert_eq!(
            parse_kernel_dependency(
                "linux-image-6.12.117+deb12-amd64 (= 6.12.117-1~deb12u1)",
                "linux-image-6.12-amd64"
            ),
            Some((
                "linux-image-6.12.117+deb12-amd64".into(),
                Some("6.12.117-1~deb12u1".into())
            ))
        );
    }

    #[test]
    fn parses_apt_cache_show() {
        let show = "Package: linux-image-amd64\nSource: linux-signed-amd64 (6.1.192+2)\nVersion: 6.1.192-2\nArchitecture: amd64\nDepends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)\n\nPackage: other\nVersion: 9\n";
        assert_eq!(control_field(show, "Version").as_deref(), Some("6.1.192-2"));
        assert_eq!(
            control_field(show, "Depends").as_deref(),
            Some("linux-image-6.1.0-56-amd64 (= 6.1.192-2)")
        );
        assert_eq!(
            control_field(show, "Architecture").as_deref(),
            Some("amd64")
        );
        assert_eq!(control_field(show, "Filename"), None);
        let package = Package {
            name: "linux-image-6.1.0-48-amd64".into(),
            version: "1:6.1.172-1".into(),
            arch: "amd64".into(),
        };
        assert_eq!(
            package.deb_file_name(),
            "linux-image-6.1.0-48-amd64_1%3a6.1.172-1_amd64.deb"
        );
    }
}
