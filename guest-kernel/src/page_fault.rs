//! x86 page faults: what a faulting access was, from the error code the CPU pushes
//! (and the `exceptions:page_fault_*` tracepoints carry).

/// x86 page-fault error code bits (`arch/x86/include/asm/trap_pf.h`).
const PF_PROT: u32 = 1 << 0;
const PF_WRITE: u32 = 1 << 1;
const PF_USER: u32 = 1 << 2;
const PF_INSTR: u32 = 1 << 4;

/// What a faulting access was, from its x86 error code: a page not yet mapped
/// (first touch of anonymous memory, a file page not in the page tables yet), or a
/// mapped one the access was not allowed on (a write to a copy-on-write page).
pub fn access(code: u32) -> &'static str {
    let kernel = code & PF_USER == 0;
    match (
        code & PF_PROT != 0,
        code & PF_WRITE != 0,
        code & PF_INSTR != 0,
    ) {
        (_, _, true) => "instruction fetch",
        (false, true, _) if kernel => "kernel write to an unmapped user page",
        (false, false, _) if kernel => "kernel read of an unmapped user page",
        (false, true, _) => "write to an unmapped page",
        (false, false, _) => "read of an unmapped page",
        (true, true, _) => "write to a read-only page (copy on write)",
        (true, false, _) => "read of a protected page",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_code_says_what_the_access_was() {
        // malloc's first touch of a page: user write, page not present.
        assert_eq!(access(PF_USER | PF_WRITE), "write to an unmapped page");
        assert_eq!(access(PF_USER), "read of an unmapped page");
        // A forked child writing to a shared page.
        assert_eq!(
            access(PF_USER | PF_WRITE | PF_PROT),
            "write to a read-only page (copy on write)"
        );
        assert_eq!(access(PF_USER | PF_INSTR), "instruction fetch");
        // copy_to_user into a fresh buffer.
        assert_eq!(access(PF_WRITE), "kernel write to an unmapped user page");
        assert_eq!(access(PF_USER | PF_PROT), "read of a protected page");
    }
}
