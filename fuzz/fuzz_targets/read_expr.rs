//! The `--read` expression parser and evaluator on arbitrary text: what a user types.
//! Parsing must return an expression or an error with a column inside the text, and
//! an expression must evaluate (against a small BTF and memory of zeros) to a value or
//! an error, never panic.
#![no_main]

use guest_kernel::btf::Btf;
use guest_kernel::read_expr::{Memory, ReadExpr, Stop};
use libfuzzer_sys::fuzz_target;

/// The BTF reader's seed: `struct task_struct { pid, tgid, comm[16] }` and more.
const BTF: &[u8] = include_bytes!("../corpus/btf_reader/seed-task-struct");

struct Zeros;

impl Memory for Zeros {
    fn read(&mut self, addr: u64, len: usize) -> Result<Vec<u8>, String> {
        if addr == 0 {
            return Err("address 0".into());
        }
        Ok(vec![0; len.min(4096)])
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<ReadExpr>() {
        Ok(expr) => {
            assert_eq!(expr.text.parse::<ReadExpr>().as_ref(), Ok(&expr));
            let btf = Btf::parse(BTF).expect("the seed parses");
            let register = |name: &str| (name.len() < 4).then_some(0xffff_8880_0000_1000);
            let stop = Stop {
                btf: &btf,
                function: Some("alloc_fd"),
                current: 0xffff_8880_0000_1000,
                register: &register,
                symbol: &register,
                per_cpu_base: 0xffff_8880_1f00_0000,
            };
            let _ = stop.read(&expr, &mut Zeros);
            let _ = guest_kernel::read_expr::check(&btf, Some("alloc_fd"), &expr);
        }
        Err(e) => assert!(e.column >= 1 && e.column <= text.len() + 1, "{e}"),
    }
});
