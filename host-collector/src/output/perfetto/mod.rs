//! `trace.perfetto-trace`: the run as a Perfetto trace (TrackEvent protobuf),
//! which Perfetto's UI and trace_processor open directly.
//!
//! Why protobuf and not the Chrome JSON format: Perfetto documents the JSON
//! importer as legacy and best-effort (no overlapping slices, no clock
//! domains), while TrackEvent is its native format. The messages below are the
//! subset of Perfetto's `perfetto_trace.proto` we write, with Perfetto's own
//! field numbers; the test suite parses our files with Perfetto's published
//! protos.
//!
//! Time axis: nanoseconds since QEMU's launch on the host clock. Guest times
//! (CLOCK_MONOTONIC in the guest) are mapped onto it with the offset measured at
//! the agent's hello (guest stamp ↔ host arrival), stated in the report.
//!
//! The trace is written packet by packet while `events.jsonl` is read back, so
//! memory does not grow with the number of events.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use prost::Message;

use crate::event_line::read_events;

/// `perfetto.protos.TracePacket` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracePacket {
    /// Timestamp, ns.
    #[prost(uint64, optional, tag = "8")]
    pub timestamp: Option<u64>,
    /// Writer sequence.
    #[prost(uint32, optional, tag = "10")]
    pub trusted_packet_sequence_id: Option<u32>,
    /// An event.
    #[prost(message, optional, tag = "11")]
    pub track_event: Option<TrackEvent>,
    /// A track.
    #[prost(message, optional, tag = "60")]
    pub track_descriptor: Option<TrackDescriptor>,
}

/// `perfetto.protos.TrackDescriptor` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackDescriptor {
    /// Track id.
    #[prost(uint64, optional, tag = "1")]
    pub uuid: Option<u64>,
    /// Display name.
    #[prost(string, optional, tag = "2")]
    pub name: Option<String>,
    /// Process the track belongs to.
    #[prost(message, optional, tag = "3")]
    pub process: Option<ProcessDescriptor>,
    /// Thread the track belongs to.
    #[prost(message, optional, tag = "4")]
    pub thread: Option<ThreadDescriptor>,
    /// Parent track.
    #[prost(uint64, optional, tag = "5")]
    pub parent_uuid: Option<u64>,
}

/// `perfetto.protos.ProcessDescriptor` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProcessDescriptor {
    /// Pid.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Name.
    #[prost(string, optional, tag = "6")]
    pub process_name: Option<String>,
}

/// `perfetto.protos.ThreadDescriptor` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ThreadDescriptor {
    /// Pid.
    #[prost(int32, optional, tag = "1")]
    pub pid: Option<i32>,
    /// Tid.
    #[prost(int32, optional, tag = "2")]
    pub tid: Option<i32>,
    /// Name.
    #[prost(string, optional, tag = "5")]
    pub thread_name: Option<String>,
}

/// `perfetto.protos.TrackEvent` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrackEvent {
    /// Debug annotations (event arguments).
    #[prost(message, repeated, tag = "4")]
    pub debug_annotations: Vec<DebugAnnotation>,
    /// 1 slice begin, 2 slice end, 3 instant.
    #[prost(int32, optional, tag = "9")]
    pub r#type: Option<i32>,
    /// Track.
    #[prost(uint64, optional, tag = "11")]
    pub track_uuid: Option<u64>,
    /// Categories.
    #[prost(string, repeated, tag = "22")]
    pub categories: Vec<String>,
    /// Name.
    #[prost(string, optional, tag = "23")]
    pub name: Option<String>,
}

/// `perfetto.protos.DebugAnnotation` (subset).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DebugAnnotation {
    /// Unsigned value.
    #[prost(uint64, optional, tag = "3")]
    pub uint_value: Option<u64>,
    /// Signed value.
    #[prost(int64, optional, tag = "4")]
    pub int_value: Option<i64>,
    /// String value.
    #[prost(string, optional, tag = "6")]
    pub string_value: Option<String>,
    /// Name.
    #[prost(string, optional, tag = "10")]
    pub name: Option<String>,
}

const SLICE_BEGIN: i32 = 1;
const SLICE_END: i32 = 2;
const INSTANT: i32 = 3;
const SEQ: u32 = 1;

/// A slice on a named track (workload runs, boot phases), on the trace's axis.
#[derive(Clone, Debug)]
pub struct Slice {
    /// Track name (slices of one track must nest).
    pub track: String,
    /// Slice name.
    pub name: String,
    /// Start, ns on the trace's axis.
    pub start_ns: u64,
    /// End, ns on the trace's axis.
    pub end_ns: u64,
}

/// Writes packets as a `perfetto.protos.Trace` stream.
pub struct TraceWriter<W: Write> {
    out: W,
    tracks: BTreeMap<String, u64>,
    next_uuid: u64,
    /// Packets written.
    pub packets: u64,
}

fn annotation_str(name: &str, v: &str) -> DebugAnnotation {
    DebugAnnotation {
        name: Some(name.into()),
        string_value: Some(v.into()),
        ..Default::default()
    }
}

fn annotation_uint(name: &str, v: u64) -> DebugAnnotation {
    DebugAnnotation {
        name: Some(name.into()),
        uint_value: Some(v),
        ..Default::default()
    }
}

impl<W: Write> TraceWriter<W> {
    /// Starts a trace on `out`.
    pub fn new(out: W) -> Self {
        TraceWriter {
            out,
            tracks: BTreeMap::new(),
            next_uuid: 1,
            packets: 0,
        }
    }

    fn packet(&mut self, p: TracePacket) -> io::Result<()> {
        // `Trace.packet` is field 1, length-delimited.
        let len = p.encoded_len();
        let mut buf = Vec::with_capacity(len + 11);
        prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(len as u64, &mut buf);
        p.encode(&mut buf).map_err(io::Error::other)?;
        self.packets += 1;
        self.out.write_all(&buf)
    }

    fn track(&mut self, key: String, make: impl FnOnce(u64) -> TrackDescriptor) -> io::Result<u64> {
        if let Some(&u) = self.tracks.get(&key) {
            return Ok(u);
        }
        let uuid = self.next_uuid;
        self.next_uuid += 1;
        self.tracks.insert(key, uuid);
        self.packet(TracePacket {
            trusted_packet_sequence_id: Some(SEQ),
            track_descriptor: Some(make(uuid)),
            ..Default::default()
        })?;
        Ok(uuid)
    }

    fn process_track(&mut self, pid: u32, name: &str) -> io::Result<u64> {
        self.track(format!("p{pid}"), |uuid| TrackDescriptor {
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
        self.track(format!("t{tid}"), |uuid| TrackDescriptor {
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
        self.track(format!("n{name}"), |uuid| TrackDescriptor {
            uuid: Some(uuid),
            name: Some(name.into()),
            ..Default::default()
        })
    }

    fn event(
        &mut self,
        ts: u64,
        track: u64,
        kind: i32,
        name: Option<&str>,
        cat: &str,
        args: Vec<DebugAnnotation>,
    ) -> io::Result<()> {
        self.packet(TracePacket {
            timestamp: Some(ts),
            trusted_packet_sequence_id: Some(SEQ),
            track_event: Some(TrackEvent {
                debug_annotations: args,
                r#type: Some(kind),
                track_uuid: Some(track),
                categories: if cat.is_empty() {
                    vec![]
                } else {
                    vec![cat.into()]
                },
                name: name.map(str::to_string),
            }),
            ..Default::default()
        })
    }

    /// Writes a slice on its named track.
    pub fn slice(&mut self, s: &Slice) -> io::Result<()> {
        let t = self.named_track(&s.track)?;
        self.event(
            s.start_ns,
            t,
            SLICE_BEGIN,
            Some(&s.name),
            "guestscope",
            vec![],
        )?;
        self.event(s.end_ns.max(s.start_ns), t, SLICE_END, None, "", vec![])
    }

    /// Writes a workload's run as a slice on its process track.
    pub fn workload(&mut self, pid: u32, name: &str, start_ns: u64, end_ns: u64) -> io::Result<()> {
        let t = self.process_track(pid, name)?;
        self.event(
            start_ns,
            t,
            SLICE_BEGIN,
            Some(name),
            "workload",
            vec![annotation_uint("pid", pid as u64)],
        )?;
        self.event(end_ns.max(start_ns), t, SLICE_END, None, "", vec![])
    }

    /// Writes an instant event with arguments on a named track (e.g. a gdbstub
    /// snapshot with its registers).
    pub fn instant_on(
        &mut self,
        track: &str,
        ts: u64,
        name: &str,
        args: &[(String, String)],
    ) -> io::Result<()> {
        let t = self.named_track(track)?;
        let args = args.iter().map(|(k, v)| annotation_str(k, v)).collect();
        self.event(ts, t, INSTANT, Some(name), "snapshot", args)
    }

    /// Reads `events.jsonl` and writes each event as an instant on its thread's
    /// track and on its CPU's track. `to_trace_ns` maps guest ns to the trace axis.
    pub fn events_from_jsonl<R: BufRead>(
        &mut self,
        events: R,
        to_trace_ns: impl Fn(u64) -> u64,
    ) -> io::Result<u64> {
        let mut n = 0;
        for e in read_events(events) {
            let e = e?;
            let (ts, pid, tid, probe, comm) = (e.ts_ns, e.pid, e.tid, &*e.probe, &*e.comm);
            let cpu = u64::from(e.cpu);
            let mut args = vec![annotation_uint("cpu", cpu), annotation_str("arg", &e.arg)];
            if let Some(l) = &e.lock {
                args.push(annotation_str("lock", l));
            }
            if let Some(all) = &e.args {
                args.push(annotation_str("args", &all.join(", ")));
            }
            if !e.stack.is_empty() {
                args.push(annotation_str("stack", &e.stack.join("\n")));
            }
            let t = to_trace_ns(ts);
            let thread = self.thread_track(pid, tid, comm)?;
            self.event(t, thread, INSTANT, Some(probe), "probe", args)?;
            let cpu_track = self.named_track(&format!("guest CPU {cpu}"))?;
            self.event(
                t,
                cpu_track,
                INSTANT,
                Some(probe),
                "probe",
                vec![
                    annotation_uint("pid", u64::from(pid)),
                    annotation_uint("tid", u64::from(tid)),
                ],
            )?;
            n += 1;
        }
        Ok(n)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outer `Trace` message, to decode what we wrote.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Trace {
        #[prost(message, repeated, tag = "1")]
        packet: Vec<TracePacket>,
    }

    #[test]
    fn events_and_slices_decode_as_a_trace() {
        let mut w = TraceWriter::new(Vec::new());
        w.workload(100, "fopen", 10, 90).unwrap();
        let jsonl = r#"{"ts_ns":50,"probe":"alloc_fd","cpu":0,"pid":100,"tid":100,"comm":"fopen","workload":"fopen","arg":"0x400","stack_id":1,"stack":["alloc_fd+0x1","do_sys_openat2+0x8d"]}
not json
{"ts_ns":60,"probe":"spin_lock","cpu":0,"pid":100,"tid":101,"comm":"fopen","arg":"0xffff","lock":"jiffies_lock","stack_id":-1,"stack":[]}
"#;
        let n = w.events_from_jsonl(jsonl.as_bytes(), |t| t + 1000).unwrap();
        assert_eq!(n, 2);
        w.instant_on(
            "gdbstub",
            1070,
            "cr3",
            &[("cr3".into(), "0x4866000".into())],
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        let trace = Trace::decode(bytes.as_slice()).unwrap();
        let events: Vec<&TrackEvent> = trace
            .packet
            .iter()
            .filter_map(|p| p.track_event.as_ref())
            .collect();
        // 2 workload slice events + 2 × 2 probe instants + 1 snapshot.
        assert_eq!(events.len(), 7);
        let alloc = trace
            .packet
            .iter()
            .find(|p| p.track_event.as_ref().and_then(|e| e.name.as_deref()) == Some("alloc_fd"))
            .unwrap();
        assert_eq!(alloc.timestamp, Some(1050));
        let stack = &alloc
            .track_event
            .as_ref()
            .unwrap()
            .debug_annotations
            .iter()
            .find(|a| a.name.as_deref() == Some("stack"))
            .unwrap();
        assert_eq!(
            stack.string_value.as_deref(),
            Some("alloc_fd+0x1\ndo_sys_openat2+0x8d")
        );
        // Two threads of one process: one process track, two thread tracks.
        let threads = trace
            .packet
            .iter()
            .filter(|p| {
                p.track_descriptor
                    .as_ref()
                    .is_some_and(|t| t.thread.is_some())
            })
            .count();
        assert_eq!(threads, 2);
    }
}
