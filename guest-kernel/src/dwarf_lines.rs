//! file:line for kernel stack addresses, as the lab's gdb backtraces showed them
//! (`alloc_fd (...) at fs/file.c:506`), from a vmlinux built with DWARF (one built by
//! `cargo xtask kernel`, or a distribution's `-dbg` package), with gimli-rs'
//! `addr2line`. A guest address is first moved back by the KASLR slide: the distance
//! between `_text` in the guest's kallsyms and in the vmlinux.

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectSymbol as _};

/// Why a vmlinux gives no lines.
#[derive(Debug, thiserror::Error)]
pub enum DwarfError {
    /// The file cannot be read or is not an ELF object.
    #[error("{0}: {1}")]
    Read(PathBuf, String),
    /// No `_text` symbol: not a kernel image.
    #[error("{0}: no _text symbol, not a vmlinux")]
    NotVmlinux(PathBuf),
    /// No `.debug_info` section: built without DWARF.
    #[error("{0}: no DWARF (.debug_info); build the kernel with CONFIG_DEBUG_INFO")]
    NoDwarf(PathBuf),
}

/// A vmlinux's line tables.
pub struct DwarfLines {
    loader: addr2line::Loader,
    /// `_text` at link time.
    link_text: u64,
    path: PathBuf,
}

impl std::fmt::Debug for DwarfLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DwarfLines")
            .field("path", &self.path)
            .field("link_text", &format_args!("{:#x}", self.link_text))
            .finish()
    }
}

impl DwarfLines {
    /// Opens `vmlinux` (memory-mapped; its DWARF is parsed lazily, as lookups need it).
    pub fn open(vmlinux: &Path) -> Result<DwarfLines, DwarfError> {
        let read =
            |e: &dyn std::fmt::Display| DwarfError::Read(vmlinux.to_path_buf(), e.to_string());
        // Read through a cache, not whole: a vmlinux with DWARF is hundreds of MB.
        let handle = std::fs::File::open(vmlinux).map_err(|e| read(&e))?;
        let cache = object::ReadCache::new(handle);
        let file = object::File::parse(&cache).map_err(|e| read(&e))?;
        let link_text = file
            .symbols()
            .find(|s| s.name() == Ok("_text"))
            .map(|s| s.address())
            .ok_or_else(|| DwarfError::NotVmlinux(vmlinux.to_path_buf()))?;
        if file.section_by_name(".debug_info").is_none() {
            return Err(DwarfError::NoDwarf(vmlinux.to_path_buf()));
        }
        drop(file);
        let loader = addr2line::Loader::new(vmlinux).map_err(|e| read(&e))?;
        Ok(DwarfLines {
            loader,
            link_text,
            path: vmlinux.to_path_buf(),
        })
    }

    /// The KASLR slide of a guest whose kallsyms put `_text` at `runtime_text`.
    pub fn slide(&self, runtime_text: u64) -> u64 {
        runtime_text.wrapping_sub(self.link_text)
    }

    /// Where guest address `ip` is in the source: `fs/file.c:506`, followed by the
    /// functions inlined there (`[inlined __alloc_fd at fs/file.c:480]`), innermost
    /// first. `return_address`: `ip` is a return address (any frame but the probed
    /// one), so the call before it is looked up, as debuggers do.
    pub fn describe(&self, ip: u64, slide: u64, return_address: bool) -> Option<String> {
        let addr = ip
            .wrapping_sub(slide)
            .wrapping_sub(u64::from(return_address));
        let mut frames = self.loader.find_frames(addr).ok()?;
        let mut found = Vec::new();
        while let Ok(Some(frame)) = frames.next() {
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok().map(|n| n.into_owned()));
            let place = frame
                .location
                .as_ref()
                .and_then(|l| Some(format!("{}:{}", short(l.file?), l.line?)));
            found.push((function, place));
        }
        // Innermost first: the last frame is the function the address is in.
        let (_, outer) = found.pop()?;
        let mut text = outer?;
        for (function, place) in found.iter().rev() {
            text.push_str(&format!(
                " [inlined {} at {}]",
                function.as_deref().unwrap_or("?"),
                place.as_deref().unwrap_or("?")
            ));
        }
        Some(text)
    }
}

/// A source path as the kernel tree names it: relative to the tree's top (DWARF may
/// hold the build machine's absolute path).
fn short(file: &str) -> &str {
    for top in [
        "/arch/",
        "/fs/",
        "/mm/",
        "/kernel/",
        "/drivers/",
        "/net/",
        "/include/",
        "/lib/",
        "/block/",
        "/security/",
        "/ipc/",
        "/init/",
        "/crypto/",
    ] {
        if let Some(i) = file.find(top) {
            return &file[i + 1..];
        }
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_paths_shorten_to_the_trees() {
        assert_eq!(short("/work/linux-source-6.1/fs/file.c"), "fs/file.c");
        assert_eq!(short("fs/file.c"), "fs/file.c");
        assert_eq!(
            short("/b/linux/arch/x86/entry/entry_64.S"),
            "arch/x86/entry/entry_64.S"
        );
    }

    /// A small ELF with DWARF, built by the C compiler that links Rust here: `_text`
    /// first, then a function calling an always-inlined one.
    #[test]
    fn addresses_map_to_file_line_and_inlined_functions() {
        let dir = std::env::temp_dir().join(format!("gs-dwarf-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = dir.join("mini.c");
        std::fs::write(
            &c,
            "void _text(void) {}\n\
             static inline __attribute__((always_inline)) int inner(int x) {\n\
             \treturn x * 3 + 7;\n\
             }\n\
             int outer(int x) {\n\
             \treturn inner(x) + 1;\n\
             }\n",
        )
        .unwrap();
        let elf = dir.join("mini");
        let built = std::process::Command::new("cc")
            .args(["-g", "-O0", "-nostdlib", "-static", "-Wl,-e,outer", "-o"])
            .arg(&elf)
            .arg(&c)
            .status()
            .unwrap();
        assert!(built.success());
        let lines = DwarfLines::open(&elf).unwrap();
        let data = std::fs::read(&elf).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let outer = file
            .symbols()
            .find(|s| s.name() == Ok("outer"))
            .unwrap()
            .address();
        // The guest's _text 0x1000 further: the slide moves the address back.
        let slide = lines.slide(lines.link_text + 0x1000);
        assert_eq!(slide, 0x1000);
        let at = lines.describe(outer + 0x1000, slide, false).unwrap();
        assert!(at.starts_with("mini.c:") || at.contains("/mini.c:"), "{at}");
        // Somewhere in outer's bytes the inlined function shows (always_inline: even at -O0).
        let inlined = (0..32)
            .filter_map(|off| lines.describe(outer + off + 0x1000, slide, false))
            .any(|d| d.contains("mini.c:6 [inlined inner at ") && d.ends_with("mini.c:3]"));
        assert!(inlined, "no inlined frame in outer");
        assert!(lines.describe(0x10, 0, false).is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_file_that_is_not_a_vmlinux_is_one_error() {
        let dir = std::env::temp_dir().join(format!("gs-dwarf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not elf").unwrap();
        assert!(matches!(DwarfLines::open(&junk), Err(DwarfError::Read(..))));
        // An ELF file without _text: this test binary.
        let me = std::env::current_exe().unwrap();
        assert!(matches!(
            DwarfLines::open(&me),
            Err(DwarfError::NotVmlinux(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
