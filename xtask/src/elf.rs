//! Just enough ELF parsing to tell a static executable from a dynamic one:
//! the guest initramfs has no libc, so a program with an interpreter cannot run there.

/// `PT_INTERP`: the program header naming the dynamic loader.
const PT_INTERP: u32 = 3;

/// What a file is, as far as running it in the guest goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A 64-bit little-endian ELF without `PT_INTERP`.
    Static,
    /// A 64-bit little-endian ELF that needs a dynamic loader.
    Dynamic,
    /// Not a 64-bit little-endian ELF (a script, or something else).
    NotElf64,
}

/// Classifies `bytes` (a whole file, or at least its headers and program headers).
pub fn classify(bytes: &[u8]) -> Kind {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1 {
        return Kind::NotElf64;
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().expect("8 bytes"));
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    let Ok(phoff) = usize::try_from(phoff) else {
        return Kind::NotElf64;
    };
    for i in 0..phnum {
        let at = phoff.saturating_add(i.saturating_mul(phentsize));
        let Some(p_type) = bytes.get(at..at + 4) else {
            return Kind::NotElf64;
        };
        if u32::from_le_bytes(p_type.try_into().expect("4 bytes")) == PT_INTERP {
            return Kind::Dynamic;
        }
    }
    Kind::Static
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header followed by `types.len()` program headers.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..4].copy_from_slice(b"\x7fELF");
        bytes[4] = 2;
        bytes[5] = 1;
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            bytes.extend(ph);
        }
        bytes
    }

    #[test]
    fn classifies_static_dynamic_and_scripts() {
        assert_eq!(classify(&elf(&[6, 1, 1])), Kind::Static);
        assert_eq!(classify(&elf(&[6, PT_INTERP, 1])), Kind::Dynamic);
        assert_eq!(classify(b"#!/bin/sh\necho hi\n"), Kind::NotElf64);
        let mut truncated = elf(&[1, 1]);
        truncated.truncate(80);
        assert_eq!(classify(&truncated), Kind::NotElf64);
    }

    #[test]
    fn this_machine_s_shell_is_dynamic() {
        // Debian's /bin/sh (dash) is dynamically linked; skip elsewhere.
        if let Ok(bytes) = std::fs::read("/bin/dash") {
            assert_eq!(classify(&bytes), Kind::Dynamic);
        }
    }
}
