//! The guest's serial console: every line timestamped on the host when it arrives.
//!
//! Host timestamps (seconds since QEMU was launched) are what the boot-time
//! experiment compares with the kernel's own clock (the printk timestamps).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One console line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SerialLine {
    /// Host seconds since QEMU was launched when the line's first byte arrived.
    pub host_s: f64,
    /// The kernel's printk timestamp at the start of the line, if any.
    pub kernel_s: Option<f64>,
    /// The text, without the line ending.
    pub text: String,
}

/// Milestones of a boot, in host seconds since QEMU was launched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BootMarks {
    /// First byte on the console (firmware or kernel).
    pub first_byte_s: Option<f64>,
    /// The kernel's "Linux version" line.
    pub kernel_banner_s: Option<f64>,
    /// Our init's first line.
    pub init_start_s: Option<f64>,
    /// Kernel clock when init started (the last printk timestamp before it).
    pub init_start_kernel_s: Option<f64>,
    /// The agent's "ready" line.
    pub agent_ready_s: Option<f64>,
    /// A kernel panic, oops or lockup line, if one appeared.
    pub fatal: Option<String>,
}

/// Console marker printed by the guest init at start.
pub const INIT_START: &str = "guestscope-init: start";
/// Console marker printed by the agent once probes are attached and streaming.
pub const AGENT_READY: &str = "guestscope-agent: ready";

/// The console state shared between the reader thread and the runner.
#[derive(Debug, Default)]
pub struct SerialState {
    /// All lines so far.
    pub lines: Vec<SerialLine>,
    /// Milestones seen so far.
    pub marks: BootMarks,
    partial: Vec<u8>,
    partial_start: Option<f64>,
    last_kernel_s: Option<f64>,
}

impl SerialState {
    /// Feeds bytes that arrived at `host_s`.
    pub fn feed(&mut self, bytes: &[u8], host_s: f64) {
        if self.marks.first_byte_s.is_none() && !bytes.is_empty() {
            self.marks.first_byte_s = Some(host_s);
        }
        for &b in bytes {
            if self.partial_start.is_none() {
                self.partial_start = Some(host_s);
            }
            if b == b'\n' {
                self.finish_line();
            } else if b != b'\r' {
                self.partial.push(b);
            }
        }
    }

    /// Ends the current partial line (at end of stream).
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            self.finish_line();
        }
    }

    fn finish_line(&mut self) {
        let host_s = self.partial_start.take().unwrap_or_default();
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        let kernel_s = printk_timestamp(&text);
        let m = &mut self.marks;
        if m.kernel_banner_s.is_none() && text.contains("Linux version") {
            m.kernel_banner_s = Some(host_s);
        }
        if m.init_start_s.is_none() && text.contains(INIT_START) {
            m.init_start_s = Some(host_s);
            m.init_start_kernel_s = self.last_kernel_s;
        }
        if m.agent_ready_s.is_none() && text.contains(AGENT_READY) {
            m.agent_ready_s = Some(host_s);
        }
        if m.fatal.is_none() && is_fatal(&text) {
            m.fatal = Some(text.trim().to_string());
        }
        if kernel_s.is_some() {
            self.last_kernel_s = kernel_s;
        }
        self.lines.push(SerialLine {
            host_s,
            kernel_s,
            text,
        });
    }
}

/// Parses a printk prefix `[    1.234567] ...` into seconds.
pub fn printk_timestamp(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    let end = rest.find(']')?;
    rest[..end].trim().parse().ok()
}

/// Console prefix of the guest init's one-line error (what the kernel lacks), after
/// which it powers the guest off.
pub const INIT_ERROR: &str = "guestscope-init: error: ";

fn is_fatal(text: &str) -> bool {
    [
        "Kernel panic - not syncing",
        "BUG: soft lockup",
        "rcu_sched detected stalls",
        "Oops:",
        INIT_ERROR,
    ]
    .iter()
    .any(|p| text.contains(p))
}

/// Starts a thread that reads `source` until EOF into `state`, mirroring the raw
/// bytes to `log_path`.
pub fn spawn_reader<R: Read + Send + 'static>(
    mut source: R,
    state: Arc<Mutex<SerialState>>,
    launched: Instant,
    log_path: &Path,
) -> std::io::Result<JoinHandle<()>> {
    let mut log = std::fs::File::create(log_path)?;
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let t = launched.elapsed().as_secs_f64();
                    let _ = log.write_all(&buf[..n]);
                    state.lock().expect("serial state").feed(&buf[..n], t);
                }
            }
        }
        state.lock().expect("serial state").flush();
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_printk_timestamps() {
        assert_eq!(
            printk_timestamp("[    1.234567] Run /init as init process"),
            Some(1.234567)
        );
        assert_eq!(printk_timestamp("[12345.000001] x"), Some(12345.000001));
        assert_eq!(printk_timestamp("guestscope-init: start"), None);
        assert_eq!(printk_timestamp("[abc] x"), None);
    }

    #[test]
    fn lines_split_across_reads_keep_their_first_byte_time() {
        let mut s = SerialState::default();
        s.feed(b"SeaBIOS\r\n[    0.000000] Linux ver", 0.1);
        s.feed(b"sion 6.1.0\r\n[    1.500000] Run /init\n", 2.5);
        s.feed(b"guestscope-init: start\n", 3.0);
        s.feed(b"guestscope-agent: ready", 3.5);
        s.flush();
        assert_eq!(s.lines.len(), 5);
        assert_eq!(s.lines[1].host_s, 0.1);
        assert_eq!(s.lines[1].text, "[    0.000000] Linux version 6.1.0");
        let m = &s.marks;
        assert_eq!(m.first_byte_s, Some(0.1));
        assert_eq!(m.kernel_banner_s, Some(0.1));
        assert_eq!(m.init_start_s, Some(3.0));
        assert_eq!(m.init_start_kernel_s, Some(1.5));
        assert_eq!(m.agent_ready_s, Some(3.5));
        assert_eq!(m.fatal, None);
    }

    #[test]
    fn panics_are_recognized() {
        let mut s = SerialState::default();
        s.feed(
            b"[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n",
            1.0,
        );
        assert!(
            s.marks
                .fatal
                .as_deref()
                .unwrap()
                .contains("Unable to mount root fs")
        );
        let mut s = SerialState::default();
        s.feed(
            b"guestscope-init: error: no root device /dev/vda after 15 s\n",
            1.0,
        );
        assert_eq!(
            s.marks.fatal.as_deref(),
            Some("guestscope-init: error: no root device /dev/vda after 15 s")
        );
    }
}
