//! What `guestscope bench` is asked to do ([`BenchOptions`]), and how it fails.

use super::*;

/// Settings of a bench run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Guest kernel.
    pub kernel: PathBuf,
    /// Base initramfs.
    pub initrd: PathBuf,
    /// Where `results.json` and `results.md` go.
    pub out_dir: PathBuf,
    /// Where serial logs and scratch files go.
    pub work_dir: PathBuf,
    /// QEMU binary.
    pub qemu: String,
    /// vhost-device-vsock binary.
    pub vhost_device_vsock: String,
    /// Repetitions of each overhead condition.
    pub reps: usize,
    /// fopen loop iterations.
    pub fopen_iterations: u64,
    /// cpuinfo loop iterations.
    pub cpuinfo_iterations: u64,
    /// Iterations of the gdb-traced loop.
    pub gdb_iterations: u64,
    /// Repetitions of the gdb comparison.
    pub gdb_reps: usize,
    /// Bytes per raw vsock blast.
    pub blast_bytes: u64,
    /// Number of blasts, each followed by a synthetic producer's run that is measured
    /// against it.
    pub blast_reps: usize,
    /// Paced rates of the capacity ladder, events/s (an unpaced step is added).
    pub rates: Vec<u64>,
    /// Seconds each ladder step lasts (at its rate).
    pub step_seconds: f64,
    /// Events of the memory run.
    pub memory_events: u64,
    /// The memory run's events are cut to what fits this long at the measured rate.
    pub memory_budget: Duration,
    /// Which parts to run (`capacity`, `overhead`, `peers`, `instructions`, `memory`,
    /// `stack-cache`, `boot`); empty: all. The gdb
    /// comparison needs the capacity boot's BTF.
    pub only: Vec<String>,
    /// An uncompressed kernel (PVH entry) to time boots with, next to the default one.
    pub fast_kernel: Option<PathBuf>,
    /// Boot-only boots of each kernel for the boot-time figures.
    pub boot_samples: usize,
    /// A root file system with bpftrace (the Debian test guest): the fopen loop runs
    /// there under guestscope, ftrace and bpftrace in one boot (the `peers` part).
    pub peer_rootfs: Option<PathBuf>,
    /// Repetitions of each condition of the peers boot.
    pub peer_reps: usize,
    /// The warm `cargo xtask lab` timing, if measured by the caller.
    pub lab: Option<(f64, Option<PathBuf>)>,
    /// Called with a short description as each step starts.
    pub progress: fn(&str),
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            out_dir: PathBuf::from("bench"),
            work_dir: std::env::temp_dir().join("guestscope-bench"),
            qemu: "qemu-system-x86_64".into(),
            vhost_device_vsock: "vhost-device-vsock".into(),
            reps: 15,
            fopen_iterations: 2000,
            cpuinfo_iterations: 300,
            gdb_iterations: 200,
            gdb_reps: 5,
            blast_bytes: 64 << 20,
            // Five pairs: with three, one slow blast or run moved the median by a third
            // (the pipeline's share of the blast spread 33–70% in one bench).
            blast_reps: 5,
            rates: vec![5_000, 10_000, 20_000, 40_000, 80_000, 160_000],
            step_seconds: 2.0,
            memory_events: 10_000_000,
            memory_budget: Duration::from_secs(300),
            only: Vec::new(),
            fast_kernel: None,
            boot_samples: 3,
            peer_rootfs: None,
            peer_reps: 6,
            lab: None,
            progress: |_| {},
        }
    }
}

/// A bench run that could not start.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad input.
    #[error(transparent)]
    Input(#[from] inputs::InputError),
    /// A boot failed to start.
    #[error("{0}")]
    Boot(String),
    /// Writing the results failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
}
