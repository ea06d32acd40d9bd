//! Host programs as workloads: `guestscope lab -- ./myprog --n 5` runs a program of
//! the host in the built-in guest, dynamically linked or not, with its libraries from
//! the host. The guest sees the host's whole file system read-only over QEMU's
//! virtio-9p (`-fsdev local,readonly=on`) under a tmpfs overlay that takes every write,
//! so nothing the program writes reaches the host; the agent and the workloads run
//! chrooted there (the guest's init does the mounting, see `xtask/src/init.sh`), and
//! the program starts in the host's current directory, at the same path.
//!
//! 9p rather than virtiofs: QEMU carries 9p itself, where virtiofs needs a
//! `virtiofsd` daemon per run and guest RAM shared with it (a memfd backend), for
//! throughput a short traced program does not need.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::image::LayerFile;

/// The 9p mount tag the guest's init mounts the host's files by.
pub const MOUNT_TAG: &str = "gshost";
/// The file in the guest whose presence tells the init to mount the host's files.
pub const HOSTFS_ENV_PATH: &str = "/etc/guestscope/hostfs.env";

/// A program of the host to run in the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProgram {
    /// The workload's name: the program's file name.
    pub name: String,
    /// Its absolute path (the same in the guest).
    pub path: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The directory it starts in: the host's current directory.
    pub cwd: PathBuf,
}

/// Why a trailing command cannot run.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostProgramError {
    /// `--` with nothing after it.
    #[error("nothing to run after --")]
    Empty,
    /// A name with no `/` that no `PATH` directory holds.
    #[error("-- {0}: not found in PATH")]
    NotInPath(String),
    /// A path to nothing.
    #[error("-- {0}: no such file")]
    NoSuchFile(String),
    /// A path to something that is not an executable file.
    #[error("-- {0}: not an executable file (chmod +x?)")]
    NotExecutable(String),
    /// The current directory cannot be read.
    #[error("-- {0}: the current directory: {1}")]
    NoCwd(String, String),
    /// With `--rootfs`, the guest's files are the image's, not the host's.
    #[error(
        "-- {0}: a host program runs in the built-in guest, which sees the host's files; with --rootfs the guest sees your image: put the program in the image and use --workload"
    )]
    WithRootfs(String),
    /// A script whose `#!` interpreter is not there.
    #[error("-- {0}: its interpreter {1} does not exist")]
    NoInterpreter(String, String),
    /// The program lies where the guest sees its own files instead of the host's.
    #[error(
        "-- {0}: {1} is under {2}, which in the guest is the guest's own: copy it elsewhere (the guest sees the rest of the host's files)"
    )]
    NotVisible(String, String, &'static str),
    /// The current directory is one the guest has its own of.
    #[error(
        "-- {0}: the current directory {1} is under {2}, which in the guest is the guest's own: run from another directory"
    )]
    CwdNotVisible(String, String, &'static str),
}

/// The host directories the guest does not see: its own /proc, /sys and /dev are
/// mounted over them.
pub const GUEST_OWN_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Resolves `command` (program and arguments) as a shell would: a program with a `/`
/// relative to `cwd`, else the first executable of that name in `path_env`'s
/// directories.
pub fn resolve(
    command: &[String],
    cwd: Option<&Path>,
    path_env: Option<&OsStr>,
) -> Result<HostProgram, HostProgramError> {
    let (program, args) = command.split_first().ok_or(HostProgramError::Empty)?;
    let cwd = match cwd {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir()
            .map_err(|e| HostProgramError::NoCwd(program.clone(), e.to_string()))?,
    };
    let path = if program.contains('/') {
        let p = cwd.join(program);
        check_executable(&p, program)?;
        p
    } else {
        path_env
            .map(std::env::split_paths)
            .into_iter()
            .flatten()
            .map(|dir| cwd.join(dir).join(program))
            .find(|p| check_executable(p, program).is_ok())
            .ok_or_else(|| HostProgramError::NotInPath(program.clone()))?
    };
    check_interpreter(&path, program)?;
    // The program and where it starts. Arguments are not checked: `/dev/null` or
    // `/proc/cpuinfo` given to the program mean the guest's own, as they should.
    check_visible(&path, program)?;
    check_visible(&cwd, program).map_err(|e| match e {
        HostProgramError::NotVisible(p, d, own) => HostProgramError::CwdNotVisible(p, d, own),
        e => e,
    })?;
    let name = path
        .file_name()
        .map_or_else(|| program.clone(), |n| n.to_string_lossy().into_owned());
    Ok(HostProgram {
        name,
        path,
        args: args.to_vec(),
        cwd,
    })
}

fn check_executable(path: &Path, shown: &str) -> Result<(), HostProgramError> {
    let meta = std::fs::metadata(path).map_err(|_| HostProgramError::NoSuchFile(shown.into()))?;
    if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
        Ok(())
    } else {
        Err(HostProgramError::NotExecutable(shown.into()))
    }
}

/// A `#!` script's interpreter must exist (the guest runs it from the host's files).
fn check_interpreter(path: &Path, shown: &str) -> Result<(), HostProgramError> {
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    match line.split_whitespace().next() {
        Some(interpreter) if !Path::new(interpreter).exists() => Err(
            HostProgramError::NoInterpreter(shown.into(), interpreter.into()),
        ),
        _ => Ok(()),
    }
}

/// Symbolic links followed from a file named to the guest.
const MAX_LINKS: usize = 8;

/// Neither `file` nor any symbolic link it leads through may be under
/// [`GUEST_OWN_DIRS`] (`/proc/self/exe` leads out of /proc again, so the links are
/// followed one at a time).
fn check_visible(file: &Path, shown: &str) -> Result<(), HostProgramError> {
    let mut at = file.to_path_buf();
    for _ in 0..=MAX_LINKS {
        if let Some(own) = GUEST_OWN_DIRS.into_iter().find(|d| at.starts_with(d)) {
            return Err(HostProgramError::NotVisible(
                shown.into(),
                file.display().to_string(),
                own,
            ));
        }
        match std::fs::read_link(&at) {
            Ok(target) => at = at.parent().unwrap_or(Path::new("/")).join(target),
            Err(_) => break,
        }
    }
    Ok(())
}

/// QEMU's arguments that show the guest the host's files, read-only.
pub fn qemu_args() -> Vec<String> {
    vec![
        "-fsdev".into(),
        // multidevs=remap: inode numbers stay unique across the host's mounts.
        format!("local,id={MOUNT_TAG},path=/,security_model=none,readonly=on,multidevs=remap"),
        "-device".into(),
        format!("virtio-9p-pci,fsdev={MOUNT_TAG},mount_tag={MOUNT_TAG}"),
    ]
}

/// The run initramfs's file that makes the guest's init mount the host's files.
pub fn layer_file() -> LayerFile<'static> {
    LayerFile {
        guest_path: HOSTFS_ENV_PATH.into(),
        data: HOSTFS_ENV.as_bytes(),
        mode: 0o644,
    }
}

/// The content of [`HOSTFS_ENV_PATH`] (sourced by the init).
const HOSTFS_ENV: &str = "GS_HOSTFS_TAG=gshost\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn command(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn names_are_found_as_a_shell_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let prog = bin.join("myprog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let text = bin.join("notes");
        std::fs::write(&text, "x").unwrap();
        let path_env = std::env::join_paths(["/nonexistent", bin.to_str().unwrap()]).unwrap();

        let p = resolve(
            &command(&["myprog", "--n", "5"]),
            Some(dir.path()),
            Some(&path_env),
        )
        .unwrap();
        assert_eq!(p.path, prog);
        assert_eq!(
            (p.name.as_str(), p.args.as_slice()),
            ("myprog", &command(&["--n", "5"])[..])
        );
        assert_eq!(p.cwd, dir.path());
        let rel = resolve(&command(&["./bin/myprog"]), Some(dir.path()), None).unwrap();
        assert_eq!(rel.path, dir.path().join("./bin/myprog"));

        let err = |words: &[&str]| {
            resolve(&command(words), Some(dir.path()), Some(&path_env)).unwrap_err()
        };
        assert_eq!(err(&[]), HostProgramError::Empty);
        assert_eq!(
            err(&["nothere"]),
            HostProgramError::NotInPath("nothere".into())
        );
        assert_eq!(
            err(&["./nothere"]),
            HostProgramError::NoSuchFile("./nothere".into())
        );
        assert_eq!(
            err(&["bin/notes"]),
            HostProgramError::NotExecutable("bin/notes".into())
        );
        assert_eq!(
            err(&["./bin"]),
            HostProgramError::NotExecutable("./bin".into())
        );
    }

    #[test]
    fn what_the_guest_cannot_see_is_refused_before_the_boot() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("run.sh");
        std::fs::write(&script, "#!/nonexistent/interp -x\necho hi\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = |words: &[&str], cwd: &Path| resolve(&command(words), Some(cwd), None);
        assert_eq!(
            err(&["./run.sh"], dir.path()).unwrap_err(),
            HostProgramError::NoInterpreter("./run.sh".into(), "/nonexistent/interp".into())
        );
        std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
        // Arguments naming the guest's own files are the program's business.
        assert!(err(&["./run.sh", "/proc/cpuinfo", "/dev/null"], dir.path()).is_ok());

        // A program reached through /proc (a symbolic link into it), and a working
        // directory under /sys.
        let link = dir.path().join("self");
        std::os::unix::fs::symlink("/proc/self/exe", &link).unwrap();
        let e = err(&["./self"], dir.path()).unwrap_err();
        assert!(
            matches!(&e, HostProgramError::NotVisible(p, _, "/proc") if p == "./self"),
            "{e:?}"
        );
        assert!(e.to_string().contains("copy it elsewhere"), "{e}");
        assert!(matches!(
            err(&[script.to_str().unwrap()], Path::new("/sys")).unwrap_err(),
            HostProgramError::CwdNotVisible(_, _, "/sys")
        ));
    }

    #[test]
    fn the_guest_gets_the_host_read_only() {
        let args = qemu_args().join(" ");
        assert!(
            args.contains("readonly=on") && args.contains("path=/"),
            "{args}"
        );
        assert!(args.contains(&format!("mount_tag={MOUNT_TAG}")), "{args}");
        assert!(HOSTFS_ENV.contains(MOUNT_TAG));
    }
}
