//! Files captured in the guest and sent as `Artifact` records.
//!
//! Formats that are the agent's own:
//! - `dmesg`: one line per kernel log record, `[seconds.micros] text` like `dmesg`
//!   prints it (e.g. `[    0.123456] pci 0000:00:00.0: [8086:1237] type 00 class 0x060000`),
//!   built from `/dev/kmsg` records (their priority, sequence and key=value continuation
//!   lines are dropped). Without `/dev/kmsg`, the `klogctl` buffer with its `<prio>`
//!   prefixes removed.
//! - `pci`: one line per `/sys/bus/pci/devices/*` entry, sorted by slot:
//!   `slot vendor device class`, e.g. `0000:00:00.0 0x8086 0x1237 0x060000`.
//!
//! A file that cannot be read is reported as a `Log` record (level `warn`) instead of
//! an artifact.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Read},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use guestscope_common::wire::Body;

use crate::stream::{Sink, Stream, StreamError};

/// Artifacts sent at the start of a run, before the first workload: the host needs
/// them while the workloads run (kallsyms for the gdbstub's breakpoint addresses, the
/// BTF for task_struct offsets). (name, path).
pub const START_FILES: &[(&str, &str)] = &[
    ("kallsyms", "/proc/kallsyms"),
    ("btf", "/sys/kernel/btf/vmlinux"),
];

/// The agent's `/proc/self/status` once its probes were loaded (sent with the start
/// artifacts): its `VmHWM` is the peak of loading them. The `agent_status` of the end
/// of the run then has the peak since (see [`crate::memory_use::settled`]).
pub const LOADED_STATUS: &str = "agent_status_loaded";

/// Largest `Artifact` chunk (small enough that sending a file in chunks keeps the agent's
/// memory low: it holds about four chunks at a time).
pub const CHUNK: usize = 256 * 1024;

/// Bytes of a file sent as an artifact that may wait unacknowledged before the next
/// chunk is read ([`Stream::settle`]).
pub const WINDOW: u64 = 2 * CHUNK as u64;

/// Artifacts read from plain files at the end of a run: (name, path).
pub const END_FILES: &[(&str, &str)] = &[
    ("uptime", "/proc/uptime"),
    ("cmdline", "/proc/cmdline"),
    ("version", "/proc/version"),
    (
        "meltdown",
        "/sys/devices/system/cpu/vulnerabilities/meltdown",
    ),
    ("cpuinfo", "/proc/cpuinfo"),
    ("entropy_avail", "/proc/sys/kernel/random/entropy_avail"),
    // The agent's own memory at the end of the run (VmHWM: its peak resident set).
    ("agent_status", "/proc/self/status"),
];

/// Splits `data` into `Artifact` bodies of at most [`CHUNK`] bytes; the last has
/// `last: true`. Empty data gives one empty, last chunk.
pub fn chunk_bodies(name: &str, data: &[u8], chunk: usize) -> Vec<Body> {
    let chunk = chunk.max(1);
    if data.is_empty() {
        return vec![Body::Artifact {
            name: name.into(),
            offset: 0,
            data: Vec::new(),
            last: true,
        }];
    }
    let count = data.len().div_ceil(chunk);
    data.chunks(chunk)
        .enumerate()
        .map(|(i, part)| Body::Artifact {
            name: name.into(),
            offset: (i * chunk) as u64,
            data: part.to_vec(),
            last: i + 1 == count,
        })
        .collect()
}

/// Sends `data` as artifact `name`.
pub fn send_bytes<W: Sink>(
    stream: &mut Stream<W>,
    name: &str,
    data: &[u8],
) -> Result<(), StreamError> {
    for body in chunk_bodies(name, data, CHUNK) {
        stream.send(body)?;
    }
    Ok(())
}

/// Sends `result` as artifact `name`, or a warning saying why it is missing.
pub fn send_result<W: Sink>(
    stream: &mut Stream<W>,
    name: &str,
    result: io::Result<Vec<u8>>,
) -> Result<(), StreamError> {
    match result {
        Ok(data) => send_bytes(stream, name, &data),
        Err(e) => {
            tracing::warn!("artifact {name}: {e}");
            stream.send(Body::Log {
                level: "warn".into(),
                message: format!("artifact {name} not captured: {e}"),
            })?;
            Ok(())
        }
    }
}

/// Reads from `file` until `buf` holds `limit` bytes or the file ends.
fn read_chunk(file: &mut impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(limit);
    file.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Sends the file at `path` as artifact `name`, one [`CHUNK`] at a time: the agent never
/// holds more than two chunks of it (`kallsyms` is about 10 MB, the BTF about 5 MB).
pub fn send_file<W: Sink>(
    stream: &mut Stream<W>,
    name: &str,
    path: &str,
) -> Result<(), StreamError> {
    send_file_chunked(stream, name, path, CHUNK)
}

fn send_file_chunked<W: Sink>(
    stream: &mut Stream<W>,
    name: &str,
    path: &str,
    chunk: usize,
) -> Result<(), StreamError> {
    let chunk = chunk.max(1);
    let context = |e: io::Error| io::Error::new(e.kind(), format!("{path}: {e}"));
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return send_result(stream, name, Err(context(e))),
    };
    let mut current = match read_chunk(&mut file, chunk) {
        Ok(c) => c,
        Err(e) => return send_result(stream, name, Err(context(e))),
    };
    let mut offset = 0u64;
    loop {
        // A full chunk may be followed by more: read ahead to know which chunk is last.
        let next = if current.len() == chunk {
            read_chunk(&mut file, chunk)
        } else {
            Ok(Vec::new())
        };
        let next = match next {
            Ok(n) => n,
            Err(e) => {
                // What was read goes out; the artifact stays incomplete (no last chunk).
                let len = current.len() as u64;
                stream.send(Body::Artifact {
                    name: name.into(),
                    offset,
                    data: current,
                    last: false,
                })?;
                let message = format!(
                    "artifact {name} cut after {} bytes: {}",
                    offset + len,
                    context(e)
                );
                tracing::warn!("{message}");
                stream.send(Body::Log {
                    level: "warn".into(),
                    message,
                })?;
                return Ok(());
            }
        };
        let last = next.is_empty();
        let len = current.len() as u64;
        stream.send(Body::Artifact {
            name: name.into(),
            offset,
            data: current,
            last,
        })?;
        // At most a window of the file waits for the host (the spool would take it
        // all: 14 MB of kallsyms and BTF at the start of a run).
        stream.settle(WINDOW);
        if last {
            return Ok(());
        }
        offset += len;
        current = next;
    }
}

/// Sends the artifacts captured at the end of a run: `dmesg`, the [`END_FILES`], `pci`.
pub fn send_end_artifacts<W: Sink>(stream: &mut Stream<W>) -> Result<(), StreamError> {
    send_result(stream, "dmesg", dmesg())?;
    for (name, path) in END_FILES {
        send_file(stream, name, path)?;
    }
    send_result(
        stream,
        "pci",
        pci_listing(Path::new("/sys/bus/pci/devices")).map(String::into_bytes),
    )
}

/// The kernel log, one `[ts] text` line per record.
pub fn dmesg() -> io::Result<Vec<u8>> {
    match read_kmsg() {
        Ok(text) => Ok(text.into_bytes()),
        Err(kmsg_err) => {
            tracing::debug!("/dev/kmsg: {kmsg_err}; trying klogctl");
            read_klogctl().map_err(|e| {
                io::Error::new(e.kind(), format!("/dev/kmsg: {kmsg_err}; klogctl: {e}"))
            })
        }
    }
}

/// Reads every record in `/dev/kmsg` without blocking.
fn read_kmsg() -> io::Result<String> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")?;
    let mut out = String::new();
    // One read returns one record; records are at most ~8 KiB.
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(line) = kmsg_line(&buf[..n]) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EPIPE: records were overwritten since the last read; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Formats one `/dev/kmsg` record (`prio,seq,ts_us,flags[,...];text\n KEY=value...`)
/// as `[seconds.micros] text`; `None` if it is not a record.
pub fn kmsg_line(record: &[u8]) -> Option<String> {
    let record = String::from_utf8_lossy(record);
    let first = record.lines().next()?;
    let (prefix, text) = first.split_once(';')?;
    let ts_us: u64 = prefix.split(',').nth(2)?.parse().ok()?;
    Some(format!(
        "[{:5}.{:06}] {}",
        ts_us / 1_000_000,
        ts_us % 1_000_000,
        text
    ))
}

/// The kernel log buffer through `klogctl(SYSLOG_ACTION_READ_ALL)`.
fn read_klogctl() -> io::Result<Vec<u8>> {
    const SYSLOG_ACTION_READ_ALL: libc::c_int = 3;
    const SYSLOG_ACTION_SIZE_BUFFER: libc::c_int = 10;
    // SAFETY: SIZE_BUFFER ignores the buffer arguments.
    let size = unsafe { libc::klogctl(SYSLOG_ACTION_SIZE_BUFFER, std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size.max(4096) as usize];
    // SAFETY: the buffer is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::klogctl(
            SYSLOG_ACTION_READ_ALL,
            buf.as_mut_ptr().cast(),
            buf.len() as libc::c_int,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let text = String::from_utf8_lossy(&buf);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(strip_syslog_prefix(line));
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// Removes a leading `<N>` priority from a klogctl line.
pub fn strip_syslog_prefix(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('<')
        && let Some((prio, text)) = rest.split_once('>')
        && !prio.is_empty()
        && prio.bytes().all(|b| b.is_ascii_digit())
    {
        return text;
    }
    line
}

/// One `pci` artifact line.
pub fn pci_line(slot: &str, vendor: &str, device: &str, class: &str) -> String {
    format!(
        "{} {} {} {}",
        slot.trim(),
        vendor.trim(),
        device.trim(),
        class.trim()
    )
}

/// Lists the PCI devices under `devices` (normally `/sys/bus/pci/devices`).
pub fn pci_listing(devices: &Path) -> io::Result<String> {
    let mut slots = fs::read_dir(devices)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    slots.sort();
    let mut out = String::new();
    for slot in slots {
        let dir = devices.join(&slot);
        let field = |name: &str| read_small(&dir.join(name)).unwrap_or_else(|_| "?".into());
        out.push_str(&pci_line(
            &slot,
            &field("vendor"),
            &field("device"),
            &field("class"),
        ));
        out.push('\n');
    }
    Ok(out)
}

fn read_small(path: &Path) -> io::Result<String> {
    let mut s = String::new();
    File::open(path)?.take(4096).read_to_string(&mut s)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifacts_of(buf: &[u8]) -> Vec<Body> {
        let mut reader = guestscope_common::wire::FrameReader::new(buf);
        std::iter::from_fn(|| reader.next_record().ok().map(|r| r.body)).collect()
    }

    #[test]
    fn files_go_in_chunks_with_offsets_and_one_last() {
        let dir = std::env::temp_dir().join(format!("guestscope-artifacts-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // Chunks of 4 bytes; a file of whole chunks has no empty chunk after its last.
        for (len, chunks) in [(0usize, 1usize), (3, 1), (4, 1), (8, 2), (9, 3)] {
            let path = dir.join(format!("f{len}"));
            let data: Vec<u8> = (0..len as u8).collect();
            fs::write(&path, &data).unwrap();
            let mut stream = Stream::new(Vec::new());
            send_file_chunked(&mut stream, "f", path.to_str().unwrap(), 4).unwrap();
            let bodies = artifacts_of(&stream.into_inner());
            assert_eq!(bodies.len(), chunks, "len {len}");
            let mut joined = Vec::new();
            for (i, b) in bodies.iter().enumerate() {
                let Body::Artifact {
                    offset, data, last, ..
                } = b
                else {
                    panic!("{b:?}")
                };
                assert_eq!(*offset, joined.len() as u64);
                assert_eq!(*last, i + 1 == chunks);
                joined.extend_from_slice(data);
            }
            assert_eq!(joined, data);
        }
        let mut stream = Stream::new(Vec::new());
        send_file(&mut stream, "nope", dir.join("missing").to_str().unwrap()).unwrap();
        let bodies = artifacts_of(&stream.into_inner());
        assert!(
            matches!(&bodies[..], [Body::Log { level, .. }] if level == "warn"),
            "{bodies:?}"
        );
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn chunks_cover_the_data_with_offsets_and_one_last() {
        let data: Vec<u8> = (0..10u8).collect();
        let bodies = chunk_bodies("kallsyms", &data, 4);
        let parts: Vec<_> = bodies
            .iter()
            .map(|b| match b {
                Body::Artifact {
                    name,
                    offset,
                    data,
                    last,
                } => {
                    assert_eq!(name, "kallsyms");
                    (*offset, data.clone(), *last)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            parts,
            vec![
                (0, vec![0, 1, 2, 3], false),
                (4, vec![4, 5, 6, 7], false),
                (8, vec![8, 9], true)
            ]
        );
        assert_eq!(chunk_bodies("x", &data, 10).len(), 1);
    }

    #[test]
    fn empty_artifact_is_one_last_chunk() {
        assert_eq!(
            chunk_bodies("meltdown", &[], CHUNK),
            vec![Body::Artifact {
                name: "meltdown".into(),
                offset: 0,
                data: vec![],
                last: true
            }]
        );
    }

    #[test]
    fn kmsg_records_become_dmesg_lines() {
        assert_eq!(
            kmsg_line(b"6,339,5140900,-;pci 0000:00:00.0: [8086:1237] type 00 class 0x060000\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:00.0\n").as_deref(),
            Some("[    5.140900] pci 0000:00:00.0: [8086:1237] type 00 class 0x060000")
        );
        assert_eq!(
            kmsg_line(b"0,0,0,-;Linux version 6.1.0\n").as_deref(),
            Some("[    0.000000] Linux version 6.1.0")
        );
        // Fields after the flags (newer kernels add a caller id) are ignored.
        assert_eq!(
            kmsg_line(b"4,12,123456789,c,caller=T1;x\n").as_deref(),
            Some("[  123.456789] x")
        );
        assert_eq!(kmsg_line(b"garbage"), None);
        assert_eq!(kmsg_line(b"6,1,notanumber,-;x"), None);
    }

    #[test]
    fn syslog_prefixes_are_stripped() {
        assert_eq!(
            strip_syslog_prefix("<6>[    0.000000] Linux"),
            "[    0.000000] Linux"
        );
        assert_eq!(strip_syslog_prefix("<x>y"), "<x>y");
        assert_eq!(strip_syslog_prefix("plain"), "plain");
    }

    #[test]
    fn pci_lines_from_a_fake_sysfs() {
        assert_eq!(
            pci_line("0000:00:00.0", "0x8086\n", "0x1237\n", "0x060000\n"),
            "0000:00:00.0 0x8086 0x1237 0x060000"
        );
        let dir = std::env::temp_dir().join(format!("guestscope-pci-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (slot, v, d, c) in [
            ("0000:00:01.0", "0x8086", "0x7000", "0x060100"),
            ("0000:00:00.0", "0x8086", "0x1237", "0x060000"),
        ] {
            let s = dir.join(slot);
            fs::create_dir_all(&s).unwrap();
            fs::write(s.join("vendor"), format!("{v}\n")).unwrap();
            fs::write(s.join("device"), format!("{d}\n")).unwrap();
            fs::write(s.join("class"), format!("{c}\n")).unwrap();
        }
        fs::create_dir_all(dir.join("0000:00:02.0")).unwrap();
        let listing = pci_listing(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            listing,
            "0000:00:00.0 0x8086 0x1237 0x060000\n0000:00:01.0 0x8086 0x7000 0x060100\n0000:00:02.0 ? ? ?\n"
        );
    }
}
