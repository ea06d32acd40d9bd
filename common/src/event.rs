//! Records written by the eBPF probes and read by the agent.
//!
//! Every type here is `#[repr(C)]` with fixed-width fields and no implicit padding,
//! so the probe and the agent agree on its layout byte for byte.

pub use crate::probe_counters::ProbeCounters;
pub use crate::probe_kind::ProbeKind;

/// Stack id value meaning "no stack was recorded" (the probe skipped the walk, or
/// the agent has not assigned an id yet).
pub const NO_STACK: i32 = i32::MIN;

/// Bytes of [`RawEvent::comm`]: the kernel's task name (`TASK_COMM_LEN`).
pub const COMM_BYTES: usize = 16;

/// One probe hit (64 bytes): the head of every ring-buffer record ([`StackedEvent`]),
/// and what `Events` records carry (packed: [`crate::wire::packed`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// `bpf_ktime_get_ns()`: guest CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Probe-specific argument: the lock address (spin_lock), the `end` limit
    /// (alloc_fd), the faulting address (page faults).
    pub arg: u64,
    /// Instruction pointer of a page fault; 0 for other probes.
    pub ip: u64,
    /// [`ProbeKind`] id.
    pub kind: u32,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// Thread-group id (the process id user space sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The stack's id, assigned by the agent (one id per distinct stack, sent once as a
    /// `Stack` record); negative: the stack walk's error (`-errno`), or [`NO_STACK`]
    /// when no walk was made. In a [`StackedEvent`] straight from the probe it is
    /// [`NO_STACK`]: the agent fills it in from [`StackedEvent::stack_bytes`].
    pub stack_id: i32,
    /// Probe-specific flags: the page-fault error code; 0 otherwise.
    pub flags: u32,
    /// `comm` of the current task, NUL-padded.
    pub comm: [u8; COMM_BYTES],
}

const _: () = assert!(core::mem::size_of::<RawEvent>() == 64);

/// Bytes of a [`RawEvent`] in its fixed layout.
pub const RAW_EVENT_BYTES: usize = 64;

impl RawEvent {
    /// The event in its fixed layout: the fields in declaration order, little endian,
    /// no padding (the `repr(C)` layout on x86-64). The stream carries events this
    /// way: one store per field to encode, one load per field to decode, where
    /// variable-length integers cost a loop per field (measured: encoding was a
    /// quarter of the agent's time per event).
    pub fn to_le_bytes(&self) -> [u8; RAW_EVENT_BYTES] {
        let mut b = [0u8; RAW_EVENT_BYTES];
        b[0..8].copy_from_slice(&self.ts_ns.to_le_bytes());
        b[8..16].copy_from_slice(&self.arg.to_le_bytes());
        b[16..24].copy_from_slice(&self.ip.to_le_bytes());
        b[24..28].copy_from_slice(&self.kind.to_le_bytes());
        b[28..32].copy_from_slice(&self.cpu.to_le_bytes());
        b[32..36].copy_from_slice(&self.pid.to_le_bytes());
        b[36..40].copy_from_slice(&self.tid.to_le_bytes());
        b[40..44].copy_from_slice(&self.stack_id.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b[48..64].copy_from_slice(&self.comm);
        b
    }

    /// The event of its fixed layout ([`RawEvent::to_le_bytes`]).
    pub fn from_le_bytes(b: &[u8; RAW_EVENT_BYTES]) -> RawEvent {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        RawEvent {
            ts_ns: u64_at(0),
            arg: u64_at(8),
            ip: u64_at(16),
            kind: u32_at(24),
            cpu: u32_at(28),
            pid: u32_at(32),
            tid: u32_at(36),
            stack_id: u32_at(40) as i32,
            flags: u32_at(44),
            comm: b[48..64].try_into().expect("16 bytes"),
        }
    }

    /// An event of `kind` from process `pid` (its main thread) at `ts_ns`, with
    /// every other field zero, no stack ([`NO_STACK`]) and an empty `comm`: the one
    /// constructor tests and synthetic producers start from (set the rest with
    /// struct-update syntax and [`RawEvent::with_comm`]).
    pub const fn new(kind: ProbeKind, pid: u32, ts_ns: u64) -> RawEvent {
        RawEvent {
            ts_ns,
            arg: 0,
            ip: 0,
            kind: kind as u32,
            cpu: 0,
            pid,
            tid: pid,
            stack_id: NO_STACK,
            flags: 0,
            comm: [0; COMM_BYTES],
        }
    }

    /// This event with `comm` set to `name` (cut to 15 bytes, NUL-padded, as the
    /// kernel keeps it).
    pub fn with_comm(mut self, name: &str) -> RawEvent {
        self.comm = [0; COMM_BYTES];
        let n = name.len().min(15);
        self.comm[..n].copy_from_slice(&name.as_bytes()[..n]);
        self
    }

    /// The probe kind, if the id is known.
    pub fn probe(&self) -> Option<ProbeKind> {
        ProbeKind::from_id(self.kind)
    }

    /// `comm` up to its first NUL byte.
    pub fn comm_bytes(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..end]
    }
}

/// Most kernel frames a probe records per event.
///
/// The deepest stacks seen in this lab are interrupts taken during a system call or a
/// page fault: 20 to 30 frames, plus the two `bpf_prog`/`bpf_trampoline` frames of an
/// fentry probe. 64 leaves room for deeper ones while keeping a [`StackedEvent`] at
/// 608 bytes (the kernel's own limit, `PERF_MAX_STACK_DEPTH`, is 127). A deeper stack
/// keeps its innermost 64 frames.
pub const MAX_STACK_FRAMES: usize = 64;

/// Arguments past the first that a user probe at a function's entry carries (`rsi`,
/// `rdx`, `rcx`, `r8`, `r9`: the rest of the x86-64 calling convention's six).
pub const USER_ARGS: usize = 5;

/// Frames a probe that carries [`USER_ARGS`] walks: its arguments take the last
/// slots of [`StackedEvent::ips`].
pub const USER_STACK_FRAMES: usize = MAX_STACK_FRAMES - USER_ARGS;

/// Where a probe at a function's entry found the function and its caller.
///
/// At a function's entry the function has not pushed its frame yet. The ORC unwinder
/// knows that and records the caller; the frame-pointer unwinder (a kernel built with
/// `CONFIG_UNWINDER_FRAME_POINTER`, as the lab's was) follows the caller's saved frame
/// pointer instead and so skips the immediate caller: `_raw_spin_lock ←
/// get_unused_fd_flags` where the caller was `alloc_fd`. The probe reads the return
/// address at the stack pointer on entry (what libbpf's `BPF_KPROBE_READ_RET_IP`
/// reads), and [`EntryCaller::recover`] puts it back into the walk when the walk lacks
/// it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryCaller {
    /// The probed function's own frame as the stack walk records it (a kprobe's saved
    /// `rip`, an fentry trampoline's return address into the function); 0 if unknown.
    pub frame: u64,
    /// The return address into the function's caller, read at the stack pointer on
    /// entry; 0 if unknown (tracepoints, return probes, places inside a function).
    pub caller: u64,
}

/// How deep in a walk [`EntryCaller::frame`] may be: past the probe's own frames (an
/// fentry walk starts in the BPF program and its trampoline).
const ENTRY_FRAME_SEARCH: usize = 6;

impl EntryCaller {
    /// Nothing known: the walk is kept as it is.
    pub const UNKNOWN: EntryCaller = EntryCaller {
        frame: 0,
        caller: 0,
    };

    /// Where the walk lacks the caller: the index of the probed function's frame when
    /// the caller does not follow it, `None` when nothing is to be put back (the walk
    /// has the caller, the function's frame is not near the top, nothing is known).
    /// What [`EntryCaller::recover`] decides, without a buffer to write into.
    pub fn missing_after(&self, frames: &[u64]) -> Option<usize> {
        if self.frame == 0 || self.caller == 0 {
            return None;
        }
        let at = frames
            .iter()
            .take(ENTRY_FRAME_SEARCH)
            .position(|&f| f == self.frame)?;
        (frames.get(at + 1) != Some(&self.caller)).then_some(at)
    }

    /// `frames` with the caller put back right after the probed function's frame,
    /// written to `out`; the number of frames written, or `None` when the walk already
    /// has the caller there, the function's frame is not near the top of the walk or
    /// nothing is known (then `frames` is right as it is). A walk that fills the record
    /// loses its outermost frame.
    pub fn recover(&self, frames: &[u64], out: &mut [u64; MAX_STACK_FRAMES]) -> Option<usize> {
        let at = self.missing_after(frames)?;
        let len = (frames.len() + 1).min(MAX_STACK_FRAMES);
        out[..=at].copy_from_slice(&frames[..=at]);
        out[at + 1] = self.caller;
        out[at + 2..len].copy_from_slice(&frames[at + 1..len - 1]);
        Some(len)
    }
}

/// The ring-buffer record of a hit whose stack was walked: the hit and its kernel
/// stack, as `bpf_get_stack` wrote it (608 bytes).
///
/// The agent de-duplicates stacks and turns [`StackedEvent::stack_bytes`] into
/// [`RawEvent::stack_id`]. A hit whose stack came from the probes' stack cache travels
/// as the shorter [`CachedEvent`](crate::CachedEvent) instead, naming the cache entry a [`StackedEvent`]
/// filled before it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackedEvent {
    /// The hit; its `stack_id` is [`NO_STACK`] (the agent assigns ids).
    pub event: RawEvent,
    /// What `bpf_get_stack` returned: the bytes of [`StackedEvent::ips`] it filled
    /// (8 per frame), or a negative errno when the walk failed.
    pub stack_bytes: i32,
    /// The stack-cache entry this walk was kept in, as [`CacheSlot::tag`](crate::CacheSlot::tag) numbers
    /// it ([`CacheSlot::NONE`](crate::CacheSlot::NONE): not kept). Later hits of the same CPU that the entry answers
    /// are [`CachedEvent`](crate::CachedEvent)s naming it, until another walk is kept
    /// there.
    pub cache_slot: u32,
    /// The function's frame and caller, for walks that miss the caller.
    pub entry: EntryCaller,
    /// What the probes had counted, with no record, for the walk this one replaced in
    /// its stack-cache entry ([`StackedEvent::cache_slot`]) since that entry's tally
    /// was last reset ([`crate::plan::StackMode::Tallied`]); the tally starts again
    /// from 0 for this walk. 0 when the walk was not kept.
    pub replaced_tally: u64,
    /// Return addresses, innermost first; only the first `stack_bytes / 8` are meaningful
    /// (the kernel zeroes the rest).
    pub ips: [u64; MAX_STACK_FRAMES],
}

const _: () =
    assert!(core::mem::size_of::<StackedEvent>() == 64 + 8 + 16 + 8 + 8 * MAX_STACK_FRAMES);
const _: () = assert!(core::mem::size_of::<StackedEvent>() == 608);

/// Why [`StackedEvent::frames`] found no frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(thiserror::Error))]
pub enum StackError {
    /// The walk failed with this (negative) errno.
    #[cfg_attr(feature = "std", error("the stack walk failed (-errno {0})"))]
    Walk(i32),
    /// The walk reported a length that is not a whole number of frames within
    /// [`MAX_STACK_FRAMES`].
    #[cfg_attr(
        feature = "std",
        error("the stack walk reported {0} bytes, not whole frames within the record")
    )]
    BadLength(i32),
    /// The walk succeeded but recorded no frame.
    #[cfg_attr(feature = "std", error("the stack walk recorded no frame"))]
    Empty,
}

impl StackedEvent {
    /// Arguments 1 to 5 of an event whose kind [carries them](ProbeKind::carries_args)
    /// (the probe writes them past its shorter stack walk).
    pub fn user_args(&self) -> [u64; USER_ARGS] {
        let mut args = [0; USER_ARGS];
        args.copy_from_slice(&self.ips[USER_STACK_FRAMES..]);
        args
    }

    /// The recorded frames, innermost first.
    pub fn frames(&self) -> Result<&[u64], StackError> {
        let bytes = self.stack_bytes;
        if bytes < 0 {
            return Err(StackError::Walk(bytes));
        }
        let len = bytes as usize;
        if !len.is_multiple_of(8) || len / 8 > MAX_STACK_FRAMES {
            return Err(StackError::BadLength(bytes));
        }
        if len == 0 {
            return Err(StackError::Empty);
        }
        Ok(&self.ips[..len / 8])
    }
}

#[cfg(feature = "user")]
// SAFETY: RawEvent is repr(C), has only integer fields and no padding (size asserted).
unsafe impl aya::Pod for RawEvent {}
#[cfg(feature = "user")]
// SAFETY: StackedEvent is repr(C), has only integer fields and no padding (size asserted).
unsafe impl aya::Pod for StackedEvent {}

/// Serde sees a [`RawEvent`] as its fixed layout, a tuple of [`RAW_EVENT_BYTES`]
/// bytes (postcard writes them as they are), so the generic path and the `Events`
/// fast path of the wire write the same bytes.
#[cfg(feature = "std")]
mod raw_event_serde {
    use serde::de::{Error as _, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{RAW_EVENT_BYTES, RawEvent};

    impl Serialize for RawEvent {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut t = serializer.serialize_tuple(RAW_EVENT_BYTES)?;
            for b in self.to_le_bytes() {
                t.serialize_element(&b)?;
            }
            t.end()
        }
    }

    impl<'de> Deserialize<'de> for RawEvent {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Bytes;
            impl<'de> Visitor<'de> for Bytes {
                type Value = RawEvent;
                fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                    write!(f, "an event's {RAW_EVENT_BYTES} bytes")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawEvent, A::Error> {
                    let mut b = [0u8; RAW_EVENT_BYTES];
                    for (i, byte) in b.iter_mut().enumerate() {
                        *byte = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                    }
                    Ok(RawEvent::from_le_bytes(&b))
                }
            }
            deserializer.deserialize_tuple(RAW_EVENT_BYTES, Bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacked(stack_bytes: i32) -> StackedEvent {
        let event = RawEvent::new(ProbeKind::SpinLock, 1, 0);
        let mut ips = [0; MAX_STACK_FRAMES];
        for (i, ip) in ips.iter_mut().enumerate() {
            *ip = 0xffff_ffff_8100_0000 + i as u64;
        }
        StackedEvent {
            event,
            stack_bytes,
            cache_slot: crate::CacheSlot::NONE,
            entry: EntryCaller::UNKNOWN,
            replaced_tally: 0,
            ips,
        }
    }

    const FUNC: u64 = 0xffff_ffff_8190_0005; // _raw_spin_lock+5
    const CALLER: u64 = 0xffff_ffff_8130_0040; // alloc_fd+0x40
    const CALLERS_CALLER: u64 = 0xffff_ffff_8130_0123; // get_unused_fd_flags+0x23
    const BPF: [u64; 2] = [0xffff_ffff_c020_1020, 0xffff_ffff_c020_3010];

    fn entry() -> EntryCaller {
        EntryCaller {
            frame: FUNC,
            caller: CALLER,
        }
    }

    #[test]
    fn a_walk_that_skipped_the_caller_gets_it_back_after_the_function() {
        // The frame-pointer unwinder at an fentry: BPF frames, the function, then the
        // caller's caller.
        let walk = [BPF[0], BPF[1], FUNC, CALLERS_CALLER, 7];
        let mut out = [0; MAX_STACK_FRAMES];
        let n = entry().recover(&walk, &mut out).expect("recovered");
        assert_eq!(
            &out[..n],
            &[BPF[0], BPF[1], FUNC, CALLER, CALLERS_CALLER, 7]
        );
    }

    #[test]
    fn a_walk_that_has_the_caller_is_left_alone() {
        // The ORC unwinder, or a kprobe's walk from pt_regs.
        let mut out = [0; MAX_STACK_FRAMES];
        assert_eq!(entry().recover(&[FUNC, CALLER, 7], &mut out), None);
        assert_eq!(
            entry().recover(&[BPF[0], BPF[1], FUNC, CALLER], &mut out),
            None
        );
    }

    #[test]
    fn nothing_is_added_without_the_function_near_the_top_or_without_a_caller() {
        let mut out = [0; MAX_STACK_FRAMES];
        // The function's frame is not in the walk (a walk that starts elsewhere).
        assert_eq!(entry().recover(&[1, 2, CALLERS_CALLER], &mut out), None);
        // It is, but too deep to be the probed call.
        let deep = [1, 2, 3, 4, 5, 6, FUNC, CALLERS_CALLER];
        assert_eq!(entry().recover(&deep, &mut out), None);
        // Nothing read at entry.
        let walk = [FUNC, CALLERS_CALLER];
        assert_eq!(EntryCaller::UNKNOWN.recover(&walk, &mut out), None);
        let no_caller = EntryCaller {
            caller: 0,
            ..entry()
        };
        assert_eq!(no_caller.recover(&walk, &mut out), None);
    }

    #[test]
    fn a_full_walk_keeps_its_length_and_loses_its_outermost_frame() {
        let mut walk = [0; MAX_STACK_FRAMES];
        for (i, f) in walk.iter_mut().enumerate() {
            *f = 1000 + i as u64;
        }
        walk[0] = FUNC;
        let mut out = [0; MAX_STACK_FRAMES];
        let n = entry().recover(&walk, &mut out).expect("recovered");
        assert_eq!(n, MAX_STACK_FRAMES);
        assert_eq!(&out[..3], &[FUNC, CALLER, 1001]);
        assert_eq!(out[MAX_STACK_FRAMES - 1], walk[MAX_STACK_FRAMES - 2]);
        // A caller found in the last frame of a walk is appended.
        let n = entry().recover(&[FUNC], &mut out).expect("recovered");
        assert_eq!(&out[..n], &[FUNC, CALLER]);
    }

    #[test]
    fn event_names_give_their_kind() {
        assert_eq!(ProbeKind::of_event("alloc_fd"), Some(ProbeKind::AllocFd));
        assert_eq!(
            ProbeKind::of_event("kprobe:vfs_read"),
            Some(ProbeKind::Kprobe)
        );
        assert_eq!(
            ProbeKind::of_event("tracepoint:sched:sched_switch"),
            Some(ProbeKind::Tracepoint)
        );
        assert_eq!(ProbeKind::of_event("kprobe"), None);
        assert_eq!(ProbeKind::of_event("alloc_fd:x"), None);
        assert_eq!(ProbeKind::of_event("unknown"), None);
    }

    #[test]
    fn frames_follow_the_walks_length() {
        assert_eq!(
            stacked(16).frames(),
            Ok(&[0xffff_ffff_8100_0000, 0xffff_ffff_8100_0001][..])
        );
        assert_eq!(
            stacked(8 * MAX_STACK_FRAMES as i32)
                .frames()
                .map(<[u64]>::len),
            Ok(64)
        );
    }

    #[test]
    fn unusable_lengths_are_errors() {
        assert_eq!(stacked(-17).frames(), Err(StackError::Walk(-17)));
        assert_eq!(stacked(12).frames(), Err(StackError::BadLength(12)));
        assert_eq!(stacked(8 * 65).frames(), Err(StackError::BadLength(8 * 65)));
        assert_eq!(
            stacked(i32::MAX).frames(),
            Err(StackError::BadLength(i32::MAX))
        );
        assert_eq!(stacked(0).frames(), Err(StackError::Empty));
    }

    #[test]
    fn ips_start_eight_byte_aligned_after_the_event() {
        assert_eq!(core::mem::offset_of!(StackedEvent, stack_bytes), 64);
        assert_eq!(core::mem::offset_of!(StackedEvent, entry), 72);
        assert_eq!(core::mem::offset_of!(StackedEvent, replaced_tally), 88);
        assert_eq!(core::mem::offset_of!(StackedEvent, ips), 96);
        assert_eq!(core::mem::align_of::<StackedEvent>(), 8);
    }
}
