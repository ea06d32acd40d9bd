//! The guest's firmware: qboot, the minimal one QEMU ships, where QEMU has it. Under
//! TCG it reaches the kernel's first line 0.18 s sooner than SeaBIOS with the
//! uncompressed kernel, 0.3 s with a bzImage (measured on the lab's guest). The
//! boot-time experiment keeps QEMU's default SeaBIOS: it measures what the lab
//! measured.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::child::ChildGuard;

/// The file name of qboot in QEMU's data directories.
pub const QBOOT: &str = "qboot.rom";

/// qboot in the data directories of QEMU binary `qemu` (`qemu -L help` lists them),
/// or `None` when QEMU has none (then QEMU's default firmware boots the guest).
/// A QEMU that does not answer within three seconds has none.
pub fn qboot(qemu: &Path) -> Option<PathBuf> {
    let mut child = Command::new(qemu)
        .args(["-L", "help"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdout = child.stdout.take()?;
    // Killed and reaped when dropped, should it not answer in time.
    let mut child = ChildGuard::new("qemu -L help", child);
    child.wait_timeout(ASK_LIMIT).ok()??;
    let mut listing = String::new();
    stdout.read_to_string(&mut listing).ok()?;
    find_in(&listing)
}

/// Longest wait for `qemu -L help`.
const ASK_LIMIT: Duration = Duration::from_secs(3);

/// The first of the directories listed in `dirs` (one per line) that holds [`QBOOT`].
fn find_in(dirs: &str) -> Option<PathBuf> {
    dirs.lines()
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(QBOOT))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qboot_is_found_in_the_first_data_directory_that_has_it() {
        let base = tempfile::tempdir().unwrap();
        let (empty, with) = (base.path().join("a"), base.path().join("b"));
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&with).unwrap();
        std::fs::write(with.join(QBOOT), b"rom").unwrap();
        let listing = format!("{}\n{}\n", empty.display(), with.display());
        assert_eq!(find_in(&listing), Some(with.join(QBOOT)));
        assert_eq!(find_in(&format!("{}\n", empty.display())), None);
        assert_eq!(find_in(""), None);
    }

    #[test]
    fn a_qemu_that_cannot_run_has_no_qboot() {
        assert_eq!(qboot(Path::new("/nonexistent/qemu-system-x86_64")), None);
    }
}
