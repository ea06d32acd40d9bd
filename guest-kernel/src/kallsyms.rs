//! Symbolization of guest kernel addresses against the guest's own `/proc/kallsyms`.
//!
//! The file is read inside the guest at run time, so its addresses already include
//! the KASLR slide: no offset arithmetic is needed, and a stock distribution kernel
//! (whose System.map is not shipped) symbolizes as well as a debug build.

use std::fmt;

/// One symbol of the guest kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Run-time address.
    pub addr: u64,
    /// Symbol name.
    pub name: String,
    /// `kallsyms` type letter (`T`, `t`, `D`, ...).
    pub kind: char,
    /// Module name for module symbols (`[virtio]` in kallsyms), else `None`.
    pub module: Option<String>,
}

/// An address resolved to `symbol+offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved<'a> {
    /// The symbol containing the address.
    pub symbol: &'a Symbol,
    /// Bytes from the symbol's start.
    pub offset: u64,
}

impl fmt::Display for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.symbol.name, self.offset)?;
        if let Some(m) = &self.symbol.module {
            write!(f, " [{m}]")?;
        }
        Ok(())
    }
}

/// Why a kallsyms file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    /// No line carried a non-zero address (e.g. read with `kptr_restrict` set).
    #[error("kallsyms has no usable addresses ({lines} lines, all zero): kptr_restrict hides them")]
    AllZero {
        /// Lines read.
        lines: usize,
    },
    /// The file was empty or had no parsable line.
    #[error("kallsyms has no symbols")]
    Empty,
}

/// An address → symbol table built from one kallsyms file.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    symbols: Vec<Symbol>,
}

impl Kallsyms {
    /// Parses the text of `/proc/kallsyms`. Malformed lines are skipped.
    pub fn parse(text: &str) -> Result<Kallsyms, KallsymsError> {
        let mut symbols = Vec::new();
        let mut lines = 0usize;
        for line in text.lines() {
            lines += 1;
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 {
                continue;
            }
            let module = parts
                .next()
                .map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
            symbols.push(Symbol {
                addr,
                name: name.to_string(),
                kind: kind.chars().next().unwrap_or('?'),
                module,
            });
        }
        if symbols.is_empty() {
            return Err(if lines > 0 {
                KallsymsError::AllZero { lines }
            } else {
                KallsymsError::Empty
            });
        }
        // Stable sort keeps kallsyms order among aliases at one address; prefer
        // text symbols by placing them last, so a lookup lands on them.
        symbols.sort_by_key(|s| (s.addr, matches!(s.kind, 'T' | 't')));
        Ok(Kallsyms { symbols })
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol with exactly this name (first one if several).
    pub fn by_name(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// The symbol that starts exactly at `addr` (a named global such as `jiffies_lock`).
    pub fn exact(&self, addr: u64) -> Option<&Symbol> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        (i > 0 && self.symbols[i - 1].addr == addr).then(|| &self.symbols[i - 1])
    }

    /// Resolves `addr` to the closest symbol at or below it. Returns `None` below
    /// the first symbol or more than 1 MiB past the nearest one (not kernel text).
    pub fn resolve(&self, addr: u64) -> Option<Resolved<'_>> {
        let i = self.symbols.partition_point(|s| s.addr <= addr);
        if i == 0 {
            return None;
        }
        let symbol = &self.symbols[i - 1];
        let offset = addr - symbol.addr;
        (offset < 1 << 20).then_some(Resolved { symbol, offset })
    }

    /// Resolves a kernel stack (innermost frame first) to `symbol+0xoff` strings,
    /// dropping the leading frames that belong to the probe itself (`bpf_prog_*`,
    /// `bpf_trampoline_*`, and anything in the `[bpf]` pseudo-module).
    pub fn symbolize_stack(&self, ips: &[u64]) -> Vec<String> {
        self.symbolize_stack_with(ips, |_, _| None)
    }

    /// Like [`Kallsyms::symbolize_stack`], each frame followed by what `place` says of
    /// its address (` (fs/file.c:506)`), given the address and whether it is the
    /// innermost frame kept (the probed place) rather than a return address.
    pub fn symbolize_stack_with(
        &self,
        ips: &[u64],
        place: impl Fn(u64, bool) -> Option<String>,
    ) -> Vec<String> {
        let mut frames: Vec<String> = Vec::with_capacity(ips.len());
        let mut in_probe_prefix = true;
        for &ip in ips {
            let resolved = self.resolve(ip);
            if in_probe_prefix {
                if let Some(r) = &resolved {
                    if is_probe_frame(r.symbol) {
                        continue;
                    }
                } else if frames.is_empty() {
                    // BPF JIT images that kallsyms does not list.
                    continue;
                }
                in_probe_prefix = false;
            }
            let mut frame = match resolved {
                Some(r) => r.to_string(),
                None => format!("{ip:#x}"),
            };
            if let Some(at) = place(ip, frames.is_empty()) {
                frame.push_str(&format!(" ({at})"));
            }
            frames.push(frame);
        }
        frames
    }
}

fn is_probe_frame(s: &Symbol) -> bool {
    s.name.starts_with("bpf_prog_")
        || s.name.starts_with("bpf_trampoline_")
        || s.module.as_deref() == Some("bpf")
}

/// The function name of a symbolized frame (`alloc_fd+0x4e` → `alloc_fd`).
pub fn frame_function(frame: &str) -> &str {
    frame.split(['+', ' ']).next().unwrap_or(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffffa5000000 T _text
ffffffffa5001000 T _stext
ffffffffa52b6a10 t alloc_fd
ffffffffa52b6c00 T do_sys_openat2
ffffffffa5d0e6a0 T _raw_spin_lock
ffffffffa6807a40 D jiffies_lock
ffffffffc0201000 t bpf_prog_6deef7357e7b4530_spin_lock_fentry\t[bpf]
ffffffffc0203000 t bpf_trampoline_6442512345\t[bpf]
ffffffffc0400000 t virtio_dev_probe\t[virtio]
0000000000000000 A fixed_percpu_data
";

    #[test]
    fn resolves_inside_functions_with_offsets() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        let r = k.resolve(0xffffffffa52b6a5e).unwrap();
        assert_eq!(r.symbol.name, "alloc_fd");
        assert_eq!(r.offset, 0x4e);
        assert_eq!(r.to_string(), "alloc_fd+0x4e");
        assert_eq!(
            k.resolve(0xffffffffc0400010).unwrap().to_string(),
            "virtio_dev_probe+0x10 [virtio]"
        );
    }

    #[test]
    fn below_first_symbol_and_far_past_last_do_not_resolve() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert!(k.resolve(0x1000).is_none());
        assert!(k.resolve(0xffffffffc0400000 + (4 << 20)).is_none());
    }

    #[test]
    fn zero_addresses_are_ignored_and_all_zero_is_an_error() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert!(k.by_name("fixed_percpu_data").is_none());
        let hidden = "0000000000000000 T _text\n0000000000000000 T alloc_fd\n";
        assert!(matches!(
            Kallsyms::parse(hidden),
            Err(KallsymsError::AllZero { lines: 2 })
        ));
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
    }

    #[test]
    fn exact_match_names_global_locks() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        assert_eq!(k.exact(0xffffffffa6807a40).unwrap().name, "jiffies_lock");
        assert!(k.exact(0xffffffffa6807a48).is_none());
    }

    #[test]
    fn probe_frames_are_stripped_from_the_top_only() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        let stack = [
            0xffffffffc0201020, // bpf_prog_*
            0xffffffffc0203010, // bpf_trampoline_*
            0xffffffffa5d0e6a5, // _raw_spin_lock
            0xffffffffa52b6a5e, // alloc_fd
            0xffffffffa52b6c40, // do_sys_openat2
        ];
        let frames = k.symbolize_stack(&stack);
        assert_eq!(
            frames,
            vec!["_raw_spin_lock+0x5", "alloc_fd+0x4e", "do_sys_openat2+0x40"]
        );
        assert_eq!(frame_function(&frames[1]), "alloc_fd");
    }

    #[test]
    fn frames_carry_their_place_the_probed_one_told_apart() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        let stack = [
            0xffffffffc0201020, // bpf_prog_*: dropped, not the probed frame
            0xffffffffa52b6a5e, // alloc_fd
            0xffffffffa52b6c40, // do_sys_openat2
        ];
        let frames = k.symbolize_stack_with(&stack, |ip, probed| {
            (ip != 0xffffffffa52b6c40).then(|| format!("{ip:x} probed={probed}"))
        });
        assert_eq!(
            frames,
            vec![
                "alloc_fd+0x4e (ffffffffa52b6a5e probed=true)",
                "do_sys_openat2+0x40"
            ]
        );
        assert_eq!(frame_function(&frames[0]), "alloc_fd");
    }

    #[test]
    fn unknown_frames_stay_as_addresses() {
        let k = Kallsyms::parse(SAMPLE).unwrap();
        let frames = k.symbolize_stack(&[0xffffffffa52b6a5e, 0x42]);
        assert_eq!(
            frames,
            vec!["alloc_fd+0x4e".to_string(), "0x42".to_string()]
        );
    }
}
