//! `--read` expressions: what to read of a stopped kernel at a snapshot, resolved
//! against the guest's BTF like gdb's `p` against DWARF.
//!
//! An expression is a root and a path of fields:
//! - `current->comm`, `current->mm->pgd`, `current->real_parent->pid`: the task
//!   running on the stopped CPU (`struct task_struct *`), then members;
//! - `arg0` … `arg5`: the stopped function's arguments at its entry (the x86-64
//!   calling convention's registers), typed from the function's BTF prototype, so
//!   `arg0->f_path.dentry->d_name.name` works where the prototype says `struct file *`;
//! - `$cr3`, `$rip`, any register the gdbstub names: its raw value;
//! - a global by name (`jiffies`, `runqueues.nr_running`): its address from the
//!   guest's kallsyms. BTF types only per-CPU variables (read on the stopped CPU,
//!   at its per-CPU base + the variable's offset); any other global reads as an
//!   `unsigned long`, and says so.
//!
//! `->` follows a pointer, `.` a member of a struct held by value. Values print by
//! type: integers in decimal, pointers in hex (`char *` with the string they point
//! to), `char[]` as a string, enums by name, structs as their address. A failed read
//! says which step failed (`current->mm is NULL`, a missing member lists the ones
//! there are).

use std::fmt;

use btfparse::{Offset, TypeVariant};

use crate::btf::Btf;
use crate::type_names;

/// Registers of the first six integer arguments at a function's entry (x86-64 SysV).
pub const ARG_REGISTERS: [&str; 6] = ["rdi", "rsi", "rdx", "rcx", "r8", "r9"];
/// Longest string read for a `char *` or shown of a `char[]`.
const MAX_STRING: usize = 256;
/// Members listed when one is not found.
const MEMBERS_LISTED: usize = 24;

/// Where an expression starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    /// `current`: the running task (`struct task_struct *`).
    Current,
    /// `argN`: argument `N` (0..=5) of the stopped function.
    Arg(usize),
    /// `$name`: a register.
    Register(String),
    /// A global variable by name (`jiffies`).
    Global(String),
}

/// How a path step reaches its member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `->`: through a pointer.
    Arrow,
    /// `.`: a member of a struct held by value.
    Dot,
}

/// A parsed `--read` expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadExpr {
    /// The text as given.
    pub text: String,
    /// Its root.
    pub root: Root,
    /// Its members, in order.
    pub path: Vec<(Access, String)>,
}

/// An expression that does not parse: what was expected, and where.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("--read {text:?}: {message} at column {column}")]
pub struct ParseError {
    /// The expression.
    pub text: String,
    /// What is wrong.
    pub message: String,
    /// Column, from 1.
    pub column: usize,
}

impl std::str::FromStr for ReadExpr {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |message: &str, at: usize| ParseError {
            text: text.to_string(),
            message: message.to_string(),
            column: at + 1,
        };
        let bytes = text.as_bytes();
        let ident_end = |from: usize| {
            let mut i = from;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            i
        };
        let (root, mut at) = if let Some(rest) = text.strip_prefix('$') {
            let end = ident_end(1);
            if end == 1 {
                return Err(err("expected a register name after '$'", 1));
            }
            (Root::Register(rest[..end - 1].to_string()), end)
        } else {
            let end = ident_end(0);
            let word = &text[..end];
            match word {
                "current" => (Root::Current, end),
                _ if word.len() == 4
                    && word.starts_with("arg")
                    && matches!(bytes[3], b'0'..=b'5') =>
                {
                    (Root::Arg(usize::from(bytes[3] - b'0')), end)
                }
                "" => {
                    return Err(err(
                        "expected current, arg0..arg5, $register or a global's name",
                        0,
                    ));
                }
                _ if word.len() > 3
                    && word.starts_with("arg")
                    && word[3..].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    return Err(err(
                        &format!("unknown root {word:?}: the arguments are arg0..arg5"),
                        0,
                    ));
                }
                _ if bytes[0].is_ascii_digit() => {
                    return Err(err(
                        "expected current, arg0..arg5, $register or a global's name, not a number",
                        0,
                    ));
                }
                _ => (Root::Global(word.to_string()), end),
            }
        };
        let mut path = Vec::new();
        while at < bytes.len() {
            let (access, skip) = if text[at..].starts_with("->") {
                (Access::Arrow, 2)
            } else if bytes[at] == b'.' {
                (Access::Dot, 1)
            } else {
                return Err(err("expected '->' or '.'", at));
            };
            if !matches!(root, Root::Current | Root::Arg(_) | Root::Global(_)) {
                return Err(err("a register has no members", at));
            }
            let start = at + skip;
            let end = ident_end(start);
            if end == start || bytes[start].is_ascii_digit() {
                return Err(err("expected a member name", start));
            }
            path.push((access, text[start..end].to_string()));
            at = end;
        }
        Ok(ReadExpr {
            text: text.to_string(),
            root,
            path,
        })
    }
}

impl fmt::Display for ReadExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Reads of the stopped guest's kernel memory.
pub trait Memory {
    /// `len` bytes at kernel virtual address `addr`, or why not.
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String>;
}

/// What an expression is evaluated against at one stop.
pub struct Stop<'a> {
    /// The guest's types.
    pub btf: &'a Btf,
    /// The stopped function (for `argN`'s types), if known.
    pub function: Option<&'a str>,
    /// Address of the running task's `task_struct`.
    pub current: u64,
    /// A register's value by name.
    pub register: &'a dyn Fn(&str) -> Option<u64>,
    /// A kernel symbol's address by name (the guest's kallsyms).
    pub symbol: &'a dyn Fn(&str) -> Option<u64>,
    /// The stopped CPU's per-CPU base (see [`crate::kernel::per_cpu_base`]).
    pub per_cpu_base: u64,
}

/// Kallsyms addresses below this are per-CPU offsets (the per-CPU section is linked
/// at 0 on x86-64 and not relocated by KASLR), not addresses.
const PER_CPU_LIMIT: u64 = 1 << 32;

/// A kernel-half address that stands for "some valid pointer" in [`check`].
const ANY_ADDRESS: u64 = 0xffff_8880_1010_1000;

/// Memory in which every 8 bytes hold [`ANY_ADDRESS`]: every pointer is valid and no
/// read fails, so only the types can make an expression fail.
struct AnyMemory;

impl Memory for AnyMemory {
    fn read(&mut self, _addr: u64, len: usize) -> Result<Vec<u8>, String> {
        Ok(ANY_ADDRESS
            .to_le_bytes()
            .into_iter()
            .cycle()
            .take(len)
            .collect())
    }
}

/// Checks `expr` at a stop in `function` against the types alone: the error every
/// stop there would give, whatever memory holds (a member that is not there, `->` on
/// a non-pointer, an argument the prototype does not type, members of an untyped
/// global). What depends on the stop (a NULL pointer, a register or global the guest
/// lacks) passes.
pub fn check(btf: &Btf, function: Option<&str>, expr: &ReadExpr) -> Result<(), String> {
    let any = |_: &str| Some(ANY_ADDRESS);
    let stop = Stop {
        btf,
        function,
        current: ANY_ADDRESS,
        register: &any,
        symbol: &any,
        per_cpu_base: ANY_ADDRESS,
    };
    stop.read(expr, &mut AnyMemory).map(|_| ())
}

/// The type of a value held in a register.
#[derive(Clone, Copy)]
enum Held {
    /// A BTF type.
    Btf(u32),
    /// A pointer to this BTF type (`current`: BTF need not have `struct task_struct *`).
    PointerTo(u32),
    /// No type known: shown raw.
    Raw,
}

/// A value on its way down an expression.
enum Val {
    /// An object in memory of type `tid`.
    Place { addr: u64, tid: u32 },
    /// A value held in a register (the roots).
    Held { value: u64, ty: Held },
}

impl Stop<'_> {
    /// Evaluates `expr`; the value as text, or which step failed and why.
    pub fn read(&self, expr: &ReadExpr, memory: &mut dyn Memory) -> Result<String, String> {
        let text = self.read_value(expr, memory)?;
        Ok(match &expr.root {
            Root::Global(name) if self.var_type(name).is_none() => {
                format!("{text} (no BTF type: read as unsigned long)")
            }
            _ => text,
        })
    }

    fn read_value(&self, expr: &ReadExpr, memory: &mut dyn Memory) -> Result<String, String> {
        let mut val = self.root(expr)?;
        let mut so_far = root_text(&expr.root);
        for (access, member) in &expr.path {
            let (addr, tid) = match (access, val) {
                (Access::Arrow, v) => {
                    let (pointer, pointee) = self.pointer(&v, &so_far, memory)?;
                    if pointer == 0 {
                        return Err(format!("{so_far} is NULL"));
                    }
                    (pointer, pointee)
                }
                (Access::Dot, Val::Place { tid, .. })
                    if matches!(self.resolved(tid), Some((_, TypeVariant::Ptr(_)))) =>
                {
                    return Err(format!("{so_far} is a pointer: use {so_far}->{member}"));
                }
                (Access::Dot, Val::Place { addr, tid }) => (addr, tid),
                (Access::Dot, Val::Held { .. }) => {
                    return Err(format!("{so_far} is a pointer: use {so_far}->{member}"));
                }
            };
            let (struct_tid, name) = self.aggregate(tid).ok_or_else(|| {
                format!("{so_far} is {}, which has no members", self.describe(tid))
            })?;
            let (mtid, offset) = self.btf.info().offset_of(struct_tid, member).map_err(|_| {
                format!(
                    "{name} has no member {member:?}; members: {}",
                    self.members(struct_tid).join(", ")
                )
            })?;
            let Offset::ByteOffset(offset) = offset else {
                return Err(format!("{so_far}{}{member} is a bitfield", sep(*access)));
            };
            so_far = format!("{so_far}{}{member}", sep(*access));
            val = Val::Place {
                addr: addr.wrapping_add(u64::from(offset)),
                tid: mtid,
            };
        }
        self.render(val, &so_far, memory)
    }

    fn root(&self, expr: &ReadExpr) -> Result<Val, String> {
        match &expr.root {
            Root::Current => {
                let task = self
                    .btf
                    .struct_id("task_struct")
                    .map_err(|e| e.to_string())?;
                Ok(Val::Held {
                    value: self.current,
                    ty: Held::PointerTo(task),
                })
            }
            Root::Arg(n) => {
                let value = (self.register)(ARG_REGISTERS[*n])
                    .ok_or_else(|| format!("no register {}", ARG_REGISTERS[*n]))?;
                let tid = self.function.and_then(|f| self.parameter_type(f, *n));
                if tid.is_none() && !expr.path.is_empty() {
                    return Err(format!(
                        "arg{n} has no type: no BTF prototype with {} parameters for {}",
                        n + 1,
                        self.function.unwrap_or("this stop")
                    ));
                }
                Ok(Val::Held {
                    value,
                    ty: tid.map_or(Held::Raw, Held::Btf),
                })
            }
            Root::Register(name) => (self.register)(name)
                .map(|value| Val::Held {
                    value,
                    ty: Held::Raw,
                })
                .ok_or_else(|| format!("the gdbstub has no register {name:?}")),
            Root::Global(name) => self.global(name, !expr.path.is_empty()),
        }
    }

    /// The type of BTF variable `name`, if BTF has one.
    fn var_type(&self, name: &str) -> Option<u32> {
        self.btf.info().get().values().find_map(|ty| match ty {
            TypeVariant::Var(v) if v.name().as_deref() == Some(name) => Some(*v.tid()),
            _ => None,
        })
    }

    /// Global `name` as a place in memory: typed from its BTF variable when there is
    /// one (per-CPU variables: this CPU's copy), else an `unsigned long`.
    fn global(&self, name: &str, has_path: bool) -> Result<Val, String> {
        let at = (self.symbol)(name)
            .ok_or_else(|| format!("no symbol {name} in the guest's kallsyms"))?;
        let var = self.var_type(name);
        let addr = if at < PER_CPU_LIMIT {
            self.per_cpu_base.wrapping_add(at)
        } else {
            at
        };
        match var {
            Some(tid) => Ok(Val::Place { addr, tid }),
            None if has_path => Err(format!(
                "{name} has no BTF type (this kernel's BTF types only per-CPU variables), so it has no members to follow"
            )),
            None => {
                let ulong = self
                    .btf
                    .info()
                    .id_of("long unsigned int")
                    .ok_or_else(|| format!("{name} has no BTF type, nor does unsigned long"))?;
                Ok(Val::Place { addr, tid: ulong })
            }
        }
    }

    fn pointer(
        &self,
        v: &Val,
        so_far: &str,
        memory: &mut dyn Memory,
    ) -> Result<(u64, u32), String> {
        let (value, tid) = match v {
            Val::Held {
                value,
                ty: Held::PointerTo(t),
            } => return Ok((*value, *t)),
            Val::Held { ty: Held::Raw, .. } => return Err(format!("{so_far} has no type")),
            Val::Held {
                value,
                ty: Held::Btf(tid),
            } => (*value, *tid),
            Val::Place { addr, tid } => {
                let bytes = memory
                    .read(*addr, 8)
                    .map_err(|e| format!("reading {so_far}: {e}"))?;
                let raw: [u8; 8] = bytes
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| format!("reading {so_far}: short read"))?;
                (u64::from_le_bytes(raw), *tid)
            }
        };
        match self.resolved(tid) {
            Some((_, TypeVariant::Ptr(p))) => Ok((value, *p.tid())),
            Some((_, TypeVariant::Struct(_) | TypeVariant::Union(_))) => Err(format!(
                "{so_far} is {}, not a pointer: use {so_far}.MEMBER",
                self.describe(tid)
            )),
            _ => Err(format!("{so_far} is {}, not a pointer", self.describe(tid))),
        }
    }

    /// `tid` with typedefs and qualifiers taken off.
    fn resolved(&self, tid: u32) -> Option<(u32, TypeVariant)> {
        type_names::resolved(self.btf.info(), tid)
    }

    /// The struct or union `tid` is, with its name for messages.
    fn aggregate(&self, tid: u32) -> Option<(u32, String)> {
        match self.resolved(tid)? {
            (id, TypeVariant::Struct(s)) => Some((
                id,
                format!("struct {}", s.name().clone().unwrap_or_default()),
            )),
            (id, TypeVariant::Union(u)) => Some((
                id,
                format!("union {}", u.name().clone().unwrap_or_default()),
            )),
            _ => None,
        }
    }

    fn members(&self, tid: u32) -> Vec<String> {
        let list = match self.btf.info().from_id(tid) {
            Some(TypeVariant::Struct(s)) => s.member_list().clone(),
            Some(TypeVariant::Union(u)) => u.member_list().clone(),
            _ => Vec::new(),
        };
        let mut names: Vec<String> = list.iter().filter_map(|m| m.name()).collect();
        if names.len() > MEMBERS_LISTED {
            let more = names.len() - MEMBERS_LISTED;
            names.truncate(MEMBERS_LISTED);
            names.push(format!("... {more} more"));
        }
        names
    }

    /// A short description of a type for messages (`int`, `struct file *`, ...).
    fn describe(&self, tid: u32) -> String {
        type_names::describe(self.btf.info(), tid)
    }

    /// Parameter `n`'s type in function `name`'s BTF prototype.
    fn parameter_type(&self, name: &str, n: usize) -> Option<u32> {
        let info = self.btf.info();
        match info.from_id(type_names::prototype_id(info, name)?)? {
            TypeVariant::FuncProto(p) => p.parameter_list().get(n).map(|param| param.tid()),
            _ => None,
        }
    }

    fn render(&self, val: Val, so_far: &str, memory: &mut dyn Memory) -> Result<String, String> {
        let (addr, tid) = match val {
            Val::Held {
                value,
                ty: Held::Raw | Held::PointerTo(_),
            } => return Ok(format!("{value:#x}")),
            Val::Held {
                value,
                ty: Held::Btf(tid),
            } => return self.render_scalar(tid, value, so_far, memory),
            Val::Place { addr, tid } => (addr, tid),
        };
        let read = |memory: &mut dyn Memory, len: usize| {
            memory
                .read(addr, len)
                .map_err(|e| format!("reading {so_far} at {addr:#x}: {e}"))
        };
        match self.resolved(tid) {
            Some((_, TypeVariant::Array(a))) if self.is_char(*a.element_tid()) => {
                let len = (*a.element_count() as usize).min(MAX_STRING);
                Ok(quoted(&read(memory, len)?))
            }
            Some((_, TypeVariant::Array(a))) => Ok(format!(
                "{}[{}] at {addr:#x}",
                self.describe(*a.element_tid()),
                a.element_count()
            )),
            Some((_, TypeVariant::Struct(_) | TypeVariant::Union(_))) => {
                Ok(format!("{} at {addr:#x}", self.describe(tid)))
            }
            Some((_, ty)) => {
                let size = match &ty {
                    TypeVariant::Int(i) => *i.size(),
                    TypeVariant::Enum(e) => *e.size(),
                    TypeVariant::Ptr(_) => 8,
                    _ => return Ok(format!("{} at {addr:#x}", self.describe(tid))),
                };
                let bytes = read(memory, size.clamp(1, 8))?;
                let mut raw = [0u8; 8];
                raw[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
                self.render_scalar(tid, u64::from_le_bytes(raw), so_far, memory)
            }
            None => Ok(format!("void at {addr:#x}")),
        }
    }

    fn render_scalar(
        &self,
        tid: u32,
        value: u64,
        so_far: &str,
        memory: &mut dyn Memory,
    ) -> Result<String, String> {
        match self.resolved(tid) {
            Some((_, TypeVariant::Int(i))) => {
                let bits = 8 * (*i.size()).clamp(1, 8) as u32;
                let masked = if bits == 64 {
                    value
                } else {
                    value & ((1u64 << bits) - 1)
                };
                Ok(if *i.boolean() {
                    (masked != 0).to_string()
                } else if *i.signed() {
                    let shift = 64 - bits;
                    (((masked << shift) as i64) >> shift).to_string()
                } else {
                    masked.to_string()
                })
            }
            Some((_, TypeVariant::Enum(e))) => {
                let bits = 8 * (*e.size()).clamp(1, 4) as u32;
                let v = value & ((1u64 << bits) - 1);
                let name = e.named_value_list().iter().find(|nv| match nv.value {
                    btfparse::Integer32Value::Signed(s) => s as u32 as u64 == v,
                    btfparse::Integer32Value::Unsigned(u) => u64::from(u) == v,
                });
                Ok(match name {
                    Some(nv) => format!("{} ({v})", nv.name),
                    None => v.to_string(),
                })
            }
            Some((_, TypeVariant::Ptr(p))) if self.is_char(*p.tid()) && value != 0 => {
                match memory.read(value, MAX_STRING) {
                    Ok(bytes) => Ok(format!("{value:#x} {}", quoted(&bytes))),
                    Err(e) => Ok(format!("{value:#x} (string unreadable: {e})")),
                }
            }
            Some((_, TypeVariant::Ptr(_))) => Ok(format!("{value:#x}")),
            _ => Ok(format!("{value:#x} ({} in {so_far})", self.describe(tid))),
        }
    }

    fn is_char(&self, tid: u32) -> bool {
        matches!(self.resolved(tid), Some((_, TypeVariant::Int(i))) if *i.size() == 1)
    }
}

fn sep(access: Access) -> &'static str {
    match access {
        Access::Arrow => "->",
        Access::Dot => ".",
    }
}

fn root_text(root: &Root) -> String {
    match root {
        Root::Current => "current".into(),
        Root::Arg(n) => format!("arg{n}"),
        Root::Register(r) => format!("${r}"),
        Root::Global(g) => g.clone(),
    }
}

/// Bytes up to the first NUL, as a quoted string (invalid UTF-8 replaced).
fn quoted(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    format!("{:?}", String::from_utf8_lossy(&bytes[..end]))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A BTF blob built from named types: each `(name, kind, vlen, size_or_type,
    /// extra words)`, where a `&str` in extra words is a name (string offset).
    struct Builder {
        strings: Vec<u8>,
        words: Vec<u32>,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                words: Vec::new(),
            }
        }
        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32, extra: &[u32]) {
            let n = self.name(name);
            self.words.extend([n, (kind << 24) | vlen, size_or_type]);
            self.words.extend(extra);
        }
        fn members(&mut self, members: &[(&str, u32, u32)]) -> Vec<u32> {
            let mut out = Vec::new();
            for (name, tid, byte_offset) in members {
                out.extend([self.name(name), *tid, byte_offset * 8]);
            }
            out
        }
        fn blob(self) -> Vec<u8> {
            let types: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let mut out = vec![0x9f, 0xeb, 1, 0];
            for v in [
                24u32,
                0,
                types.len() as u32,
                types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend(v.to_le_bytes());
            }
            out.extend(types);
            out.extend(self.strings);
            out
        }
    }

    fn btf() -> Btf {
        let mut b = Builder::new();
        b.ty("int", 1, 0, 4, &[(1 << 24) | 32]); // 1
        b.ty("char", 1, 0, 1, &[(2 << 24) | 8]); // 2
        b.ty("", 3, 0, 0, &[2, 1, 16]); // 3: char[16]
        let m = b.members(&[
            ("pid", 1, 0),
            ("state", 14, 4),
            ("comm", 3, 8),
            ("mm", 5, 24),
            ("parent", 7, 32),
        ]);
        b.ty("task_struct", 4, 5, 40, &m); // 4
        b.ty("", 2, 0, 6, &[]); // 5: struct mm_struct *
        let m = b.members(&[("pgd", 8, 0), ("users", 1, 8)]);
        b.ty("mm_struct", 4, 2, 16, &m); // 6
        b.ty("", 2, 0, 4, &[]); // 7: struct task_struct *
        b.ty("", 2, 0, 1, &[]); // 8: int *
        let p = b.name("file");
        b.ty("", 13, 1, 1, &[p, 10]); // 9: int (struct file *file)
        b.ty("", 2, 0, 11, &[]); // 10: struct file *
        let m = b.members(&[("name", 12, 0)]);
        b.ty("file", 4, 1, 8, &m); // 11
        b.ty("", 2, 0, 2, &[]); // 12: char *
        b.ty("do_thing", 12, 0, 9, &[]); // 13
        let (r, s) = (b.name("RUNNING"), b.name("SLEEPING"));
        b.ty("state", 6, 2, 4, &[r, 0, s, 1]); // 14
        b.ty("long unsigned int", 1, 0, 8, &[64]); // 15
        b.ty("this_mm", 14, 0, 6, &[1]); // 16: a per-CPU struct mm_struct
        Btf::parse(&b.blob()).unwrap()
    }

    #[derive(Default)]
    struct Ram(BTreeMap<u64, Vec<u8>>);

    impl Ram {
        fn put(&mut self, addr: u64, bytes: &[u8]) {
            self.0.insert(addr, bytes.to_vec());
        }
    }

    impl Memory for Ram {
        fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
            let (start, bytes) = self
                .0
                .range(..=addr)
                .next_back()
                .ok_or_else(|| format!("{addr:#x} not mapped"))?;
            let from = (addr - start) as usize;
            if from >= bytes.len() {
                return Err(format!("{addr:#x} not mapped"));
            }
            Ok(bytes[from..(from + len).min(bytes.len())].to_vec())
        }
    }

    const TASK: u64 = 0xffff_8880_0000_1000;
    const PARENT: u64 = 0xffff_8880_0000_2000;
    const MM: u64 = 0xffff_8880_0000_3000;
    const FILE: u64 = 0xffff_8880_0000_4000;
    const NAME: u64 = 0xffff_8880_0000_5000;

    fn task(pid: i32, state: u32, comm: &str, mm: u64, parent: u64) -> Vec<u8> {
        let mut t = vec![0u8; 40];
        t[0..4].copy_from_slice(&pid.to_le_bytes());
        t[4..8].copy_from_slice(&state.to_le_bytes());
        t[8..8 + comm.len()].copy_from_slice(comm.as_bytes());
        t[24..32].copy_from_slice(&mm.to_le_bytes());
        t[32..40].copy_from_slice(&parent.to_le_bytes());
        t
    }

    fn ram() -> Ram {
        let mut r = Ram::default();
        r.put(TASK, &task(42, 1, "fopen", MM, PARENT));
        r.put(PARENT, &task(1, 0, "init", 0, PARENT));
        let mut mm = vec![0u8; 16];
        mm[0..8].copy_from_slice(&0xffff_8880_0abc_0000u64.to_le_bytes());
        mm[8..12].copy_from_slice(&3i32.to_le_bytes());
        r.put(MM, &mm);
        r.put(FILE, &NAME.to_le_bytes());
        r.put(NAME, b"/etc/passwd\0");
        r.put(JIFFIES, &4_294_937_296u64.to_le_bytes());
        let mut this_mm = vec![0u8; 16];
        this_mm[8..12].copy_from_slice(&7i32.to_le_bytes());
        r.put(GS_BASE + THIS_MM, &this_mm);
        r
    }

    const JIFFIES: u64 = 0xffff_ffff_8260_5000;
    const GS_BASE: u64 = 0xffff_8880_1f00_0000;
    const THIS_MM: u64 = 0x1_f2c0;

    fn read(text: &str, function: Option<&str>) -> Result<String, String> {
        let btf = btf();
        let regs = |name: &str| match name {
            "rdi" => Some(FILE),
            "cr3" => Some(0x1234000),
            _ => None,
        };
        let symbols = |name: &str| match name {
            "jiffies" => Some(JIFFIES),
            "this_mm" => Some(THIS_MM),
            _ => None,
        };
        let stop = Stop {
            btf: &btf,
            function,
            current: TASK,
            register: &regs,
            symbol: &symbols,
            per_cpu_base: GS_BASE,
        };
        let expr: ReadExpr = text.parse().map_err(|e: ParseError| e.to_string())?;
        stop.read(&expr, &mut ram())
    }

    #[test]
    fn fields_pointers_strings_and_enums_read_by_type() {
        assert_eq!(read("current->pid", None).unwrap(), "42");
        assert_eq!(read("current->comm", None).unwrap(), "\"fopen\"");
        assert_eq!(read("current->state", None).unwrap(), "SLEEPING (1)");
        assert_eq!(read("current->mm->users", None).unwrap(), "3");
        assert_eq!(
            read("current->mm->pgd", None).unwrap(),
            "0xffff88800abc0000"
        );
        assert_eq!(read("current->parent->pid", None).unwrap(), "1");
        assert_eq!(read("current->parent->comm", None).unwrap(), "\"init\"");
        assert_eq!(read("current", None).unwrap(), format!("{TASK:#x}"));
        assert_eq!(read("$cr3", None).unwrap(), "0x1234000");
        assert_eq!(
            read("arg0->name", Some("do_thing")).unwrap(),
            format!("{NAME:#x} \"/etc/passwd\"")
        );
        assert_eq!(
            read("arg0", Some("do_thing")).unwrap(),
            format!("{FILE:#x}")
        );
    }

    #[test]
    fn globals_read_by_name_per_cpu_ones_typed() {
        assert_eq!(
            read("jiffies", None).unwrap(),
            "4294937296 (no BTF type: read as unsigned long)"
        );
        assert_eq!(read("this_mm.users", None).unwrap(), "7");
        assert_eq!(
            read("this_mm", None).unwrap(),
            format!("struct mm_struct at {:#x}", GS_BASE + THIS_MM)
        );
        assert_eq!(
            read("nope->x", None).unwrap_err(),
            "no symbol nope in the guest's kallsyms"
        );
        assert!(
            read("jiffies.x", None)
                .unwrap_err()
                .contains("jiffies has no BTF type")
        );
    }

    #[test]
    fn a_failed_read_says_which_step_failed() {
        assert_eq!(
            read("current->parent->mm->users", None).unwrap_err(),
            "current->parent->mm is NULL"
        );
        assert_eq!(
            read("current->nope", None).unwrap_err(),
            "struct task_struct has no member \"nope\"; members: pid, state, comm, mm, parent"
        );
        assert_eq!(
            read("current->pid->x", None).unwrap_err(),
            "current->pid is int, not a pointer"
        );
        assert_eq!(
            read("current.pid", None).unwrap_err(),
            "current is a pointer: use current->pid"
        );
        assert_eq!(
            read("current->mm.users", None).unwrap_err(),
            "current->mm is a pointer: use current->mm->users"
        );
        assert!(
            read("arg0->name", None)
                .unwrap_err()
                .starts_with("arg0 has no type"),
        );
        assert_eq!(
            read("$nope", None).unwrap_err(),
            "the gdbstub has no register \"nope\""
        );
    }

    #[test]
    fn a_check_finds_the_type_errors_without_memory() {
        let ok = |t: &str, f: Option<&str>| check(&btf(), f, &t.parse().unwrap());
        for fine in [
            "current->mm->pgd",
            "current->comm",
            "$cr3",
            "jiffies",
            "this_mm.users",
        ] {
            assert_eq!(ok(fine, None), Ok(()), "{fine}");
        }
        assert_eq!(ok("arg0->name", Some("do_thing")), Ok(()));
        // NULL in real memory (the parent's mm) is not a type error.
        assert_eq!(ok("current->parent->mm->users", None), Ok(()));
        assert_eq!(
            ok("current->nope", None).unwrap_err(),
            "struct task_struct has no member \"nope\"; members: pid, state, comm, mm, parent"
        );
        assert_eq!(
            ok("current->pid->x", None).unwrap_err(),
            "current->pid is int, not a pointer"
        );
        assert!(
            ok("arg0->name", None)
                .unwrap_err()
                .starts_with("arg0 has no type")
        );
        assert!(
            ok("jiffies.x", None)
                .unwrap_err()
                .contains("jiffies has no BTF type")
        );
    }

    #[test]
    fn signatures_spell_parameters_as_c_does() {
        let sig = btf().signature("do_thing").unwrap();
        assert_eq!(sig.param(0).as_deref(), Some("struct file *file"));
        assert_eq!(sig.returns, "int");
        assert_eq!(sig.param(1), None);
        assert!(btf().signature("nothing").is_none());
        let names = btf().function_names();
        assert!(
            names.contains("do_thing") && !names.contains("task_struct"),
            "{names:?}"
        );
    }

    #[test]
    fn parse_errors_show_the_column() {
        let e = |t: &str| t.parse::<ReadExpr>().unwrap_err();
        assert_eq!(e("current->").column, 10);
        assert!(e("current->").message.contains("expected a member name"));
        assert_eq!(e("current-pid").column, 8);
        assert!(e("1foo").message.contains("not a number"));
        assert!(e("$cr3->x").message.contains("a register has no members"));
        assert!(e("arg6").message.contains("the arguments are arg0..arg5"));
        assert_eq!(
            e("current->1x").to_string(),
            "--read \"current->1x\": expected a member name at column 10"
        );
    }
}
