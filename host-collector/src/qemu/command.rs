//! The QEMU command line for a guestscope run.

use qemu_gdb_client::GdbEndpoint;
use std::path::PathBuf;
use std::process::Command;

use super::accel::Accel;
use super::vhost::VsockBackend;

/// Everything that shapes the QEMU command line.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The `qemu-system-x86_64` binary.
    pub binary: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// Guest memory in MiB.
    pub memory_mb: u32,
    /// Number of vCPUs.
    pub cpus: u32,
    /// `-cpu` model, when not QEMU's default.
    pub cpu_model: Option<String>,
    /// `-bios` firmware, when not QEMU's default (SeaBIOS).
    pub bios: Option<PathBuf>,
    /// Kernel image (bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    /// Where the gdbstub listens, if it is on.
    pub gdb: Option<GdbEndpoint>,
    /// The vsock device.
    pub vsock: VsockBackend,
    /// Guest vsock CID.
    pub cid: u32,
    /// Whether the guest's clock counts its instructions (TCG only): see
    /// [`INSTRUCTION_CLOCK`].
    pub instruction_clock: bool,
    /// Extra arguments appended verbatim.
    pub extra: Vec<String>,
}

/// QEMU's instruction counting (`-icount`), at one nanosecond of the guest's clock per
/// guest instruction (`shift=0`): while the guest runs, its clock advances by the
/// instructions it ran, not by the host's time, so a loop timed by its own clock counts
/// its instructions whatever else the host is doing. While the guest idles, its clock
/// follows the host's (`sleep=on`, QEMU's default), so waits on the host (the vsock
/// link) last as long as they do. TCG only.
pub const INSTRUCTION_CLOCK: &str = "shift=0,sleep=on";

/// Guest instructions per µs of the guest's clock under [`INSTRUCTION_CLOCK`]
/// (`shift=0`: one per nanosecond).
pub const INSTRUCTIONS_PER_US: f64 = 1000.0;

impl QemuConfig {
    /// The arguments (without the binary).
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-accel".into(),
            self.accel.as_str().into(),
            "-m".into(),
            format!("{}M", self.memory_mb),
            "-smp".into(),
            self.cpus.to_string(),
            "-display".into(),
            "none".into(),
            "-serial".into(),
            "stdio".into(),
            "-monitor".into(),
            "none".into(),
            "-no-reboot".into(),
            "-kernel".into(),
            self.kernel.display().to_string(),
            "-initrd".into(),
            self.initrd.display().to_string(),
            "-append".into(),
            self.append.clone(),
        ];
        if self.instruction_clock {
            a.extend(["-icount".into(), INSTRUCTION_CLOCK.into()]);
        }
        if let Some(model) = &self.cpu_model {
            a.extend(["-cpu".into(), model.clone()]);
        }
        if let Some(bios) = &self.bios {
            a.extend(["-bios".into(), bios.display().to_string()]);
        }
        if let Some(gdb) = &self.gdb {
            // The gdbstub gives full control of the guest: a Unix socket in the run's
            // private directory, or loopback TCP when asked for.
            a.extend(gdb.qemu_args());
        }
        match &self.vsock {
            VsockBackend::Kernel => {
                a.extend([
                    "-device".into(),
                    format!("vhost-vsock-pci,guest-cid={}", self.cid),
                ]);
            }
            VsockBackend::VhostUser { control, .. } => {
                // vhost-user needs guest memory QEMU can share with the backend.
                a.extend([
                    "-object".into(),
                    format!(
                        "memory-backend-memfd,id=mem,size={}M,share=on",
                        self.memory_mb
                    ),
                    "-machine".into(),
                    "memory-backend=mem".into(),
                    "-chardev".into(),
                    format!("socket,id=vsock0,path={}", control.display()),
                    "-device".into(),
                    "vhost-user-vsock-pci,chardev=vsock0".into(),
                ]);
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// A ready-to-spawn command; QEMU dies with the thread that starts it (see
    /// [`super::child::die_with_parent`]) and creates its sockets (the gdbstub's)
    /// for its own user only ([`super::child::private_files`]).
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.args(self.args());
        super::child::die_with_parent(&mut c);
        super::child::private_files(&mut c);
        c
    }

    /// The command line as one shell-quoted string (for logs and the report).
    pub fn display(&self) -> String {
        std::iter::once(self.binary.display().to_string())
            .chain(self.args())
            .map(|a| shell_quote(&a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> QemuConfig {
        QemuConfig {
            binary: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            memory_mb: 1024,
            cpus: 1,
            cpu_model: None,
            bios: None,
            kernel: "/k".into(),
            initrd: "/i".into(),
            append: "console=ttyS0 panic=-1".into(),
            gdb: Some(GdbEndpoint::Unix("/r/gdb.sock".into())),
            vsock: VsockBackend::VhostUser {
                control: "/r/vhost.sock".into(),
                uds: "/r/vm.vsock".into(),
            },
            cid: 3,
            instruction_clock: false,
            extra: vec![],
        }
    }

    #[test]
    fn gdbstub_listens_on_the_run_s_unix_socket_or_loopback() {
        let args = config().args();
        let i = args.iter().position(|a| a == "-gdb").unwrap();
        assert_eq!(args[i + 1], "chardev:gdbstub");
        assert_eq!(
            args[i - 1],
            "socket,id=gdbstub,path=/r/gdb.sock,server=on,wait=off"
        );
        let tcp = QemuConfig {
            gdb: Some(GdbEndpoint::Tcp(([127, 0, 0, 1], 1234).into())),
            ..config()
        };
        let args = tcp.args();
        let i = args.iter().position(|a| a == "-gdb").unwrap();
        assert_eq!(args[i + 1], "tcp:127.0.0.1:1234");
        assert!(!args.iter().any(|a| a.contains("id=gdbstub")));
    }

    #[test]
    fn vhost_user_vsock_shares_memory_of_the_same_size() {
        let args = config().args().join(" ");
        assert!(args.contains("memory-backend-memfd,id=mem,size=1024M,share=on"));
        assert!(args.contains("vhost-user-vsock-pci,chardev=vsock0"));
        assert!(args.contains("-accel tcg"));
    }

    #[test]
    fn firmware_is_qemus_default_unless_given() {
        assert!(!config().args().iter().any(|a| a == "-bios"));
        let args = QemuConfig {
            bios: Some("/q/qboot.rom".into()),
            ..config()
        }
        .args();
        let i = args.iter().position(|a| a == "-bios").unwrap();
        assert_eq!(args[i + 1], "/q/qboot.rom");
    }

    #[test]
    fn the_instruction_clock_is_asked_for_only_when_wanted() {
        assert!(!config().args().iter().any(|a| a == "-icount"));
        let args = QemuConfig {
            instruction_clock: true,
            ..config()
        }
        .args();
        let i = args.iter().position(|a| a == "-icount").unwrap();
        assert_eq!(args[i + 1], "shift=0,sleep=on");
    }

    #[test]
    fn display_quotes_the_kernel_command_line() {
        assert!(
            config()
                .display()
                .contains("-append 'console=ttyS0 panic=-1'")
        );
    }
}
