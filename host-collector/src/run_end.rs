//! How a run ended, as one value: the lab, attach and bench decide on it, and
//! `summary.json` and the report show its fixed text.

use serde::{Deserialize, Serialize};

/// How a run ended (or why it stopped waiting for the guest). Serialized as the
/// short text `summary.json` has always carried (`"finished"`, `"guest hung"`, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunEnd {
    /// Not ended yet.
    #[default]
    #[serde(rename = "running")]
    Running,
    /// The agent sent its final record.
    #[serde(rename = "finished")]
    Finished,
    /// SIGINT, SIGTERM or SIGHUP stopped the run.
    #[serde(rename = "interrupted")]
    Interrupted,
    /// QEMU exited before the stream ended.
    #[serde(rename = "QEMU exited")]
    QemuExited,
    /// The guest kernel panicked.
    #[serde(rename = "guest kernel panic")]
    GuestKernelPanic,
    /// The guest kernel failed otherwise (an oops, a BUG, ...).
    #[serde(rename = "guest kernel failed")]
    GuestKernelFailed,
    /// The agent's stream fell silent past the watchdog.
    #[serde(rename = "guest hung")]
    GuestHung,
    /// The run took longer than its limit.
    #[serde(rename = "run timeout")]
    RunTimeout,
    /// `attach` saw no complete stream in time.
    #[serde(rename = "attach timeout")]
    AttachTimeout,
    /// The link to the agent was lost and not restored.
    #[serde(rename = "link lost")]
    LinkLost,
    /// No agent of this run ever connected.
    #[serde(rename = "agent never connected")]
    AgentNeverConnected,
    /// The stream was corrupt.
    #[serde(rename = "stream error")]
    StreamError,
    /// `events.jsonl` could not be written.
    #[serde(rename = "output write failed")]
    OutputWriteFailed,
}

impl RunEnd {
    /// The short text, as in `summary.json`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunEnd::Running => "running",
            RunEnd::Finished => "finished",
            RunEnd::Interrupted => "interrupted",
            RunEnd::QemuExited => "QEMU exited",
            RunEnd::GuestKernelPanic => "guest kernel panic",
            RunEnd::GuestKernelFailed => "guest kernel failed",
            RunEnd::GuestHung => "guest hung",
            RunEnd::RunTimeout => "run timeout",
            RunEnd::AttachTimeout => "attach timeout",
            RunEnd::LinkLost => "link lost",
            RunEnd::AgentNeverConnected => "agent never connected",
            RunEnd::StreamError => "stream error",
            RunEnd::OutputWriteFailed => "output write failed",
        }
    }
}

impl std::fmt::Display for RunEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Outcome {
    /// True when the agent sent its final record.
    pub complete: bool,
    /// How it ended (serialized as its short text: `finished`, `guest hung`, ...).
    pub how: RunEnd,
    /// Detail (error text, panic line).
    pub detail: Option<String>,
    /// For a run that ended early, the guest console that says how: the panic text, or
    /// the last lines before a hang.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_its_text() {
        for end in [
            RunEnd::Running,
            RunEnd::Finished,
            RunEnd::Interrupted,
            RunEnd::QemuExited,
            RunEnd::GuestKernelPanic,
            RunEnd::GuestKernelFailed,
            RunEnd::GuestHung,
            RunEnd::RunTimeout,
            RunEnd::AttachTimeout,
            RunEnd::LinkLost,
            RunEnd::AgentNeverConnected,
            RunEnd::StreamError,
            RunEnd::OutputWriteFailed,
        ] {
            assert_eq!(
                serde_json::to_value(end).unwrap(),
                serde_json::Value::String(end.as_str().into())
            );
        }
    }
}
