//! Where one member of one struct sits, read from raw BTF (the kernel's
//! `/sys/kernel/btf/vmlinux`) by walking its type records until that struct: no type
//! graph is built. aya's loader builds its own graph of the kernel's types, which its
//! API does not show members of; a second full parse (the `btfparse` crate's, say)
//! would cost the agent about as much memory again and, under TCG, a good part of a
//! second at start, for one offset.
//!
//! The format is the kernel's (`include/uapi/linux/btf.h`): a header, then the type
//! records, each a 12-byte `btf_type` followed by data whose length its kind and
//! `vlen` give, then the strings the records name.

/// Why the BTF could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfScanError {
    /// The data does not start with a little-endian BTF header.
    #[error("not little-endian BTF (magic {0:#06x})")]
    Magic(u16),
    /// The header's sections do not fit in the data.
    #[error("BTF header: {0}")]
    Header(&'static str),
    /// A type record runs past the type section.
    #[error("BTF type {id}: record runs past the type section")]
    Truncated {
        /// The record's type id.
        id: u32,
    },
    /// A record of a kind this reader does not know (its length is unknown).
    #[error("BTF type {id}: unknown kind {kind}")]
    UnknownKind {
        /// The record's type id.
        id: u32,
        /// Its kind.
        kind: u32,
    },
}

/// BTF's magic number, as a little-endian file starts.
const MAGIC: u16 = 0xeb9f;
/// Bytes of `struct btf_header` up to `str_len`.
const HEADER_BYTES: usize = 24;
/// Bytes of `struct btf_type`.
const TYPE_BYTES: usize = 12;
/// `BTF_KIND_STRUCT`.
const KIND_STRUCT: u32 = 4;

/// The byte offset of member `member` of the first struct named `strukt` that has
/// members, in raw BTF `btf`; `None` if there is no such struct or member (only the
/// struct's own members are searched, not those of its anonymous unions), or the
/// member is a bit field that does not start on a byte.
pub fn member_offset(btf: &[u8], strukt: &str, member: &str) -> Result<Option<u32>, BtfScanError> {
    let word = |at: usize| -> Option<u32> {
        btf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let magic = btf
        .get(..2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .ok_or(BtfScanError::Header("shorter than a header"))?;
    if magic != MAGIC {
        return Err(BtfScanError::Magic(magic));
    }
    let [hdr_len, type_off, type_len, str_off, str_len] =
        [4, 8, 12, 16, 20].map(|at| word(at).map(|w| w as usize));
    let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (hdr_len, type_off, type_len, str_off, str_len)
    else {
        return Err(BtfScanError::Header("shorter than a header"));
    };
    if hdr_len < HEADER_BYTES {
        return Err(BtfScanError::Header("header shorter than its fields"));
    }
    let section = |off: usize, len: usize| {
        hdr_len
            .checked_add(off)
            .and_then(|start| Some(start..start.checked_add(len)?))
            .and_then(|range| btf.get(range))
    };
    let types = section(type_off, type_len).ok_or(BtfScanError::Header("type section"))?;
    let strings = section(str_off, str_len).ok_or(BtfScanError::Header("string section"))?;
    let name = |off: u32| -> &[u8] {
        let rest = strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|b| *b == 0).unwrap_or(rest.len())]
    };
    let field = |at: usize| -> u32 {
        let b = &types[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
    let mut at = 0;
    // Type ids start at 1 (0 is void).
    let mut id = 1u32;
    while at < types.len() {
        if at + TYPE_BYTES > types.len() {
            return Err(BtfScanError::Truncated { id });
        }
        let info = field(at + 4);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let data = data_bytes(kind, vlen).ok_or(BtfScanError::UnknownKind { id, kind })?;
        let end = at + TYPE_BYTES + data;
        if end > types.len() {
            return Err(BtfScanError::Truncated { id });
        }
        if kind == KIND_STRUCT && vlen > 0 && name(field(at)) == strukt.as_bytes() {
            // With kind_flag set, a member's offset holds the bit field's size above its
            // low 24 bits.
            let kind_flag = info >> 31 == 1;
            return Ok((0..vlen).find_map(|i| {
                let m = at + TYPE_BYTES + i * 12;
                (name(field(m)) == member.as_bytes()).then(|| {
                    let raw = field(m + 8);
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    (bits % 8 == 0).then_some(bits / 8)
                })?
            }));
        }
        at = end;
        id += 1;
    }
    Ok(None)
}

/// Bytes that follow a `btf_type` of kind `kind` with `vlen` entries; `None` for a kind
/// this reader does not know.
fn data_bytes(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        // INT: its encoding; VAR: its linkage; DECL_TAG: the component index.
        1 | 14 | 17 => 4,
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7..=12 | 16 | 18 => 0,
        // ARRAY: element type, index type, element count.
        3 => 12,
        // STRUCT, UNION: members; DATASEC: variables; ENUM64: values.
        4 | 5 | 15 | 19 => 12 * vlen,
        // ENUM: values; FUNC_PROTO: parameters.
        6 | 13 => 8 * vlen,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw BTF of `types` (already encoded records) over `strings` (starting with NUL).
    fn btf(types: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(types);
        b.extend_from_slice(strings);
        b
    }

    fn words(ws: &[u32]) -> Vec<u8> {
        ws.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    // Strings: 1 "int", 5 "task", 10 "pid", 14 "comm", 19 "flags".
    const STRINGS: &[u8] = b"\0int\0task\0pid\0comm\0flags\0";

    #[test]
    fn finds_a_member_past_records_of_every_length() {
        let mut types = Vec::new();
        // 1: int (4 bytes of encoding).
        types.extend(words(&[1, info(1, 0, false), 4, 32]));
        // 2: enum with two values; 3: func_proto with one parameter; 4: array.
        types.extend(words(&[0, info(6, 2, false), 4, 1, 0, 5, 1]));
        types.extend(words(&[0, info(13, 1, false), 1, 0, 1]));
        types.extend(words(&[0, info(3, 0, false), 0, 1, 1, 16]));
        // 5: a forward declaration named "task" (no members), then the struct itself.
        types.extend(words(&[5, info(7, 0, false), 0]));
        types.extend(words(&[
            5,
            info(4, 3, false),
            64,
            10,
            1,
            0,
            19,
            1,
            32,
            14,
            4,
            1536,
        ]));
        let b = btf(&types, STRINGS);
        assert_eq!(member_offset(&b, "task", "comm"), Ok(Some(192)));
        assert_eq!(member_offset(&b, "task", "pid"), Ok(Some(0)));
        assert_eq!(member_offset(&b, "task", "mm"), Ok(None));
        assert_eq!(member_offset(&b, "cred", "comm"), Ok(None));
    }

    #[test]
    fn bit_fields_are_read_with_kind_flag_and_refused_off_a_byte() {
        // With kind_flag: "flags" a 3-bit field at bit 35, "comm" at byte 8.
        let types = words(&[5, info(4, 2, true), 24, 19, 0, (3 << 24) | 35, 14, 0, 64]);
        let b = btf(&types, STRINGS);
        assert_eq!(member_offset(&b, "task", "comm"), Ok(Some(8)));
        assert_eq!(member_offset(&b, "task", "flags"), Ok(None));
    }

    #[test]
    fn bad_data_is_an_error_not_a_panic() {
        assert_eq!(
            member_offset(b"\x9f", "task", "comm"),
            Err(BtfScanError::Header("shorter than a header"))
        );
        // Big-endian BTF.
        assert_eq!(
            member_offset(&[0xeb, 0x9f, 1, 0], "task", "comm"),
            Err(BtfScanError::Magic(0x9feb))
        );
        assert_eq!(
            member_offset(&[0x9f, 0xeb, 1, 0], "task", "comm"),
            Err(BtfScanError::Header("shorter than a header"))
        );
        // A struct claiming more members than the section holds.
        let types = words(&[5, info(4, 9, false), 8, 14, 0, 0]);
        assert_eq!(
            member_offset(&btf(&types, STRINGS), "task", "comm"),
            Err(BtfScanError::Truncated { id: 1 })
        );
        let types = words(&[5, info(31, 0, false), 0]);
        assert_eq!(
            member_offset(&btf(&types, STRINGS), "task", "comm"),
            Err(BtfScanError::UnknownKind { id: 1, kind: 31 })
        );
        // Sections past the end.
        let mut b = btf(&[], STRINGS);
        b.truncate(30);
        assert_eq!(
            member_offset(&b, "task", "comm"),
            Err(BtfScanError::Header("string section"))
        );
    }

    /// The running kernel's BTF, checked against the host side's full parse of it
    /// (`guestscope-guest-kernel`, over the `btfparse` crate); skipped where the kernel
    /// has no BTF.
    #[test]
    fn agrees_with_a_full_parse_of_this_kernel() {
        let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux: skipped");
            return;
        };
        let full = guest_kernel::btf::Btf::parse(&raw).expect("the full parse reads it");
        for (strukt, member) in [
            ("task_struct", "comm"),
            ("task_struct", "pid"),
            ("task_struct", "tgid"),
            ("cred", "uid"),
        ] {
            let ours = member_offset(&raw, strukt, member)
                .expect("the kernel's BTF reads")
                .unwrap_or_else(|| panic!("{strukt}.{member} found"));
            let theirs = full
                .member(strukt, member)
                .expect("the full parse finds it");
            assert_eq!(ours, theirs.offset, "{strukt}.{member}");
        }
    }
}
