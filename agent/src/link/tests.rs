//! The link against a scripted collector on a Unix socket: resending after a drop,
//! de-duplication by sequence number, and the spool bound while the link is down.

use std::{
    io::Write,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use guestscope_common::{
    RawEvent,
    wire::{Body, ClockEcho, Connect, FrameReader, Record, Reply, encode_frame, encode_reply},
};

use super::*;
use crate::clock::monotonic_ns;
use crate::stream::Stream;

struct UnixConnector(PathBuf);

impl Connector for UnixConnector {
    type Conn = UnixStream;
    fn start(&mut self) -> io::Result<UnixStream> {
        UnixStream::connect(&self.0)
    }
}

fn socket_path(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "gs-link-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn config(spool_bytes: u64) -> LinkConfig {
    LinkConfig {
        agent_pid: 42,
        agent_start_ns: 7,
        spool_bytes,
        ack_timeout: Duration::from_secs(5),
        secret: "s3cret".into(),
    }
}

/// `n` events as a workload's come: times apart, a different lock each, two task
/// names taking turns (about 28 bytes each on the stream).
fn events(n: usize) -> Body {
    Body::Events(
        (0..n as u64)
            .map(|i| RawEvent {
                stack_id: (i % 7) as i32,
                arg: i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                ..RawEvent::new(ProbeKind::AllocFd, 1, 1 + i * 1_000).with_comm(if i % 2 == 0 {
                    "even"
                } else {
                    "odd"
                })
            })
            .collect(),
    )
}

fn log(i: u64) -> Body {
    Body::Log {
        level: "info".into(),
        message: format!("record {i}"),
    }
}

/// What the scripted collector saw: every record applied (duplicates dropped), and
/// every `Connect`.
#[derive(Default)]
struct Seen {
    applied: Vec<Record>,
    /// Clock echoes, with the number of records applied when each arrived.
    echoes: Vec<(ClockEcho, usize)>,
    /// Clock probes sent.
    probes: u32,
    connects: Vec<(u64, Connect)>,
    duplicates: u64,
}

/// Serves one connection the way the collector does: expects a `Connect`, applies new
/// records, acknowledges each, and sends a clock probe after every tenth record. Once a
/// write fails (the agent closed its side), it stops writing but reads on, as the
/// collector does. Stops after `limit` records read on this connection (dropping the
/// connection without acknowledging the last one), or at end of stream.
fn serve(conn: UnixStream, seen: &Mutex<Seen>, limit: Option<usize>) {
    let mut writer = conn.try_clone().unwrap();
    let mut frames = FrameReader::new(conn);
    let first = frames.next_record().expect("a Connect first");
    let Body::Connect(c) = first.body else {
        panic!("first record is not Connect: {first:?}")
    };
    seen.lock().unwrap().connects.push((first.seq, c));
    let mut n = 0;
    let mut writable = true;
    while let Ok(r) = frames.next_record() {
        if let Body::ClockEcho(echo) = r.body {
            let mut s = seen.lock().unwrap();
            let applied = s.applied.len();
            s.echoes.push((echo, applied));
            continue;
        }
        n += 1;
        if limit.is_some_and(|l| n >= l) {
            return;
        }
        let next = {
            let mut s = seen.lock().unwrap();
            let expected = s.applied.last().map_or(0, |r| r.seq + 1);
            if r.seq < expected {
                s.duplicates += 1;
            } else {
                s.applied.push(r);
            }
            s.applied.last().map_or(0, |r| r.seq + 1)
        };
        writable = writable
            && writer
                .write_all(&encode_reply(&Reply::Ack { next }).unwrap())
                .is_ok();
        if writable && n % 10 == 0 {
            let mut s = seen.lock().unwrap();
            let id = s.probes + 1;
            writable = writer
                .write_all(&encode_reply(&Reply::ClockProbe { id }).unwrap())
                .is_ok();
            // Only a probe that went out counts as sent.
            if writable {
                s.probes = id;
            }
        }
    }
}

/// What [`served_link`] returns: the socket's path, what the collector saw, its
/// thread, and the stream.
type ServedLink = (
    PathBuf,
    Arc<Mutex<Seen>>,
    thread::JoinHandle<()>,
    Stream<Link<UnixConnector>>,
);

/// A scripted collector serving one connection on a fresh socket at `path`: what it
/// saw, and its thread.
fn collector_on(path: &Path) -> (Arc<Mutex<Seen>>, thread::JoinHandle<()>) {
    let listener = UnixListener::bind(path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let host = {
        let seen = seen.clone();
        thread::spawn(move || serve(listener.accept().unwrap().0, &seen, None))
    };
    (seen, host)
}

/// A link (1 MiB spool) to a scripted collector serving one connection on a fresh
/// socket: the socket's path, what the collector saw, its thread, and the stream.
fn served_link(name: &str) -> ServedLink {
    let path = socket_path(name);
    let (seen, host) = collector_on(&path);
    let conn = UnixStream::connect(&path).unwrap();
    let link = Link::new(UnixConnector(path.clone()), conn, config(1 << 20)).unwrap();
    (path, seen, host, Stream::new(link))
}

#[test]
fn records_flow_and_are_forgotten_once_acknowledged() {
    let (path, seen, host, mut stream) = served_link("flow");
    for i in 0..200 {
        stream
            .send(if i % 2 == 0 { events(10) } else { log(i) })
            .unwrap();
    }
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(link.unacknowledged(), 0);
    host.join().unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(s.applied.len(), 200);
    assert!(s.applied.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    assert_eq!(s.connects.len(), 1);
    assert_eq!(
        (
            s.connects[0].0,
            s.connects[0].1.connection,
            s.connects[0].1.agent_pid
        ),
        (0, 1, 42)
    );
    assert_eq!(
        s.connects[0].1.secret, "s3cret",
        "the secret goes with every connection"
    );
    let st = link.stats();
    assert_eq!(
        st,
        LinkStats {
            spool_peak_bytes: st.spool_peak_bytes,
            clock_echoes: st.clock_echoes,
            ..LinkStats::default()
        }
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn acknowledged_frames_give_their_buffers_to_the_next_frames() {
    use crate::stream::Sink as _;
    let (path, _seen, host, mut stream) = served_link("spare");
    // Full batches among small records (a log line, a batch sent by age).
    for i in 0..20 {
        stream.send(events(crate::batch::MAX_EVENTS)).unwrap();
        stream.send(log(i)).unwrap();
        stream.send(events(10)).unwrap();
    }
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(link.unacknowledged(), 0);
    host.join().unwrap();
    // Every frame was acknowledged: the link kept a bounded number of their buffers.
    let spares = std::mem::take(&mut link.spare);
    for buf in &spares {
        assert!(buf.is_empty(), "a spare buffer comes empty");
        // Only a buffer a full batch fits in is kept for batches: a small one handed
        // to the next full batch would be grown into a fresh one anyway.
        assert!(
            (crate::link::SPARE_FRAME_MIN_BYTES..=crate::link::SPARE_FRAME_BYTES)
                .contains(&buf.capacity()),
            "a spare of {} bytes",
            buf.capacity()
        );
    }
    // At most SPARE_FRAMES of the 40 batches' buffers, and at least one. How many were
    // free at once depends on when the host's acknowledgements came (one that arrives
    // between two sends hands its buffer to the next frame): exactly SPARE_FRAMES
    // failed under load.
    assert!(
        (1..=crate::link::SPARE_FRAMES).contains(&spares.len()),
        "{} spare buffers",
        spares.len()
    );
    // The log lines' buffers are kept for small frames, and only there.
    let small = std::mem::take(&mut link.spare_small);
    assert!(
        (1..=crate::link::SPARE_SMALL_FRAMES).contains(&small.len()),
        "{} small spare buffers",
        small.len()
    );
    for buf in &small {
        assert!(buf.is_empty(), "a spare buffer comes empty");
        assert!(
            (crate::link::SMALL_FRAME_BYTES..crate::link::SPARE_FRAME_MIN_BYTES)
                .contains(&buf.capacity()),
            "a small spare of {} bytes",
            buf.capacity()
        );
    }
    // Taken, a new buffer is made with the room its kind of frame needs.
    assert!(link.spare_frame().capacity() >= crate::link::SPARE_FRAME_MIN_BYTES);
    assert!(link.spare_small_frame().capacity() >= crate::link::SMALL_FRAME_BYTES);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn settling_waits_for_the_collector_to_acknowledge() {
    let (path, _seen, host, mut stream) = served_link("settle");
    for _ in 0..5 {
        stream.send(events(100)).unwrap();
    }
    // The collector acknowledges every 64 records or 512 KiB, else within 100 ms.
    stream.settle(0);
    let mut link = stream.into_inner();
    assert_eq!(
        link.unacknowledged(),
        0,
        "settle(0) returned before every ack"
    );
    link.finish(Duration::from_secs(10)).unwrap();
    host.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn clock_probes_are_answered_between_records_with_the_guest_clock() {
    let (path, seen, host, mut stream) = served_link("clock");
    let before = monotonic_ns();
    for i in 0..300 {
        // Big records, so a probe often arrives while one is half written.
        stream
            .send(if i % 3 == 0 { events(400) } else { log(i) })
            .unwrap();
    }
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(10)).unwrap();
    host.join().unwrap();
    let after = monotonic_ns();
    let s = seen.lock().unwrap();
    // The records still parse and are all there: echoes never cut one.
    assert_eq!(s.applied.len(), 300);
    assert!(s.applied.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    assert!(s.probes >= 25, "{} probes", s.probes);
    // Every probe answered before the end, once, in order, with a clock reading
    // taken during the run.
    let ids: Vec<u32> = s.echoes.iter().map(|(e, _)| e.id).collect();
    let answered = ids.len() as u32;
    assert!(
        answered + 1 >= s.probes,
        "{answered} of {} probes answered",
        s.probes
    );
    assert_eq!(ids, (1..=answered).collect::<Vec<_>>());
    assert!(
        s.echoes
            .windows(2)
            .all(|w| w[0].0.guest_ns <= w[1].0.guest_ns)
    );
    assert!(
        s.echoes
            .iter()
            .all(|(e, _)| (before..=after).contains(&e.guest_ns))
    );
    assert_eq!(link.stats().clock_echoes, u64::from(answered));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_dropped_connection_is_restored_and_nothing_is_lost_or_doubled() {
    let path = socket_path("drop");
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let host = {
        let seen = seen.clone();
        thread::spawn(move || {
            // The first two connections break after 30 records each; the third serves.
            for limit in [Some(30), Some(30), None] {
                serve(listener.accept().unwrap().0, &seen, limit);
            }
        })
    };
    let conn = UnixStream::connect(&path).unwrap();
    let link = Link::new(UnixConnector(path.clone()), conn, config(1 << 20)).unwrap();
    let mut stream = Stream::new(link);
    for i in 0..300u64 {
        stream
            .send(if i % 3 == 0 { events(5) } else { log(i) })
            .unwrap();
        if i % 50 == 0 {
            // Give the host time to read, so drops happen with records in flight.
            thread::sleep(Duration::from_millis(20));
        }
    }
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(20)).unwrap();
    host.join().unwrap();
    let s = seen.lock().unwrap();
    let seqs: Vec<u64> = s.applied.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (0..300).collect::<Vec<_>>(),
        "every record exactly once, in order"
    );
    assert_eq!(s.connects.len(), 3);
    let stats = link.stats();
    assert_eq!(stats.reconnects, 2);
    assert_eq!(stats.spool_dropped_records, 0);
    for (i, (seq, c)) in s.connects.iter().enumerate().skip(1) {
        let after = c
            .after
            .as_ref()
            .expect("a reconnection says what it follows");
        assert_eq!(c.connection, i as u32 + 1);
        assert_eq!(
            *seq, after.acked,
            "resending starts at the first unacknowledged record"
        );
        assert!(after.restored_ns >= after.lost_ns);
        // The host closed it: seen as end of stream, a reset or a broken pipe.
        assert!(
            ["closed", "reset", "Broken pipe"]
                .iter()
                .any(|w| after.why.contains(w)),
            "{}",
            after.why
        );
    }
    assert!(
        stats.records_resent > 0,
        "nothing was in flight at the drops"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn past_the_spool_bound_events_are_dropped_and_counted_while_the_link_is_down() {
    let path = socket_path("spool");
    let listener = UnixListener::bind(&path).unwrap();
    let conn = UnixStream::connect(&path).unwrap();
    // Take the first connection and close it at once: the link is down, and stays
    // down while nothing listens.
    let (first, _) = listener.accept().unwrap();
    drop(first);
    drop(listener);
    let _ = std::fs::remove_file(&path);

    let link = Link::new(UnixConnector(path.clone()), conn, config(64 * 1024)).unwrap();
    let mut stream = Stream::new(link);
    let frame_len = encode_frame(&Record {
        seq: 0,
        body: events(100),
    })
    .unwrap()
    .len() as u64;
    let mut sent_events = 0u64;
    for i in 0..100u64 {
        stream
            .send(if i % 10 == 0 { log(i) } else { events(100) })
            .unwrap();
        if i % 10 != 0 {
            sent_events += 100;
        }
        if i == 0 {
            // Let the link see the connection closed.
            thread::sleep(Duration::from_millis(50));
            stream.service();
        }
    }
    let stats = stream.into_inner().stats();
    let kept = (64 * 1024) / frame_len;
    assert!(stats.spool_dropped_records > 0);
    assert!(stats.spool_dropped_records <= 90 - kept + 1, "{stats:?}");
    assert_eq!(
        stats.spool_dropped_events[ProbeKind::AllocFd as usize],
        stats.spool_dropped_records * 100
    );
    assert!(
        stats.spool_peak_bytes <= 64 * 1024 + 4096,
        "non-events records only may pass the bound: {stats:?}"
    );
    assert!(sent_events > stats.spool_dropped_events.iter().sum::<u64>());
}

#[test]
fn the_collector_gets_everything_kept_after_an_outage_with_the_gap_where_records_were_dropped() {
    let path = socket_path("outage");
    let listener = UnixListener::bind(&path).unwrap();
    let conn = UnixStream::connect(&path).unwrap();
    let (first, _) = listener.accept().unwrap();
    drop(first);
    drop(listener);
    let _ = std::fs::remove_file(&path);

    let link = Link::new(UnixConnector(path.clone()), conn, config(32 * 1024)).unwrap();
    let mut stream = Stream::new(link);
    thread::sleep(Duration::from_millis(50));
    stream.service();
    for i in 0..60u64 {
        stream
            .send(if i % 6 == 0 { log(i) } else { events(50) })
            .unwrap();
    }
    // The collector comes back.
    let listener = UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let host = {
        let seen = seen.clone();
        thread::spawn(move || serve(listener.accept().unwrap().0, &seen, None))
    };
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(20)).unwrap();
    host.join().unwrap();
    let stats = link.stats();
    let s = seen.lock().unwrap();
    let got = s.applied.len() as u64;
    assert_eq!(
        got + stats.spool_dropped_records,
        60,
        "every record either arrived or was counted as dropped"
    );
    let logs = s
        .applied
        .iter()
        .filter(|r| matches!(r.body, Body::Log { .. }))
        .count();
    assert_eq!(logs, 10, "records other than events are never dropped");
    assert_eq!(s.connects.len(), 1);
    assert_eq!(s.connects[0].1.connection, 2);
    assert!(s.connects[0].1.after.is_some());
    let _ = std::fs::remove_file(&path);
}

/// A Unix stream that counts the write and read calls made on it.
struct Counted {
    inner: UnixStream,
    writes: Arc<AtomicUsize>,
    reads: Arc<AtomicUsize>,
}

impl io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.read(buf)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Counted {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.as_fd()
    }
}

/// Connects [`Counted`] streams: the socket's path, the write and the read counts.
struct CountedConnector(PathBuf, Arc<AtomicUsize>, Arc<AtomicUsize>);

impl Connector for CountedConnector {
    type Conn = Counted;
    fn start(&mut self) -> io::Result<Counted> {
        Ok(Counted {
            inner: UnixStream::connect(&self.0)?,
            writes: self.1.clone(),
            reads: self.2.clone(),
        })
    }
}

#[test]
fn replies_are_read_when_a_poll_saw_the_host_write_or_a_while_passed() {
    let path = socket_path("replies");
    let (seen, host) = collector_on(&path);
    let reads = Arc::new(AtomicUsize::new(0));
    let mut connector = CountedConnector(path.clone(), Arc::default(), reads.clone());
    let conn = connector.start().unwrap();
    let mut link = Link::new(connector, conn, config(1 << 20)).unwrap();
    let count = || reads.load(Ordering::SeqCst);
    link.service();
    assert!(count() >= 1, "a new connection's replies are read");
    // Services in quick succession, no poll: no read (unless this thread was held
    // up past the interval, when one is due).
    let (before, started) = (count(), Instant::now());
    for _ in 0..20 {
        link.service();
    }
    if started.elapsed() < REPLIES_READ_EVERY {
        assert_eq!(count(), before, "services between replies read nothing");
    }
    // A poll saw the host write: the next service reads.
    let before = count();
    Sink::host_wrote(&mut link);
    link.service();
    assert!(count() > before);
    // Or the interval passed.
    let before = count();
    std::thread::sleep(REPLIES_READ_EVERY);
    link.service();
    assert!(count() > before);
    // Acknowledgements still free the spool: every record sent is acknowledged.
    let mut stream = Stream::new(link);
    for i in 0..100 {
        stream.send(log(i)).unwrap();
    }
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(10)).unwrap();
    assert_eq!(link.unacknowledged(), 0);
    host.join().unwrap();
    assert_eq!(seen.lock().unwrap().applied.len(), 100);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn corked_records_wait_and_then_leave_together_in_one_write() {
    let path = socket_path("cork");
    let (seen, host) = collector_on(&path);
    let writes = Arc::new(AtomicUsize::new(0));
    let mut connector = CountedConnector(path.clone(), writes.clone(), Arc::default());
    let conn = connector.start().unwrap();
    let mut stream = Stream::new(Link::new(connector, conn, config(1 << 20)).unwrap());
    stream.send(log(0)).unwrap();
    let before = writes.load(Ordering::SeqCst);
    assert!(before >= 1, "an uncorked record is written at once");
    stream.cork();
    for i in 1..=20 {
        stream
            .send(if i % 2 == 0 { events(3) } else { log(i) })
            .unwrap();
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        before,
        "nothing written while corked"
    );
    stream.uncork();
    assert_eq!(
        writes.load(Ordering::SeqCst),
        before + 1,
        "the 20 records leave in one write"
    );
    // Past a packet's worth, a corked link writes anyway.
    stream.cork();
    for _ in 0..4 {
        stream.send(events(400)).unwrap();
    }
    assert!(writes.load(Ordering::SeqCst) > before + 1);
    stream.uncork();
    let mut link = stream.into_inner();
    link.finish(Duration::from_secs(10)).unwrap();
    host.join().unwrap();
    let s = seen.lock().unwrap();
    assert_eq!(s.applied.len(), 25);
    assert!(s.applied.iter().enumerate().all(|(i, r)| r.seq == i as u64));
    let _ = std::fs::remove_file(&path);
}

/// One write spanning several frames, while the collector has acknowledged some of them
/// (as after a reconnection, when it had stored records it had not acknowledged yet):
/// the bytes are matched to the frames they carried before any frame is forgotten.
#[test]
fn a_write_across_acknowledged_frames_keeps_the_write_position_on_its_frame() {
    let (conn, _peer) = UnixStream::pair().unwrap();
    let mut link = Link::new(UnixConnector(socket_path("advance")), conn, config(1 << 20)).unwrap();
    for seq in 10..13 {
        link.spool.push_back(Spooled {
            seq,
            frame: vec![seq as u8; 100],
        });
        link.spool_bytes += 100;
    }
    link.acked = 12;
    link.write_off = 50;
    // The rest of frame 10, all of 11, and 30 bytes of 12.
    link.advance(50 + 100 + 30);
    assert_eq!(link.spool.front().map(|s| s.seq), Some(12));
    assert_eq!((link.write_idx, link.write_off), (0, 30));
    assert_eq!(link.spool.len(), 1);
    assert_eq!(link.spool_bytes, 100);
}

/// A quiet workload: the agent read nothing while the host held the VM (and the host
/// acknowledged nothing then). The held time does not count against the host.
#[test]
fn the_wait_for_an_acknowledgement_starts_again_after_a_quiet_workload() {
    use crate::stream::Sink as _;
    let quiet_then_service = |quiet_ended: bool| {
        let (conn, _peer) = UnixStream::pair().unwrap();
        let mut link =
            Link::new(UnixConnector(socket_path("quiet")), conn, config(1 << 20)).unwrap();
        link.send_frame(
            0,
            encode_frame(&Record {
                seq: 0,
                body: log(0),
            })
            .unwrap(),
            &[0; ProbeKind::COUNT],
        )
        .unwrap();
        // Written, unacknowledged, and older than the acknowledgement timeout (5 s).
        assert!(link.unacked_since.is_some());
        link.unacked_since = Some(Instant::now() - Duration::from_secs(6));
        if quiet_ended {
            link.quiet_ended();
        }
        link.service();
        link.is_connected()
    };
    assert!(
        !quiet_then_service(false),
        "a silent host is taken for dead"
    );
    assert!(
        quiet_then_service(true),
        "not for the time the agent was quiet"
    );
}

/// After a quiet workload the host holds the VM until the workload's exit record
/// reaches it, behind the workload's events: the first acknowledgement may take longer
/// than the usual timeout, but not forever; once one came, the usual timeout is back.
#[test]
fn after_a_quiet_workload_the_host_gets_longer_until_its_first_acknowledgement() {
    use crate::stream::Sink as _;
    let (conn, _peer) = UnixStream::pair().unwrap();
    let mut link = Link::new(UnixConnector(socket_path("held")), conn, config(1 << 20)).unwrap();
    let send = |link: &mut Link<UnixConnector>, seq: u64| {
        link.send_frame(
            seq,
            encode_frame(&Record {
                seq,
                body: log(seq),
            })
            .unwrap(),
            &[0; ProbeKind::COUNT],
        )
        .unwrap();
    };
    send(&mut link, 0);
    link.quiet_ended();
    send(&mut link, 1);
    link.unacked_since = Some(Instant::now() - Duration::from_secs(6));
    link.service();
    assert!(
        link.is_connected(),
        "6 s after a quiet workload is not dead"
    );
    link.unacked_since = Some(Instant::now() - AFTER_QUIET_ACK_TIMEOUT);
    link.service();
    assert!(!link.is_connected(), "a host silent for a minute is");

    // An acknowledgement ends the longer wait.
    let (conn, mut peer) = UnixStream::pair().unwrap();
    let mut link = Link::new(UnixConnector(socket_path("held2")), conn, config(1 << 20)).unwrap();
    send(&mut link, 0);
    link.quiet_ended();
    send(&mut link, 1);
    peer.write_all(&encode_reply(&Reply::Ack { next: 1 }).unwrap())
        .unwrap();
    // As the agent's poll would see it.
    link.host_wrote();
    link.service();
    assert_eq!(link.unacknowledged(), 1, "record 0 acknowledged");
    link.unacked_since = Some(Instant::now() - Duration::from_secs(6));
    link.service();
    assert!(!link.is_connected(), "the usual timeout applies again");
}
