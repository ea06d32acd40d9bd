//! `guestscope deploy --rootfs IMAGE`: installs the agent permanently into an
//! ext2/3/4 image, so the image's own init starts it at every boot and it streams
//! to `guestscope attach` (or any collector listening on the host).
//!
//! What is written (owner root, nothing else touched):
//! - `/usr/lib/guestscope/guestscope-agent` and `/usr/lib/guestscope/workloads/*`:
//!   the static agent and workloads, taken from guestscope's base initramfs;
//! - `/etc/guestscope/plan.json` (root-only): the run plan — guestscope's workloads,
//!   the port, and the secret the agent presents to the collector (`guestscope
//!   attach --plan` with the same plan accepts it). Without a plan given, the one
//!   already in the image is kept, so a second deploy changes nothing; a new one
//!   gets a fresh secret;
//! - for systemd images (`/sbin/init` → systemd, or `/lib/systemd/systemd`):
//!   `/etc/systemd/system/guestscope-agent.service`, enabled the way
//!   `systemctl enable` does it (a `multi-user.target.wants` symlink);
//! - for BusyBox/SysV images with `/etc/init.d/rcS` (Buildroot runs every
//!   `/etc/init.d/S??*`): `/etc/init.d/S99guestscope`, plus `/etc/rc2.d/S99guestscope`
//!   where runlevel directories exist.
//!
//! Writing goes through e2fsprogs' `debugfs -w` (see [`super::ext4`]): no mount, no
//! root. It is idempotent: each file is compared with what the image holds and
//! only differences are written; when nothing differs the image is not opened for
//! writing at all. A qcow2 image is converted to a raw copy next to it, changed,
//! converted back and renamed over the original; one with a backing file or
//! internal snapshots is refused (the round trip would flatten them). A file
//! system that needs journal recovery is refused too. Do not deploy into an image
//! a running VM is using.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use guestscope_common::plan::{BUILTIN_WORKLOAD_DIR, PLAN_PATH, RunPlan, new_secret};

use super::ext4::{Ext4Image, FileKind};
use super::format::Format;
use super::{QEMU_IMG, RootfsError, find_root, run_tool};

/// Where the agent is installed.
pub const AGENT_PATH: &str = "/usr/lib/guestscope/guestscope-agent";
/// The systemd unit.
pub const UNIT_PATH: &str = "/etc/systemd/system/guestscope-agent.service";
/// The unit's enablement symlink.
pub const UNIT_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/guestscope-agent.service";
/// The BusyBox/SysV init script.
pub const INIT_SCRIPT_PATH: &str = "/etc/init.d/S99guestscope";
/// Its runlevel link, where `/etc/rc2.d` exists.
pub const RC2_LINK: &str = "/etc/rc2.d/S99guestscope";

/// How the image starts its services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitSystem {
    /// systemd.
    Systemd,
    /// BusyBox init or SysV rc running `/etc/init.d/rcS`.
    RcScripts,
}

impl InitSystem {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            InitSystem::Systemd => "systemd",
            InitSystem::RcScripts => "init.d scripts",
        }
    }
}

/// Options of `guestscope deploy`.
#[derive(Clone, Debug)]
pub struct DeployOptions {
    /// The image to install into.
    pub image: PathBuf,
    /// guestscope's base initramfs (the agent and workloads come from it).
    pub initrd: PathBuf,
    /// The plan to install; None: keep the image's plan, or make one with a fresh
    /// secret from `new_plan`.
    pub plan: Option<RunPlan>,
    /// The plan a first deploy installs when none is given (its secret is replaced
    /// by a fresh one).
    pub new_plan: RunPlan,
}

/// What a deploy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployReport {
    /// The init system the image uses.
    pub init: InitSystem,
    /// Paths written (empty: everything was already in place).
    pub written: Vec<String>,
    /// Paths already as they should be.
    pub unchanged: Vec<String>,
    /// The plan now in the image (give it to `guestscope attach --plan`).
    pub plan: RunPlan,
}

/// One thing to have in the image.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    File {
        path: String,
        data: Vec<u8>,
        perm: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Item {
    fn path(&self) -> &str {
        match self {
            Item::File { path, .. } | Item::Symlink { path, .. } => path,
        }
    }
}

/// The systemd unit's text.
pub fn systemd_unit() -> String {
    format!(
        "# Installed by `guestscope deploy`.\n\
         [Unit]\n\
         Description=guestscope agent: eBPF probes and workloads, streamed to the host over vsock\n\
         After=systemd-modules-load.service sys-kernel-tracing.mount sys-fs-bpf.mount\n\
         # Keep retrying while no collector listens.\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStartPre=-/sbin/modprobe vmw_vsock_virtio_transport\n\
         ExecStart={AGENT_PATH} --plan {PLAN_PATH}\n\
         Restart=on-failure\n\
         RestartSec=1\n\
         StandardOutput=journal+console\n\
         StandardError=journal+console\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The BusyBox/SysV init script's text.
pub fn init_script() -> String {
    format!(
        "#!/bin/sh\n\
         # guestscope agent, installed by `guestscope deploy`: loads the eBPF probes,\n\
         # runs the plan's workloads and streams to the host over vsock.\n\
         case \"$1\" in start|'') ;; *) exit 0 ;; esac\n\
         mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null\n\
         mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null\n\
         mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf 2>/dev/null\n\
         modprobe vmw_vsock_virtio_transport 2>/dev/null\n\
         # An agent that dies of a signal is restarted (three times at most); it resumes the run.\n\
         (n=0; while :; do\n\
         \x20   {AGENT_PATH} --plan {PLAN_PATH}; s=$?\n\
         \x20   [ $s -gt 128 ] && [ $n -lt 3 ] || exit 0\n\
         \x20   n=$((n + 1)); echo \"guestscope: the agent died (status $s): restarting it ($n of 3)\"; sleep 1\n\
         done) >/dev/console 2>&1 &\n"
    )
}

/// The agent's contents, and each workload's name and contents.
pub type Binaries = (Vec<u8>, Vec<(String, Vec<u8>)>);

/// The agent and the workloads from guestscope's base initramfs.
pub fn binaries_from_initrd(initrd: &Path) -> Result<Binaries, RootfsError> {
    let io = |e: std::io::Error| RootfsError::Io(initrd.to_path_buf(), e.to_string());
    let data = std::fs::read(initrd).map_err(io)?;
    let workload_dir = BUILTIN_WORKLOAD_DIR.trim_start_matches('/');
    let mut agent = None;
    let mut workloads = Vec::new();
    let mut rest: &[u8] = &data;
    loop {
        let mut entry = cpio::newc::Reader::new(rest).map_err(|e| {
            RootfsError::Io(
                initrd.to_path_buf(),
                format!("not guestscope's initramfs (newc cpio): {e}"),
            )
        })?;
        if entry.entry().is_trailer() {
            break;
        }
        let name = entry.entry().name().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(io)?;
        if name == "bin/guestscope-agent" {
            agent = Some(bytes);
        } else if let Some(w) = name
            .strip_prefix(workload_dir)
            .and_then(|w| w.strip_prefix('/'))
            && !w.is_empty()
            && !bytes.is_empty()
        {
            workloads.push((w.to_string(), bytes));
        }
        rest = entry.finish().map_err(io)?;
    }
    let agent = agent.ok_or_else(|| {
        RootfsError::Io(
            initrd.to_path_buf(),
            "has no bin/guestscope-agent: not guestscope's base initramfs".into(),
        )
    })?;
    Ok((agent, workloads))
}

/// How `ext` starts services.
pub fn init_system(ext: &Ext4Image) -> Result<InitSystem, RootfsError> {
    let init_link = ext.read_link("/sbin/init")?.unwrap_or_default();
    if init_link.contains("systemd") || ext.stat("/lib/systemd/systemd")?.is_some() {
        return Ok(InitSystem::Systemd);
    }
    if ext.stat("/etc/init.d/rcS")?.is_some() {
        return Ok(InitSystem::RcScripts);
    }
    Err(RootfsError::Refused(
        ext.image().to_path_buf(),
        "cannot tell how it starts services: no systemd (/sbin/init, /lib/systemd/systemd) and no /etc/init.d/rcS".into(),
    ))
}

fn items(
    init: InitSystem,
    ext: &Ext4Image,
    agent: Vec<u8>,
    workloads: Vec<(String, Vec<u8>)>,
    plan: &RunPlan,
) -> Result<Vec<Item>, RootfsError> {
    let plan_json = serde_json::to_vec_pretty(plan)
        .map_err(|e| RootfsError::Io(PLAN_PATH.into(), e.to_string()))?;
    let mut items = vec![Item::File {
        path: AGENT_PATH.into(),
        data: agent,
        perm: 0o755,
    }];
    for (name, data) in workloads {
        items.push(Item::File {
            path: format!("{BUILTIN_WORKLOAD_DIR}/{name}"),
            data,
            perm: 0o755,
        });
    }
    // Root-only: it holds the secret.
    items.push(Item::File {
        path: PLAN_PATH.into(),
        data: plan_json,
        perm: 0o600,
    });
    match init {
        InitSystem::Systemd => {
            items.push(Item::File {
                path: UNIT_PATH.into(),
                data: systemd_unit().into_bytes(),
                perm: 0o644,
            });
            items.push(Item::Symlink {
                path: UNIT_WANTS.into(),
                target: UNIT_PATH.into(),
            });
        }
        InitSystem::RcScripts => {
            items.push(Item::File {
                path: INIT_SCRIPT_PATH.into(),
                data: init_script().into_bytes(),
                perm: 0o755,
            });
            if ext
                .stat("/etc/rc2.d")?
                .is_some_and(|s| s.kind == FileKind::Dir)
            {
                items.push(Item::Symlink {
                    path: RC2_LINK.into(),
                    target: "../init.d/S99guestscope".into(),
                });
            }
        }
    }
    Ok(items)
}

/// Whether `item` is already in `ext` as it should be.
fn in_place(ext: &Ext4Image, item: &Item) -> Result<bool, RootfsError> {
    let Some(stat) = ext.stat(item.path())? else {
        return Ok(false);
    };
    if (stat.uid, stat.gid) != (0, 0) {
        return Ok(false);
    }
    match item {
        Item::File { path, data, perm } => Ok(stat.kind == FileKind::File
            && stat.perm == *perm
            && stat.size == data.len() as u64
            && ext.read(path)?.as_deref() == Some(data.as_slice())),
        Item::Symlink { path, target } => {
            Ok(stat.kind == FileKind::Symlink && ext.read_link(path)?.as_deref() == Some(target))
        }
    }
}

/// The debugfs commands that put `todo` in place (parents created as needed).
fn script(ext: &Ext4Image, todo: &[&Item], staging: &Path) -> Result<String, RootfsError> {
    let mut lines = Vec::new();
    let mut dirs = BTreeSet::new();
    for item in todo {
        let path = item.path();
        let mut at = 0;
        while let Some(i) = path[at + 1..].find('/') {
            at += i + 1;
            dirs.insert(path[..at].to_string());
        }
    }
    for dir in &dirs {
        if ext.stat(dir)?.is_none() {
            lines.push(format!("mkdir \"{dir}\""));
            lines.push(format!("sif \"{dir}\" mode 040755"));
            lines.push(format!("sif \"{dir}\" uid 0"));
            lines.push(format!("sif \"{dir}\" gid 0"));
        }
    }
    for (i, item) in todo.iter().enumerate() {
        let path = item.path();
        if ext.stat(path)?.is_some() {
            lines.push(format!("rm \"{path}\""));
        }
        match item {
            Item::File { data, perm, .. } => {
                let host = staging.join(i.to_string());
                std::fs::write(&host, data)
                    .map_err(|e| RootfsError::Io(host.clone(), e.to_string()))?;
                lines.push(format!("write \"{}\" \"{path}\"", host.display()));
                lines.push(format!("sif \"{path}\" mode 0{:o}", 0o100000 | perm));
            }
            Item::Symlink { target, .. } => lines.push(format!("symlink \"{path}\" \"{target}\"")),
        }
        lines.push(format!("sif \"{path}\" uid 0"));
        lines.push(format!("sif \"{path}\" gid 0"));
    }
    Ok(lines.join("\n") + "\n")
}

/// Installs into the ext file system of a raw image; returns what was written.
fn deploy_raw(image: &Path, raw: &Path, o: &DeployOptions) -> Result<DeployReport, RootfsError> {
    let fs = find_root(image, raw)?;
    if fs.needs_recovery {
        return Err(RootfsError::Refused(
            image.to_path_buf(),
            "its file system was not cleanly unmounted (the journal needs recovery): shut the VM down cleanly, or run e2fsck -fy on it, then deploy".into(),
        ));
    }
    let ext = Ext4Image::new(raw, fs.offset);
    let init = init_system(&ext)?;
    let (agent, workloads) = binaries_from_initrd(&o.initrd)?;
    let plan = match &o.plan {
        Some(plan) => plan.clone(),
        None => match installed_plan(&ext)? {
            Some(plan) => plan,
            None => {
                let secret = new_secret()
                    .map_err(|e| RootfsError::Io("/dev/urandom".into(), e.to_string()))?;
                RunPlan {
                    secret: Some(secret),
                    ..o.new_plan.clone()
                }
            }
        },
    };
    let wanted = items(init, &ext, agent, workloads, &plan)?;
    let mut todo = Vec::new();
    let mut unchanged = Vec::new();
    for item in &wanted {
        if in_place(&ext, item)? {
            unchanged.push(item.path().to_string());
        } else {
            todo.push(item);
        }
    }
    if !todo.is_empty() {
        let staging = tempfile::Builder::new()
            .prefix("guestscope-deploy-")
            .tempdir()
            .map_err(|e| RootfsError::Io(std::env::temp_dir(), e.to_string()))?;
        let commands = script(&ext, &todo, staging.path())?;
        let output = ext.script(&commands, true)?;
        for item in &todo {
            if !in_place(&ext, item)? {
                let detail = output
                    .lines()
                    .rfind(|l| !l.starts_with("debugfs "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                return Err(RootfsError::Io(
                    image.to_path_buf(),
                    format!("debugfs did not write {} ({detail})", item.path()),
                ));
            }
        }
    }
    Ok(DeployReport {
        init,
        written: todo.iter().map(|i| i.path().to_string()).collect(),
        unchanged,
        plan,
    })
}

/// The plan a previous deploy installed, if it is one with a secret.
fn installed_plan(ext: &Ext4Image) -> Result<Option<RunPlan>, RootfsError> {
    let Some(bytes) = ext.read(PLAN_PATH)? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<RunPlan>(&bytes)
        .ok()
        .filter(|p| p.secret.is_some()))
}

/// Installs the agent into `o.image` (see the module docs).
pub fn deploy(o: &DeployOptions) -> Result<DeployReport, RootfsError> {
    let image = std::path::absolute(&o.image)
        .map_err(|e| RootfsError::Io(o.image.clone(), e.to_string()))?;
    match std::fs::metadata(&image) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(RootfsError::Unsupported(image, "not a regular file".into())),
        Err(_) => return Err(RootfsError::Missing(image)),
    }
    match Format::detect(&image)? {
        Format::Raw => deploy_raw(&image, &image, o),
        Format::Qcow2 => deploy_qcow2(&image, o),
    }
}

fn deploy_qcow2(image: &Path, o: &DeployOptions) -> Result<DeployReport, RootfsError> {
    let info = run_tool(
        Command::new(QEMU_IMG)
            .args(["info", "--output=json", "-f", "qcow2"])
            .arg(image),
        QEMU_IMG,
    )?;
    let info: serde_json::Value = serde_json::from_slice(&info).map_err(|e| {
        RootfsError::Tool(QEMU_IMG.into(), format!("unreadable `info` output: {e}"))
    })?;
    if let Some(backing) = info.get("backing-filename").and_then(|b| b.as_str()) {
        return Err(RootfsError::Refused(
            image.to_path_buf(),
            format!(
                "it is an overlay of {backing}: deploy into a flattened copy (qemu-img convert -O qcow2) or into the backing image"
            ),
        ));
    }
    if info
        .get("snapshots")
        .and_then(|s| s.as_array())
        .is_some_and(|s| !s.is_empty())
    {
        return Err(RootfsError::Refused(
            image.to_path_buf(),
            "it has internal snapshots, which a convert round trip would drop: delete them (qemu-img snapshot -d) or deploy into a copy".into(),
        ));
    }
    let dir = image.parent().unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".guestscope-deploy-")
        .tempdir_in(dir)
        .map_err(|e| RootfsError::Io(dir.to_path_buf(), e.to_string()))?;
    let raw = tmp.path().join("image.raw");
    run_tool(
        Command::new(QEMU_IMG)
            .args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
            .arg(image)
            .arg(&raw),
        QEMU_IMG,
    )?;
    let report = deploy_raw(image, &raw, o)?;
    if !report.written.is_empty() {
        let back = tmp.path().join("image.qcow2");
        run_tool(
            Command::new(QEMU_IMG)
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&back),
            QEMU_IMG,
        )?;
        std::fs::rename(&back, image).map_err(|e| {
            RootfsError::Io(
                image.to_path_buf(),
                format!("replacing it with the new qcow2: {e}"),
            )
        })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_and_script_run_the_installed_agent_with_the_plan() {
        let unit = systemd_unit();
        assert!(unit.contains(&format!("ExecStart={AGENT_PATH} --plan {PLAN_PATH}")));
        assert!(unit.contains("WantedBy=multi-user.target"));
        let script = init_script();
        assert!(script.starts_with("#!/bin/sh\n"));
        assert!(script.contains(&format!("{AGENT_PATH} --plan {PLAN_PATH}")));
        // The shell can read it (the restart loop included).
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert_eq!(
            Path::new(UNIT_WANTS).file_name(),
            Path::new(UNIT_PATH).file_name()
        );
    }

    #[test]
    fn binaries_come_from_the_base_initramfs() {
        use crate::image::{LayerFile, write_layer};
        let files = [
            LayerFile {
                guest_path: "/bin/guestscope-agent".into(),
                data: b"agent",
                mode: 0o755,
            },
            LayerFile {
                guest_path: format!("{BUILTIN_WORKLOAD_DIR}/fopen"),
                data: b"fopen",
                mode: 0o755,
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("base.cpio");
        std::fs::write(&path, write_layer(Vec::new(), &files).unwrap()).unwrap();
        let (agent, workloads) = binaries_from_initrd(&path).unwrap();
        assert_eq!(agent, b"agent");
        assert_eq!(workloads, vec![("fopen".to_string(), b"fopen".to_vec())]);
        let empty = dir.path().join("empty.cpio");
        std::fs::write(&empty, write_layer(Vec::new(), &files[1..]).unwrap()).unwrap();
        assert!(
            binaries_from_initrd(&empty)
                .unwrap_err()
                .to_string()
                .contains("not guestscope's base initramfs")
        );
    }
}
