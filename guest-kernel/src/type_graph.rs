//! A check of a BTF type table before anything walks it: no type may contain itself
//! by value (through a typedef, a qualifier, an array element or a struct member),
//! and no chain of such containments may be deeper than [`MAX_TYPE_DEPTH`].
//!
//! `btfparse` follows these references recursively and without a cycle check, so a
//! damaged or hostile blob (it comes from the guest) could otherwise overflow the
//! host's stack or loop for ever. Pointers are not followed: a struct pointing to
//! itself is normal C.

use std::collections::HashMap;

use btfparse::{TypeInformation, TypeVariant};

/// Longest chain of by-value containments accepted. Linux's own types nest a few
/// levels (struct in anonymous union in struct, behind a typedef or two); this
/// leaves room for far more while keeping every walk's recursion short.
pub const MAX_TYPE_DEPTH: usize = 256;

/// Why a type table was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TypeGraphError {
    /// A type contains itself by value.
    #[error("type {0} contains itself (a cycle through typedefs, arrays or members)")]
    Cycle(u32),
    /// A containment chain longer than [`MAX_TYPE_DEPTH`].
    #[error("types nest deeper than {MAX_TYPE_DEPTH} levels (at type {0})")]
    TooDeep(u32),
}

/// The `n`-th type `ty` contains by value, if any.
fn contained(ty: &TypeVariant, n: usize) -> Option<u32> {
    let only = |tid: u32| (n == 0).then_some(tid);
    match ty {
        TypeVariant::Typedef(t) => only(*t.tid()),
        TypeVariant::Const(t) => only(*t.tid()),
        TypeVariant::Volatile(t) => only(*t.tid()),
        TypeVariant::Restrict(t) => only(*t.tid()),
        TypeVariant::TypeTag(t) => only(*t.tid()),
        TypeVariant::Var(t) => only(*t.tid()),
        TypeVariant::Fwd(t) => only(*t.tid()),
        TypeVariant::Array(t) => only(*t.element_tid()),
        TypeVariant::Struct(t) => t.member_list().get(n).map(|m| m.tid()),
        TypeVariant::Union(t) => t.member_list().get(n).map(|m| m.tid()),
        _ => None,
    }
}

/// Checks every type of `info` (an iterative depth-first walk: the check itself
/// cannot overflow the stack).
pub fn check(info: &TypeInformation) -> Result<(), TypeGraphError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        OnPath,
        Done,
    }
    let types = info.get();
    let mut marks: HashMap<u32, Mark> = HashMap::with_capacity(types.len());
    // (type id, index of the next contained type to visit)
    let mut path: Vec<(u32, usize)> = Vec::new();
    for &root in types.keys() {
        if marks.contains_key(&root) {
            continue;
        }
        marks.insert(root, Mark::OnPath);
        path.push((root, 0));
        while let Some(top) = path.last_mut() {
            let (id, n) = *top;
            let next = types.get(&id).and_then(|ty| contained(ty, n));
            let Some(child) = next else {
                marks.insert(id, Mark::Done);
                path.pop();
                continue;
            };
            top.1 += 1;
            match marks.get(&child) {
                Some(Mark::Done) => {}
                Some(Mark::OnPath) => return Err(TypeGraphError::Cycle(child)),
                // An id with no type is the parser's error to report when it is used.
                None if !types.contains_key(&child) => {}
                None => {
                    if path.len() >= MAX_TYPE_DEPTH {
                        return Err(TypeGraphError::TooDeep(child));
                    }
                    marks.insert(child, Mark::OnPath);
                    path.push((child, 0));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{Btf, BtfError};

    const INT: u32 = 1;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const TYPEDEF: u32 = 8;

    /// A BTF blob of anonymous types, each `(kind, vlen, size_or_type, extra words)`.
    fn blob(types: &[(u32, u32, u32, Vec<u32>)]) -> Vec<u8> {
        let mut words = Vec::new();
        for (kind, vlen, size_or_type, extra) in types {
            words.extend([0, (kind << 24) | vlen, *size_or_type]);
            words.extend(extra);
        }
        let type_bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let strings = b"\0";
        let mut out = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            1,
        ] {
            out.extend(v.to_le_bytes());
        }
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    fn int() -> (u32, u32, u32, Vec<u32>) {
        (INT, 0, 4, vec![32])
    }

    fn refused(blob: &[u8]) -> TypeGraphError {
        match Btf::parse(blob) {
            Err(BtfError::Types(e)) => e,
            other => panic!("not refused for its types: {other:?}"),
        }
    }

    #[test]
    fn typedefs_in_a_circle_are_refused() {
        // 1: int, 2: typedef -> 3, 3: typedef -> 2
        let e = refused(&blob(&[
            int(),
            (TYPEDEF, 0, 3, vec![]),
            (TYPEDEF, 0, 2, vec![]),
        ]));
        assert!(matches!(e, TypeGraphError::Cycle(2 | 3)), "{e}");
    }

    #[test]
    fn a_struct_containing_itself_through_an_array_is_refused() {
        // 1: int, 2: struct { int a; 3 b; } (size 8), 3: array of 2 [4] (index type int)
        let e = refused(&blob(&[
            int(),
            (STRUCT, 2, 8, vec![0, 1, 0, 0, 3, 32]),
            (ARRAY, 0, 0, vec![2, 1, 4]),
        ]));
        assert!(matches!(e, TypeGraphError::Cycle(2 | 3)), "{e}");
    }

    #[test]
    fn a_struct_pointing_to_itself_is_fine() {
        // 1: int, 2: struct { int a; 3 next; } (size 16), 3: pointer to 2
        const PTR: u32 = 2;
        let b = blob(&[
            int(),
            (STRUCT, 2, 16, vec![0, 1, 0, 0, 3, 64]),
            (PTR, 0, 2, vec![]),
        ]);
        Btf::parse(&b).unwrap();
    }

    #[test]
    fn nesting_is_bounded() {
        // A chain of typedefs, each naming the next, ending at int.
        let chain = |len: u32| {
            let mut types = vec![int()];
            for i in 0..len {
                let next = if i + 1 == len { 1 } else { i + 3 };
                types.push((TYPEDEF, 0, next, vec![]));
            }
            blob(&types)
        };
        Btf::parse(&chain(MAX_TYPE_DEPTH as u32 - 2)).unwrap();
        let e = refused(&chain(MAX_TYPE_DEPTH as u32 * 4));
        assert!(matches!(e, TypeGraphError::TooDeep(_)), "{e}");
    }

    /// The host's own kernel BTF, where there is one: a real table passes the check.
    #[test]
    fn a_real_kernel_passes() {
        let Ok(blob) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux on this host");
            return;
        };
        let btf = Btf::parse(&blob).unwrap();
        btf.task_offsets().unwrap();
    }
}
