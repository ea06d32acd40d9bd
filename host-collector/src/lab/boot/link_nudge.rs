//! Restarting the VM's devices when the link stays silent after a gdbstub hold.
//!
//! Every stop and start of the VM (each gdbstub stop, step and continue) also stops and
//! starts its vhost-user vsock device. Now and then the link does not come back from
//! that: the agent's records after the hold never reach the host, the host's clock
//! probes never reach the agent, and after a minute without an acknowledgement the
//! agent gives up (1 run in 23 of the user-stops scenario on this machine). The host's
//! own writes (thirty clock probes in that minute) did not revive it. What the host can
//! do is one more stop and start of the VM (a gdbstub connection and its detach), which
//! sets the device's rings up again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use qemu_gdb_client::{Client, GdbEndpoint};

/// Silence after a hold's end past which the link is taken for stuck: once not held,
/// the agent sends a heartbeat every second and answers each clock probe at once.
const SILENT_AFTER_HOLD: Duration = Duration::from_secs(3);
/// Restarts tried for one silence.
const MAX_RESTARTS: u32 = 3;

/// Restarts the VM when [`AfterHolds`] says so.
pub(super) struct LinkNudge {
    /// The VM's gdbstub.
    gdb: GdbEndpoint,
    /// Set while a gdbstub thread may hold the VM.
    paused: Arc<AtomicBool>,
    /// What the holds and the records said so far.
    pub(super) watch: AfterHolds,
}

impl LinkNudge {
    /// Nothing seen yet.
    pub(super) fn new(gdb: GdbEndpoint, paused: Arc<AtomicBool>) -> LinkNudge {
        LinkNudge {
            gdb,
            paused,
            watch: AfterHolds::default(),
        }
    }

    /// Looks again (between reads), `last_record` being when the stream's last record
    /// arrived, and restarts the VM if it is due.
    pub(super) fn check(&mut self, last_record: Option<Instant>) {
        let held = self.paused.load(Ordering::Relaxed);
        if self.watch.due(held, last_record, Instant::now()) {
            restart(&self.gdb);
        }
    }
}

/// Watches the gdbstub holds and the stream's records, and says when to restart the VM:
/// once the stream has stayed silent for [`SILENT_AFTER_HOLD`] since a hold ended (and
/// as long again after each restart, [`MAX_RESTARTS`] times).
#[derive(Default)]
pub(super) struct AfterHolds {
    /// A hold was seen and has not ended yet.
    holding: bool,
    /// When the last hold ended, while no record has arrived since.
    hold_ended: Option<Instant>,
    /// Restarts made for the current silence, and when the last was (`None` before
    /// the first).
    restarts: u32,
    last_restart: Option<Instant>,
    /// Restarts made in the boot.
    pub(super) made: u32,
    /// Silences that ended after a restart.
    pub(super) revived: u32,
}

impl AfterHolds {
    /// Looks again at `now` (between reads): `held` says whether a gdbstub thread may
    /// hold the VM, `last_record` when the stream's last record arrived. True when the
    /// VM should be restarted now ([`restart`]).
    pub(super) fn due(&mut self, held: bool, last_record: Option<Instant>, now: Instant) -> bool {
        if held {
            self.holding = true;
            return false;
        }
        if std::mem::take(&mut self.holding) {
            self.hold_ended = Some(now);
            self.restarts = 0;
            self.last_restart = None;
        }
        let Some(ended) = self.hold_ended else {
            return false;
        };
        if last_record.is_some_and(|t| t > ended) {
            if self.restarts > 0 {
                self.revived += 1;
                tracing::warn!(
                    restarts = self.restarts,
                    "the link came back after the VM was restarted"
                );
            }
            self.hold_ended = None;
            return false;
        }
        let since = self.last_restart.unwrap_or(ended);
        if self.restarts >= MAX_RESTARTS || now.duration_since(since) < SILENT_AFTER_HOLD {
            return false;
        }
        self.restarts += 1;
        self.made += 1;
        self.last_restart = Some(now);
        tracing::warn!(
            silent_ms = now.duration_since(ended).as_millis() as u64,
            attempt = self.restarts,
            "no record since the VM's last gdbstub hold ended: stopping and starting the VM to restart its vsock device"
        );
        true
    }
}

/// Stops and starts the VM through its gdbstub: QEMU stops the VM when a debugger
/// connects and lets it run again at the detach.
fn restart(gdb: &GdbEndpoint) {
    if let Err(e) = Client::connect(gdb.clone(), Default::default()).and_then(Client::detach) {
        tracing::warn!("restarting the VM through the gdbstub: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silence_after_a_hold_restarts_the_vm_a_few_times_and_a_record_ends_it() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut n = AfterHolds::default();
        // Silence with no hold: the watchdog's business, not this.
        assert!(!n.due(false, Some(t0), at(10.0)));
        // A hold, then silence: a restart 3 s after its end, then every 3 s, 3 in all.
        assert!(!n.due(true, Some(t0), at(11.0)));
        assert!(!n.due(false, Some(t0), at(12.0)));
        assert!(!n.due(false, Some(t0), at(14.9)));
        let restarts: Vec<f64> = (150..300)
            .map(|tenths| f64::from(tenths) / 10.0)
            .filter(|&s| n.due(false, Some(t0), at(s)))
            .collect();
        assert_eq!(restarts, [15.0, 18.0, 21.0]);
        // A record at last: counted as revived, and nothing more is due.
        assert!(!n.due(false, Some(at(30.0)), at(30.1)));
        assert_eq!((n.made, n.revived), (3, 1));
        assert!(!n.due(false, Some(at(30.0)), at(60.0)));
    }

    #[test]
    fn a_record_soon_after_a_hold_needs_no_restart() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut n = AfterHolds::default();
        assert!(!n.due(true, None, at(1.0)));
        assert!(!n.due(false, None, at(2.0)));
        assert!(!n.due(false, Some(at(2.5)), at(2.6)));
        assert!(!n.due(false, Some(at(2.5)), at(20.0)));
        assert_eq!((n.made, n.revived), (0, 0));
    }
}
