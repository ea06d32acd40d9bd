//! Which probe produced an event: its id in the records and on the wire, its name,
//! and what its records carry.

/// Which probe produced an event. The ids are part of the wire format: never
/// reuse a retired id.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "std", derive(serde::Serialize, serde::Deserialize))]
pub enum ProbeKind {
    /// `_raw_spin_lock` entry (fentry, or kprobe when fentry is unavailable).
    SpinLock = 1,
    /// `alloc_fd` entry (kprobe): a file descriptor is being allocated.
    AllocFd = 2,
    /// `exceptions:page_fault_user` tracepoint: a fault taken in user mode.
    PageFaultUser = 3,
    /// `exceptions:page_fault_kernel` tracepoint: a fault taken in kernel mode.
    PageFaultKernel = 4,
    /// A kprobe the user named (`--probe kprobe:FUNC`): one program attached to every
    /// function asked for; [`RawEvent::ip`](crate::RawEvent::ip) says which (`bpf_get_func_ip`) and
    /// [`RawEvent::arg`](crate::RawEvent::arg) is the first argument.
    Kprobe = 5,
    /// A kretprobe the user named (`--probe kretprobe:FUNC`): [`RawEvent::ip`](crate::RawEvent::ip) is the
    /// function, [`RawEvent::arg`](crate::RawEvent::arg) its return value.
    Kretprobe = 6,
    /// A tracepoint the user named (`--probe tracepoint:CATEGORY:NAME`): one program
    /// per slot, each attached to one tracepoint; [`RawEvent::flags`](crate::RawEvent::flags) is the slot (which
    /// says which tracepoint), [`RawEvent::arg`](crate::RawEvent::arg) its first 8 bytes of fields.
    Tracepoint = 7,
    /// An fentry probe the user named (`--probe fentry:FUNC`): one program loaded per
    /// function (fentry binds at load), [`RawEvent::ip`](crate::RawEvent::ip) is the function
    /// (`bpf_get_func_ip`), [`RawEvent::arg`](crate::RawEvent::arg) its first argument.
    Fentry = 8,
}

impl ProbeKind {
    /// Every probe kind, in id order.
    pub const ALL: [ProbeKind; 8] = [
        ProbeKind::SpinLock,
        ProbeKind::AllocFd,
        ProbeKind::PageFaultUser,
        ProbeKind::PageFaultKernel,
        ProbeKind::Kprobe,
        ProbeKind::Kretprobe,
        ProbeKind::Tracepoint,
        ProbeKind::Fentry,
    ];

    /// The built-in probes: fixed functions, selected by name with `--probes`.
    pub const BUILTIN: [ProbeKind; 4] = [
        ProbeKind::SpinLock,
        ProbeKind::AllocFd,
        ProbeKind::PageFaultUser,
        ProbeKind::PageFaultKernel,
    ];

    /// Number of probe kinds; the size of per-kind counter arrays (index = id).
    pub const COUNT: usize = 9;

    /// The probe kind with this id, if any.
    pub const fn from_id(id: u32) -> Option<ProbeKind> {
        match id {
            1 => Some(ProbeKind::SpinLock),
            2 => Some(ProbeKind::AllocFd),
            3 => Some(ProbeKind::PageFaultUser),
            4 => Some(ProbeKind::PageFaultKernel),
            5 => Some(ProbeKind::Kprobe),
            6 => Some(ProbeKind::Kretprobe),
            7 => Some(ProbeKind::Tracepoint),
            8 => Some(ProbeKind::Fentry),
            _ => None,
        }
    }

    /// The stable, human-readable name used in reports and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            ProbeKind::SpinLock => "spin_lock",
            ProbeKind::AllocFd => "alloc_fd",
            ProbeKind::PageFaultUser => "page_fault_user",
            ProbeKind::PageFaultKernel => "page_fault_kernel",
            ProbeKind::Kprobe => "kprobe",
            ProbeKind::Kretprobe => "kretprobe",
            ProbeKind::Tracepoint => "tracepoint",
            ProbeKind::Fentry => "fentry",
        }
    }

    /// The kind of an event named `probe` as events.jsonl and the reports name them: a
    /// built-in probe's name, or a user probe's `KIND:TARGET` (`kprobe:vfs_read`,
    /// `tracepoint:sched:sched_switch`).
    pub fn of_event(probe: &str) -> Option<ProbeKind> {
        Self::from_name(probe).or_else(|| Self::user_from_name(probe.split_once(':')?.0))
    }

    /// The user probe kind named `name` (`fentry`, `kprobe`, `kretprobe`, `tracepoint`).
    pub fn user_from_name(name: &str) -> Option<ProbeKind> {
        Self::ALL
            .into_iter()
            .find(|k| k.is_user() && k.name() == name)
    }

    /// Whether the user names this probe's functions (`--probe`), as opposed to a
    /// built-in probe on a fixed function.
    pub const fn is_user(self) -> bool {
        matches!(
            self,
            ProbeKind::Kprobe | ProbeKind::Kretprobe | ProbeKind::Tracepoint | ProbeKind::Fentry
        )
    }

    /// Whether events of this kind carry the probed function's arguments past the first
    /// ([`crate::StackedEvent::user_args`], sent as [`crate::wire::EventArgs`]): fentry and
    /// kprobe (past a kprobe's entry, the registers as they are there).
    pub const fn carries_args(self) -> bool {
        matches!(self, ProbeKind::Kprobe | ProbeKind::Fentry)
    }

    /// The built-in probe kind with this name (see [`ProbeKind::name`]).
    pub fn from_name(name: &str) -> Option<ProbeKind> {
        Self::BUILTIN.into_iter().find(|k| k.name() == name)
    }
}
