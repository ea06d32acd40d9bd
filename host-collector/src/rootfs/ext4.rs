//! Reading and writing files in an ext2/3/4 image without mounting it (no root
//! needed), through e2fsprogs' `debugfs`.
//!
//! Why debugfs: it is e2fsprogs' own tool, maintained with the file system itself,
//! installed on every Debian system (e2fsprogs is `Priority: required`), and it
//! reads and writes an image file directly, symlinks in the middle of a path
//! followed (`/lib` → `usr/lib` on merged-/usr systems). Rust crates that read
//! ext4 exist, but none writes it; one tool for both keeps reads and writes
//! consistent. A file system inside a partition is opened at its byte offset
//! (`IMAGE?offset=N`, e2fsprogs' I/O option).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::RootfsError;

/// The debugfs program.
pub const DEBUGFS: &str = "debugfs";

/// An ext file system in an image file.
#[derive(Clone, Debug)]
pub struct Ext4Image {
    image: PathBuf,
    offset: u64,
}

/// What kind of inode a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, fifo, socket).
    Other,
}

/// What `stat` says about a path (the last component not followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Inode kind.
    pub kind: FileKind,
    /// Permission bits.
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// A fast symlink's target (short targets are stored in the inode).
    pub fast_link: Option<String>,
}

impl Ext4Image {
    /// The file system at byte `offset` of `image`.
    pub fn new(image: &Path, offset: u64) -> Ext4Image {
        Ext4Image {
            image: image.to_path_buf(),
            offset,
        }
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        &self.image
    }

    fn spec(&self) -> String {
        if self.offset == 0 {
            self.image.display().to_string()
        } else {
            format!("{}?offset={}", self.image.display(), self.offset)
        }
    }

    fn run(&self, args: &[&str]) -> Result<Output, RootfsError> {
        let out = Command::new(DEBUGFS)
            .args(args)
            .arg(self.spec())
            // `stat` and `ls` page their output when asked to.
            .env("DEBUGFS_PAGER", "__none__")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RootfsError::Tool(DEBUGFS.into(), format!("{e} (install e2fsprogs)")))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(line) = stderr
            .lines()
            .find(|l| l.contains("while trying to open") || l.contains("while opening filesystem"))
        {
            return Err(RootfsError::NotExt(
                self.image.clone(),
                line.trim().to_string(),
            ));
        }
        Ok(out)
    }

    /// `stat` of `path`, or None when it does not exist.
    pub fn stat(&self, path: &str) -> Result<Option<Stat>, RootfsError> {
        check_path(path)?;
        let out = self.run(&["-R", &format!("stat \"{path}\"")])?;
        let text = String::from_utf8_lossy(&out.stdout);
        if !text.contains("Inode:") {
            return Ok(None);
        }
        Ok(Some(parse_stat(&text)))
    }

    /// The contents of the file at `path` (symlinks followed), or None when there is none.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, RootfsError> {
        check_path(path)?;
        let out = self.run(&["-R", &format!("cat \"{path}\"")])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("File not found") || stderr.contains("not found by ext2_lookup") {
            return Ok(None);
        }
        Ok(Some(out.stdout))
    }

    /// The names in directory `path` (without `.` and `..`), or None when it does not exist.
    pub fn list(&self, path: &str) -> Result<Option<Vec<String>>, RootfsError> {
        check_path(path)?;
        let out = self.run(&["-R", &format!("ls -p \"{path}\"")])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("File not found") || stderr.contains("not found by ext2_lookup") {
            return Ok(None);
        }
        Ok(Some(parse_ls_p(&String::from_utf8_lossy(&out.stdout))))
    }

    /// Where the symlink at `path` points, or None if `path` is not a symlink.
    pub fn read_link(&self, path: &str) -> Result<Option<String>, RootfsError> {
        match self.stat(path)? {
            Some(Stat {
                kind: FileKind::Symlink,
                fast_link: Some(t),
                ..
            }) => Ok(Some(t)),
            // A slow symlink keeps its target in a data block, which `cat` prints.
            Some(Stat {
                kind: FileKind::Symlink,
                ..
            }) => {
                let out = self.run(&["-R", &format!("cat \"{path}\"")])?;
                Ok(Some(
                    String::from_utf8_lossy(&out.stdout)
                        .trim_end_matches('\0')
                        .to_string(),
                ))
            }
            _ => Ok(None),
        }
    }

    /// Copies files out: `(path in the image, host destination)` pairs, in one pass.
    pub fn dump(&self, files: &[(String, PathBuf)]) -> Result<(), RootfsError> {
        let mut script = String::new();
        for (guest, host) in files {
            check_path(guest)?;
            script.push_str(&format!("dump \"{guest}\" \"{}\"\n", host.display()));
        }
        self.script(&script, false)?;
        for (guest, host) in files {
            if !host.is_file() {
                return Err(RootfsError::Io(
                    self.image.clone(),
                    format!("debugfs could not copy {guest} out of the image"),
                ));
            }
        }
        Ok(())
    }

    /// Runs debugfs `commands` (one per line), read-write when `write`; returns its output.
    pub fn script(&self, commands: &str, write: bool) -> Result<String, RootfsError> {
        let mut file = tempfile::NamedTempFile::new()
            .map_err(|e| RootfsError::Io(PathBuf::from("/tmp"), e.to_string()))?;
        std::io::Write::write_all(&mut file, commands.as_bytes())
            .map_err(|e| RootfsError::Io(file.path().to_path_buf(), e.to_string()))?;
        let cmd = file.path().display().to_string();
        let mut args = vec!["-f", cmd.as_str()];
        if write {
            args.insert(0, "-w");
        }
        let out = self.run(&args)?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// debugfs paths are quoted with `"`; refuse what the quoting cannot carry.
fn check_path(path: &str) -> Result<(), RootfsError> {
    if !path.starts_with('/') || path.contains(['"', '\n', '\\']) {
        return Err(RootfsError::BadPath(path.to_string()));
    }
    Ok(())
}

/// Parses debugfs `stat` output.
fn parse_stat(text: &str) -> Stat {
    let word_after = |key: &str| -> Option<&str> {
        let at = text.find(key)? + key.len();
        text[at..].split_whitespace().next()
    };
    let kind = match word_after("Type:") {
        Some("regular") => FileKind::File,
        Some("directory") => FileKind::Dir,
        Some("symlink") => FileKind::Symlink,
        _ => FileKind::Other,
    };
    let num = |key: &str| {
        word_after(key)
            .and_then(|w| w.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let perm = word_after("Mode:")
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0)
        & 0o7777;
    let fast_link = text.find("Fast link dest: \"").map(|at| {
        let rest = &text[at + "Fast link dest: \"".len()..];
        rest[..rest.rfind('"').unwrap_or(rest.len())].to_string()
    });
    Stat {
        kind,
        perm,
        uid: num("User:") as u32,
        gid: num("Group:") as u32,
        size: num("Size:"),
        fast_link,
    }
}

/// Parses `ls -p` lines (`/inode/mode/uid/gid/name/size/`).
fn parse_ls_p(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.trim().split('/').collect();
            (fields.len() >= 7).then(|| fields[5].to_string())
        })
        .filter(|n| n != "." && n != ".." && !n.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_output_is_parsed() {
        let file = "Inode: 12   Type: regular    Mode:  0755   Flags: 0x80000\nGeneration: 0    Version: 0x00000000:00000000\nUser:     0   Group:     0   Project:     0   Size: 5812\n";
        let s = parse_stat(file);
        assert_eq!(
            (s.kind, s.perm, s.uid, s.gid, s.size),
            (FileKind::File, 0o755, 0, 0, 5812)
        );
        let link = "Inode: 12   Type: symlink    Mode:  0777   Flags: 0x0\nUser:  1000   Group:   100   Size: 7\nFast link dest: \"usr/lib\"";
        let s = parse_stat(link);
        assert_eq!((s.kind, s.uid, s.gid), (FileKind::Symlink, 1000, 100));
        assert_eq!(s.fast_link.as_deref(), Some("usr/lib"));
    }

    #[test]
    fn ls_p_output_is_parsed() {
        let text = "/15/040755/0/0/.//\n/14/040755/0/0/..//\n/16/040755/0/0/6.1.0-56-amd64//\n/17/100644/0/0/modules.dep/5/\n\n";
        assert_eq!(parse_ls_p(text), ["6.1.0-56-amd64", "modules.dep"]);
    }

    #[test]
    fn unquotable_paths_are_refused() {
        assert!(check_path("/etc/x").is_ok());
        assert!(matches!(check_path("etc/x"), Err(RootfsError::BadPath(_))));
        assert!(matches!(check_path("/a\"b"), Err(RootfsError::BadPath(_))));
    }
}
