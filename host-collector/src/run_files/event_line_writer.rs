//! Writing one `events.jsonl` line straight from an event's fields: the bytes
//! `serde_json` writes for the same [`EventLine`], without its per-token writes,
//! per-byte escaping of the keys, or a `String` for each hex number. The collector
//! writes one line per event it receives, so this is on its hot path; the tests check
//! the bytes against `serde_json`'s for arbitrary fields.
//!
//! A field added to [`EventLine`] has to be added here too: [`EventFields::to_line`]
//! does not compile without it, and the proptest fails until the writer writes it.

use super::events::EventLine;

/// One event's fields as the session has them, before any is formatted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFields<'a> {
    /// Guest CLOCK_MONOTONIC, ns.
    pub ts_ns: u64,
    /// The host's wall clock at the event, when the run has a clock fit.
    pub host_unix_ns: Option<i64>,
    /// The probe's name.
    pub probe: &'a str,
    /// CPU the probe ran on.
    pub cpu: u32,
    /// Process (thread-group) id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The task's `comm`.
    pub comm: &'a str,
    /// The workload the event belongs to, if any.
    pub workload: Option<&'a str>,
    /// The probe's argument.
    pub arg: u64,
    /// Every argument register a user probe carried, `arg` first.
    pub args: Option<&'a [u64]>,
    /// The lock's symbol, for spin_lock events on a named lock.
    pub lock: Option<&'a str>,
    /// The faulting instruction (page faults).
    pub ip: Option<u64>,
    /// The page fault's error code.
    pub error_code: Option<u32>,
    /// The kernel stack's id in `stacks.jsonl`.
    pub stack_id: i32,
}

impl<'a> EventFields<'a> {
    /// The [`EventLine`] these fields make in run `run_id`: what [`write_event_line`]
    /// writes, as `serde_json` would.
    pub fn to_line(&self, run_id: &'a str) -> EventLine<'a> {
        EventLine {
            run_id: run_id.into(),
            ts_ns: self.ts_ns,
            host_unix_ns: self.host_unix_ns,
            probe: self.probe.into(),
            cpu: self.cpu,
            pid: self.pid,
            tid: self.tid,
            comm: self.comm.into(),
            workload: self.workload.map(Into::into),
            arg: format!("{:#x}", self.arg),
            args: self
                .args
                .map(|all| all.iter().map(|a| format!("{a:#x}")).collect()),
            lock: self.lock.map(Into::into),
            ip: self.ip.map(|ip| format!("{ip:#x}")),
            error_code: self.error_code,
            stack_id: self.stack_id,
        }
    }
}

/// Appends the `events.jsonl` line of `fields` in run `run_id` to `out`, newline
/// included: byte for byte `serde_json::to_writer` of [`EventFields::to_line`].
pub fn write_event_line(out: &mut Vec<u8>, run_id: &str, fields: &EventFields<'_>) {
    out.extend_from_slice(b"{\"run_id\":");
    string(out, run_id);
    out.extend_from_slice(b",\"ts_ns\":");
    integer(out, fields.ts_ns);
    if let Some(ns) = fields.host_unix_ns {
        out.extend_from_slice(b",\"host_unix_ns\":");
        integer(out, ns);
    }
    out.extend_from_slice(b",\"probe\":");
    string(out, fields.probe);
    out.extend_from_slice(b",\"cpu\":");
    integer(out, fields.cpu);
    out.extend_from_slice(b",\"pid\":");
    integer(out, fields.pid);
    out.extend_from_slice(b",\"tid\":");
    integer(out, fields.tid);
    out.extend_from_slice(b",\"comm\":");
    string(out, fields.comm);
    out.extend_from_slice(b",\"workload\":");
    match fields.workload {
        Some(w) => string(out, w),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"arg\":");
    hex(out, fields.arg);
    if let Some(all) = fields.args {
        out.extend_from_slice(b",\"args\":[");
        for (i, &a) in all.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            hex(out, a);
        }
        out.push(b']');
    }
    if let Some(lock) = fields.lock {
        out.extend_from_slice(b",\"lock\":");
        string(out, lock);
    }
    if let Some(ip) = fields.ip {
        out.extend_from_slice(b",\"ip\":");
        hex(out, ip);
    }
    if let Some(code) = fields.error_code {
        out.extend_from_slice(b",\"error_code\":");
        integer(out, code);
    }
    out.extend_from_slice(b",\"stack_id\":");
    integer(out, fields.stack_id);
    out.extend_from_slice(b"}\n");
}

/// Appends `value` as a JSON number.
fn integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Appends `value` as the JSON string `"0x…"` (`{:#x}`: lowercase, no leading zeros).
fn hex(out: &mut Vec<u8>, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut start = digits.len();
    let mut v = value;
    loop {
        start -= 1;
        digits[start] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(b"\"0x");
    out.extend_from_slice(&digits[start..]);
    out.push(b'"');
}

/// Appends `value` as a JSON string. Text with nothing to escape (no `"`, `\` or
/// control character: names, comms, run ids) is copied as it is; anything else goes
/// through `serde_json`'s own escaping.
fn string(out: &mut Vec<u8>, value: &str) {
    if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        // Writing to a Vec cannot fail, nor can serializing a str.
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Text with what JSON must escape (quotes, backslashes, control characters) and
    /// what it must not (non-ASCII), among plain names.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_:0-9]{0,20}",
            "\\PC{0,12}",
            proptest::collection::vec(any::<char>(), 0..12)
                .prop_map(|c| c.into_iter().collect::<String>()),
            Just("a\"b\\c\n\t\u{1}\u{7f}é".to_string()),
        ]
    }

    fn serde_line(run_id: &str, f: &EventFields<'_>) -> Vec<u8> {
        let mut v = serde_json::to_vec(&f.to_line(run_id)).unwrap();
        v.push(b'\n');
        v
    }

    #[test]
    fn a_spin_lock_event_is_written_as_serde_json_writes_it() {
        let f = EventFields {
            ts_ns: 1_234_567,
            host_unix_ns: None,
            probe: "spin_lock",
            cpu: 0,
            pid: 100,
            tid: 101,
            comm: "fopen",
            workload: Some("fopen"),
            arg: 0xffff_8880_0000_0010,
            args: None,
            lock: None,
            ip: None,
            error_code: None,
            stack_id: -1,
        };
        let mut out = Vec::new();
        write_event_line(&mut out, "20261207T155237Z-0a1b2c3d", &f);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "{\"run_id\":\"20261207T155237Z-0a1b2c3d\",\"ts_ns\":1234567,\"probe\":\"spin_lock\",\
             \"cpu\":0,\"pid\":100,\"tid\":101,\"comm\":\"fopen\",\"workload\":\"fopen\",\
             \"arg\":\"0xffff888000000010\",\"stack_id\":-1}\n"
        );
        assert_eq!(out, serde_line("20261207T155237Z-0a1b2c3d", &f));
    }

    proptest! {
        #[test]
        fn every_line_is_byte_for_byte_what_serde_json_writes(
            run_id in text(),
            ts_ns in any::<u64>(),
            host_unix_ns in proptest::option::of(any::<i64>()),
            probe in text(),
            (cpu, pid, tid) in (any::<u32>(), any::<u32>(), any::<u32>()),
            comm in text(),
            workload in proptest::option::of(text()),
            arg in prop_oneof![Just(0u64), Just(u64::MAX), any::<u64>()],
            args in proptest::option::of(proptest::collection::vec(any::<u64>(), 0..7)),
            lock in proptest::option::of(text()),
            ip in proptest::option::of(any::<u64>()),
            error_code in proptest::option::of(any::<u32>()),
            stack_id in prop_oneof![Just(-1i32), Just(i32::MIN), any::<i32>()],
        ) {
            let f = EventFields {
                ts_ns,
                host_unix_ns,
                probe: &probe,
                cpu,
                pid,
                tid,
                comm: &comm,
                workload: workload.as_deref(),
                arg,
                args: args.as_deref(),
                lock: lock.as_deref(),
                ip,
                error_code,
                stack_id,
            };
            let mut out = b"kept".to_vec();
            write_event_line(&mut out, &run_id, &f);
            prop_assert_eq!(&out[..4], b"kept");
            prop_assert_eq!(&out[4..], &serde_line(&run_id, &f)[..]);
        }
    }
}
