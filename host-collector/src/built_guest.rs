//! The guest `cargo xtask` built for this binary: `target/guestscope/guest/`, next
//! to `target/release/guestscope`. `guestscope lab` and `deploy` use it when no
//! `--kernel` or `--initrd` is given, so the binary works on its own after a
//! `cargo xtask lab`.

use std::path::PathBuf;

/// The guest kernel `cargo xtask` unpacked (`vmlinuz`, a KASLR bzImage).
pub const KERNEL: &str = "vmlinuz";
/// The same kernel uncompressed (`vmlinux`, PVH entry), for the boots that do not
/// measure the boot itself.
pub const KERNEL_ELF: &str = "vmlinux";
/// guestscope's base initramfs (the agent, the workloads, busybox, init).
pub const INITRD: &str = "base.cpio";

/// `name` in the built guest's directory, if this binary sits in a cargo target
/// directory that has it.
pub fn file(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("guestscope/guest").join(name);
    p.is_file().then_some(p)
}
