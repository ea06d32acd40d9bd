//! What an image file is: raw or qcow2, a bare ext2/3/4 file system or a disk with
//! a partition table (MBR or GPT) holding one, and where that file system starts.
//!
//! Only headers are read here (the qcow2 magic, the ext superblock, partition
//! tables); the file system's contents are read with [`super::ext4`].

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::RootfsError;

/// The ext superblock's magic number (`s_magic`).
const EXT_MAGIC: u16 = 0xEF53;
/// Where the superblock starts in an ext file system.
const SUPERBLOCK: u64 = 1024;
/// `s_feature_incompat`: the journal must be replayed before the file system is used.
const INCOMPAT_RECOVER: u32 = 0x4;
/// `s_feature_compat`: the file system has a journal (ext3/ext4).
const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// `s_feature_incompat` bits only ext4 uses (extents, 64bit, flex_bg).
const INCOMPAT_EXT4_ONLY: u32 = 0x40 | 0x80 | 0x200;
/// Sector size assumed for partition tables.
const SECTOR: u64 = 512;

/// How QEMU must open the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A plain disk or file-system image.
    Raw,
    /// QEMU's copy-on-write format.
    Qcow2,
}

impl Format {
    /// QEMU's `format=` value.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    /// Reads the first bytes of `path` to tell raw from qcow2.
    pub fn detect(path: &Path) -> Result<Format, RootfsError> {
        let mut magic = [0u8; 4];
        let mut f = open(path)?;
        let n = f
            .read(&mut magic)
            .map_err(|e| RootfsError::Io(path.to_path_buf(), e.to_string()))?;
        if n == 4 && magic == *b"QFI\xfb" {
            Ok(Format::Qcow2)
        } else {
            Ok(Format::Raw)
        }
    }
}

/// The ext file system's flavour, from its superblock's feature flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtKind {
    /// No journal.
    Ext2,
    /// A journal, no ext4-only features.
    Ext3,
    /// Extents, 64bit or flex_bg.
    Ext4,
}

impl ExtKind {
    /// The name `mount -t` and the kernel's modules use.
    pub fn name(self) -> &'static str {
        match self {
            ExtKind::Ext2 => "ext2",
            ExtKind::Ext3 => "ext3",
            ExtKind::Ext4 => "ext4",
        }
    }
}

/// An ext file system found in a raw image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtFs {
    /// Byte offset of the file system in the image (0 for a bare file system).
    pub offset: u64,
    /// Partition number (1-based, as Linux names `/dev/vdaN`), or None for a bare file system.
    pub partition: Option<u32>,
    /// Its flavour.
    pub kind: ExtKind,
    /// The journal must be replayed (the file system was not cleanly unmounted).
    pub needs_recovery: bool,
}

fn open(path: &Path) -> Result<File, RootfsError> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RootfsError::Missing(path.to_path_buf()),
        _ => RootfsError::Io(path.to_path_buf(), e.to_string()),
    })
}

fn read_at(f: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
    f.seek(SeekFrom::Start(offset))?;
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..])? {
            0 => return Ok(false),
            n => done += n,
        }
    }
    Ok(true)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the ext superblock at `offset`, if there is one.
fn ext_at(f: &mut File, offset: u64, partition: Option<u32>) -> std::io::Result<Option<ExtFs>> {
    let mut sb = [0u8; 1024];
    if !read_at(f, offset + SUPERBLOCK, &mut sb)? || u16_at(&sb, 0x38) != EXT_MAGIC {
        return Ok(None);
    }
    let compat = u32_at(&sb, 0x5C);
    let incompat = u32_at(&sb, 0x60);
    let kind = if incompat & INCOMPAT_EXT4_ONLY != 0 {
        ExtKind::Ext4
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        ExtKind::Ext3
    } else {
        ExtKind::Ext2
    };
    Ok(Some(ExtFs {
        offset,
        partition,
        kind,
        needs_recovery: incompat & INCOMPAT_RECOVER != 0,
    }))
}

/// Partitions of an MBR or GPT disk: (number, byte offset).
fn partitions(f: &mut File) -> std::io::Result<Vec<(u32, u64)>> {
    let mut mbr = [0u8; 512];
    if !read_at(f, 0, &mut mbr)? || mbr[510..512] != [0x55, 0xAA] {
        return Ok(Vec::new());
    }
    let entries: Vec<(u8, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + i * 16..446 + (i + 1) * 16];
            (e[4], u64::from(u32_at(e, 8)))
        })
        .collect();
    if entries.iter().any(|(t, _)| *t == 0xEE) {
        return gpt_partitions(f);
    }
    Ok(entries
        .iter()
        .enumerate()
        .filter(|(_, (kind, start))| *kind != 0 && *start != 0)
        .map(|(i, (_, start))| (i as u32 + 1, start * SECTOR))
        .collect())
}

fn gpt_partitions(f: &mut File) -> std::io::Result<Vec<(u32, u64)>> {
    let mut hdr = [0u8; 92];
    if !read_at(f, SECTOR, &mut hdr)? || &hdr[0..8] != b"EFI PART" {
        return Ok(Vec::new());
    }
    let table = u64_at(&hdr, 72) * SECTOR;
    let count = u32_at(&hdr, 80).min(256);
    let size = u32_at(&hdr, 84) as usize;
    if size < 48 {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut entry = vec![0u8; size];
    for i in 0..count {
        if !read_at(f, table + u64::from(i) * size as u64, &mut entry)? {
            break;
        }
        if entry[0..16].iter().all(|b| *b == 0) {
            continue;
        }
        out.push((i + 1, u64_at(&entry, 32) * SECTOR));
    }
    Ok(out)
}

/// The ext file systems in a raw image: the image itself, or its partitions.
pub fn ext_filesystems(path: &Path) -> Result<Vec<ExtFs>, RootfsError> {
    let io = |e: std::io::Error| RootfsError::Io(path.to_path_buf(), e.to_string());
    let mut f = open(path)?;
    if let Some(fs) = ext_at(&mut f, 0, None).map_err(io)? {
        return Ok(vec![fs]);
    }
    let mut found = Vec::new();
    for (number, offset) in partitions(&mut f).map_err(io)? {
        if let Some(fs) = ext_at(&mut f, offset, Some(number)).map_err(io)? {
            found.push(fs);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn superblock(compat: u32, incompat: u32) -> Vec<u8> {
        let mut img = vec![0u8; 4096];
        img[1024 + 0x38..1024 + 0x3A].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        img[1024 + 0x5C..1024 + 0x60].copy_from_slice(&compat.to_le_bytes());
        img[1024 + 0x60..1024 + 0x64].copy_from_slice(&incompat.to_le_bytes());
        img
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().write_all(data).unwrap();
        p
    }

    #[test]
    fn bare_file_systems_and_their_flavour() {
        let dir = tempfile::tempdir().unwrap();
        let ext4 = write(
            dir.path(),
            "a",
            &superblock(COMPAT_HAS_JOURNAL, 0x40 | INCOMPAT_RECOVER),
        );
        let fs = ext_filesystems(&ext4).unwrap();
        assert_eq!(
            fs,
            vec![ExtFs {
                offset: 0,
                partition: None,
                kind: ExtKind::Ext4,
                needs_recovery: true
            }]
        );
        let ext3 = write(dir.path(), "b", &superblock(COMPAT_HAS_JOURNAL, 0));
        assert_eq!(ext_filesystems(&ext3).unwrap()[0].kind, ExtKind::Ext3);
        let ext2 = write(dir.path(), "c", &superblock(0, 0));
        assert_eq!(ext_filesystems(&ext2).unwrap()[0].kind, ExtKind::Ext2);
        assert_eq!(Format::detect(&ext2).unwrap(), Format::Raw);
        let junk = write(dir.path(), "d", b"not an image");
        assert!(ext_filesystems(&junk).unwrap().is_empty());
        assert!(matches!(
            ext_filesystems(&dir.path().join("nope")),
            Err(RootfsError::Missing(_))
        ));
    }

    #[test]
    fn qcow2_magic() {
        let dir = tempfile::tempdir().unwrap();
        let q = write(dir.path(), "q", b"QFI\xfb\0\0\0\x03");
        assert_eq!(Format::detect(&q).unwrap(), Format::Qcow2);
    }

    #[test]
    fn mbr_partitions_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        // Partition 2 at sector 8 holds the file system; partition 1 (sector 2) is empty.
        let mut img = vec![0u8; 8 * 512];
        for (i, (kind, start)) in [(0x83u8, 2u32), (0x83, 8)].iter().enumerate() {
            let e = 446 + i * 16;
            img[e + 4] = *kind;
            img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
        }
        img[510] = 0x55;
        img[511] = 0xAA;
        img.extend(superblock(COMPAT_HAS_JOURNAL, 0x40));
        let p = write(dir.path(), "disk", &img);
        let fs = ext_filesystems(&p).unwrap();
        assert_eq!(fs.len(), 1);
        assert_eq!((fs[0].partition, fs[0].offset), (Some(2), 8 * 512));
    }

    #[test]
    fn gpt_partitions_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = vec![0u8; 4 * 512];
        // Protective MBR.
        img[446 + 4] = 0xEE;
        img[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
        img[510] = 0x55;
        img[511] = 0xAA;
        // Header at LBA 1: entries at LBA 2, 4 entries of 128 bytes.
        img[512..520].copy_from_slice(b"EFI PART");
        img[512 + 72..512 + 80].copy_from_slice(&2u64.to_le_bytes());
        img[512 + 80..512 + 84].copy_from_slice(&4u32.to_le_bytes());
        img[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
        // Entry 3 (the third slot) starts at LBA 4.
        let e = 1024 + 2 * 128;
        img[e] = 0xAF; // a non-zero type GUID
        img[e + 32..e + 40].copy_from_slice(&4u64.to_le_bytes());
        img.extend(superblock(0, 0x40));
        let p = write(dir.path(), "gpt", &img);
        let fs = ext_filesystems(&p).unwrap();
        assert_eq!(fs.len(), 1);
        assert_eq!((fs[0].partition, fs[0].offset), (Some(3), 4 * 512));
    }
}
