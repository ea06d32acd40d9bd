//! The `guestscope` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::lab::LabOptions;
use crate::qemu::accel::Accel;

/// See inside a Linux guest's kernel: eBPF probes in the guest, QEMU's gdbstub on
/// the host, one report.
#[derive(Debug, Parser)]
#[command(name = "guestscope", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log more (`-v` info, `-vv` debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress lines: errors and the final line only.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a guest, run the workloads under the probes, write the report.
    Lab(LabArgs),
    /// Collect from a VM started outside guestscope, whose agent connects to us.
    Attach(AttachArgs),
    /// Install the agent into an ext4 image, started by the image's own init.
    Deploy(DeployArgs),
    /// Measure probe overhead, the gdb method, stream capacity, boot and memory;
    /// write results.json and results.md.
    Bench(BenchArgs),
    /// List the kernel functions --probe can attach to (one boot, then cached).
    Probes(ProbesArgs),
    /// Render a run folder's report.md, report.html and stacks.folded again from its
    /// summary.json, events.jsonl and stacks.jsonl (no boot).
    Report {
        /// The run folder (`guestscope-out` by default, as `lab` writes it).
        #[arg(default_value = "guestscope-out")]
        dir: std::path::PathBuf,
    },
    /// Print a completion script for a shell (`cargo xtask lab` installs them under
    /// target/guestscope/share).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `man target/guestscope/share/man/man1/guestscope.1`).
    Man,
}

/// `guestscope probes` arguments.
#[derive(Debug, clap::Args)]
pub struct ProbesArgs {
    /// Only probes matching this glob: `vfs_*` (every type that takes the function),
    /// `fentry:vfs_*`, `kprobe:vfs_*`; with a ':' (`sched:*`, `tracepoint:sched:*`),
    /// tracepoints instead.
    pub pattern: Option<String>,
    /// Guest kernel image [default: the one `cargo xtask lab` built].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Base initramfs carrying the agent [default: the one `cargo xtask lab` built].
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Boot again even if this kernel's list is cached.
    #[arg(long)]
    pub refresh: bool,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// vhost-device-vsock binary.
    #[arg(long, default_value = "vhost-device-vsock")]
    pub vhost_device_vsock: String,
}

/// `guestscope bench` arguments.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Guest kernel image (bzImage).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Base initramfs carrying the agent (built by `cargo xtask`).
    #[arg(long)]
    pub initrd: PathBuf,
    /// Where results.json and results.md go.
    #[arg(long, default_value = "bench")]
    pub out: PathBuf,
    /// Where serial logs and scratch files go (default: a directory under /tmp).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Repetitions of each probe-overhead condition.
    #[arg(long, default_value_t = 15)]
    pub reps: usize,
    /// Events of the memory run (cut to what fits its time budget at the measured rate).
    #[arg(long, default_value_t = 10_000_000)]
    pub memory_events: u64,
    /// Seconds the memory run may take.
    #[arg(long, default_value_t = 300)]
    pub memory_budget: u64,
    /// Run only these parts (capacity, overhead, memory, stack-cache, boot, peers,
    /// instructions); default: all. The gdb comparison (in overhead) needs the capacity
    /// boot; peers and instructions need --peer-rootfs.
    #[arg(long, value_delimiter = ',', value_parser = ["capacity", "overhead", "memory", "stack-cache", "boot", "peers", "instructions"])]
    pub only: Vec<String>,
    /// A root file system image with bpftrace in /usr/bin (the Debian test guest
    /// `cargo xtask test` makes): the fopen loop runs in it under guestscope, ftrace
    /// and bpftrace, in one boot of --kernel (the `peers` part), and again with the
    /// guest's clock counting its instructions (the `instructions` part, TCG only).
    #[arg(long, value_name = "IMAGE")]
    pub peer_rootfs: Option<PathBuf>,
    /// Repetitions of each condition of the peers boot.
    #[arg(long, default_value_t = 6)]
    pub peer_reps: usize,
    /// An uncompressed kernel (ELF with a PVH entry, e.g. target/guestscope/guest/vmlinux)
    /// whose boot time is measured next to --kernel's.
    #[arg(long, value_name = "FILE")]
    pub fast_kernel: Option<PathBuf>,
    /// Boot-only boots of each kernel for the boot-time figures.
    #[arg(long, default_value_t = 3)]
    pub boot_samples: usize,
    /// Wall seconds of a warm `cargo xtask lab` measured just before (by `cargo xtask bench`).
    #[arg(long, value_name = "SECONDS")]
    pub lab_wall_s: Option<f64>,
    /// That lab run's summary.json (its boot-time samples join the boot figures).
    #[arg(long, value_name = "FILE")]
    pub lab_summary: Option<PathBuf>,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// vhost-device-vsock binary.
    #[arg(long, default_value = "vhost-device-vsock")]
    pub vhost_device_vsock: String,
}

impl From<BenchArgs> for crate::bench::BenchOptions {
    fn from(a: BenchArgs) -> crate::bench::BenchOptions {
        let defaults = crate::bench::BenchOptions::default();
        crate::bench::BenchOptions {
            kernel: a.kernel,
            initrd: a.initrd,
            out_dir: a.out,
            work_dir: a.work_dir.unwrap_or(defaults.work_dir.clone()),
            qemu: a.qemu,
            vhost_device_vsock: a.vhost_device_vsock,
            reps: a.reps.max(1),
            memory_events: a.memory_events.max(2),
            memory_budget: Duration::from_secs(a.memory_budget),
            lab: a.lab_wall_s.map(|s| (s, a.lab_summary)),
            only: a.only,
            fast_kernel: a.fast_kernel,
            boot_samples: a.boot_samples,
            peer_rootfs: a.peer_rootfs,
            peer_reps: a.peer_reps.max(1),
            progress: |step| eprintln!("guestscope bench: {step}"),
            ..defaults
        }
    }
}

/// `guestscope deploy` arguments.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The image to install into: raw ext2/3/4, a disk image with an ext partition, or qcow2.
    #[arg(long, value_name = "IMAGE")]
    pub rootfs: PathBuf,
    /// guestscope's base initramfs, where the agent and workloads come from
    /// [default: target/guestscope/guest/base.cpio of this build].
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// vsock port the agent connects to, for a new plan (`guestscope attach --port`).
    #[arg(long, default_value_t = crate::lab::VSOCK_PORT)]
    pub port: u32,
    /// The plan to install (e.g. from `guestscope attach --write-plan`) [default: keep
    /// the image's plan, or make one with a fresh secret].
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Where to write the installed plan on the host, for `guestscope attach --plan`
    /// [default: IMAGE.plan.json].
    #[arg(long, value_name = "FILE")]
    pub write_plan: Option<PathBuf>,
}

/// `guestscope attach` arguments.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("endpoint").required(true).args(["vsock_uds", "vsock_cid", "print_setup", "write_plan"]).multiple(true)))]
pub struct AttachArgs {
    /// Hybrid-vsock Unix socket base path (vhost-device-vsock's --uds-path); the
    /// agent's connection arrives on `<PATH>_<PORT>`.
    #[arg(long, value_name = "PATH")]
    pub vsock_uds: Option<PathBuf>,
    /// Guest CID, for a VM with a kernel vhost-vsock device (libvirt's `<vsock>`).
    #[arg(long, value_name = "N")]
    pub vsock_cid: Option<u32>,
    /// vsock port the agent connects to.
    #[arg(long, default_value_t = crate::lab::VSOCK_PORT)]
    pub port: u32,
    /// The VM's QEMU gdbstub, shown in the setup text: a Unix socket path
    /// (recommended: only its owner can connect) or a loopback HOST:PORT (every local
    /// user can connect to that, and the gdbstub is code execution in the guest).
    #[arg(long, value_name = "PATH|HOST:PORT", default_value = crate::attach::RECOMMENDED_SOCKET)]
    pub gdb: qemu_gdb_client::GdbEndpoint,
    /// Output directory.
    #[arg(long, default_value = "guestscope-out")]
    pub out: PathBuf,
    /// Seconds to wait for the agent and its stream.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Print the QEMU/libvirt options and guest steps the VM needs, then exit.
    #[arg(long)]
    pub print_setup: bool,
    /// Write the run plan to place in the guest at /etc/guestscope/plan.json (mode
    /// 0600, root only: it holds the run's secret), then exit.
    #[arg(long, value_name = "FILE")]
    pub write_plan: Option<PathBuf>,
    /// The plan the agent was given (from --write-plan): only an agent presenting its
    /// secret is let in. Without it, any agent that connects is.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// With --write-plan: a probe of your own in the plan, as `lab --probe` takes it
    /// (fentry:FUNC, kprobe:FUNC[+OFFSET], kretprobe:FUNC, tracepoint:CATEGORY:NAME,
    /// globs). Repeatable.
    #[arg(long = "probe", value_name = "TYPE:FUNC")]
    pub user_probes: Vec<String>,
}

/// Accelerator choice on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AccelArg {
    /// Decide from the host (KVM only when it can really run a guest).
    Auto,
    /// Force KVM.
    Kvm,
    /// Force TCG.
    Tcg,
}

/// Virtual hardware profiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MachineProfile {
    /// QEMU's `pc` machine with its default devices.
    Default,
    /// The devices of the seed lab's virt-manager VM (Table 2).
    Seed,
}

impl MachineProfile {
    /// Extra QEMU arguments for this profile.
    pub fn qemu_args(self) -> Vec<String> {
        match self {
            MachineProfile::Default => Vec::new(),
            // Fixed slots, clear of the ones QEMU assigns by itself (1-4).
            MachineProfile::Seed => [
                "-vga",
                "qxl",
                "-device",
                "ich9-usb-uhci1,addr=0x5.0x0,multifunction=on",
                "-device",
                "ich9-usb-uhci2,addr=0x5.0x1",
                "-device",
                "ich9-usb-uhci3,addr=0x5.0x2",
                "-device",
                "ich9-usb-ehci1,addr=0x5.0x7",
                "-device",
                "virtio-balloon-pci,addr=0x6",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// `guestscope lab` arguments.
#[derive(Debug, clap::Args)]
pub struct LabArgs {
    /// Guest kernel image (bzImage, or an uncompressed ELF kernel) [default: the one
    /// `cargo xtask lab` built, target/guestscope/guest/vmlinuz].
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Base initramfs carrying the agent [default: the one `cargo xtask lab` built,
    /// target/guestscope/guest/base.cpio].
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "guestscope-out")]
    pub out: PathBuf,
    /// A static program to trace, with its arguments: --workload './prog -n 5', or
    /// named: --workload 'fast=./prog -n 5'. Repeatable (the same program too: unnamed
    /// repeats are called prog, prog#2, ...); each runs after the built-in workloads.
    #[arg(long = "workload", value_name = "'[NAME=]PATH [ARGS...]'")]
    pub workloads: Vec<String>,
    /// Skip guestscope's own workloads.
    #[arg(long)]
    pub no_builtin_workloads: bool,
    /// A program of the host and its arguments, after `--` (as `perf record -- CMD`):
    /// run in the guest from the host's files (read-only, writes go to a tmpfs in the
    /// guest), dynamically linked or not, in the current directory. Runs alone: no
    /// built-in workloads, CR3 or boot-time experiments, no alloc_fd snapshots.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    /// Built-in probes to attach (default: all). Comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub probes: Vec<String>,
    /// A probe of your own: fentry:FUNC (a kernel function's entry through its BTF
    /// trampoline, the cheapest; the event carries the first argument), kprobe:FUNC
    /// (entry, any function ftrace lists) or kprobe:FUNC+OFFSET (bytes in),
    /// kretprobe:FUNC (the return value) or tracepoint:CATEGORY:NAME; names may be
    /// globs ('fentry:vfs_*', 'tracepoint:sched:*'). `guestscope probes` lists them.
    /// Repeatable. Filtered to the workloads like the built-in probes, with the kernel
    /// stack of each hit.
    #[arg(long = "probe", value_name = "TYPE:FUNC")]
    pub user_probes: Vec<String>,
    /// Stop at this kernel function through QEMU's gdbstub while each workload runs
    /// (its own process only, unless --snapshot-comm) and read registers, `current`
    /// and every --read there. Repeatable, up to 4 functions. Replaces the built-in
    /// alloc_fd snapshots.
    #[arg(long = "snapshot-at", value_name = "FUNCTION")]
    pub stop_at: Vec<String>,
    /// What to read at every stop: current->comm, current->mm->pgd,
    /// current->real_parent->pid, arg0..arg5 (arg0->f_path.dentry->d_name.name where
    /// the function's BTF prototype types it), $cr3, $rip, ... Repeatable.
    #[arg(long = "read", value_name = "EXPR")]
    pub reads: Vec<String>,
    /// Stops kept per --snapshot-at function and workload.
    #[arg(long = "snapshots", value_name = "N", default_value_t = crate::lab::DEFAULT_STOPS_PER_SITE)]
    pub stops_per_site: usize,
    /// Keep the stops of tasks with this comm (any process) instead of the workload's.
    #[arg(long = "snapshot-comm", value_name = "NAME")]
    pub stop_comm: Option<String>,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Extra kernel command-line arguments.
    #[arg(long, default_value = "")]
    pub append: String,
    /// Put the gdbstub on this TCP port of 127.0.0.1, where every local user can reach it
    /// (default: a Unix socket in the run's private directory).
    #[arg(long)]
    pub gdb_port: Option<u16>,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: AccelArg,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: String,
    /// vhost-device-vsock binary.
    #[arg(long, default_value = "vhost-device-vsock")]
    pub vhost_device_vsock: String,
    /// Seconds to wait for the agent to connect.
    #[arg(long, default_value_t = 180)]
    pub boot_timeout: u64,
    /// Seconds the whole run may take.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Virtual hardware: `default` (QEMU's pc machine) or `seed` (adds what the
    /// lab's virt-manager VM had: QXL VGA, ICH9 USB UHCI/EHCI, virtio-balloon).
    #[arg(long, value_enum, default_value = "default")]
    pub machine_profile: MachineProfile,
    /// Skip the gdbstub CR3 experiment (two extra boots, PTI on and off).
    #[arg(long)]
    pub no_cr3: bool,
    /// Skip the gdbstub snapshots of the traced run (the fopen workload held at
    /// `alloc_fd` a dozen times, each snapshot checked against the eBPF events).
    #[arg(long)]
    pub no_snapshots: bool,
    /// Extra boots for the boot-time experiment (wall clock versus kernel clock).
    #[arg(long, default_value_t = 5)]
    pub boots: u32,
    /// How many of the boots after the traced run (the boot-time and CR3 boots) may
    /// run at once, one per host core the guest's vCPUs take; 1 runs them one after
    /// another [default: the host's cores, at most 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel_boots: Option<u16>,
    /// Your own root file system (raw ext2/3/4 image, a disk image with an ext
    /// partition, or qcow2): boots --kernel with it, the agent and workloads run
    /// chrooted in it; the image is never written (QEMU snapshot=on).
    #[arg(long, value_name = "IMAGE")]
    pub rootfs: Option<PathBuf>,
    /// A vmlinux with DWARF of --kernel: stack frames then carry file:line and the
    /// functions inlined there [default: the vmlinux next to a kernel `cargo xtask
    /// kernel` built, …/arch/x86/boot/bzImage → …/vmlinux].
    #[arg(long, value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
    /// Size of the probes' ring buffer in bytes (a power of two, at least 4096;
    /// default 1 MiB). A small ring loses events, each counted as `ring_full`.
    #[arg(long, value_name = "BYTES")]
    pub ring_bytes: Option<u32>,
    /// How the probes get each event's kernel stack: `cached` walks a call chain once
    /// and then takes that walk for every hit whose own stack still holds each of its
    /// return addresses; `walk-every` walks every event; `checked` walks every event
    /// and counts the cached stacks that differ (`stack_cache_wrong` in summary.json);
    /// `tallied` counts a hit the stack cache answers per stack in the kernel, with
    /// no event record (every hit still classified by its stack);
    /// `caller` takes the walk of the first hit with the same function, caller and way
    /// into the kernel, reading nothing of the stack in a system call and only its
    /// outermost frame outside one (the frames between may differ
    /// from the hit's own; `caller-checked` walks every hit too and counts the
    /// differences); `caller-tallied` is `caller` with the answered hits counted as
    /// `tallied` does (the cheapest that still classifies every hit by its stack);
    /// `off` records every hit without its stack.
    #[arg(long, value_enum, default_value = "cached")]
    pub stacks: StacksArg,
    /// Have the kernel time every run of the eBPF programs (`BPF_ENABLE_STATS`) and
    /// report each program's runs and time inside it per workload (summary.json
    /// `workloads[].programs`, a table in the report). Costs two clock reads per run.
    #[arg(long)]
    pub program_stats: bool,
    /// Seconds the agent's stream may stay silent (it sends a heartbeat every second)
    /// before the guest is taken for hung: QEMU is stopped and everything received is
    /// written. 0 turns the watchdog off.
    #[arg(long, value_name = "SECS", default_value_t = crate::lab::DEFAULT_WATCHDOG.as_secs())]
    pub watchdog: u64,
    /// Bound of the agent's spool of records not yet acknowledged, in bytes (default
    /// 64 MiB): what a dropped link can hold back before events are dropped (counted).
    #[arg(long, value_name = "BYTES")]
    pub spool_bytes: Option<u64>,
    /// Who the workloads run as in the guest: `nobody` (uid and gid 65534, the default:
    /// a workload cannot read the run's plan and secret) or `root` (for programs that
    /// need privileges; the report says so).
    #[arg(long, value_enum, default_value_t = WorkloadUser::Nobody)]
    pub workload_user: WorkloadUser,
    /// Seconds one workload may run: past it that workload alone is ended (SIGTERM to
    /// its process group, SIGKILL 2 s later), reported as timed out, and the next one
    /// runs. 0: no bound but --timeout.
    #[arg(long, value_name = "SECS", default_value_t = crate::lab::DEFAULT_WORKLOAD_TIMEOUT.as_secs())]
    pub workload_timeout: u64,
    /// Check the inputs and print what the run would start (its boots, the
    /// vhost-device-vsock and QEMU command lines, the agent's plan), then exit
    /// without starting anything.
    #[arg(long)]
    pub dry_run: bool,
}

/// `--stacks`: how the probes get each event's kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StacksArg {
    /// From the stack cache when the call chain was walked before (the default).
    Cached,
    /// Walk every event's stack.
    WalkEvery,
    /// Walk every event's stack and count the cached stacks that differ from it.
    Checked,
    /// As `cached`, and a hit the stack cache answers is only counted per stack in
    /// the kernel: every hit is still classified, at a fraction of the cost, but it has
    /// no line in events.jsonl (no time, thread or lock address of its own).
    Tallied,
    /// No stacks: the probes read nothing of the stack, and every event is recorded
    /// without one (the cheapest record of every hit: no classification by stack, so
    /// the claims that need stacks as evidence cannot be decided).
    Off,
    /// From the stack cache keyed by the probed function, its caller and how the task
    /// entered the kernel, with no read of the stack in a system call and one (the
    /// outermost frame) outside: a hit gets the walk of the first hit with the same
    /// three, whose frames between may differ from its own.
    Caller,
    /// As `caller`, and every hit walked too: the cached stacks that differ from the
    /// walk are counted (`stack_cache_wrong` in summary.json).
    CallerChecked,
    /// As `caller`, and a hit the stack cache answers is only counted per stack in the
    /// kernel, as `tallied` does: the cheapest mode that classifies every hit by its
    /// stack, but the hits counted have no line in events.jsonl.
    CallerTallied,
}

impl StacksArg {
    /// The plan's stack mode.
    pub fn mode(self) -> guestscope_common::plan::StackMode {
        use guestscope_common::plan::StackMode;
        match self {
            StacksArg::Cached => StackMode::Cached,
            StacksArg::WalkEvery => StackMode::WalkEvery,
            StacksArg::Checked => StackMode::Checked,
            StacksArg::Tallied => StackMode::Tallied,
            StacksArg::Off => StackMode::Off,
            StacksArg::Caller => StackMode::Caller,
            StacksArg::CallerChecked => StackMode::CallerChecked,
            StacksArg::CallerTallied => StackMode::CallerTallied,
        }
    }
}

/// `--workload-user`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkloadUser {
    /// uid and gid 65534, no supplementary groups.
    Nobody,
    /// root.
    Root,
}

impl From<LabArgs> for LabOptions {
    fn from(a: LabArgs) -> LabOptions {
        // A host program runs alone, as `perf record -- CMD` traces CMD alone.
        let alone = !a.command.is_empty();
        // The built guest's uncompressed kernel, when the guest is the built one.
        let fast_kernel = (a.kernel.is_none() && a.rootfs.is_none())
            .then(|| crate::built_guest::file(crate::built_guest::KERNEL_ELF))
            .flatten();
        LabOptions {
            fast_kernel,
            // Empty when neither given nor built: validation says so in one line.
            kernel: a
                .kernel
                .or_else(|| crate::built_guest::file(crate::built_guest::KERNEL))
                .unwrap_or_default(),
            initrd: a
                .initrd
                .or_else(|| crate::built_guest::file(crate::built_guest::INITRD))
                .unwrap_or_default(),
            out_dir: a.out,
            workloads: a.workloads,
            builtin_workloads: !a.no_builtin_workloads && !alone,
            probes: a.probes,
            user_probes: a.user_probes,
            stop_at: a.stop_at,
            reads: a.reads,
            stops_per_site: a.stops_per_site,
            stop_comm: a.stop_comm,
            probe_cache: None,
            memory_mb: a.memory,
            cpus: a.cpus,
            qemu: a.qemu,
            vhost_device_vsock: a.vhost_device_vsock,
            append: a.append,
            gdb_port: a.gdb_port,
            workloads_as_root: a.workload_user == WorkloadUser::Root,
            workload_timeout: (a.workload_timeout > 0)
                .then(|| Duration::from_secs(a.workload_timeout)),
            boot_timeout: Duration::from_secs(a.boot_timeout),
            run_timeout: Duration::from_secs(a.timeout),
            accel: match a.accel {
                AccelArg::Auto => None,
                AccelArg::Kvm => Some(Accel::Kvm),
                AccelArg::Tcg => Some(Accel::Tcg),
            },
            boots: if alone { 0 } else { a.boots },
            parallel_boots: a.parallel_boots.map_or_else(host_cores, usize::from),
            rootfs: a.rootfs,
            vmlinux: a.vmlinux,
            command: a.command,
            qemu_extra: a.machine_profile.qemu_args(),
            cr3: !a.no_cr3 && !alone,
            snapshots: !a.no_snapshots && !alone,
            events_bytes: a.ring_bytes,
            stacks: a.stacks.mode(),
            program_stats: a.program_stats,
            watchdog: (a.watchdog > 0).then(|| Duration::from_secs(a.watchdog)),
            spool_bytes: a.spool_bytes,
            link_faults: Vec::new(),
            progress: |step| eprintln!("guestscope: {step}"),
            live: true,
        }
    }
}

/// `--parallel-boots`' default: the host's cores, at most 4 (each boot takes a core
/// and a guest's memory).
fn host_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
