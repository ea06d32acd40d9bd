//! What a `guestscope lab` run is asked to do ([`LabOptions`]) and its defaults.

use super::*;

/// Options of one lab run (validated by [`run`]).
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Kernel image.
    pub kernel: PathBuf,
    /// The same kernel uncompressed (an ELF `vmlinux` with a PVH entry), booted for
    /// every boot but the boot-time experiment's: QEMU loads it directly, with no
    /// firmware decompressing a bzImage (about 2.5 s per boot under TCG) and no
    /// KASLR, which no other experiment studies. The boot-time boots keep `kernel`,
    /// since the time before the kernel's clock starts is what they measure.
    pub fast_kernel: Option<PathBuf>,
    /// Base initramfs with the agent.
    pub initrd: PathBuf,
    /// Output directory.
    pub out_dir: PathBuf,
    /// `--workload` specs (`PATH [ARGS...]`).
    pub workloads: Vec<String>,
    /// Whether to run guestscope's own workloads.
    pub builtin_workloads: bool,
    /// Built-in probe names; empty = all.
    pub probes: Vec<String>,
    /// Probes the user names (`--probe kprobe:FUNC`, `kretprobe:FUNC`, globs).
    pub user_probes: Vec<String>,
    /// Functions to stop at through the gdbstub while each workload runs
    /// (`--snapshot-at`, at most [`experiments::stops::MAX_SITES`]); they replace the
    /// built-in `alloc_fd` snapshots.
    pub stop_at: Vec<String>,
    /// Expressions read at every stop (`--read`, [`guest_kernel::read_expr`]).
    pub reads: Vec<String>,
    /// Stops kept per site and workload (`--snapshots`).
    pub stops_per_site: usize,
    /// Keep the stops of tasks with this `comm` instead of the workload's own
    /// (`--snapshot-comm`).
    pub stop_comm: Option<String>,
    /// Where the kernels' probe lists are cached ([`crate::probe_catalog`]); `None`:
    /// `$XDG_CACHE_HOME/guestscope/probes`.
    pub probe_cache: Option<PathBuf>,
    /// Guest memory, MiB.
    pub memory_mb: u32,
    /// vCPUs.
    pub cpus: u32,
    /// QEMU binary.
    pub qemu: String,
    /// vhost-device-vsock binary.
    pub vhost_device_vsock: String,
    /// Extra kernel command-line arguments.
    pub append: String,
    /// gdbstub port (None: pick a free one).
    pub gdb_port: Option<u16>,
    /// Longest wait for the agent to connect.
    pub boot_timeout: Duration,
    /// Longest time for the whole run.
    pub run_timeout: Duration,
    /// Force an accelerator instead of detecting.
    pub accel: Option<Accel>,
    /// Extra boots for the boot-time experiment (0 = none).
    pub boots: u32,
    /// Host cores for the boots after the traced run (the boot-time and CR3 boots):
    /// they run side by side, one per core the guest's vCPUs take; 1 = one after
    /// another.
    pub parallel_boots: usize,
    /// Extra QEMU arguments (e.g. a machine profile's devices).
    pub qemu_extra: Vec<String>,
    /// Run the gdbstub CR3 experiment (two extra boots: PTI on and off).
    pub cr3: bool,
    /// Take gdbstub snapshots of the [`SNAPSHOT_WORKLOAD`] in the traced run.
    pub snapshots: bool,
    /// Longest silence of the agent's stream once it is connected (it sends a heartbeat
    /// every second) before the guest is taken for hung and stopped; `None`: no watchdog.
    pub watchdog: Option<Duration>,
    /// Bound of the agent's spool of unacknowledged records, bytes (None: its default).
    pub spool_bytes: Option<u64>,
    /// Faults to inject into the agent's connection (tests of the link's recovery).
    pub link_faults: Vec<LinkFault>,
    /// Size of the probes' ring buffer in bytes (None: the built-in size).
    pub events_bytes: Option<u32>,
    /// How the probes get each event's stack (`--stacks`).
    pub stacks: guestscope_common::plan::StackMode,
    /// The kernel times the eBPF programs' runs, reported per workload (`--program-stats`).
    pub program_stats: bool,
    /// The user's root file system image (`--rootfs`): the agent runs chrooted in it
    /// (see [`crate::rootfs`]).
    pub rootfs: Option<PathBuf>,
    /// A vmlinux with DWARF of the kernel (`--vmlinux`), for file:line in stacks;
    /// `None`: the one next to a kernel built from source, if there is one.
    pub vmlinux: Option<PathBuf>,
    /// A program of the host and its arguments (`guestscope lab -- CMD ARGS`), run in
    /// the guest from the host's files (see [`crate::host_program`]); empty: none.
    pub command: Vec<String>,
    /// Run the workloads as root (`--workload-user root`) instead of the unprivileged
    /// user [`guestscope_common::plan::UNPRIVILEGED_ID`].
    pub workloads_as_root: bool,
    /// Longest run of one workload (`--workload-timeout`): past it the agent ends that
    /// workload alone (SIGTERM, then SIGKILL) and goes on; `None`: no bound but the run's.
    pub workload_timeout: Option<Duration>,
    /// Called with a short description as each step starts.
    pub progress: fn(&str),
    /// Draw the live line while the workloads run ([`crate::progress`]; only when
    /// stderr is a terminal).
    pub live: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            kernel: PathBuf::new(),
            fast_kernel: None,
            initrd: PathBuf::new(),
            out_dir: PathBuf::from("guestscope-out"),
            workloads: Vec::new(),
            builtin_workloads: true,
            probes: Vec::new(),
            user_probes: Vec::new(),
            stop_at: Vec::new(),
            reads: Vec::new(),
            stops_per_site: DEFAULT_STOPS_PER_SITE,
            stop_comm: None,
            probe_cache: None,
            memory_mb: 1024,
            cpus: 1,
            qemu: "qemu-system-x86_64".into(),
            vhost_device_vsock: "vhost-device-vsock".into(),
            append: String::new(),
            gdb_port: None,
            workloads_as_root: false,
            workload_timeout: Some(DEFAULT_WORKLOAD_TIMEOUT),
            boot_timeout: Duration::from_secs(180),
            run_timeout: Duration::from_secs(900),
            accel: None,
            boots: 0,
            parallel_boots: 1,
            qemu_extra: Vec::new(),
            cr3: false,
            snapshots: false,
            watchdog: Some(DEFAULT_WATCHDOG),
            spool_bytes: None,
            link_faults: Vec::new(),
            events_bytes: None,
            stacks: guestscope_common::plan::StackMode::default(),
            program_stats: false,
            rootfs: None,
            vmlinux: None,
            command: Vec::new(),
            progress: |_| {},
            live: false,
        }
    }
}
