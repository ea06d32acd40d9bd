//! `events.jsonl` on disk: whole lines only, whatever happens. A write that fails (a
//! full disk) is cut back to the last complete line it wrote, so the file always parses
//! line by line, and every line that fitted stays.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};

/// Bytes gathered before they are written out (at a line boundary).
const BUFFER: usize = 256 * 1024;

/// A file written in whole lines (see the module docs).
pub struct WholeLines {
    file: File,
    buf: Vec<u8>,
    /// Bytes of whole lines on disk.
    committed: u64,
    /// The error that stopped writing, if any: nothing is written after it.
    failed: Option<io::ErrorKind>,
}

impl WholeLines {
    /// Writes whole lines to `file` (empty, just created).
    pub fn new(file: File) -> WholeLines {
        WholeLines {
            file,
            buf: Vec::with_capacity(BUFFER),
            committed: 0,
            failed: None,
        }
    }

    /// Bytes of whole lines written so far.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Writes out the complete lines gathered so far; on failure, cuts the file back to
    /// the last complete line.
    fn write_lines(&mut self) -> io::Result<()> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        let Some(end) = self.buf.iter().rposition(|&b| b == b'\n').map(|i| i + 1) else {
            return Ok(());
        };
        let mut written = 0;
        while written < end {
            match self.file.write(&self.buf[written..end]) {
                Ok(0) => return Err(self.fail(written, io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(written, e)),
            }
        }
        self.committed += end as u64;
        self.buf.drain(..end);
        Ok(())
    }

    /// After `written` bytes of the buffer reached the file and then `e`: keeps the
    /// complete lines among them, cuts the rest, and stops writing.
    fn fail(&mut self, written: usize, e: io::Error) -> io::Error {
        let whole = self.buf[..written]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        self.committed += whole as u64;
        self.failed = Some(e.kind());
        let _ = self.file.set_len(self.committed);
        let _ = self.file.seek(SeekFrom::Start(self.committed));
        e
    }
}

impl Write for WholeLines {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(kind) = self.failed {
            return Err(io::Error::new(kind, "an earlier write failed"));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BUFFER {
            self.write_lines()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_lines()?;
        self.file.flush()
    }
}

impl Drop for WholeLines {
    fn drop(&mut self) {
        let _ = self.write_lines();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file on a 64 KiB tmpfs, when the test may mount one (root); else skipped by
    /// returning None.
    fn tiny_fs() -> Option<(tempfile::TempDir, Unmount)> {
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| {
            let u = Unmount(dir.path().to_path_buf());
            (dir, u)
        })
    }

    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }

    #[test]
    fn a_partial_line_never_reaches_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut w = WholeLines::new(File::create(&path).unwrap());
        w.write_all(b"{\"a\":1}\n{\"b\":").unwrap();
        w.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        w.write_all(b"2}\n").unwrap();
        drop(w);
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n{\"b\":2}\n");
    }

    #[test]
    fn a_full_disk_leaves_whole_lines_and_an_error() {
        let Some((dir, _mounted)) = tiny_fs() else {
            eprintln!("skipped: cannot mount a tmpfs here (not root)");
            return;
        };
        let path = dir.path().join("events.jsonl");
        let mut w = WholeLines::new(File::create(&path).unwrap());
        let line = format!("{{\"event\":\"{}\"}}\n", "x".repeat(100));
        let mut err = None;
        for _ in 0..10_000 {
            if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.flush()) {
                err = Some(e);
                break;
            }
        }
        let err = err.expect("64 KiB filled up");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(
            w.write_all(b"more\n").is_err(),
            "nothing is written after a failure"
        );
        let committed = w.committed();
        drop(w);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len() as u64, committed);
        assert!(text.len() > 30_000, "{} bytes kept", text.len());
        assert!(text.ends_with('\n'));
        assert!(text.lines().all(|l| l == line.trim_end()));
    }
}
