//! The BTF reader on arbitrary bytes: the guest sends its `/sys/kernel/btf/vmlinux`
//! and the host reads struct offsets from it. Parsing and member lookups must return
//! a value or an error, never panic or loop.
#![no_main]

use guest_kernel::btf::Btf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    let _ = btf.task_offsets();
    for (strukt, member) in [
        ("task_struct", "comm"),
        ("task_struct", "se.vruntime"),
        ("pcpu_hot", "current_task"),
        ("file", "f_path.dentry"),
    ] {
        let _ = btf.member(strukt, member);
    }
});
