//! A check of the probes' eBPF object, run by the unit tests: every read of the
//! program's stack must read bytes the program wrote on *every* path to that read.
//!
//! The verifier of newer kernels lets a privileged program read a stack slot it never
//! wrote; Linux 6.1.172 (Debian's 6.1.0-48) refuses such a program ("invalid read
//! from stack"), and it refused three of the four built-in programs once (a value
//! defined on some paths only, which LLVM spilled on one path and read back on
//! another). The kernel the tests boot decides nothing about this, so the object is
//! checked here, on the host, for every kernel: a forward "definitely written" data
//! flow over each function's instructions, as the strict verifier tracks it.
//!
//! It follows pointers into the stack through moves and constant additions. A helper
//! or a subprogram given such a pointer is taken to write from it for the byte count
//! in the next argument register when that is a known constant, else up to the
//! frame's top, so it can miss a read. It can also find one the verifier would let
//! pass: it does not know which branches the values make impossible, so a read on a
//! path no run takes counts too. On the object that 6.1.172 refused it found the very
//! read the verifier named (`alloc_fd`, fp-120), and reads of the same kind in the
//! `spin_lock` kprobe and the user probes, which that verifier happened to load.

use aya_obj::generated::bpf_insn;

/// Bytes of an eBPF program's stack.
const STACK_BYTES: usize = 512;

/// What a register holds, as far as this check follows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reg {
    /// Anything else.
    Unknown,
    /// The frame pointer plus this offset (negative: inside the stack).
    Stack(i64),
    /// This constant.
    Const(i64),
}

/// The state before one instruction: which stack bytes are written on every path that
/// reaches it, and the registers.
#[derive(Clone, PartialEq, Eq, Debug)]
struct State {
    /// Byte `i` is `fp - STACK_BYTES + i`.
    written: [bool; STACK_BYTES],
    regs: [Reg; 11],
}

impl State {
    fn entry() -> State {
        let mut regs = [Reg::Unknown; 11];
        regs[10] = Reg::Stack(0);
        State {
            written: [false; STACK_BYTES],
            regs,
        }
    }

    /// What holds on both `self`'s paths and `other`'s; whether `self` changed.
    fn meet(&mut self, other: &State) -> bool {
        let before = self.clone();
        for (w, o) in self.written.iter_mut().zip(other.written.iter()) {
            *w &= *o;
        }
        for (r, o) in self.regs.iter_mut().zip(other.regs.iter()) {
            if r != o {
                *r = Reg::Unknown;
            }
        }
        *self != before
    }

    /// The byte range `[off, off + len)` below the frame pointer, clipped to the stack.
    fn range(off: i64, len: i64) -> std::ops::Range<usize> {
        let lo = (off + STACK_BYTES as i64).clamp(0, STACK_BYTES as i64) as usize;
        let hi = (off + len + STACK_BYTES as i64).clamp(0, STACK_BYTES as i64) as usize;
        lo..hi.max(lo)
    }

    fn write(&mut self, off: i64, len: i64) {
        for b in &mut self.written[State::range(off, len)] {
            *b = true;
        }
    }

    fn all_written(&self, off: i64, len: i64) -> bool {
        self.written[State::range(off, len)].iter().all(|b| *b)
    }
}

/// A read of stack bytes that some path to it never wrote.
#[derive(Debug, PartialEq, Eq)]
pub struct UnwrittenRead {
    /// The function (program or subprogram).
    pub function: String,
    /// The instruction's index in the function.
    pub pc: usize,
    /// Offset from the frame pointer.
    pub off: i64,
    /// Bytes read.
    pub size: i64,
}

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU64: u8 = 0x07;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const MODE_ATOMIC: u8 = 0xc0;
const OP_JA: u8 = 0x00;
const OP_CALL: u8 = 0x80;
const OP_EXIT: u8 = 0x90;
const ALU_ADD: u8 = 0x00;
const ALU_SUB: u8 = 0x10;
const ALU_MOV: u8 = 0xb0;
const SOURCE_REG: u8 = 0x08;

/// Bytes a load or store moves.
fn size_of_access(code: u8) -> i64 {
    match code & 0x18 {
        0x00 => 4,
        0x08 => 2,
        0x10 => 1,
        _ => 8,
    }
}

/// The reads of never-written stack bytes in function `name`.
pub fn unwritten_reads(name: &str, insns: &[bpf_insn]) -> Vec<UnwrittenRead> {
    let mut states: Vec<Option<State>> = vec![None; insns.len() + 1];
    states[0] = Some(State::entry());
    let mut work = vec![0usize];
    let mut found = std::collections::BTreeMap::new();
    while let Some(pc) = work.pop() {
        let Some(insn) = insns.get(pc) else { continue };
        let mut s = states[pc].clone().expect("queued with a state");
        let (next, unwritten) = step(insn, pc, &mut s);
        if let Some((off, size)) = unwritten {
            found.insert(
                pc,
                UnwrittenRead {
                    function: name.to_string(),
                    pc,
                    off,
                    size,
                },
            );
        }
        for n in next {
            if n >= states.len() {
                continue;
            }
            let changed = match &mut states[n] {
                Some(old) => old.meet(&s),
                slot @ None => {
                    *slot = Some(s.clone());
                    true
                }
            };
            if changed {
                work.push(n);
            }
        }
    }
    found.into_values().collect()
}

/// Applies instruction `insn` (at `pc`) to `s`; returns the instructions that may
/// come next, and the stack bytes it reads that `s` did not have written (offset from
/// the frame pointer, length), if any.
fn step(insn: &bpf_insn, pc: usize, s: &mut State) -> (Vec<usize>, Option<(i64, i64)>) {
    let class = insn.code & 0x07;
    let (dst, src) = (insn.dst_reg() as usize, insn.src_reg() as usize);
    let off = i64::from(insn.off);
    let imm = i64::from(insn.imm);
    let mut next = vec![pc + 1];
    let mut unwritten = None;
    match class {
        // A 64-bit immediate (a map, a constant) takes two slots.
        CLASS_LD if insn.code == 0x18 => {
            s.regs[dst] = Reg::Unknown;
            next = vec![pc + 2];
        }
        CLASS_LD => {}
        CLASS_LDX => {
            let size = size_of_access(insn.code);
            if let Reg::Stack(base) = s.regs[src]
                && !s.all_written(base + off, size)
            {
                unwritten = Some((base + off, size));
            }
            s.regs[dst] = Reg::Unknown;
        }
        CLASS_ST | CLASS_STX => {
            let size = size_of_access(insn.code);
            if let Reg::Stack(base) = s.regs[dst] {
                // An atomic operation reads the bytes before it writes them, and a
                // fetching one writes its source register.
                if class == CLASS_STX && insn.code & 0xe0 == MODE_ATOMIC {
                    if !s.all_written(base + off, size) {
                        unwritten = Some((base + off, size));
                    }
                    s.regs[src] = Reg::Unknown;
                }
                s.write(base + off, size);
            }
        }
        CLASS_ALU64 => {
            let operand = if insn.code & SOURCE_REG != 0 {
                s.regs[src]
            } else {
                Reg::Const(imm)
            };
            s.regs[dst] = match (insn.code & 0xf0, s.regs[dst], operand) {
                (ALU_MOV, _, v) => v,
                (ALU_ADD, Reg::Stack(b), Reg::Const(c))
                | (ALU_ADD, Reg::Const(c), Reg::Stack(b)) => Reg::Stack(b + c),
                (ALU_SUB, Reg::Stack(b), Reg::Const(c)) => Reg::Stack(b - c),
                (ALU_ADD, Reg::Const(a), Reg::Const(c)) => Reg::Const(a.wrapping_add(c)),
                _ => Reg::Unknown,
            };
        }
        CLASS_JMP | CLASS_JMP32 => match insn.code & 0xf0 {
            OP_EXIT if class == CLASS_JMP => next.clear(),
            OP_CALL if class == CLASS_JMP => call(s),
            OP_JA => {
                let by = if class == CLASS_JMP32 { imm } else { off };
                next = vec![(pc as i64 + 1 + by) as usize];
            }
            _ => next.push((pc as i64 + 1 + off) as usize),
        },
        // 32-bit arithmetic: the destination is a number no longer followed.
        _ => s.regs[dst] = Reg::Unknown,
    }
    (next, unwritten)
}

/// A helper or subprogram call: it may write through any stack pointer it gets, for
/// the next argument's byte count if that is known (else up to the frame's top), and
/// leaves r0 to r5 unknown.
fn call(s: &mut State) {
    for arg in 1..=5 {
        if let Reg::Stack(at) = s.regs[arg] {
            let len = match s.regs.get(arg + 1) {
                Some(Reg::Const(n)) if arg < 5 && *n > 0 => *n,
                _ => -at,
            };
            s.write(at, len);
        }
    }
    for r in 0..=5 {
        s.regs[r] = Reg::Unknown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> bpf_insn {
        let mut i = bpf_insn {
            code,
            _bitfield_align_1: [],
            _bitfield_1: Default::default(),
            off,
            imm,
        };
        i.set_dst_reg(dst);
        i.set_src_reg(src);
        i
    }
    /// `*(u64 *)(r10 + off) = r1`
    fn store(off: i16) -> bpf_insn {
        insn(0x7b, 10, 1, off, 0)
    }
    /// `r1 = *(u64 *)(r10 + off)`
    fn load(off: i16) -> bpf_insn {
        insn(0x79, 1, 10, off, 0)
    }
    /// `if r0 == 0 goto +by`
    fn branch(by: i16) -> bpf_insn {
        insn(0x15, 0, 0, by, 0)
    }
    fn exit() -> bpf_insn {
        insn(0x95, 0, 0, 0, 0)
    }

    #[test]
    fn a_slot_written_on_one_path_only_is_found_where_it_is_read() {
        // The shape the verifier of 6.1.172 refused: a slot stored before a branch's
        // one side and read after the two sides meet.
        let program = [branch(1), store(-120), load(-120), exit()];
        assert_eq!(
            unwritten_reads("p", &program),
            [UnwrittenRead {
                function: "p".into(),
                pc: 2,
                off: -120,
                size: 8
            }]
        );
        // Written before the branch: fine on both paths.
        let fine = [store(-120), branch(1), store(-8), load(-120), exit()];
        assert!(unwritten_reads("p", &fine).is_empty());
    }

    #[test]
    fn pointers_into_the_stack_are_followed_into_stores_and_helpers() {
        // r2 = r10; r2 += -16; *(u32 *)(r2 + 0) = r1 writes fp-16..fp-12 only.
        let through_pointer = [
            insn(0xbf, 2, 10, 0, 0),
            insn(0x07, 2, 0, 0, -16),
            insn(0x63, 2, 1, 0, 0),
            insn(0x61, 1, 10, -16, 0),
            insn(0x79, 1, 10, -16, 0),
            exit(),
        ];
        let found = unwritten_reads("p", &through_pointer);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].pc, found[0].off, found[0].size), (4, -16, 8));
        // A helper given fp-8 and 8 bytes (bpf_probe_read_kernel) writes them.
        let helper = [
            insn(0xbf, 1, 10, 0, 0),
            insn(0x07, 1, 0, 0, -8),
            insn(0xb7, 2, 0, 0, 8),
            insn(0x85, 0, 0, 0, 113),
            load(-8),
            load(-16),
            exit(),
        ];
        let found = unwritten_reads("p", &helper);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].off, -16);
    }

    #[test]
    fn loops_reach_a_fixed_point() {
        // A back edge: the read inside the loop is fine once the store before it holds.
        let program = [store(-8), load(-8), branch(-3), exit()];
        assert!(unwritten_reads("p", &program).is_empty());
        let program = [
            branch(2),
            store(-8),
            exit(),
            load(-8),
            insn(0x05, 0, 0, -5, 0),
        ];
        assert_eq!(unwritten_reads("p", &program).len(), 1);
    }

    /// The probes' object as the agent loads it: no program or subprogram reads a stack
    /// byte it may not have written.
    #[test]
    fn the_probes_read_no_stack_byte_before_writing_it() {
        let object =
            aya_obj::Object::parse(crate::probes::OBJECT).expect("the probes' object parses");
        let mut checked = 0;
        let mut found = Vec::new();
        for f in object.functions.values() {
            checked += 1;
            found.extend(unwritten_reads(&f.name, &f.instructions));
        }
        assert!(checked >= 10, "only {checked} functions in the object");
        assert!(found.is_empty(), "{found:#?}");
    }
}
