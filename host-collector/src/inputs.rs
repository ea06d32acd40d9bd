//! Checks on what the user gives us, before anything is started: every problem is
//! one clear line, found before a VM boots.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use object::read::elf::{FileHeader, ProgramHeader};

/// A problem with the user's input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The kernel image does not exist.
    #[error("kernel image not found: {0}")]
    KernelMissing(PathBuf),
    /// The file is neither an x86 bzImage nor a 64-bit ELF kernel.
    #[error("not a bootable x86 kernel (no bzImage 'HdrS' header, not a 64-bit ELF): {0}")]
    NotAKernel(PathBuf),
    /// Neither given nor built next to this binary.
    #[error(
        "no {0} given, and no guest built next to this binary (target/guestscope/guest/{1}): run `cargo xtask lab` once, or give {0}"
    )]
    NotBuilt(&'static str, &'static str),
    /// The initramfs does not exist or is empty.
    #[error("initramfs not found or empty: {0}")]
    InitrdMissing(PathBuf),
    /// A `--workload` path does not exist.
    #[error("--workload {0}: no such file")]
    WorkloadMissing(PathBuf),
    /// A `--workload` path is not an executable file.
    #[error("--workload {0}: not an executable file (chmod +x?)")]
    WorkloadNotExecutable(PathBuf),
    /// A `--workload` is not an x86-64 ELF program.
    #[error("--workload {0}: not an x86-64 ELF executable ({1})")]
    WorkloadNotElf(PathBuf, String),
    /// A `--workload` needs a dynamic loader the guest does not have.
    #[error(
        "--workload {0}: dynamically linked (needs {1}); the built-in guest has no libc: build it static (e.g. --target x86_64-unknown-linux-musl or gcc -static)"
    )]
    WorkloadDynamic(PathBuf, String),
    /// A `--workload` spec could not be split into words.
    #[error("--workload '{0}': {1}")]
    WorkloadSyntax(String, String),
    /// Two workloads would have the same name (an explicit `NAME=` clashes).
    #[error(
        "--workload {0}: two workloads named '{1}'; give this one another name (--workload OTHER=CMD)"
    )]
    WorkloadDuplicate(String, String),
    /// `--workload =CMD`, or a name with characters a report or file cannot carry.
    #[error(
        "--workload '{0}': the name before '=' must be letters, digits, '_', '-' or '.', and not empty"
    )]
    WorkloadBadName(String),
    /// An unknown probe name.
    #[error("unknown probe '{0}' (known: {1})")]
    UnknownProbe(String, String),
    /// A `--probe` value that is not a probe.
    #[error(transparent)]
    UserProbe(guestscope_common::user_probe::UserProbeError),
    /// `--snapshot-at`, `--read`, `--snapshot-comm` that cannot work.
    #[error("{0}")]
    Stops(String),
    /// A `--read` expression that does not parse.
    #[error(transparent)]
    Read(guest_kernel::read_expr::ParseError),
    /// `--read` expressions that fail on the guest kernel's types at every stop site,
    /// by its cached BTF.
    #[error("{0} (by this kernel's cached BTF)")]
    ReadsRefused(String),
    /// `--vmlinux` that is not a vmlinux with DWARF.
    #[error("--vmlinux {0}")]
    Vmlinux(String),
    /// A host program (`-- CMD`) that cannot run.
    #[error(transparent)]
    HostProgram(#[from] crate::host_program::HostProgramError),
    /// `--probe` names the kernel does not offer, by its cached probe list.
    #[error("{0} (by this kernel's cached probe list)")]
    ProbesRefused(String),
    /// The gdbstub port is taken.
    #[error("gdb port {0} on 127.0.0.1 is already in use")]
    PortInUse(u16),
    /// The output directory cannot be written.
    #[error("output directory {0} is not writable: {1}")]
    OutDirNotWritable(PathBuf, String),
    /// The ring-buffer size is unusable.
    #[error(
        "--ring-bytes {0}: the probes' ring buffer needs a power of two of at least 4096 bytes"
    )]
    BadRingSize(u32),
    /// A required program is missing.
    #[error("{0} not found: {1}")]
    ProgramMissing(String, String),
    /// The `--rootfs` image cannot be used.
    #[error("--rootfs: {0}")]
    Rootfs(#[from] crate::rootfs::RootfsError),
}

/// Checks that `path` is an x86 bzImage.
pub fn check_kernel(path: &Path) -> Result<(), InputError> {
    if path.as_os_str().is_empty() {
        return Err(InputError::NotBuilt("--kernel", crate::built_guest::KERNEL));
    }
    let mut head = Vec::with_capacity(0x206);
    fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 0x206), &mut head))
        .map_err(|_| InputError::KernelMissing(path.to_path_buf()))?;
    // A bzImage, or an uncompressed 64-bit ELF kernel (QEMU boots it through its PVH entry).
    let bzimage = head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS";
    let elf = head.len() >= 5 && &head[..4] == b"\x7fELF" && head[4] == 2;
    if !bzimage && !elf {
        return Err(InputError::NotAKernel(path.to_path_buf()));
    }
    Ok(())
}

/// Checks that the initramfs exists and is not empty.
pub fn check_initrd(path: &Path) -> Result<(), InputError> {
    if path.as_os_str().is_empty() {
        return Err(InputError::NotBuilt("--initrd", crate::built_guest::INITRD));
    }
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        _ => Err(InputError::InitrdMissing(path.to_path_buf())),
    }
}

/// A user workload, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserWorkload {
    /// Host path of the binary.
    pub path: PathBuf,
    /// Name in the report: given with `NAME=`, else the binary's file name, made
    /// unique by [`name_workloads`].
    pub name: String,
    /// Whether the user gave the name (`--workload NAME=CMD`).
    pub named: bool,
    /// The binary's file name in the guest's user-workload directory (one per
    /// distinct host binary).
    pub guest_file: String,
    /// Arguments.
    pub args: Vec<String>,
}

/// Splits `NAME=CMD` into the name and the command; `None` for a plain command.
/// Only a first word with no `/` and no space before its `=` counts as a name, so
/// `./prog a=b` and `/opt/x=y/prog` stay plain commands.
fn explicit_name(spec: &str) -> Option<(&str, &str)> {
    let (name, cmd) = spec.split_once('=')?;
    let first_word_end = spec.find(char::is_whitespace).unwrap_or(spec.len());
    (name.len() < first_word_end && !name.contains('/')).then_some((name, cmd))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Parses and checks one `--workload '[NAME=]PATH [ARGS...]'` value. Without a
/// `NAME=`, the workload is named after its binary; [`name_workloads`] makes such
/// names unique.
pub fn check_workload(spec: &str) -> Result<UserWorkload, InputError> {
    let (explicit, command) = match explicit_name(spec) {
        Some((name, command)) => {
            if !valid_name(name) {
                return Err(InputError::WorkloadBadName(spec.to_string()));
            }
            (Some(name.to_string()), command)
        }
        None => (None, spec),
    };
    let mut w = check_command(command)?;
    if let Some(name) = explicit {
        w.name = name;
        w.named = true;
    }
    Ok(w)
}

/// Names the user's workloads for the run, in order, next to the names `taken`
/// already (the built-in workloads'): a name given with `NAME=` must be free; a
/// binary's name gets `#2`, `#3`, ... when it is taken (`prog`, `prog#2`), so the
/// same program can run twice with other arguments. The guest gets each distinct
/// host binary once ([`UserWorkload::guest_file`]).
pub fn name_workloads(
    mut user: Vec<UserWorkload>,
    taken: &[&str],
) -> Result<Vec<UserWorkload>, InputError> {
    let mut names: Vec<String> = taken.iter().map(|n| n.to_string()).collect();
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for w in &mut user {
        if w.named {
            if names.contains(&w.name) {
                return Err(InputError::WorkloadDuplicate(
                    format!("{}={}", w.name, w.path.display()),
                    w.name.clone(),
                ));
            }
        } else {
            w.name = unique(&w.name, &names, '#');
        }
        names.push(w.name.clone());
        w.guest_file = match files.iter().find(|(path, _)| *path == w.path) {
            Some((_, file)) => file.clone(),
            None => {
                let base = w
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "workload".into());
                let taken: Vec<String> = files.iter().map(|(_, f)| f.clone()).collect();
                let file = unique(&base, &taken, '-');
                files.push((w.path.clone(), file.clone()));
                file
            }
        };
    }
    Ok(user)
}

/// `base`, or `base{sep}2`, `base{sep}3`, ...: the first not in `taken`.
fn unique(base: &str, taken: &[String], sep: char) -> String {
    (1..)
        .map(|n| {
            if n == 1 {
                base.to_string()
            } else {
                format!("{base}{sep}{n}")
            }
        })
        .find(|name| !taken.contains(name))
        .expect("an unbounded range has a free name")
}

/// Checks one workload command, `PATH [ARGS...]`.
fn check_command(spec: &str) -> Result<UserWorkload, InputError> {
    let words = shell_words::split(spec)
        .map_err(|e| InputError::WorkloadSyntax(spec.to_string(), e.to_string()))?;
    let Some((path, args)) = words.split_first() else {
        return Err(InputError::WorkloadSyntax(spec.to_string(), "empty".into()));
    };
    let path = PathBuf::from(path);
    let meta = fs::metadata(&path).map_err(|_| InputError::WorkloadMissing(path.clone()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(InputError::WorkloadNotExecutable(path));
    }
    let data = fs::read(&path).map_err(|_| InputError::WorkloadMissing(path.clone()))?;
    if let Some(interp) =
        elf_interpreter(&data).map_err(|e| InputError::WorkloadNotElf(path.clone(), e))?
    {
        return Err(InputError::WorkloadDynamic(path, interp));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workload".into());
    Ok(UserWorkload {
        path,
        guest_file: name.clone(),
        name,
        named: false,
        args: args.to_vec(),
    })
}

/// The ELF interpreter (dynamic loader) an x86-64 executable asks for, if any.
pub fn elf_interpreter(data: &[u8]) -> Result<Option<String>, String> {
    let header =
        object::elf::FileHeader64::<object::Endianness>::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    if header.e_machine(endian) != object::elf::EM_X86_64 {
        return Err("not built for x86-64".into());
    }
    for ph in header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?
    {
        if ph.p_type(endian) == object::elf::PT_INTERP {
            let bytes = ph
                .data(endian, data)
                .map_err(|_| "bad PT_INTERP".to_string())?;
            let s = String::from_utf8_lossy(bytes)
                .trim_end_matches('\0')
                .to_string();
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// Checks a ring-buffer size (`--ring-bytes`).
pub fn check_events_bytes(bytes: u32) -> Result<(), InputError> {
    if guestscope_common::plan::valid_events_bytes(bytes) {
        Ok(())
    } else {
        Err(InputError::BadRingSize(bytes))
    }
}

/// Checks that `port` on 127.0.0.1 is free.
pub fn check_port_free(port: u16) -> Result<(), InputError> {
    TcpListener::bind(("127.0.0.1", port))
        .map(drop)
        .map_err(|_| InputError::PortInUse(port))
}

/// A free TCP port on 127.0.0.1 (free when asked; QEMU binds it right after).
pub fn free_port() -> Option<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .ok()?
        .local_addr()
        .ok()
        .map(|a| a.port())
}

/// Creates `dir` if needed and checks a file can be written in it.
pub fn check_out_dir(dir: &Path) -> Result<(), InputError> {
    let fail = |e: std::io::Error| InputError::OutDirNotWritable(dir.to_path_buf(), e.to_string());
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".guestscope-write-test");
    fs::write(&probe, b"ok").map_err(fail)?;
    fs::remove_file(&probe).map_err(fail)
}

/// Finds a program on PATH (or checks an explicit path).
pub fn find_program(name: &str) -> Result<PathBuf, InputError> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(InputError::ProgramMissing(
                name.into(),
                "no such file".into(),
            ))
        };
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(dirs_home_cargo_bin())
        .map(|d| d.join(name))
        .find(|c| c.is_file())
        .ok_or_else(|| InputError::ProgramMissing(name.into(), "not on PATH".into()))
}

fn dirs_home_cargo_bin() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(spec: &str) -> UserWorkload {
        check_workload(spec).unwrap()
    }

    /// The smallest x86-64 ELF header with no program headers: "static" to the checks.
    fn static_elf() -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[6] = 1; // ELF version
        h[16] = 2; // ET_EXEC
        h[18] = 62; // EM_X86_64
        h[20] = 1; // e_version
        h[52] = 64; // e_ehsize
        h[54] = 56; // e_phentsize
        h
    }

    #[test]
    fn the_same_program_twice_gets_two_names_and_one_guest_file() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        fs::write(&prog, static_elf()).unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
        let other_dir = dir.path().join("o");
        fs::create_dir(&other_dir).unwrap();
        let other = other_dir.join("prog");
        fs::copy(&prog, &other).unwrap();
        let p = prog.display();
        let ws = vec![
            workload(&format!("{p} -n 1")),
            workload(&format!("{p} -n 2")),
            workload(&format!("fast={p} -n 3")),
            workload(&format!("{} -n 4", other.display())),
        ];
        let ws = name_workloads(ws, &["fopen"]).unwrap();
        let names: Vec<&str> = ws.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["prog", "prog#2", "fast", "prog#3"]);
        let files: Vec<&str> = ws.iter().map(|w| w.guest_file.as_str()).collect();
        assert_eq!(files, ["prog", "prog", "prog", "prog-2"]);
        assert_eq!(ws[1].args, ["-n", "2"]);
    }

    #[test]
    fn explicit_names_must_be_free_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        fs::write(&prog, static_elf()).unwrap();
        fs::set_permissions(&prog, fs::Permissions::from_mode(0o755)).unwrap();
        let p = prog.display();
        let ws = vec![workload(&format!("fopen={p}"))];
        let err = name_workloads(ws, &["fopen"]).unwrap_err().to_string();
        assert!(err.contains("two workloads named 'fopen'"), "{err}");
        for bad in [format!("={p}"), format!("a b={p}"), format!("x:y={p}")] {
            let e = check_workload(&bad).map(|_| ()).unwrap_err().to_string();
            assert!(
                e.contains("the name before '='") || e.contains("no such file"),
                "{bad}: {e}"
            );
        }
        // '=' in an argument or in a directory name is not a name.
        assert_eq!(explicit_name("./prog a=b"), None);
        assert_eq!(explicit_name("/opt/x=y/prog"), None);
        assert_eq!(explicit_name("n=./prog a=b"), Some(("n", "./prog a=b")));
    }

    #[test]
    fn kernel_checks() {
        let none = check_kernel(Path::new("")).unwrap_err().to_string();
        assert!(
            none.starts_with("no --kernel given") && none.contains("cargo xtask lab"),
            "{none}"
        );
        let none = check_initrd(Path::new("")).unwrap_err().to_string();
        assert!(none.starts_with("no --initrd given"), "{none}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            check_kernel(&missing),
            Err(InputError::KernelMissing(_))
        ));
        let text = dir.path().join("text");
        fs::write(&text, vec![b'x'; 4096]).unwrap();
        assert!(matches!(
            check_kernel(&text),
            Err(InputError::NotAKernel(_))
        ));
        let mut img = vec![0u8; 4096];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        let k = dir.path().join("bz");
        fs::write(&k, img).unwrap();
        check_kernel(&k).unwrap();
        let elf = dir.path().join("vmlinux");
        fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        check_kernel(&elf).unwrap();
        fs::write(&elf, b"\x7fELF\x01\x01\x01").unwrap();
        assert!(
            matches!(check_kernel(&elf), Err(InputError::NotAKernel(_))),
            "32-bit ELF"
        );
    }

    #[test]
    fn workload_checks() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            check_workload(missing.to_str().unwrap()),
            Err(InputError::WorkloadMissing(_))
        ));
        let script = dir.path().join("s.sh");
        fs::write(&script, "#!/bin/sh\n").unwrap();
        assert!(matches!(
            check_workload(script.to_str().unwrap()),
            Err(InputError::WorkloadNotExecutable(_))
        ));
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            check_workload(script.to_str().unwrap()),
            Err(InputError::WorkloadNotElf(..))
        ));
        // The test binary itself is dynamically linked (glibc host build).
        let me = std::env::current_exe().unwrap();
        let spec = format!("{} --flag 'two words'", me.display());
        match check_workload(&spec) {
            Err(InputError::WorkloadDynamic(_, interp)) => assert!(interp.contains("ld-linux")),
            other => panic!("expected dynamic, got {other:?}"),
        }
        assert!(matches!(
            check_workload("'unclosed"),
            Err(InputError::WorkloadSyntax(..))
        ));
    }

    #[test]
    fn port_in_use_is_detected() {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(matches!(check_port_free(port), Err(InputError::PortInUse(p)) if p == port));
    }

    #[test]
    fn unwritable_out_dir_is_one_line() {
        let err = check_out_dir(Path::new("/proc/guestscope-out"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("output directory /proc/guestscope-out is not writable"));
        assert!(!err.contains('\n'));
    }
}
