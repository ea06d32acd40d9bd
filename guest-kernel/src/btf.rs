//! Struct member offsets from the guest kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The blob comes from the guest itself, so the offsets match the running kernel
//! whatever its config or version; no debug package is needed. Parsing uses the
//! `btfparse` crate (Apache-2.0). aya-obj's `Btf` parses the same format but keeps
//! struct members crate-private, so it cannot answer "offset of `task_struct.pid`".

use btfparse::{Offset, Readable, TypeInformation, TypeVariant};

use crate::type_graph::{self, TypeGraphError};

/// Why offsets could not be taken from a BTF blob.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The blob is not BTF or is damaged.
    #[error("cannot parse the BTF blob ({len} bytes): {message}")]
    Parse {
        /// Blob size.
        len: usize,
        /// The parser's message.
        message: String,
    },
    /// The type table is unsafe to walk (a type containing itself, or nesting too deep).
    #[error("the BTF blob's types cannot be used: {0}")]
    Types(#[from] TypeGraphError),
    /// No struct of that name.
    #[error("BTF has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member (path like `comm` or `se.vruntime`).
    #[error("BTF struct {strukt} has no member {member}: {message}")]
    NoMember {
        /// Struct name.
        strukt: String,
        /// Member path.
        member: String,
        /// The parser's message.
        message: String,
    },
    /// The member is a bitfield, which has no byte offset.
    #[error("{strukt}.{member} is a bitfield")]
    Bitfield {
        /// Struct name.
        strukt: String,
        /// Member path.
        member: String,
    },
    /// The member's size is unknown or not what the reader needs.
    #[error("{strukt}.{member}: {message}")]
    Size {
        /// Struct name.
        strukt: String,
        /// Member path.
        member: String,
        /// What is wrong.
        message: String,
    },
}

/// A member's place in its struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Byte offset from the start of the struct.
    pub offset: u32,
    /// Size in bytes.
    pub size: u32,
}

/// The task_struct members the host-side readers use.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskOffsets {
    /// `task_struct.pid` (thread id).
    pub pid: u32,
    /// `task_struct.tgid` (process id).
    pub tgid: u32,
    /// `task_struct.comm`.
    pub comm: u32,
    /// Size of `comm` (16: TASK_COMM_LEN).
    pub comm_len: u32,
    /// `pcpu_hot.current_task`, on kernels (6.2+) that have `struct pcpu_hot`.
    pub pcpu_hot_current_task: Option<u32>,
}

/// A parsed BTF blob.
pub struct Btf {
    info: TypeInformation,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Btf")
            .field("types", &self.info.get().len())
            .finish()
    }
}

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).ok();
        let src = start.and_then(|s| s.checked_add(buffer.len()).and_then(|e| self.0.get(s..e)));
        match src {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                "read past the end of the BTF blob",
            )),
        }
    }
}

impl Btf {
    /// Parses a raw BTF blob (the bytes of `/sys/kernel/btf/vmlinux`).
    pub fn parse(blob: &[u8]) -> Result<Btf, BtfError> {
        // The parser trusts the header's section lengths; check them first so a
        // truncated blob is an error, not a partial type table.
        check_header(blob)?;
        let info = TypeInformation::new(&Bytes(blob)).map_err(|e| BtfError::Parse {
            len: blob.len(),
            message: e.message().to_string(),
        })?;
        type_graph::check(&info)?;
        Ok(Btf { info })
    }

    /// The parsed type table (for [`crate::read_expr`]).
    pub(crate) fn info(&self) -> &TypeInformation {
        &self.info
    }

    /// The id of the complete struct named `name`.
    pub fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        // Prefer a complete struct over a forward declaration or a same-named typedef.
        self.info
            .get()
            .iter()
            .find_map(|(id, ty)| match ty {
                TypeVariant::Struct(s) if s.name().as_deref() == Some(name) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| BtfError::NoStruct(name.to_string()))
    }

    /// Offset and size of `strukt.member` (`member` may be a path: `se.vruntime`,
    /// and members of anonymous unions/structs are found by name).
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let id = self.struct_id(strukt)?;
        let (tid, offset) = self
            .info
            .offset_of(id, member)
            .map_err(|e| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
                message: e.message().to_string(),
            })?;
        let Offset::ByteOffset(offset) = offset else {
            return Err(BtfError::Bitfield {
                strukt: strukt.to_string(),
                member: member.to_string(),
            });
        };
        let size = self.info.size_of(tid).map_err(|e| BtfError::Size {
            strukt: strukt.to_string(),
            member: member.to_string(),
            message: e.message().to_string(),
        })?;
        let size = u32::try_from(size).map_err(|_| BtfError::Size {
            strukt: strukt.to_string(),
            member: member.to_string(),
            message: format!("size {size} too large"),
        })?;
        Ok(Member { offset, size })
    }

    /// The task_struct offsets for [`crate::kernel`].
    pub fn task_offsets(&self) -> Result<TaskOffsets, BtfError> {
        let sized = |m: Member, want: u32, name: &str| -> Result<u32, BtfError> {
            if m.size == want {
                Ok(m.offset)
            } else {
                Err(BtfError::Size {
                    strukt: "task_struct".into(),
                    member: name.into(),
                    message: format!("size {} (expected {want})", m.size),
                })
            }
        };
        let pid = sized(self.member("task_struct", "pid")?, 4, "pid")?;
        let tgid = sized(self.member("task_struct", "tgid")?, 4, "tgid")?;
        let comm = self.member("task_struct", "comm")?;
        if comm.size == 0 || comm.size > 256 {
            return Err(BtfError::Size {
                strukt: "task_struct".into(),
                member: "comm".into(),
                message: format!("size {}", comm.size),
            });
        }
        let pcpu_hot_current_task = match self.member("pcpu_hot", "current_task") {
            Ok(m) => Some(sized(m, 8, "pcpu_hot.current_task")?),
            Err(BtfError::NoStruct(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(TaskOffsets {
            pid,
            tgid,
            comm: comm.offset,
            comm_len: comm.size,
            pcpu_hot_current_task,
        })
    }
}

/// Parses `blob` and returns the task_struct offsets: the one call the lab needs.
pub fn task_offsets(blob: &[u8]) -> Result<TaskOffsets, BtfError> {
    Btf::parse(blob)?.task_offsets()
}

const BTF_MAGIC: u16 = 0xeb9f;

fn check_header(blob: &[u8]) -> Result<(), BtfError> {
    let bad = |message: String| BtfError::Parse {
        len: blob.len(),
        message,
    };
    let u32_at = |at: usize| {
        blob.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let magic = blob.get(0..2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if magic != Some(BTF_MAGIC) {
        return Err(bad(format!(
            "no BTF magic (got {magic:x?}; big-endian blobs are not supported)"
        )));
    }
    let (Some(hdr_len), Some(type_off), Some(type_len), Some(str_off), Some(str_len)) =
        (u32_at(4), u32_at(8), u32_at(12), u32_at(16), u32_at(20))
    else {
        return Err(bad("header truncated".into()));
    };
    let end = |off: u32, len: u32| u64::from(hdr_len) + u64::from(off) + u64::from(len);
    let need = end(type_off, type_len).max(end(str_off, str_len));
    if need > blob.len() as u64 {
        return Err(bad(format!("sections end at byte {need}, past the blob")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little BTF blob: `int`, `char`, `char[16]`, `struct task_struct { int pid @8;
    /// int tgid @12; char comm[16] @32; }`, a typedef named `task_struct` (which
    /// must not be taken for the struct), `struct flags { int a:3; }`.
    fn sample() -> Vec<u8> {
        let mut strings =
            b"\0int\0char\0task_struct\0pid\0tgid\0comm\0flags\0a\0__ARRAY_SIZE_TYPE__\0".to_vec();
        let s = |name: &str, strings: &[u8]| -> u32 {
            let needle: Vec<u8> = [name.as_bytes(), b"\0"].concat();
            strings
                .windows(needle.len())
                .position(|w| w == needle.as_slice())
                .map(|p| p as u32)
                .unwrap()
        };
        let mut types: Vec<u32> = Vec::new();
        let info =
            |kind: u32, vlen: u32, kflag: bool| (kind << 24) | vlen | (u32::from(kflag) << 31);
        // 1: int (INT, size 4, encoding signed, 32 bits)
        types.extend([s("int", &strings), info(1, 0, false), 4, (1 << 24) | 32]);
        // 2: char (INT, size 1, 8 bits)
        types.extend([s("char", &strings), info(1, 0, false), 1, 8]);
        // 3: char[16] (ARRAY: elem type, index type, nelems)
        types.extend([0, info(3, 0, false), 0, 2, 1, 16]);
        // 4: struct task_struct, size 64, 3 members (bit offsets)
        types.extend([s("task_struct", &strings), info(4, 3, false), 64]);
        types.extend([s("pid", &strings), 1, 8 * 8]);
        types.extend([s("tgid", &strings), 1, 12 * 8]);
        types.extend([s("comm", &strings), 3, 32 * 8]);
        // 5: typedef task_struct -> int (a decoy)
        types.extend([s("task_struct", &strings), info(8, 0, false), 1]);
        // 6: struct flags { int a:3 } with kind_flag bitfield encoding
        types.extend([s("flags", &strings), info(4, 1, true), 4]);
        types.extend([s("a", &strings), 1, 3 << 24]); // 3 bits at bit offset 0
        strings.extend_from_slice(b"");
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.push(1); // version
        blob.push(0); // flags
        for v in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&v.to_le_bytes());
        }
        blob.extend_from_slice(&type_bytes);
        blob.extend_from_slice(&strings);
        blob
    }

    /// Checks (or, with `GUESTSCOPE_WRITE_FUZZ_SEEDS=1`, writes) the seed input of
    /// the `btf_reader` fuzz target: [`sample`], a valid blob with every kind the reader
    /// follows.
    #[test]
    fn fuzz_seed_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/btf_reader/seed-task-struct");
        if std::env::var_os("GUESTSCOPE_WRITE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, sample()).unwrap();
        }
        assert!(
            std::fs::read(&path).unwrap_or_default() == sample(),
            "{} is stale: rerun this test with GUESTSCOPE_WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }

    #[test]
    fn task_offsets_from_a_small_blob() {
        let t = task_offsets(&sample()).unwrap();
        assert_eq!(
            t,
            TaskOffsets {
                pid: 8,
                tgid: 12,
                comm: 32,
                comm_len: 16,
                pcpu_hot_current_task: None
            }
        );
    }

    #[test]
    fn missing_struct_member_and_bitfields_are_errors() {
        let btf = Btf::parse(&sample()).unwrap();
        assert!(matches!(
            btf.member("mm_struct", "pgd"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(matches!(
            btf.member("task_struct", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        let bf = btf.member("flags", "a");
        assert!(matches!(bf, Err(BtfError::Bitfield { .. })), "{bf:?}");
    }

    #[test]
    fn damaged_blobs_are_errors_not_panics() {
        let blob = sample();
        assert!(matches!(task_offsets(&[]), Err(BtfError::Parse { .. })));
        assert!(matches!(
            task_offsets(b"not btf at all, not btf at all"),
            Err(BtfError::Parse { .. })
        ));
        for cut in [10, 24, 40, blob.len() - 1] {
            assert!(task_offsets(&blob[..cut]).is_err(), "truncated at {cut}");
        }
        // Random corruption of the type section: errors or odd offsets, never a panic.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut bad = blob.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % bad.len() as u64) as usize;
                bad[at] = (x >> 32) as u8;
            }
            let _ = task_offsets(&bad);
        }
        let mut flipped = blob.clone();
        flipped[24 + 4] = 0xff; // kind of the first type: invalid
        flipped[24 + 7] = 0x7f;
        assert!(task_offsets(&flipped).is_err());
    }
}
