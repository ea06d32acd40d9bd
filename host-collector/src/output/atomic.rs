//! Atomic file replacement: write to a temporary sibling, then rename.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Writes `data` to `path` so that `path` is either the old file or the new one; on
/// failure (a full disk) the temporary file is removed and `path` is left as it was.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_with(path, |out| out.write_all(data))
}

/// Writes `path` through `fill` the same way: into a temporary sibling
/// (`PATH.tmp`), synced, then renamed over `path`; on failure the temporary file is
/// removed. For files written as a stream (the trace, `events.jsonl` rewritten).
pub fn write_with<T>(
    path: &Path,
    fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<T>,
) -> io::Result<T> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = File::create(&tmp).and_then(|f| {
        let mut out = BufWriter::new(f);
        let value = fill(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(&tmp, path)?;
        Ok(value)
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("summary.json");
        super::write(&p, b"1").unwrap();
        super::write(&p, b"22").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"22");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
