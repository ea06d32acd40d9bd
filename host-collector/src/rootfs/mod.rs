//! Bring your own guest: `guestscope lab --rootfs IMAGE` boots the user's kernel
//! (`--kernel`) with the user's root file system, and runs guestscope's agent
//! and workloads in it — without root on the host and without changing the image.
//!
//! How, and why this way:
//! - The image is attached as a virtio disk with QEMU's `snapshot=on`: every write
//!   the guest makes goes to a temporary overlay QEMU discards when it exits, so
//!   the file is opened read-only and never changes, whatever the guest does. It
//!   also means nothing is mounted on the host (no loop device, no root): QEMU
//!   reads raw and qcow2 images alike.
//! - The agent does not come from the image. The kernel boots guestscope's own
//!   initramfs (busybox, the static agent and workloads) with a per-run layer on
//!   top; its `/init` mounts the image's file system at `/sysroot` (read-write,
//!   on the snapshot), binds `/proc`, `/sys`, `/dev` and guestscope's files into
//!   it, and runs the agent chrooted there. The workloads therefore run in the
//!   user's userland (its `/tmp`, its libraries), traced by the user's kernel.
//!   The image's own init does not run; `guestscope deploy` installs the agent
//!   for that case.
//! - Kernel modules: a distribution kernel has the virtio disk, ext4 and the
//!   virtio vsock as modules, which live in the image's `/lib/modules/<release>`
//!   — behind the disk they are needed to read. So they are read on the host,
//!   before the boot, with e2fsprogs' `debugfs` (see [`ext4`]): the release comes
//!   from the bzImage header, `modules.dep` and `modules.builtin` say what is
//!   built in and what must be loaded in which order ([`modules`]), and the
//!   needed `.ko` files (decompressed with `xz`/`zstd`/`gzip` when the
//!   distribution compresses them) go into the per-run layer with the order
//!   init loads them in. A kernel with everything built in (a typical custom or
//!   Buildroot kernel) needs no modules; when neither is the case the run stops
//!   before the boot with one line naming the missing kernel options. An image
//!   without `/lib/modules/<release>` (a Buildroot image) gets the drivers from
//!   guestscope's own initramfs when that was built for the same kernel (the one
//!   `cargo xtask lab` built, which carries virtio-blk and ext4 for this); with
//!   another kernel, its configuration decides ([`kernel_config`]: the kernel's
//!   own copy, `CONFIG_IKCONFIG`, or a `.config`/`config-<release>` next to the
//!   image): a kernel that does not build virtio-pci, virtio-blk, ext4 and the
//!   virtio vsock in is refused before the boot, naming the options. Only when no
//!   configuration can be read is it assumed to have them built in (the
//!   description says so), and if it has not, the guest's init says which device
//!   never appeared.
//! - qcow2 images are read on the host through a temporary raw copy
//!   (`qemu-img convert`, sparse), only to take the modules out; QEMU boots the
//!   qcow2 itself.
//!
//! Accepted images: a raw ext2/3/4 file system, a raw disk with an MBR or GPT
//! partition table holding one (the partition with `/etc/os-release` or
//! `/sbin/init` is the root), or a qcow2 image of either. Anything else is one
//! line of error before anything starts.

pub mod deploy;
pub mod ext4;
pub mod format;
pub mod kernel_config;
pub mod modules;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::image::LayerFile;

use self::ext4::Ext4Image;
use self::format::{ExtFs, Format};

/// Whether guestscope's initramfs `initrd` carries modules of kernel `release` (it was
/// built for that kernel): their paths, `lib/modules/<release>/kernel/…`, are names in
/// the archive.
fn initramfs_has_modules(initrd: &Path, release: &str) -> Result<bool, RootfsError> {
    let bytes =
        std::fs::read(initrd).map_err(|e| RootfsError::Io(initrd.to_path_buf(), e.to_string()))?;
    let needle = format!("lib/modules/{release}/kernel/");
    Ok(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Where the guest's init finds how to mount the root file system.
pub const ROOTFS_ENV_PATH: &str = "/etc/guestscope/rootfs.env";
/// The module load order init reads (replaces the built-in guest's list).
pub const MODULES_ORDER_PATH: &str = "/etc/guestscope/modules.order";
/// The `qemu-img` program (Debian package `qemu-utils`).
pub const QEMU_IMG: &str = "qemu-img";

/// A problem with a root file system image, or with reading it.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The image file does not exist.
    #[error("root file system image not found: {0}")]
    Missing(PathBuf),
    /// Reading or writing a file failed.
    #[error("{0}: {1}")]
    Io(PathBuf, String),
    /// The image holds no ext file system guestscope can use.
    #[error(
        "{0}: unsupported image: {1} (guestscope takes a raw ext2/3/4 image, a raw disk with an ext partition (MBR or GPT), or qcow2 of either)"
    )]
    Unsupported(PathBuf, String),
    /// debugfs could not open the file system.
    #[error("{0}: not a usable ext2/3/4 file system: {1}")]
    NotExt(PathBuf, String),
    /// A program guestscope runs is missing or failed.
    #[error("{0}: {1}")]
    Tool(String, String),
    /// A path that cannot be passed to debugfs.
    #[error(
        "path {0:?} cannot be used in the image (must be absolute, without quotes or backslashes)"
    )]
    BadPath(String),
    /// The kernel cannot reach the disk or the host.
    #[error("{0}")]
    Kernel(String),
    /// The image cannot be changed safely.
    #[error("{0}: {1}")]
    Refused(PathBuf, String),
}

/// A root file system ready to boot: the QEMU disk and the initramfs layer.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The image (absolute path).
    pub image: PathBuf,
    /// Its format.
    pub format: Format,
    /// The root device in the guest (`/dev/vda` or `/dev/vdaN`).
    pub root_device: String,
    /// The kernel's release.
    pub release: String,
    /// Files for the per-run initramfs layer: (guest path, contents, mode).
    pub layer: Vec<(String, Vec<u8>, u32)>,
    /// One line on what was found and will be loaded, for the console and the report.
    pub description: String,
}

impl Prepared {
    /// QEMU arguments attaching the image as a virtio disk whose writes are discarded.
    pub fn qemu_args(&self) -> Vec<String> {
        // QEMU option values escape a comma by doubling it.
        let file = self.image.display().to_string().replace(',', ",,");
        vec![
            "-drive".into(),
            format!(
                "file={file},format={},if=virtio,snapshot=on",
                self.format.qemu_name()
            ),
        ]
    }

    /// The layer files, for [`crate::image::build_run_initrd_with`].
    pub fn layer_files(&self) -> Vec<LayerFile<'_>> {
        self.layer
            .iter()
            .map(|(p, d, m)| LayerFile {
                guest_path: p.clone(),
                data: d,
                mode: *m,
            })
            .collect()
    }
}

/// A raw view of an image for reading on the host: the image itself, or a
/// temporary raw copy of a qcow2 image (removed when dropped).
pub struct RawView {
    /// The raw file.
    pub path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Opens `image` for reading its file system on the host.
pub fn raw_view(image: &Path, format: Format) -> Result<RawView, RootfsError> {
    match format {
        Format::Raw => Ok(RawView {
            path: image.to_path_buf(),
            _tmp: None,
        }),
        Format::Qcow2 => {
            let tmp = tempfile::Builder::new()
                .prefix("guestscope-raw-")
                .tempdir()
                .map_err(|e| RootfsError::Io(std::env::temp_dir(), e.to_string()))?;
            let raw = tmp.path().join("image.raw");
            run_tool(
                Command::new(QEMU_IMG)
                    .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
                    .arg(image)
                    .arg(&raw),
                QEMU_IMG,
            )?;
            Ok(RawView {
                path: raw,
                _tmp: Some(tmp),
            })
        }
    }
}

/// Runs `cmd`, turning a failure into one line with its stderr's last line.
pub fn run_tool(cmd: &mut Command, name: &str) -> Result<Vec<u8>, RootfsError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        let hint = match name {
            QEMU_IMG => " (install qemu-utils)",
            "xz" => " (install xz-utils)",
            "zstd" => " (install zstd)",
            _ => "",
        };
        RootfsError::Tool(name.into(), format!("cannot run it: {e}{hint}"))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(RootfsError::Tool(
            name.into(),
            format!("failed ({}): {last}", out.status),
        ));
    }
    Ok(out.stdout)
}

/// The root file system in a raw image: the only ext file system, or among
/// several partitions the one that looks like a root (`/etc/os-release`, `/sbin/init`).
pub fn find_root(image: &Path, raw: &Path) -> Result<ExtFs, RootfsError> {
    let found = format::ext_filesystems(raw)?;
    match found.len() {
        0 => Err(RootfsError::Unsupported(
            image.to_path_buf(),
            "no ext2/3/4 file system in it".into(),
        )),
        1 => Ok(found[0].clone()),
        _ => {
            for fs in &found {
                let e = Ext4Image::new(raw, fs.offset);
                if e.stat("/etc/os-release")?.is_some() || e.stat("/sbin/init")?.is_some() {
                    return Ok(fs.clone());
                }
            }
            Ok(found[0].clone())
        }
    }
}

/// Reads `kernel`'s release and the modules it needs from `image`, and builds the
/// initramfs layer that mounts the image and loads them. Nothing is booted and the
/// image is only read.
pub fn prepare(image: &Path, kernel: &Path, initrd: &Path) -> Result<Prepared, RootfsError> {
    let given_image = image;
    let image = std::path::absolute(image)
        .map_err(|e| RootfsError::Io(image.to_path_buf(), e.to_string()))?;
    if !image.is_file() {
        return Err(match std::fs::metadata(&image) {
            Ok(_) => RootfsError::Unsupported(image.clone(), "not a regular file".into()),
            Err(_) => RootfsError::Missing(image.clone()),
        });
    }
    let format = Format::detect(&image)?;
    let raw = raw_view(&image, format)?;
    let fs = find_root(&image, &raw.path)?;
    let ext = Ext4Image::new(&raw.path, fs.offset);
    let root_device = match fs.partition {
        Some(n) => format!("/dev/vda{n}"),
        None => "/dev/vda".to_string(),
    };
    let kernel_bytes =
        std::fs::read(kernel).map_err(|e| RootfsError::Io(kernel.to_path_buf(), e.to_string()))?;
    let release = modules::bzimage_release(&kernel_bytes).ok_or_else(|| {
        RootfsError::Kernel(format!(
            "{}: no release string in the bzImage header",
            kernel.display()
        ))
    })?;

    let modules_dir = format!("/lib/modules/{release}");
    let mut layer = Vec::new();
    let mut order = String::new();
    let image_has_modules = ext.stat(&modules_dir)?.is_some();
    let own_modules = !image_has_modules && initramfs_has_modules(initrd, &release)?;
    let description = if own_modules {
        format!(
            "{} ({} {}, root {root_device}); no {modules_dir} in it: the virtio disk, ext4 and vsock drivers come from guestscope's initramfs, built for kernel {release}",
            image.display(),
            format.qemu_name(),
            fs.kind.name(),
        )
    } else if !image_has_modules {
        let (others, drivers) = built_in_drivers(
            &ext,
            given_image,
            kernel,
            &kernel_bytes,
            &release,
            &modules_dir,
        )?;
        format!(
            "{} ({} {}, root {root_device}); no {modules_dir} in it{others}: {drivers}",
            image.display(),
            format.qemu_name(),
            fs.kind.name(),
        )
    } else {
        let (builtin, names) =
            image_modules(&ext, &image, &release, &modules_dir, &mut layer, &mut order)?;
        format!(
            "{} ({} {}, root {root_device}); kernel {release}: built in: {}; loading from the image: {}",
            image.display(),
            format.qemu_name(),
            fs.kind.name(),
            if builtin.is_empty() {
                "none of the needed drivers".to_string()
            } else {
                builtin.join(", ")
            },
            if names.is_empty() {
                "nothing".to_string()
            } else {
                names.join(" ")
            }
        )
    };
    if !own_modules {
        // The image's modules replace the built-in guest's (those are another kernel's).
        layer.push((MODULES_ORDER_PATH.to_string(), order.into_bytes(), 0o644));
    }
    layer.push((
        ROOTFS_ENV_PATH.to_string(),
        format!(
            "GS_ROOT={root_device}\nGS_OWN_MODULES={}\n",
            u8::from(own_modules)
        )
        .into_bytes(),
        0o644,
    ));
    Ok(Prepared {
        image,
        format,
        root_device,
        release,
        layer,
        description,
    })
}

/// Without modules for `release` in the image, the kernel must have the drivers built
/// in (checked in its config when one is found). Returns what the image has under
/// `/lib/modules` (for the description) and what the config says of the drivers.
fn built_in_drivers(
    ext: &Ext4Image,
    given_image: &Path,
    kernel: &Path,
    kernel_bytes: &[u8],
    release: &str,
    modules_dir: &str,
) -> Result<(String, String), RootfsError> {
    let others = ext.list("/lib/modules")?.unwrap_or_default();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(" (it has {})", others.join(", "))
    };
    let drivers = match kernel_config::find(kernel, kernel_bytes, release) {
        Ok(config) => {
            let lacking = kernel_config::NotBuiltIn::check(&config.text, &needed_options());
            if !lacking.is_empty() {
                return Err(RootfsError::Kernel(format!(
                    "{} has no {modules_dir}{others} and {} (config from {}) {lacking}: build them in (=y) or put the modules in the image",
                    given_image.display(),
                    kernel.display(),
                    config.origin,
                )));
            }
            format!(
                "kernel {release} has virtio-pci, virtio-blk, ext4 and vsock built in (config from {})",
                config.origin
            )
        }
        Err(not_found) => format!(
            "kernel {release}: {not_found}: assuming it has virtio-pci, virtio-blk, ext4 and vsock built in"
        ),
    };
    Ok((others, drivers))
}

/// The modules of the needed drivers from the image's `modules_dir`, in load order:
/// decompressed into `layer`, their names appended to `order`. Returns the drivers
/// built in and the modules loaded.
fn image_modules(
    ext: &Ext4Image,
    image: &Path,
    release: &str,
    modules_dir: &str,
    layer: &mut Vec<(String, Vec<u8>, u32)>,
    order: &mut String,
) -> Result<(Vec<&'static str>, Vec<String>), RootfsError> {
    let dep = ext.read(&format!("{modules_dir}/modules.dep"))?.ok_or_else(|| {
        RootfsError::Kernel(format!("{}: {modules_dir}/modules.dep is missing: run `depmod {release}` in the guest once", image.display()))
    })?;
    let builtin = ext
        .read(&format!("{modules_dir}/modules.builtin"))?
        .unwrap_or_default();
    let dep = modules::ModulesDep::parse(&String::from_utf8_lossy(&dep));
    let builtin: BTreeSet<String> = modules::parse_builtin(&String::from_utf8_lossy(&builtin));
    let r = modules::resolve(&dep, &builtin, modules::NEEDS);
    if !r.missing.is_empty() {
        return Err(RootfsError::Kernel(modules::missing_message(
            release, &r.missing,
        )));
    }
    let work = tempfile::Builder::new()
        .prefix("guestscope-modules-")
        .tempdir()
        .map_err(|e| RootfsError::Io(std::env::temp_dir(), e.to_string()))?;
    let pairs: Vec<(String, PathBuf)> = r
        .load_order
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("{modules_dir}/{m}"),
                work.path().join(format!("{i}.ko")),
            )
        })
        .collect();
    ext.dump(&pairs)?;
    for ((_, host), module) in pairs.iter().zip(&r.load_order) {
        let (plain, data) = decompress(module, host)?;
        order.push_str(&plain);
        order.push('\n');
        layer.push((format!("{modules_dir}/{plain}"), data, 0o644));
    }
    let names: Vec<String> = r
        .load_order
        .iter()
        .map(|m| modules::module_name(m))
        .collect();
    Ok((r.builtin, names))
}

/// The kernel options of the drivers a guest cannot do without ([`modules::NEEDS`]
/// that are not optional), which a kernel without modules must build in.
fn needed_options() -> Vec<&'static str> {
    modules::NEEDS
        .iter()
        .filter(|n| !n.optional)
        .map(|n| n.config)
        .collect()
}

/// A module's contents, decompressed, and its path without the compression suffix.
fn decompress(module: &str, file: &Path) -> Result<(String, Vec<u8>), RootfsError> {
    let tool = |name: &str| -> Result<Vec<u8>, RootfsError> {
        run_tool(Command::new(name).arg("-dc").arg(file), name)
    };
    let read =
        || std::fs::read(file).map_err(|e| RootfsError::Io(file.to_path_buf(), e.to_string()));
    Ok(match module.rsplit_once('.') {
        Some((plain, "xz")) => (plain.to_string(), tool("xz")?),
        Some((plain, "zst")) => (plain.to_string(), tool("zstd")?),
        Some((plain, "gz")) => (plain.to_string(), tool("gzip")?),
        _ => (module.to_string(), read()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_is_a_discarded_snapshot_with_commas_escaped() {
        let p = Prepared {
            image: "/img/a,b.qcow2".into(),
            format: Format::Qcow2,
            root_device: "/dev/vda".into(),
            release: "6.1".into(),
            layer: vec![],
            description: String::new(),
        };
        assert_eq!(
            p.qemu_args(),
            [
                "-drive",
                "file=/img/a,,b.qcow2,format=qcow2,if=virtio,snapshot=on"
            ]
        );
    }

    #[test]
    fn bad_images_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("k");
        std::fs::write(&kernel, b"x").unwrap();
        let missing = prepare(&dir.path().join("nope.img"), &kernel, &kernel)
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("root file system image not found"),
            "{missing}"
        );
        let junk = dir.path().join("junk.img");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let e = prepare(&junk, &kernel, &kernel).unwrap_err().to_string();
        assert!(e.contains("unsupported image") && !e.contains('\n'), "{e}");
        let e = prepare(dir.path(), &kernel, &kernel)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn a_kernel_without_modules_anywhere_is_judged_by_its_configuration() {
        use kernel_config::tests::{fake_bzimage, fake_vmlinux, gzip};
        let dir = tempfile::tempdir().unwrap();
        // An image without /lib/modules, as Buildroot makes them.
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sbin")).unwrap();
        let image = dir.path().join("rootfs.ext4");
        run_tool(
            Command::new("mke2fs")
                .args(["-q", "-t", "ext4", "-d"])
                .arg(&root)
                .arg(&image)
                .arg("4M"),
            "mke2fs",
        )
        .unwrap();
        let initrd = dir.path().join("base.cpio");
        std::fs::write(&initrd, b"070701 no modules here").unwrap();
        let kernel = dir.path().join("bzImage");
        let with_config = |config: &str| {
            std::fs::write(&kernel, fake_bzimage(&gzip(&fake_vmlinux(config, 100)))).unwrap();
        };

        with_config("CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=m\nCONFIG_EXT4_FS=m\n");
        let e = prepare(&image, &kernel, &initrd).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "{} has no /lib/modules/6.1.7 and {} (config from its IKCONFIG) builds CONFIG_VIRTIO_BLK, CONFIG_EXT4_FS as modules and lacks CONFIG_VIRTIO_VSOCKETS: build them in (=y) or put the modules in the image",
                image.display(),
                kernel.display()
            )
        );

        let built_in: String = needed_options()
            .iter()
            .map(|o| format!("{o}=y\n"))
            .collect();
        with_config(&built_in);
        let p = prepare(&image, &kernel, &initrd).unwrap();
        assert!(
            p.description.ends_with(
                "kernel 6.1.7 has virtio-pci, virtio-blk, ext4 and vsock built in (config from its IKCONFIG)"
            ),
            "{}",
            p.description
        );

        // No configuration anywhere: assumed built in, and said so.
        std::fs::write(&kernel, fake_bzimage(&gzip(&[0x90; 4096]))).unwrap();
        let p = prepare(&image, &kernel, &initrd).unwrap();
        assert!(
            p.description.contains(
                "kernel 6.1.7: cannot read its configuration (it was built without CONFIG_IKCONFIG;"
            ),
            "{}",
            p.description
        );
    }

    #[test]
    fn our_initramfs_serves_a_kernel_it_was_built_for() {
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("base.cpio");
        let mut cpio =
            b"070701...lib/modules/6.1.0-57-amd64/kernel/drivers/block/virtio_blk.ko\0".to_vec();
        cpio.extend(vec![0u8; 1000]);
        std::fs::write(&initrd, cpio).unwrap();
        assert!(initramfs_has_modules(&initrd, "6.1.0-57-amd64").unwrap());
        assert!(!initramfs_has_modules(&initrd, "6.1.0-48-amd64").unwrap());
        assert!(!initramfs_has_modules(&initrd, "6.1.0-57").unwrap());
    }
}
