//! The agent's own memory, read from `/proc/self/status`: logged once its probes are
//! loaded, so a boot's serial log shows what loading took, and its peak reset then.

use std::fmt;

use crate::tracing_mode::status_kib;

/// Resident memory of the agent, KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUse {
    /// Resident now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident so far (`VmHWM`).
    pub peak_kib: u64,
    /// Anonymous memory resident now (`RssAnon`): the heap and other private pages.
    pub anon_kib: u64,
    /// File-backed pages resident now (`RssFile`): the binary and the ring buffer's
    /// mapping (each data page mapped twice).
    pub file_kib: u64,
}

impl MemoryUse {
    /// Reads the fields out of `/proc/PID/status` text (missing ones are 0).
    pub fn parse(status: &str) -> MemoryUse {
        let field = |name| status_kib(status, name).unwrap_or(0);
        MemoryUse {
            rss_kib: field("VmRSS"),
            peak_kib: field("VmHWM"),
            anon_kib: field("RssAnon"),
            file_kib: field("RssFile"),
        }
    }
}

/// The agent's `/proc/self/status` now, then its peak resident set (`VmHWM`) reset
/// to what is resident: loading the probes is over (aya parses the kernel's BTF, a
/// passing 15 MB), and the peak from here on is what the run itself needs. Both
/// peaks reach the host: this text as an artifact, the later one in `agent_status`.
pub fn settled() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok();
    // "5" resets the peak RSS (Documentation/filesystems/proc.rst, clear_refs).
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        tracing::debug!("resetting the peak RSS: {e}");
    }
    status
}

impl fmt::Display for MemoryUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rss {} KiB (anon {}, file {}), peak {} KiB",
            self.rss_kib, self.anon_kib, self.file_kib, self.peak_kib
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_of_a_status_file() {
        let status = "Name:\tagent\nVmHWM:\t   40552 kB\nVmRSS:\t   29808 kB\nRssAnon:\t   10652 kB\nRssFile:\t   16396 kB\n";
        assert_eq!(
            MemoryUse::parse(status),
            MemoryUse {
                rss_kib: 29808,
                peak_kib: 40552,
                anon_kib: 10652,
                file_kib: 16396
            }
        );
        assert_eq!(MemoryUse::parse("Name:\tx\n"), MemoryUse::default());
    }
}
