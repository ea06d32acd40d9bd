//! The framed record stream: numbers records and hands them, one frame each, to a
//! [`Sink`]: the link to the host ([`crate::link::Link`]), or any [`Write`] (a file).

use std::{
    io::{self, Write},
    time::{Duration, Instant},
};

use guestscope_common::{
    ProbeKind,
    wire::{
        Body, EncodeError, HEARTBEAT_MS, Record, Totals, encode_frame_into,
        encode_packed_frame_into, encode_stack_frame_into, packed::PackedBatch,
    },
};

use crate::clock::monotonic_ns;

/// Where frames go.
pub trait Sink {
    /// Takes the frame of record `seq`, which carries `events` events per probe id (all
    /// zero for a record that is not `Events`).
    fn send_frame(
        &mut self,
        seq: u64,
        frame: Vec<u8>,
        events: &[u64; ProbeKind::COUNT],
    ) -> io::Result<()>;

    /// Lets the sink do its background work (read acknowledgements, reconnect).
    fn service(&mut self) {}

    /// A descriptor that becomes readable when the sink has work for
    /// [`Sink::service`] (the host wrote to the link): waiting loops poll it too, so
    /// the host's clock probes are answered at once.
    fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }

    /// A poll of [`Sink::wake_fd`] found it readable (or hung up): the next
    /// [`Sink::service`] reads what the host wrote. Without it a service may leave the
    /// replies for later rather than make a read that finds nothing.
    fn host_wrote(&mut self) {}

    /// Adds the sink's own counters (the link's) to the run's totals.
    fn fill_totals(&self, _totals: &mut Totals) {}

    /// Records taken but not yet written out (a plain writer writes each at once).
    fn unwritten(&self) -> usize {
        0
    }

    /// Waits, serving the link, until at most `bytes` of sent records are
    /// unacknowledged (or the link is down, or a few seconds passed): a large artifact
    /// then passes through a small window of memory instead of the whole spool.
    fn settle(&mut self, _bytes: u64) {}

    /// The agent stops ignoring the link after a quiet workload (nothing read or sent
    /// while the host held the VM, and the host sends no acknowledgement while it holds
    /// it): the wait for an acknowledgement starts again now, so the held time is not
    /// taken for a dead host; until the host acknowledges again the wait is longer,
    /// since it holds the VM until the workload's exit record, sent after its events.
    fn quiet_ended(&mut self) {}

    /// Reads the host's replies, writing nothing, and says whether one of them since the
    /// last call was [`Reply::Released`]: the host holds the VM no longer, and a workload
    /// running with a quiet link may stream again.
    ///
    /// [`Reply::Released`]: guestscope_common::wire::Reply::Released
    fn released(&mut self) -> bool {
        false
    }

    /// Holds frames back until [`Sink::uncork`] (or a packet's worth waits), so records
    /// sent together (a batch's stacks, then its events) leave in one write.
    fn cork(&mut self) {}

    /// Writes what [`Sink::cork`] held back, and stops holding frames back.
    fn uncork(&mut self) {}

    /// An empty buffer to encode the next `Events` frame into: one whose frame the
    /// sink is done with (its capacity kept), or a new one.
    fn spare_frame(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Like [`Sink::spare_frame`], for a frame of another record (a stack, a
    /// workload's start), which is smaller.
    fn spare_small_frame(&mut self) -> Vec<u8> {
        Vec::new()
    }
}

/// A plain writer: each frame is written whole and flushed.
impl<W: Write> Sink for W {
    fn send_frame(
        &mut self,
        _seq: u64,
        frame: Vec<u8>,
        _events: &[u64; ProbeKind::COUNT],
    ) -> io::Result<()> {
        self.write_all(&frame)?;
        self.flush()
    }
}

/// A record could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("sending record {seq}: {source}")]
pub struct StreamError {
    /// Sequence number of the record that failed.
    pub seq: u64,
    /// What failed.
    #[source]
    pub source: EncodeError,
}

/// Writes records with consecutive sequence numbers starting at 0.
pub struct Stream<W> {
    out: W,
    seq: u64,
    bytes: u64,
    last_sent: Instant,
}

impl<W: Sink> Stream<W> {
    /// Starts a stream on `out`.
    pub fn new(out: W) -> Self {
        Stream {
            out,
            seq: 0,
            bytes: 0,
            last_sent: Instant::now(),
        }
    }

    /// Sends a [`Body::Heartbeat`] if nothing was sent for [`HEARTBEAT_MS`]; returns
    /// whether it did.
    pub fn heartbeat_if_idle(&mut self) -> Result<bool, StreamError> {
        if self.last_sent.elapsed() < Duration::from_millis(HEARTBEAT_MS) {
            return Ok(false);
        }
        self.send(Body::Heartbeat {
            monotonic_ns: monotonic_ns(),
        })?;
        Ok(true)
    }

    /// Sends one `Events` record of a batch packed as its events arrived.
    pub fn send_events(&mut self, batch: &PackedBatch) -> Result<(), StreamError> {
        let seq = self.seq;
        let frame = encode_packed_frame_into(seq, batch, self.out.spare_frame())
            .map_err(|source| StreamError { seq, source })?;
        self.write_frame(seq, frame, batch.kinds())
    }

    /// Sends the `Stack` record of stack `id`, whose frames are `ips`; returns its
    /// sequence number.
    pub fn send_stack(&mut self, id: u32, ips: &[u64]) -> Result<u64, StreamError> {
        let seq = self.seq;
        let frame = encode_stack_frame_into(seq, id, ips, self.out.spare_small_frame())
            .map_err(|source| StreamError { seq, source })?;
        self.write_frame(seq, frame, &[0; ProbeKind::COUNT])?;
        Ok(seq)
    }

    /// Sends one record; returns its sequence number. A `Finished` record gets the
    /// sink's counters (the link's reconnections and spool) added to its totals; an
    /// `Events` record goes the way a batch does ([`Stream::send_events`]).
    pub fn send(&mut self, mut body: Body) -> Result<u64, StreamError> {
        let seq = self.seq;
        let buf = match &mut body {
            Body::Events(events) => {
                self.send_events(&PackedBatch::from_events(events))?;
                return Ok(seq);
            }
            Body::Finished(totals) => {
                self.out.fill_totals(totals);
                Vec::new()
            }
            _ => self.out.spare_small_frame(),
        };
        let record = Record { seq, body };
        let frame =
            encode_frame_into(&record, buf).map_err(|source| StreamError { seq, source })?;
        self.write_frame(seq, frame, &[0; ProbeKind::COUNT])?;
        Ok(seq)
    }

    /// Hands record `seq`'s frame (with its events per probe kind) to the sink.
    fn write_frame(
        &mut self,
        seq: u64,
        frame: Vec<u8>,
        events: &[u64; ProbeKind::COUNT],
    ) -> Result<(), StreamError> {
        let written = frame.len();
        self.out
            .send_frame(seq, frame, events)
            .map_err(|e| StreamError {
                seq,
                source: EncodeError::Io(e),
            })?;
        self.seq += 1;
        self.bytes += written as u64;
        self.last_sent = Instant::now();
        Ok(())
    }

    /// Waits until at most `bytes` of sent records are unacknowledged
    /// ([`Sink::settle`]).
    pub fn settle(&mut self, bytes: u64) {
        self.out.settle(bytes);
    }

    /// Number of records sent.
    pub fn records(&self) -> u64 {
        self.seq
    }

    /// Number of bytes sent.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The sink's [`Sink::wake_fd`].
    pub fn wake_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.out.wake_fd()
    }

    /// See [`Sink::host_wrote`].
    pub fn host_wrote(&mut self) {
        self.out.host_wrote();
    }

    /// See [`Sink::quiet_ended`].
    pub fn quiet_ended(&mut self) {
        self.out.quiet_ended();
    }

    /// See [`Sink::released`].
    pub fn released(&mut self) -> bool {
        self.out.released()
    }

    /// Holds the records sent from now on back until [`Stream::uncork`] (see
    /// [`Sink::cork`]).
    pub fn cork(&mut self) {
        self.out.cork();
    }

    /// Writes the records held back since [`Stream::cork`].
    pub fn uncork(&mut self) {
        self.out.uncork();
    }

    /// Lets the sink do its background work (see [`Sink::service`]).
    pub fn service(&mut self) {
        self.out.service();
    }

    /// Writes out what is queued, for at most `limit`; whether all of it went.
    pub fn write_out(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            self.out.service();
            if self.out.unwritten() == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The underlying sink.
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use guestscope_common::wire::{DecodeError, FrameReader};

    use super::*;

    fn log(message: &str) -> Body {
        Body::Log {
            level: "info".into(),
            message: message.into(),
        }
    }

    #[test]
    fn records_are_numbered_from_zero() {
        let mut stream = Stream::new(Vec::new());
        for i in 0..5 {
            assert_eq!(stream.send(log(&i.to_string())).unwrap(), i);
        }
        assert_eq!(stream.records(), 5);
        let bytes = stream.bytes();
        let buf = stream.into_inner();
        assert_eq!(bytes, buf.len() as u64);
        let mut reader = FrameReader::new(buf.as_slice());
        for i in 0..5 {
            let r = reader.next_record().unwrap();
            assert_eq!(r.seq, i);
            assert_eq!(r.body, log(&i.to_string()));
        }
        assert!(matches!(reader.next_record(), Err(DecodeError::Eof)));
    }

    #[test]
    fn a_heartbeat_goes_out_only_after_a_quiet_second() {
        let mut stream = Stream::new(Vec::new());
        stream.send(log("x")).unwrap();
        assert!(!stream.heartbeat_if_idle().unwrap());
        stream.last_sent -= Duration::from_millis(HEARTBEAT_MS);
        assert!(stream.heartbeat_if_idle().unwrap());
        assert!(
            !stream.heartbeat_if_idle().unwrap(),
            "the heartbeat itself resets the clock"
        );
        let buf = stream.into_inner();
        let mut reader = FrameReader::new(buf.as_slice());
        reader.next_record().unwrap();
        let r = reader.next_record().unwrap();
        assert_eq!(r.seq, 1);
        assert!(matches!(r.body, Body::Heartbeat { monotonic_ns } if monotonic_ns > 0));
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("connection reset"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_an_error_and_does_not_advance() {
        let mut stream = Stream::new(Broken);
        let err = stream.send(log("x")).unwrap_err();
        assert_eq!(err.seq, 0);
        assert!(err.to_string().contains("connection reset"));
        assert_eq!(stream.records(), 0);
    }
}

#[cfg(test)]
mod write_out_tests {
    use super::*;

    /// A sink that writes one queued frame per service call.
    #[derive(Default)]
    struct Slow {
        queued: usize,
        services: usize,
    }

    impl Sink for Slow {
        fn send_frame(
            &mut self,
            _: u64,
            _: Vec<u8>,
            _: &[u64; ProbeKind::COUNT],
        ) -> io::Result<()> {
            self.queued += 1;
            Ok(())
        }
        fn service(&mut self) {
            self.services += 1;
            self.queued = self.queued.saturating_sub(1);
        }
        fn unwritten(&self) -> usize {
            self.queued
        }
    }

    #[test]
    fn write_out_services_the_sink_until_everything_went() {
        let mut s = Stream::new(Slow::default());
        for _ in 0..3 {
            s.send(Body::Heartbeat { monotonic_ns: 0 }).unwrap();
        }
        assert!(s.write_out(Duration::from_secs(5)));
        let sink = s.into_inner();
        assert_eq!(sink.queued, 0);
        assert!(sink.services >= 3);
    }

    #[test]
    fn write_out_gives_up_at_its_limit() {
        struct Stuck;
        impl Sink for Stuck {
            fn send_frame(
                &mut self,
                _: u64,
                _: Vec<u8>,
                _: &[u64; ProbeKind::COUNT],
            ) -> io::Result<()> {
                Ok(())
            }
            fn unwritten(&self) -> usize {
                1
            }
        }
        let mut s = Stream::new(Stuck);
        assert!(!s.write_out(Duration::from_millis(20)));
    }
}
