//! `trace.perfetto-trace`: the run as a Perfetto trace (TrackEvent protobuf),
//! which Perfetto's UI and trace_processor open directly.
//!
//! Why protobuf and not the Chrome JSON format: Perfetto documents the JSON
//! importer as legacy and best-effort (no overlapping slices, no clock
//! domains), while TrackEvent is its native format. The messages are generated
//! from Perfetto's own `.proto` files ([`protos`]).
//!
//! The trace models the run the way Perfetto models a host and a VM guest:
//!
//! - Two machines. Host packets (boot phases, the gdbstub's holds and
//!   snapshots) carry no `machine_id` (0, the host); every guest packet (its
//!   processes' and threads' tracks, workloads, probe events) carries
//!   [`GUEST_MACHINE`], so trace_processor puts the guest's threads in a
//!   `machine` of their own.
//! - Two clock domains. Host times are ns since QEMU's launch, on the trace's
//!   default clock. Guest times are the guest's own CLOCK_MONOTONIC as the
//!   probes stamped them, on the sequence-scoped clock [`GUEST_CLOCK`];
//!   `ClockSnapshot`s at the fit's points ([`guest_clock`]) pair it with the
//!   host's axis, and trace_processor maps guest times itself.
//! - Two packet sequences, [`HOST_SEQ`] and [`GUEST_SEQ`]. The guest sequence
//!   starts with `SEQ_INCREMENTAL_STATE_CLEARED` and its defaults (the guest
//!   clock), then interns event names, categories, annotation names and strings,
//!   and kernel stacks as frames and callstacks ([`intern`]): each event refers
//!   to its stack by `callstack_iid`.
//! - Each probe event once, an instant on its thread's track, its CPU an
//!   argument.
//!
//! The trace is written packet by packet while `events.jsonl` is read back, so
//! memory does not grow with the number of events (the interning tables grow
//! with the number of distinct stacks).

pub mod guest_clock;
pub mod intern;
pub mod protos;

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use prost::Message;

use crate::run_files::events::read_events;
use crate::run_files::stacks::Stacks;
use intern::Interner;
use protos::{
    ClockSnapshot, DebugAnnotation, InternedData, ProcessDescriptor, ThreadDescriptor, TracePacket,
    TracePacketDefaults, TrackDescriptor, TrackEvent, clock_snapshot, debug_annotation,
    trace_packet, track_descriptor, track_event,
};

/// The sequence of the host's packets.
pub const HOST_SEQ: u32 = 1;
/// The sequence of the guest's packets.
pub const GUEST_SEQ: u32 = 2;
/// The guest's `machine_id` (the host's is 0).
pub const GUEST_MACHINE: u32 = 1;
/// The guest's CLOCK_MONOTONIC: a sequence-scoped clock id (64..=127) of
/// [`GUEST_SEQ`].
pub const GUEST_CLOCK: u32 = 64;
/// The host's axis in the guest's clock snapshots: the trace's default clock.
const HOST_CLOCK: u32 = protos::BuiltinClock::Boottime as u32;

/// A slice on a named track (boot phases, gdbstub holds), on the host's axis.
#[derive(Clone, Debug)]
pub struct Slice {
    /// Track name (slices of one track must nest).
    pub track: String,
    /// Slice name.
    pub name: String,
    /// Start, ns on the host's axis.
    pub start_ns: u64,
    /// End, ns on the host's axis.
    pub end_ns: u64,
}

/// Writes packets as a `perfetto.protos.Trace` stream.
pub struct TraceWriter<W: Write> {
    out: W,
    tracks: BTreeMap<String, u64>,
    next_uuid: u64,
    /// The guest clock's snapshot points, written when the guest sequence starts.
    clock_points: Vec<(u64, u64)>,
    guest_started: bool,
    interner: Interner,
    buf: Vec<u8>,
    /// Packets written.
    pub packets: u64,
}

fn name_field(name: &str) -> Option<track_event::NameField> {
    Some(track_event::NameField::Name(name.to_string()))
}

fn kind(t: track_event::Type) -> Option<i32> {
    Some(t as i32)
}

/// A probe's argument as Perfetto shows it: a hex pointer when it is one.
fn hex_value(text: &str) -> debug_annotation::Value {
    match text
        .strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
    {
        Some(v) => debug_annotation::Value::PointerValue(v),
        None => debug_annotation::Value::StringValue(text.to_string()),
    }
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace on `out`. `clock_points` pair guest CLOCK_MONOTONIC with the
    /// host's axis, increasing in both ([`guest_clock::points`]).
    pub fn new(out: W, clock_points: Vec<(u64, u64)>) -> Self {
        TraceWriter {
            out,
            tracks: BTreeMap::new(),
            next_uuid: 1,
            clock_points,
            guest_started: false,
            interner: Interner::default(),
            buf: Vec::new(),
            packets: 0,
        }
    }

    fn packet(&mut self, p: &TracePacket) -> io::Result<()> {
        // `Trace.packet` is field 1, length-delimited.
        self.buf.clear();
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut self.buf);
        p.encode_length_delimited(&mut self.buf)
            .map_err(io::Error::other)?;
        self.packets += 1;
        self.out.write_all(&self.buf)
    }

    fn host_packet(&mut self, mut p: TracePacket) -> io::Result<()> {
        p.optional_trusted_packet_sequence_id =
            Some(trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(HOST_SEQ));
        self.packet(&p)
    }

    /// Writes a guest packet; the first one starts the sequence (cleared state,
    /// the guest clock as default, the clock snapshots).
    fn guest_packet(&mut self, mut p: TracePacket) -> io::Result<()> {
        let seq =
            Some(trace_packet::OptionalTrustedPacketSequenceId::TrustedPacketSequenceId(GUEST_SEQ));
        if !self.guest_started {
            self.guest_started = true;
            self.packet(&TracePacket {
                optional_trusted_packet_sequence_id: seq,
                machine_id: Some(GUEST_MACHINE),
                sequence_flags: Some(
                    trace_packet::SequenceFlags::SeqIncrementalStateCleared as u32,
                ),
                trace_packet_defaults: Some(TracePacketDefaults {
                    timestamp_clock_id: Some(GUEST_CLOCK),
                    track_event_defaults: None,
                }),
                ..Default::default()
            })?;
            for (guest, host) in std::mem::take(&mut self.clock_points) {
                let clock = |id: u32, ts: u64| clock_snapshot::Clock {
                    clock_id: Some(id),
                    timestamp: Some(ts),
                };
                self.packet(&TracePacket {
                    optional_trusted_packet_sequence_id: seq,
                    machine_id: Some(GUEST_MACHINE),
                    data: Some(trace_packet::Data::ClockSnapshot(ClockSnapshot {
                        clocks: vec![clock(GUEST_CLOCK, guest), clock(HOST_CLOCK, host)],
                        primary_trace_clock: None,
                    })),
                    ..Default::default()
                })?;
            }
        }
        p.optional_trusted_packet_sequence_id = seq;
        p.machine_id = Some(GUEST_MACHINE);
        if p.interned_data.is_some() || matches!(p.data, Some(trace_packet::Data::TrackEvent(_))) {
            p.sequence_flags = Some(trace_packet::SequenceFlags::SeqNeedsIncrementalState as u32);
        }
        self.packet(&p)
    }

    fn track(
        &mut self,
        key: String,
        guest: bool,
        make: impl FnOnce(u64) -> TrackDescriptor,
    ) -> io::Result<u64> {
        if let Some(&u) = self.tracks.get(&key) {
            return Ok(u);
        }
        let uuid = self.next_uuid;
        self.next_uuid += 1;
        self.tracks.insert(key, uuid);
        let p = TracePacket {
            data: Some(trace_packet::Data::TrackDescriptor(make(uuid))),
            ..Default::default()
        };
        if guest {
            self.guest_packet(p)?;
        } else {
            self.host_packet(p)?;
        }
        Ok(uuid)
    }

    fn process_track(&mut self, pid: u32, name: &str) -> io::Result<u64> {
        self.track(format!("p{pid}"), true, |uuid| TrackDescriptor {
            uuid: Some(uuid),
            process: Some(ProcessDescriptor {
                pid: Some(pid as i32),
                process_name: Some(name.into()),
            }),
            ..Default::default()
        })
    }

    fn thread_track(&mut self, pid: u32, tid: u32, comm: &str) -> io::Result<u64> {
        let parent = self.process_track(pid, comm)?;
        self.track(format!("t{tid}"), true, |uuid| TrackDescriptor {
            uuid: Some(uuid),
            parent_uuid: Some(parent),
            thread: Some(ThreadDescriptor {
                pid: Some(pid as i32),
                tid: Some(tid as i32),
                thread_name: Some(comm.into()),
            }),
            ..Default::default()
        })
    }

    fn named_track(&mut self, name: &str) -> io::Result<u64> {
        self.track(format!("n{name}"), false, |uuid| TrackDescriptor {
            uuid: Some(uuid),
            static_or_dynamic_name: Some(track_descriptor::StaticOrDynamicName::Name(name.into())),
            ..Default::default()
        })
    }

    fn host_event(&mut self, ts: u64, e: TrackEvent) -> io::Result<()> {
        self.host_packet(TracePacket {
            timestamp: Some(ts),
            data: Some(trace_packet::Data::TrackEvent(e)),
            ..Default::default()
        })
    }

    /// Writes a slice on its named track (host clock).
    pub fn slice(&mut self, s: &Slice) -> io::Result<()> {
        let t = self.named_track(&s.track)?;
        self.host_event(
            s.start_ns,
            TrackEvent {
                r#type: kind(track_event::Type::SliceBegin),
                track_uuid: Some(t),
                name_field: name_field(&s.name),
                categories: vec!["guestscope".into()],
                ..Default::default()
            },
        )?;
        self.host_event(
            s.end_ns.max(s.start_ns),
            TrackEvent {
                r#type: kind(track_event::Type::SliceEnd),
                track_uuid: Some(t),
                ..Default::default()
            },
        )
    }

    /// Writes an instant event with arguments on a named track (host clock), e.g.
    /// a gdbstub snapshot with its registers.
    pub fn instant_on(
        &mut self,
        track: &str,
        ts: u64,
        name: &str,
        args: &[(String, String)],
    ) -> io::Result<()> {
        let t = self.named_track(track)?;
        let debug_annotations = args
            .iter()
            .map(|(k, v)| DebugAnnotation {
                name_field: Some(debug_annotation::NameField::Name(k.clone())),
                value: Some(debug_annotation::Value::StringValue(v.clone())),
            })
            .collect();
        self.host_event(
            ts,
            TrackEvent {
                r#type: kind(track_event::Type::Instant),
                track_uuid: Some(t),
                name_field: name_field(name),
                categories: vec!["snapshot".into()],
                debug_annotations,
                ..Default::default()
            },
        )
    }

    /// An interned-name annotation.
    fn arg(
        &mut self,
        name: &str,
        value: debug_annotation::Value,
        new: &mut InternedData,
    ) -> DebugAnnotation {
        DebugAnnotation {
            name_field: Some(debug_annotation::NameField::NameIid(
                self.interner.annotation_name(name, new),
            )),
            value: Some(value),
        }
    }

    fn guest_event(&mut self, guest_ns: u64, e: TrackEvent, new: InternedData) -> io::Result<()> {
        self.guest_packet(TracePacket {
            timestamp: Some(guest_ns),
            data: Some(trace_packet::Data::TrackEvent(e)),
            interned_data: (new != InternedData::default()).then_some(new),
            ..Default::default()
        })
    }

    /// Writes a workload's run as a slice on its process track (guest clock).
    pub fn workload(&mut self, pid: u32, name: &str, start_ns: u64, end_ns: u64) -> io::Result<()> {
        let t = self.process_track(pid, name)?;
        let mut new = InternedData::default();
        let begin = TrackEvent {
            r#type: kind(track_event::Type::SliceBegin),
            track_uuid: Some(t),
            name_field: Some(track_event::NameField::NameIid(
                self.interner.event_name(name, &mut new),
            )),
            category_iids: vec![self.interner.category("workload", &mut new)],
            debug_annotations: vec![self.arg(
                "pid",
                debug_annotation::Value::UintValue(u64::from(pid)),
                &mut new,
            )],
            ..Default::default()
        };
        self.guest_event(start_ns, begin, new)?;
        let end = TrackEvent {
            r#type: kind(track_event::Type::SliceEnd),
            track_uuid: Some(t),
            ..Default::default()
        };
        self.guest_event(end_ns.max(start_ns), end, InternedData::default())
    }

    /// Reads `events.jsonl` and writes each event once, as an instant on its
    /// thread's track at its guest time, with its kernel stack (from `stacks`) interned.
    pub fn events_from_jsonl<R: BufRead>(&mut self, events: R, stacks: &Stacks) -> io::Result<u64> {
        use debug_annotation::Value;
        let mut n = 0;
        for e in read_events(events) {
            let e = e?;
            let thread = self.thread_track(e.pid, e.tid, &e.comm)?;
            let mut new = InternedData::default();
            let mut args = vec![
                self.arg("cpu", Value::UintValue(u64::from(e.cpu)), &mut new),
                self.arg("arg", hex_value(&e.arg), &mut new),
            ];
            if let Some(l) = &e.lock {
                let v = Value::StringValueIid(self.interner.annotation_string(l, &mut new));
                args.push(self.arg("lock", v, &mut new));
            }
            if let Some(ip) = &e.ip {
                args.push(self.arg("ip", hex_value(ip), &mut new));
            }
            if let Some(code) = e.error_code {
                args.push(self.arg("error_code", Value::UintValue(u64::from(code)), &mut new));
            }
            if let Some(all) = &e.args {
                args.push(self.arg("args", Value::StringValue(all.join(", ")), &mut new));
            }
            let event = TrackEvent {
                r#type: kind(track_event::Type::Instant),
                track_uuid: Some(thread),
                name_field: Some(track_event::NameField::NameIid(
                    self.interner.event_name(&e.probe, &mut new),
                )),
                category_iids: vec![self.interner.category("probe", &mut new)],
                callstack_field: self
                    .interner
                    .callstack(stacks.frames(e.stack_id), &mut new)
                    .map(track_event::CallstackField::CallstackIid),
                debug_annotations: args,
                ..Default::default()
            };
            self.guest_event(e.ts_ns, event, new)?;
            n += 1;
        }
        Ok(n)
    }

    /// Distinct kernel frames and callstacks interned so far.
    pub fn stack_counts(&self) -> (usize, usize) {
        self.interner.stack_counts()
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests;
