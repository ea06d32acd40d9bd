//! Which stack unwinder a kernel was built with, told from its kallsyms.
//!
//! It matters at a function's entry: the ORC unwinder records the caller there, the
//! frame-pointer unwinder skips it (the function has not pushed its frame yet), which
//! the agent repairs from the return address the probe reads
//! (`guestscope_common::EntryCaller`).

use serde::{Deserialize, Serialize};

use crate::kallsyms::Kallsyms;

/// A kernel's stack unwinder (`CONFIG_UNWINDER_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unwinder {
    /// `CONFIG_UNWINDER_ORC`: the compiler's unwind tables (Debian's kernels).
    Orc,
    /// `CONFIG_UNWINDER_FRAME_POINTER`: the chain of saved `rbp`s.
    FramePointer,
    /// `CONFIG_UNWINDER_GUESS`: every kernel text address found on the stack.
    Guess,
}

impl Unwinder {
    /// The unwinder of the kernel whose kallsyms these are: `unwind_init` is ORC's (its
    /// boot-time setup), `update_stack_state` the frame-pointer unwinder's; a kernel
    /// with `unwind_next_frame` and neither guesses. `None` when no unwinder's symbols
    /// are there.
    pub fn of(kallsyms: &Kallsyms) -> Option<Unwinder> {
        if kallsyms.by_name("unwind_init").is_some() {
            Some(Unwinder::Orc)
        } else if kallsyms.by_name("update_stack_state").is_some() {
            Some(Unwinder::FramePointer)
        } else if kallsyms.by_name("unwind_next_frame").is_some() {
            Some(Unwinder::Guess)
        } else {
            None
        }
    }

    /// Whether walks from a function's entry miss the function's caller.
    pub fn misses_entry_caller(self) -> bool {
        self != Unwinder::Orc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kallsyms(names: &[&str]) -> Kallsyms {
        let text: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("ffffffff8100{i:04x} t {n}\n"))
            .collect();
        Kallsyms::parse(&text).expect("kallsyms")
    }

    #[test]
    fn each_unwinder_is_told_by_its_own_symbol() {
        // Debian 6.1's kallsyms (ORC) and a frame-pointer build's, abridged.
        let orc = kallsyms(&["unwind_next_frame", "__unwind_start", "unwind_init"]);
        assert_eq!(Unwinder::of(&orc), Some(Unwinder::Orc));
        let fp = kallsyms(&["unwind_dump", "update_stack_state", "unwind_next_frame"]);
        assert_eq!(Unwinder::of(&fp), Some(Unwinder::FramePointer));
        let guess = kallsyms(&["unwind_next_frame", "__unwind_start"]);
        assert_eq!(Unwinder::of(&guess), Some(Unwinder::Guess));
        assert_eq!(Unwinder::of(&kallsyms(&["_raw_spin_lock"])), None);
        assert!(Unwinder::FramePointer.misses_entry_caller());
        assert!(!Unwinder::Orc.misses_entry_caller());
    }
}
