//! The kernel modules a user's kernel needs to reach its root file system and the
//! host: which are built in, which must be loaded from the root file system's
//! `/lib/modules/<release>`, and in what order.

use std::collections::{BTreeMap, BTreeSet};

/// A kernel feature guestscope needs, and the modules that provide it (the first
/// one found is used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// What it is for, in the error message.
    pub what: &'static str,
    /// The kernel configuration option that provides it.
    pub config: &'static str,
    /// Module names, any one of which provides it.
    pub modules: &'static [&'static str],
    /// Loaded when available, not required (the kernel may not use it).
    pub optional: bool,
}

/// What the guest needs from its kernel to run guestscope from a root file system
/// on a virtio disk.
pub const NEEDS: &[Need] = &[
    Need {
        what: "virtio PCI devices",
        config: "CONFIG_VIRTIO_PCI",
        modules: &["virtio_pci"],
        optional: false,
    },
    Need {
        what: "the virtio disk",
        config: "CONFIG_VIRTIO_BLK",
        modules: &["virtio_blk"],
        optional: false,
    },
    // ext4 asks the crypto API for crc32c when it mounts a file system with
    // metadata checksums (mke2fs's default), and that request would need modprobe.
    Need {
        what: "crc32c checksums",
        config: "CONFIG_CRYPTO_CRC32C",
        modules: &["crc32c_generic"],
        optional: true,
    },
    Need {
        what: "the root file system",
        config: "CONFIG_EXT4_FS",
        modules: &["ext4", "ext3", "ext2"],
        optional: false,
    },
    Need {
        what: "the vsock to the host",
        config: "CONFIG_VIRTIO_VSOCKETS",
        modules: &["vmw_vsock_virtio_transport"],
        optional: false,
    },
];

/// The release string a bzImage carries (`uname -r` of the kernel it boots), from
/// its setup header's `kernel_version` field.
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.len() < 0x210 || &image[0x202..0x206] != b"HdrS" {
        return None;
    }
    let at = usize::from(u16::from_le_bytes([image[0x20E], image[0x20F]]));
    if at == 0 {
        return None;
    }
    let start = at + 0x200;
    let text = image.get(start..(start + 256).min(image.len()))?;
    let end = text
        .iter()
        .position(|b| *b == 0 || *b == b' ')
        .unwrap_or(text.len());
    let release = std::str::from_utf8(&text[..end]).ok()?.trim();
    (!release.is_empty()).then(|| release.to_string())
}

/// A module's name from its path: file name without `.ko[.xz|.zst|.gz]`, `-` as `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.split(".ko").next().unwrap_or(file).replace('-', "_")
}

/// `modules.dep`: module path → the paths it needs; and name → path.
#[derive(Clone, Debug, Default)]
pub struct ModulesDep {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

impl ModulesDep {
    /// Parses `modules.dep` (`path: dep dep ...` per line); malformed lines are skipped.
    pub fn parse(text: &str) -> ModulesDep {
        let mut d = ModulesDep::default();
        for line in text.lines() {
            let Some((module, needs)) = line.split_once(':') else {
                continue;
            };
            let module = module.trim().to_string();
            if module.is_empty() {
                continue;
            }
            d.by_name.insert(module_name(&module), module.clone());
            d.deps.insert(
                module,
                needs.split_whitespace().map(str::to_string).collect(),
            );
        }
        d
    }

    /// The path of module `name`, if it is a loadable module.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&name.replace('-', "_"))
            .map(String::as_str)
    }
}

/// Names in `modules.builtin` (one path per line).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

/// How each need is met, and the modules to load in order (each after what it needs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Module paths (relative to `/lib/modules/<release>`), dependencies first.
    pub load_order: Vec<String>,
    /// Needs met by the kernel itself.
    pub builtin: Vec<&'static str>,
    /// Needs met by neither.
    pub missing: Vec<Need>,
}

/// Resolves `needs` against a kernel's `modules.dep` and `modules.builtin`.
pub fn resolve(dep: &ModulesDep, builtin: &BTreeSet<String>, needs: &[Need]) -> Resolution {
    let mut r = Resolution::default();
    let mut done = BTreeSet::new();
    for need in needs {
        if need
            .modules
            .iter()
            .any(|m| builtin.contains(&m.replace('-', "_")))
        {
            r.builtin.push(need.what);
            continue;
        }
        match need.modules.iter().find_map(|m| dep.path_of(m)) {
            Some(path) => visit(dep, path, &mut done, &mut r.load_order, 0),
            None if need.optional => {}
            None => r.missing.push(*need),
        }
    }
    r
}

fn visit(
    dep: &ModulesDep,
    path: &str,
    done: &mut BTreeSet<String>,
    order: &mut Vec<String>,
    depth: usize,
) {
    // modules.dep lists every dependency of a module, so depth stays small; the
    // bound only guards against a corrupt file with a cycle.
    if depth > 64 || !done.insert(path.to_string()) {
        return;
    }
    for need in dep.deps.get(path).into_iter().flatten() {
        visit(dep, need, done, order, depth + 1);
    }
    order.push(path.to_string());
}

/// The one-line message for needs the kernel cannot meet.
pub fn missing_message(release: &str, missing: &[Need]) -> String {
    let what: Vec<String> = missing
        .iter()
        .map(|n| format!("{} ({}, module {})", n.what, n.config, n.modules[0]))
        .collect();
    format!(
        "kernel {release} has no support for {}: neither built in nor a module in the root file system's /lib/modules/{release}; \
         rebuild it with these options =y (or =m with the modules installed in the image)",
        what.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/drivers/virtio/virtio_pci.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/drivers/block/virtio_blk.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
kernel/fs/jbd2/jbd2.ko.xz:
kernel/fs/ext4/ext4.ko.xz: kernel/fs/jbd2/jbd2.ko.xz
kernel/net/vmw_vsock/vsock.ko.xz:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz: kernel/net/vmw_vsock/vsock.ko.xz
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko.xz: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko.xz kernel/net/vmw_vsock/vsock.ko.xz kernel/drivers/virtio/virtio_ring.ko.xz kernel/drivers/virtio/virtio.ko.xz
";

    #[test]
    fn release_from_a_bzimage_header() {
        let mut img = vec![0u8; 0x400];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        let version = b"6.1.7 (builder@buildroot) #3 SMP PREEMPT";
        img[0x300..0x300 + version.len()].copy_from_slice(version);
        assert_eq!(bzimage_release(&img).as_deref(), Some("6.1.7"));
        img[0x20E] = 0;
        img[0x20F] = 0;
        assert_eq!(bzimage_release(&img), None);
        assert_eq!(bzimage_release(b"not a kernel"), None);
    }

    #[test]
    fn everything_as_modules_loads_in_dependency_order() {
        let r = resolve(&ModulesDep::parse(DEP), &BTreeSet::new(), NEEDS);
        assert!(r.missing.is_empty() && r.builtin.is_empty());
        let names: Vec<String> = r.load_order.iter().map(|p| module_name(p)).collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} not in {names:?}"))
        };
        assert!(pos("virtio") < pos("virtio_pci") && pos("virtio_ring") < pos("virtio_blk"));
        assert!(pos("jbd2") < pos("ext4"));
        assert!(pos("vsock") < pos("vmw_vsock_virtio_transport_common"));
        assert_eq!(
            names.len(),
            names.iter().collect::<BTreeSet<_>>().len(),
            "each once: {names:?}"
        );
    }

    #[test]
    fn built_in_needs_load_nothing_and_absent_ones_are_named() {
        // Debian's 6.12: virtio and virtio_pci built in, the rest modules.
        let builtin =
            parse_builtin("kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_pci.ko\n");
        let r = resolve(&ModulesDep::parse(DEP), &builtin, NEEDS);
        assert_eq!(r.builtin, ["virtio PCI devices"]);
        assert!(!r.load_order.iter().any(|p| p.contains("virtio_pci")));
        // A kernel with no vsock and no modules for it.
        let dep = ModulesDep::parse("kernel/fs/ext4/ext4.ko:\n");
        let builtin = parse_builtin(
            "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/block/virtio_blk.ko\n",
        );
        let r = resolve(&dep, &builtin, NEEDS);
        assert_eq!(r.missing.len(), 1);
        let msg = missing_message("6.1.7", &r.missing);
        assert!(
            msg.contains("CONFIG_VIRTIO_VSOCKETS") && msg.contains("/lib/modules/6.1.7"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn alternatives_and_names() {
        let dep = ModulesDep::parse("kernel/fs/ext2/ext2.ko.zst:\n");
        let r = resolve(&dep, &BTreeSet::new(), &NEEDS[3..4]);
        assert_eq!(r.load_order, ["kernel/fs/ext2/ext2.ko.zst"]);
        assert_eq!(module_name("kernel/x/snd-hda.ko.xz"), "snd_hda");
    }
}
