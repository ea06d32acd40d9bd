//! The per-run initramfs layer: the run plan and the user's workloads, appended to
//! the base initramfs (the kernel unpacks concatenated cpio archives in order, so
//! the layer adds files without rebuilding or modifying the base image).

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use guestscope_common::plan::{PLAN_PATH, RunPlan, USER_WORKLOAD_DIR};

/// A file to put in the layer.
pub struct LayerFile<'a> {
    /// Absolute path in the guest.
    pub guest_path: String,
    /// Contents.
    pub data: &'a [u8],
    /// Permission bits.
    pub mode: u32,
}

/// Writes a newc archive with `files` (and their parent directories) to `out`.
pub fn write_layer<W: Write>(out: W, files: &[LayerFile<'_>]) -> io::Result<W> {
    let mut out = out;
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let rel = f.guest_path.trim_start_matches('/');
        let mut acc = String::new();
        for part in rel
            .split('/')
            .collect::<Vec<_>>()
            .iter()
            .rev()
            .skip(1)
            .rev()
        {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            if !dirs.contains(&acc) {
                dirs.push(acc.clone());
            }
        }
    }
    let mut ino = 0x6000u32;
    for d in &dirs {
        ino += 1;
        out = cpio::newc::Builder::new(d)
            .ino(ino)
            .mode(0o040755)
            .nlink(2)
            .write(out, 0)
            .finish()?;
    }
    for f in files {
        ino += 1;
        let mut w = cpio::newc::Builder::new(f.guest_path.trim_start_matches('/'))
            .ino(ino)
            .mode(0o100000 | (f.mode & 0o7777))
            .write(out, f.data.len() as u32);
        w.write_all(f.data)?;
        out = w.finish()?;
    }
    cpio::newc::trailer(out)
}

/// Writes `dest` = `base` followed by a layer with the plan and user workloads
/// (`(guest file name, host path)` pairs, placed in [`USER_WORKLOAD_DIR`]).
pub fn build_run_initrd(
    base: &Path,
    plan: &RunPlan,
    user: &[(String, &Path)],
    dest: &Path,
) -> io::Result<()> {
    build_run_initrd_with(base, plan, user, &[], dest)
}

/// [`build_run_initrd`] with `extra` files in the layer too (a root file system's
/// modules and mount settings, [`crate::rootfs::Prepared::layer_files`]).
pub fn build_run_initrd_with(
    base: &Path,
    plan: &RunPlan,
    user: &[(String, &Path)],
    extra: &[LayerFile<'_>],
    dest: &Path,
) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(dest)?);
    io::copy(&mut File::open(base)?, &mut out)?;
    // newc archives are 4-byte aligned; concatenated archives must start aligned.
    let len = fs::metadata(base)?.len();
    let pad = (4 - (len % 4) as usize) % 4;
    out.write_all(&vec![0u8; pad])?;
    let plan_json = serde_json::to_vec_pretty(plan).map_err(io::Error::other)?;
    let blobs: Vec<(String, Vec<u8>)> = user
        .iter()
        .map(|(name, p)| Ok((format!("{USER_WORKLOAD_DIR}/{name}"), fs::read(p)?)))
        .collect::<io::Result<_>>()?;
    let mut files = vec![LayerFile {
        guest_path: PLAN_PATH.to_string(),
        data: &plan_json,
        mode: 0o600,
    }];
    files.extend(blobs.iter().map(|(g, d)| LayerFile {
        guest_path: g.clone(),
        data: d,
        mode: 0o755,
    }));
    files.extend(extra.iter().map(|f| LayerFile {
        guest_path: f.guest_path.clone(),
        data: f.data,
        mode: f.mode,
    }));
    write_layer(&mut out, &files)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layer_contains_parent_dirs_then_files_and_reads_back() {
        let files = [
            LayerFile {
                guest_path: "/etc/guestscope/plan.json".into(),
                data: b"{}",
                mode: 0o600,
            },
            LayerFile {
                guest_path: "/usr/lib/guestscope/user/x".into(),
                data: b"\x7fELF",
                mode: 0o755,
            },
        ];
        let bytes = write_layer(Vec::new(), &files).unwrap();
        let mut names = Vec::new();
        let mut rest: &[u8] = &bytes;
        loop {
            let mut r = cpio::newc::Reader::new(rest).unwrap();
            if r.entry().is_trailer() {
                break;
            }
            names.push((r.entry().name().to_string(), r.entry().mode()));
            let mut data = Vec::new();
            r.read_to_end(&mut data).unwrap();
            if r.entry().name() == "etc/guestscope/plan.json" {
                assert_eq!(data, b"{}");
            }
            rest = r.finish().unwrap();
        }
        let n: Vec<&str> = names.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            n,
            [
                "etc",
                "etc/guestscope",
                "usr",
                "usr/lib",
                "usr/lib/guestscope",
                "usr/lib/guestscope/user",
                "etc/guestscope/plan.json",
                "usr/lib/guestscope/user/x"
            ]
        );
        assert_eq!(names[6].1, 0o100600);
        assert_eq!(names[7].1, 0o100755);
    }
}
