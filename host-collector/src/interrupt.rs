//! Ctrl-C, SIGTERM and SIGHUP: the first one asks the run to stop, and the run then
//! stops QEMU and writes every output from what it received (outcome `interrupted`);
//! a second one exits at once.
//!
//! QEMU and vhost-device-vsock run in process groups of their own, so a Ctrl-C in the
//! terminal reaches only the collector, which stops them in order.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// The first stop signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The signals that stop a run.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

extern "C" fn on_signal(signal: libc::c_int) {
    if SIGNAL.swap(signal, Ordering::SeqCst) != 0 {
        // A second signal: the user insists. _exit is async-signal-safe.
        // SAFETY: _exit has no preconditions and does not return.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Installs the handler for [`STOP_SIGNALS`] (binaries call this once, at start).
pub fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in STOP_SIGNALS {
        // SAFETY: the handler only touches an atomic and calls _exit, both
        // async-signal-safe.
        unsafe { sigaction(signal, &action) }?;
    }
    Ok(())
}

/// The stop signal received, if any.
pub fn received() -> Option<Signal> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        n => Signal::try_from(n).ok(),
    }
}

/// Records `signal` as if it had been received (for callers that stop a run by other
/// means, and for tests).
pub fn request(signal: Signal) {
    SIGNAL.store(signal as i32, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_requested_stop_is_reported() {
        request(Signal::SIGTERM);
        assert_eq!(received(), Some(Signal::SIGTERM));
        SIGNAL.store(0, Ordering::SeqCst);
        assert_eq!(received(), None);
    }
}
