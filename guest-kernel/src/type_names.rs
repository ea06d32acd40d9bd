//! Types as C spells them (`struct file *`, `unsigned int`, `char[16]`), and function
//! signatures from BTF prototypes: for messages, and to name a probe's arguments.

use btfparse::{TypeInformation, TypeVariant};

use crate::btf::Btf;

/// Pointers followed when spelling a type (`char ***`): past it, `...`. Pointers are
/// not in [`crate::type_graph`]'s cycle check, so a hostile table could make them loop.
const MAX_POINTER_DEPTH: usize = 8;

/// `tid` with typedefs and qualifiers taken off (`None`: an id with no type, or a chain
/// longer than the type graph allows).
pub fn resolved(info: &TypeInformation, mut tid: u32) -> Option<(u32, TypeVariant)> {
    for _ in 0..crate::type_graph::MAX_TYPE_DEPTH {
        let ty = info.from_id(tid)?;
        tid = match &ty {
            TypeVariant::Typedef(t) => *t.tid(),
            TypeVariant::Const(t) => *t.tid(),
            TypeVariant::Volatile(t) => *t.tid(),
            TypeVariant::Restrict(t) => *t.tid(),
            TypeVariant::TypeTag(t) => *t.tid(),
            _ => return Some((tid, ty)),
        };
    }
    None
}

/// A short spelling of type `tid` (typedefs resolved): `int`, `struct file *`, ...
pub fn describe(info: &TypeInformation, tid: u32) -> String {
    describe_at(info, tid, 0)
}

fn describe_at(info: &TypeInformation, tid: u32, depth: usize) -> String {
    if depth > MAX_POINTER_DEPTH {
        return "...".into();
    }
    // An anonymous struct, union or enum goes by its typedef's name (`nodemask_t`).
    let named = |what: &str, n: &Option<String>| match n {
        Some(n) if !n.is_empty() => format!("{what} {n}"),
        _ => typedef_name(info, tid).unwrap_or_else(|| format!("{what} {{...}}")),
    };
    match resolved(info, tid) {
        Some((_, TypeVariant::Int(i))) => i.name().clone().unwrap_or_else(|| "int".into()),
        Some((_, TypeVariant::Ptr(p))) => format!("{} *", describe_at(info, *p.tid(), depth + 1)),
        Some((_, TypeVariant::Struct(s))) => named("struct", s.name()),
        Some((_, TypeVariant::Union(u))) => named("union", u.name()),
        Some((_, TypeVariant::Enum(e))) => named("enum", e.name()),
        Some((_, TypeVariant::Array(a))) => format!(
            "{}[{}]",
            describe_at(info, *a.element_tid(), depth + 1),
            a.element_count()
        ),
        Some((_, TypeVariant::Void)) | None => "void".into(),
        Some((_, other)) => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or("?")
            .to_lowercase(),
    }
}

/// The name of the first typedef on the way from `tid` to its type, past qualifiers.
fn typedef_name(info: &TypeInformation, mut tid: u32) -> Option<String> {
    for _ in 0..crate::type_graph::MAX_TYPE_DEPTH {
        tid = match info.from_id(tid)? {
            TypeVariant::Typedef(t) => return t.name().clone(),
            TypeVariant::Const(t) => *t.tid(),
            TypeVariant::Volatile(t) => *t.tid(),
            TypeVariant::Restrict(t) => *t.tid(),
            TypeVariant::TypeTag(t) => *t.tid(),
            _ => return None,
        };
    }
    None
}

/// A function's parameters (name, type) and return type, from its BTF prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// Each parameter's name (empty when BTF has none) and spelled type.
    pub params: Vec<(String, String)>,
    /// The spelled return type.
    pub returns: String,
}

impl Signature {
    /// Parameter `n` as C declares it (`struct file *file`), if there is one.
    pub fn param(&self, n: usize) -> Option<String> {
        let (name, ty) = self.params.get(n)?;
        Some(if ty.ends_with('*') {
            format!("{ty}{name}")
        } else {
            format!("{ty} {name}").trim_end().to_string()
        })
    }
}

/// The BTF type id of function `name`'s prototype.
pub fn prototype_id(info: &TypeInformation, name: &str) -> Option<u32> {
    info.get().values().find_map(|ty| match ty {
        TypeVariant::Func(f) if f.name().as_deref() == Some(name) => Some(*f.prototype_tid()),
        _ => None,
    })
}

impl Btf {
    /// Every function BTF has a prototype for (what `fentry:` can attach to, among
    /// the functions ftrace can trace).
    pub fn function_names(&self) -> std::collections::BTreeSet<String> {
        self.info()
            .get()
            .values()
            .filter_map(|ty| match ty {
                TypeVariant::Func(f) => f.name().clone(),
                _ => None,
            })
            .collect()
    }

    /// Function `name`'s signature, if BTF has its prototype.
    pub fn signature(&self, name: &str) -> Option<Signature> {
        let info = self.info();
        let TypeVariant::FuncProto(p) = info.from_id(prototype_id(info, name)?)? else {
            return None;
        };
        Some(Signature {
            params: p
                .parameter_list()
                .iter()
                .map(|param| {
                    (
                        param.name().unwrap_or_default(),
                        describe(info, param.tid()),
                    )
                })
                .collect(),
            returns: describe(info, *p.return_tid()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pointer to a typedef of itself (pointers escape the type graph's cycle
    /// check): spelling it must end.
    #[test]
    fn a_pointer_to_itself_is_spelled_in_bounded_steps() {
        // 1: pointer to 2; 2: typedef (anonymous) of 1.
        let words: [u32; 6] = [0, 2 << 24, 2, 0, 8 << 24, 1];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, types.len() as u32, types.len() as u32, 1] {
            blob.extend(v.to_le_bytes());
        }
        blob.extend(types);
        blob.push(0);
        let btf = Btf::parse(&blob).unwrap();
        let spelled = describe(btf.info(), 1);
        assert!(spelled.starts_with("..."), "{spelled}");
        assert_eq!(spelled.matches('*').count(), MAX_POINTER_DEPTH + 1);
    }

    /// `nodemask_t *`, not `struct  *`: an anonymous struct goes by its typedef.
    #[test]
    fn an_anonymous_struct_is_spelled_by_its_typedef() {
        // 1: struct {} (8 bytes); 2: typedef nodemask_t 1; 3: pointer to 2;
        // 4: pointer to 1.
        let words: [u32; 12] = [0, 4 << 24, 8, 1, 8 << 24, 1, 0, 2 << 24, 2, 0, 2 << 24, 1];
        let types: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        let strings = b"\0nodemask_t\0";
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(v.to_le_bytes());
        }
        blob.extend(types);
        blob.extend(strings);
        let btf = Btf::parse(&blob).unwrap();
        assert_eq!(describe(btf.info(), 3), "nodemask_t *");
        assert_eq!(describe(btf.info(), 4), "struct {...} *");
    }
}
