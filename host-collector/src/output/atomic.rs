//! Atomic file replacement: write to a temporary sibling, then rename.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

/// Writes `data` to `path` so that `path` is either the old file or the new one; on
/// failure (a full disk) the temporary file is removed and `path` is left as it was.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
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
