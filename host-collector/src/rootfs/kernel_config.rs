//! A user kernel's build configuration, read on the host before the boot, to
//! decide whether a kernel without modules for the image can reach the disk, the
//! root file system and the host at all.
//!
//! Two places hold it:
//! - the kernel itself, when built with `CONFIG_IKCONFIG`: the `.config`, gzipped,
//!   between the markers `IKCFG_ST` and `IKCFG_ED` inside the *decompressed*
//!   kernel. A bzImage's setup header says where its compressed payload is
//!   (`payload_offset`, `payload_length`, boot protocol 2.08+); its first bytes
//!   say how it is compressed (as the kernel's `scripts/extract-vmlinux` finds
//!   out). gzip, xz (with the x86 BCJ filter the kernel's `xz_wrap.sh` adds),
//!   lzma and zstd are read; the payload is decompressed as a stream and reading
//!   stops at the configuration, so only the part of the kernel before it is
//!   decompressed and kept in memory no more than a chunk at a time;
//! - a file next to the kernel image: `config-<release>` (Debian's `/boot`),
//!   `.config` in the same directory, or `.config` at the top of a build tree
//!   when the image is its `arch/<arch>/boot/bzImage`.
//!
//! The kernel's own copy is preferred: a file next to it may be stale.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The bytes before the gzipped configuration: the start marker and the gzip
/// magic and method (deflate), as `scripts/extract-ikconfig` searches for them.
const IKCONFIG_START: &[u8] = b"IKCFG_ST\x1f\x8b\x08";
/// The length of the start marker alone (the gzip stream starts after it).
const MARKER_LEN: usize = 8;
/// How much decompressed kernel is read at a time.
const CHUNK: usize = 1 << 20;
/// A bound on a decompressed configuration (a full one is about 300 KiB).
const MAX_CONFIG: u64 = 16 << 20;

/// Where a kernel's configuration was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// The kernel's own copy (`CONFIG_IKCONFIG`).
    Ikconfig,
    /// A file next to the kernel image.
    File(PathBuf),
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigOrigin::Ikconfig => f.write_str("its IKCONFIG"),
            ConfigOrigin::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A kernel's configuration (`.config` text) and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelConfig {
    /// The configuration, as in a `.config`.
    pub text: String,
    /// Where it was read from.
    pub origin: ConfigOrigin,
}

/// How a bzImage's payload (the compressed kernel) is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `CONFIG_KERNEL_GZIP`.
    Gzip,
    /// `CONFIG_KERNEL_XZ`.
    Xz,
    /// `CONFIG_KERNEL_LZMA`.
    Lzma,
    /// `CONFIG_KERNEL_ZSTD`.
    Zstd,
    /// `CONFIG_KERNEL_BZIP2`.
    Bzip2,
    /// `CONFIG_KERNEL_LZ4`.
    Lz4,
    /// `CONFIG_KERNEL_LZO`.
    Lzo,
}

impl Compression {
    /// Recognizes a compressed stream by its first bytes (the magic numbers
    /// `scripts/extract-vmlinux` looks for).
    pub fn detect(data: &[u8]) -> Option<Compression> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (b"\x1f\x8b\x08", Compression::Gzip),
            (b"\xfd7zXZ\x00", Compression::Xz),
            (b"\x28\xb5\x2f\xfd", Compression::Zstd),
            (b"BZh", Compression::Bzip2),
            (b"\x02\x21\x4c\x18", Compression::Lz4),
            (b"\x89LZO", Compression::Lzo),
            // The .lzma header: properties 0x5d (lc=3 lp=0 pb=2), then a
            // dictionary size below 4 GiB.
            (b"\x5d\x00\x00", Compression::Lzma),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, c)| *c)
    }

    /// Its name, as the kernel's `CONFIG_KERNEL_*` says it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Lzma => "lzma",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzo",
        }
    }

    /// A reader of the decompressed stream, for the formats guestscope reads.
    fn decoder<'a>(self, data: &'a [u8]) -> Result<Box<dyn Read + 'a>, IkconfigError> {
        let corrupt = |e: &dyn fmt::Display| IkconfigError::Corrupt(self.name(), e.to_string());
        Ok(match self {
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(data)),
            // One stream: the kernel's build appends the decompressed size after it.
            Compression::Xz => Box::new(lzma_rust2::XzReader::new(data, false)),
            Compression::Lzma => Box::new(
                lzma_rust2::LzmaReader::new_mem_limit(data, u32::MAX, None)
                    .map_err(|e| corrupt(&e))?,
            ),
            Compression::Zstd => {
                Box::new(ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| corrupt(&e))?)
            }
            Compression::Bzip2 | Compression::Lz4 | Compression::Lzo => {
                return Err(IkconfigError::Unsupported(self.name()));
            }
        })
    }
}

/// Why the configuration inside a kernel image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IkconfigError {
    /// Not a bzImage with a payload (boot protocol before 2.08, or truncated).
    #[error("it is not a bzImage with a compressed payload")]
    NoPayload,
    /// A payload in a format guestscope does not decompress.
    #[error("its payload is {0}-compressed, which guestscope does not decompress")]
    Unsupported(&'static str),
    /// A payload in no known format.
    #[error("its payload is in no compression format guestscope knows")]
    UnknownFormat,
    /// The payload could not be decompressed.
    #[error("its {0} payload cannot be decompressed: {1}")]
    Corrupt(&'static str, String),
    /// Reading the decompressed kernel failed.
    #[error("reading it failed: {0}")]
    Read(String),
    /// The kernel carries no configuration.
    #[error("it was built without CONFIG_IKCONFIG")]
    Absent,
    /// The configuration's own gzip stream is damaged.
    #[error("its IKCONFIG cannot be decompressed: {0}")]
    BadConfig(String),
}

/// No configuration found for a kernel: why not inside it, and that no file was
/// next to it.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read its configuration ({inside}; no config-{release}, .config or build tree's .config next to it)"
)]
pub struct NotFound {
    /// Why the kernel's own copy could not be read.
    pub inside: IkconfigError,
    /// The kernel's release, as looked for next to it.
    pub release: String,
}

/// The configuration of the kernel at `kernel` (whose contents are `image`, of
/// release `release`): its own copy, else a file next to it.
pub fn find(kernel: &Path, image: &[u8], release: &str) -> Result<KernelConfig, NotFound> {
    let started = std::time::Instant::now();
    let inside = match from_bzimage(image) {
        Ok(text) => {
            tracing::debug!(
                "read the IKCONFIG of {} in {:.3} s",
                kernel.display(),
                started.elapsed().as_secs_f64()
            );
            return Ok(KernelConfig {
                text,
                origin: ConfigOrigin::Ikconfig,
            });
        }
        Err(e) => e,
    };
    tracing::debug!(
        "no IKCONFIG read from {} ({inside}) in {:.3} s",
        kernel.display(),
        started.elapsed().as_secs_f64()
    );
    for path in files_next_to(kernel, release) {
        // A candidate that cannot be read is passed over like a missing one.
        if let Ok(text) = std::fs::read_to_string(&path) {
            return Ok(KernelConfig {
                text,
                origin: ConfigOrigin::File(path),
            });
        }
    }
    Err(NotFound {
        inside,
        release: release.to_string(),
    })
}

/// The compressed payload of a bzImage, as its setup header places it.
pub fn payload(image: &[u8]) -> Option<&[u8]> {
    let u16_at = |at: usize| Some(u16::from_le_bytes(image.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?));
    if image.get(0x202..0x206) != Some(b"HdrS") || u16_at(0x206)? < 0x0208 {
        return None;
    }
    // setup_sects: 0 means 4, the setup code's sectors after the boot sector.
    let setup_sects = match *image.get(0x1F1)? {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1)
        .checked_mul(512)?
        .checked_add(usize::try_from(u32_at(0x248)?).ok()?)?;
    let len = usize::try_from(u32_at(0x24C)?).ok()?;
    image.get(start..start.checked_add(len)?)
}

/// The configuration a bzImage carries (`CONFIG_IKCONFIG`).
pub fn from_bzimage(image: &[u8]) -> Result<String, IkconfigError> {
    let payload = payload(image).ok_or(IkconfigError::NoPayload)?;
    let compression = Compression::detect(payload).ok_or(IkconfigError::UnknownFormat)?;
    let decoder = compression.decoder(payload)?;
    ikconfig_in(decoder).map_err(|e| match e {
        IkconfigError::Read(why) => IkconfigError::Corrupt(compression.name(), why),
        other => other,
    })
}

/// The configuration inside a decompressed kernel, read from `kernel` up to the
/// end of the configuration and no further.
pub fn ikconfig_in(mut kernel: impl Read) -> Result<String, IkconfigError> {
    // What has been read and not yet searched, and a tail as long as the marker
    // less one byte, in case it straddles two chunks.
    let mut window: Vec<u8> = Vec::with_capacity(CHUNK + IKCONFIG_START.len());
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = match kernel.read(&mut chunk) {
            Ok(0) => return Err(IkconfigError::Absent),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IkconfigError::Read(e.to_string())),
        };
        window.extend_from_slice(&chunk[..n]);
        if let Some(at) = memchr::memmem::find(&window, IKCONFIG_START) {
            // The gzip stream runs from after the marker into what is still unread;
            // its decoder stops at its own end (before `IKCFG_ED`).
            let rest = io::Cursor::new(window.split_off(at + MARKER_LEN));
            let mut text = String::new();
            flate2::read::GzDecoder::new(rest.chain(kernel))
                .take(MAX_CONFIG)
                .read_to_string(&mut text)
                .map_err(|e| IkconfigError::BadConfig(e.to_string()))?;
            return Ok(text);
        }
        let keep = IKCONFIG_START.len() - 1;
        if window.len() > keep {
            window.drain(..window.len() - keep);
        }
    }
}

/// The files next to a kernel image that may hold its configuration, in the
/// order they are tried: `config-<release>`, `.config`, and the build tree's
/// `.config` when the image is `<tree>/arch/<arch>/boot/<image>`.
pub fn files_next_to(kernel: &Path, release: &str) -> Vec<PathBuf> {
    let Some(dir) = kernel.parent() else {
        return Vec::new();
    };
    let mut candidates = vec![dir.join(format!("config-{release}")), dir.join(".config")];
    if dir.file_name().is_some_and(|n| n == "boot") {
        let arch = dir.parent().and_then(Path::parent);
        if let Some(arch) = arch.filter(|a| a.file_name().is_some_and(|n| n == "arch")) {
            candidates.push(arch.parent().unwrap_or(Path::new("")).join(".config"));
        }
    }
    candidates.retain(|p| p.is_file());
    candidates
}

/// The value `config` gives `option` (`y`, `m`, a number or a string), or `None`
/// when it is not set.
pub fn value<'a>(config: &'a str, option: &str) -> Option<&'a str> {
    config.lines().find_map(|l| {
        l.strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
            .map(str::trim_end)
    })
}

/// The options of a set a configuration does not build in.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotBuiltIn {
    /// Options built as modules (`=m`).
    pub modules: Vec<&'static str>,
    /// Options not set at all.
    pub absent: Vec<&'static str>,
}

impl NotBuiltIn {
    /// Which of `options` `config` does not set to `y`.
    pub fn check(config: &str, options: &[&'static str]) -> NotBuiltIn {
        let mut r = NotBuiltIn::default();
        for &opt in options {
            match value(config, opt) {
                Some("y") => {}
                Some("m") => r.modules.push(opt),
                _ => r.absent.push(opt),
            }
        }
        r
    }

    /// Whether every option is built in.
    pub fn is_empty(&self) -> bool {
        self.modules.is_empty() && self.absent.is_empty()
    }
}

impl fmt::Display for NotBuiltIn {
    /// `builds CONFIG_A, CONFIG_B as modules and lacks CONFIG_C`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.modules.is_empty() {
            write!(f, "builds {} as modules", self.modules.join(", "))?;
        }
        if !self.absent.is_empty() {
            if !self.modules.is_empty() {
                f.write_str(" and ")?;
            }
            write!(f, "lacks {}", self.absent.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::io::Write as _;

    const CONFIG: &str = "\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.7 Kernel Configuration
#
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_PCI_LEGACY=y
CONFIG_VIRTIO_BLK=m
# CONFIG_EXT4_FS is not set
CONFIG_VIRTIO_VSOCKETS=y
CONFIG_LOCALVERSION=\"-lab\"
";

    pub(in crate::rootfs) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A decompressed kernel: code, the configuration between its markers, more code.
    pub(in crate::rootfs) fn fake_vmlinux(config: &str, filler: usize) -> Vec<u8> {
        let mut k = b"\x7fELF".to_vec();
        // Bytes that look like the marker but are not it, across chunk boundaries.
        k.extend((0..filler).map(|i| b"IKCFG_S"[i % 7]));
        k.extend_from_slice(b"IKCFG_ST");
        k.extend(gzip(config.as_bytes()));
        k.extend_from_slice(b"IKCFG_ED");
        k.extend(vec![0xCCu8; 4096]);
        k
    }

    /// A bzImage of release 6.1.7 around `payload`, laid out as the boot protocol says.
    pub(in crate::rootfs) fn fake_bzimage(payload: &[u8]) -> Vec<u8> {
        let setup_sects = 3u8;
        let offset = 0x3A0u32;
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512 + offset as usize];
        img[0x1F1] = setup_sects;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        img[0x20E..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        img[0x300..0x305].copy_from_slice(b"6.1.7");
        img[0x248..0x24C].copy_from_slice(&offset.to_le_bytes());
        let len = u32::try_from(payload.len() + 4).unwrap();
        img[0x24C..0x250].copy_from_slice(&len.to_le_bytes());
        img.extend_from_slice(payload);
        // The kernel's build appends the decompressed size; decoders must stop before.
        img.extend_from_slice(&[1, 2, 3, 4]);
        img.extend(vec![0u8; 512]);
        img
    }

    #[test]
    fn the_configuration_between_the_markers_is_read() {
        // The marker straddles the first chunk's end.
        let k = fake_vmlinux(CONFIG, CHUNK - 3);
        assert_eq!(ikconfig_in(k.as_slice()).unwrap(), CONFIG);
        let small = fake_vmlinux(CONFIG, 10);
        assert_eq!(ikconfig_in(small.as_slice()).unwrap(), CONFIG);
        let none = vec![7u8; 3 * CHUNK];
        assert!(matches!(
            ikconfig_in(none.as_slice()),
            Err(IkconfigError::Absent)
        ));
        // A marker followed by no gzip stream is not the configuration.
        let mut broken = b"IKCFG_ST\x1f\x8b\x08garbage".to_vec();
        broken.extend(vec![0u8; 100]);
        assert!(matches!(
            ikconfig_in(broken.as_slice()),
            Err(IkconfigError::BadConfig(_))
        ));
    }

    #[test]
    fn a_gzip_bzimage_gives_its_configuration() {
        let img = fake_bzimage(&gzip(&fake_vmlinux(CONFIG, 5000)));
        assert_eq!(from_bzimage(&img).unwrap(), CONFIG);
        let without = fake_bzimage(&gzip(&vec![0x90u8; 100_000]));
        assert!(matches!(from_bzimage(&without), Err(IkconfigError::Absent)));
        assert!(matches!(
            from_bzimage(b"not a kernel"),
            Err(IkconfigError::NoPayload)
        ));
    }

    #[test]
    fn an_xz_bzimage_with_the_x86_filter_gives_its_configuration() {
        // As scripts/xz_wrap.sh compresses it: the x86 BCJ filter, then LZMA2, CRC32.
        let mut options = lzma_rust2::XzOptions::with_preset(1);
        options.set_check_sum_type(lzma_rust2::CheckType::Crc32);
        options.prepend_pre_filter(lzma_rust2::FilterType::BcjX86, 0);
        let mut w = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
        w.write_all(&fake_vmlinux(CONFIG, 70_000)).unwrap();
        let xz = w.finish().unwrap();
        assert_eq!(Compression::detect(&xz), Some(Compression::Xz));
        assert_eq!(from_bzimage(&fake_bzimage(&xz)).unwrap(), CONFIG);
        // A damaged stream is an error, not "no configuration".
        let mut bad = xz.clone();
        // The block's header, past the stream's (12 bytes).
        bad[16..40].fill(0xAA);
        let e = from_bzimage(&fake_bzimage(&bad)).unwrap_err();
        assert!(matches!(e, IkconfigError::Corrupt("xz", _)), "{e}");
    }

    #[test]
    fn a_zstd_bzimage_gives_its_configuration() {
        let z = ruzstd::encoding::compress_to_vec(
            fake_vmlinux(CONFIG, 9000).as_slice(),
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(Compression::detect(&z), Some(Compression::Zstd));
        assert_eq!(from_bzimage(&fake_bzimage(&z)).unwrap(), CONFIG);
    }

    #[test]
    fn formats_not_read_are_named() {
        let e = from_bzimage(&fake_bzimage(b"\x02\x21\x4c\x18rest")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "its payload is lz4-compressed, which guestscope does not decompress"
        );
        let e = from_bzimage(&fake_bzimage(b"\x00\x00\x00\x00")).unwrap_err();
        assert!(matches!(e, IkconfigError::UnknownFormat), "{e}");
    }

    #[test]
    fn options_not_built_in_are_told_apart() {
        let needed = ["CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS"];
        let r = NotBuiltIn::check(CONFIG, &needed);
        assert_eq!(r.modules, ["CONFIG_VIRTIO_BLK"]);
        assert_eq!(r.absent, ["CONFIG_EXT4_FS"]);
        assert_eq!(
            r.to_string(),
            "builds CONFIG_VIRTIO_BLK as modules and lacks CONFIG_EXT4_FS"
        );
        // A longer name is another option: CONFIG_VIRTIO_PCI_LEGACY=y is not VIRTIO_PCI.
        let r = NotBuiltIn::check("CONFIG_VIRTIO_PCI_LEGACY=y\n", &needed[..1]);
        assert_eq!(r.absent, ["CONFIG_VIRTIO_PCI"]);
        let all = "CONFIG_VIRTIO_PCI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_EXT4_FS=y\n";
        assert!(NotBuiltIn::check(all, &needed).is_empty());
        assert_eq!(value(CONFIG, "CONFIG_LOCALVERSION"), Some("\"-lab\""));
    }

    #[test]
    fn files_next_to_the_image_are_found() {
        let dir = tempfile::tempdir().unwrap();
        // Debian's /boot.
        let boot = dir.path().join("boot");
        std::fs::create_dir(&boot).unwrap();
        let vmlinuz = boot.join("vmlinuz-6.1.0-57-amd64");
        std::fs::write(&vmlinuz, b"k").unwrap();
        assert!(files_next_to(&vmlinuz, "6.1.0-57-amd64").is_empty());
        std::fs::write(boot.join("config-6.1.0-57-amd64"), CONFIG).unwrap();
        assert_eq!(
            files_next_to(&vmlinuz, "6.1.0-57-amd64"),
            [boot.join("config-6.1.0-57-amd64")]
        );
        assert!(files_next_to(&vmlinuz, "6.1.0-48-amd64").is_empty());
        // A build tree: <top>/arch/x86/boot/bzImage and <top>/.config.
        let top = dir.path().join("build");
        let img_dir = top.join("arch/x86/boot");
        std::fs::create_dir_all(&img_dir).unwrap();
        let bz = img_dir.join("bzImage");
        std::fs::write(&bz, b"k").unwrap();
        assert!(files_next_to(&bz, "6.1.7").is_empty());
        std::fs::write(top.join(".config"), CONFIG).unwrap();
        assert_eq!(files_next_to(&bz, "6.1.7"), [top.join(".config")]);
        let found = find(&bz, b"not a bzImage", "6.1.7").unwrap();
        assert_eq!(found.origin, ConfigOrigin::File(top.join(".config")));
        assert_eq!(found.text, CONFIG);
        // A `boot` directory outside `arch/` is not a build tree.
        let lone = dir.path().join("x/boot");
        std::fs::create_dir_all(&lone).unwrap();
        std::fs::write(dir.path().join(".config"), CONFIG).unwrap();
        assert!(files_next_to(&lone.join("bzImage"), "6.1.7").is_empty());
        // Nothing anywhere: the reason names both places.
        let e = find(&lone.join("bzImage"), b"junk", "6.1.7").unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read its configuration (it is not a bzImage with a compressed payload; no config-6.1.7, .config or build tree's .config next to it)"
        );
    }

    #[test]
    fn the_kernels_own_copy_wins_over_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let bz = dir.path().join("bzImage");
        let img = fake_bzimage(&gzip(&fake_vmlinux(CONFIG, 100)));
        std::fs::write(&bz, &img).unwrap();
        std::fs::write(dir.path().join(".config"), "CONFIG_STALE=y\n").unwrap();
        let found = find(&bz, &img, "6.1.7").unwrap();
        assert_eq!(found.origin, ConfigOrigin::Ikconfig);
        assert_eq!(found.text, CONFIG);
        assert_eq!(found.origin.to_string(), "its IKCONFIG");
    }
}
