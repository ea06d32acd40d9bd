//! x86_64 guest-kernel reads through the gdbstub: per-cpu base, page-table walks,
//! and the current task (pid, tgid, comm) — `lx_current()` done natively, from
//! kallsyms and BTF instead of a debug build and `nokaslr`.
//!
//! `current` is the per-cpu variable `current_task` (kallsyms lists it with its
//! per-cpu offset, e.g. `000000000001fb80 A current_task`; from 6.2 on it is
//! `pcpu_hot.current_task`). Its address is the CPU's per-cpu base plus that offset.
//! The base is in `gs_base` while the CPU runs kernel code after `swapgs`, and in
//! `k_gs_base` (MSR_KERNEL_GS_BASE) in user mode and in the few instructions of an
//! entry before `swapgs` — such as a breakpoint on `entry_SYSCALL_64`. Whichever
//! of the two holds a kernel-half address is the base (a user GS base cannot be
//! one: `arch_prctl(ARCH_SET_GS)` refuses kernel addresses).
//!
//! With page-table isolation (PTI) the CPU still runs on the user page tables at
//! that breakpoint, which do not map per-cpu data or task structs: a virtual
//! read fails (QEMU answers `E14`). The reader then walks the kernel page tables
//! itself through physical reads (`Qqemu.PhyMemMode:1`): under PTI the kernel PGD
//! is the user one with bit 12 cleared (the two are an 8 KiB-aligned pair).

use std::collections::HashMap;

use qemu_gdb_client::{Client, GdbError};

use crate::btf::TaskOffsets;
use crate::kallsyms::Kallsyms;

/// A read of the guest kernel that failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelReadError {
    /// Talking to the gdbstub failed (an unreadable address is [`GdbError::Memory`]).
    #[error(transparent)]
    Gdb(#[from] GdbError),
    /// A page-table walk found no mapping.
    #[error("{vaddr:#x} is not mapped (page-table level {level}, entry {entry:#x})")]
    NotMapped {
        /// Virtual address.
        vaddr: u64,
        /// Level whose entry was not present (4 = PML4 ... 1 = PT; 5 with LA57).
        level: u8,
        /// The entry read.
        entry: u64,
    },
    /// Neither GS base register holds a kernel address.
    #[error("no kernel per-cpu base: gs_base {gs_base:#x}, k_gs_base {k_gs_base:#x}")]
    NoPerCpuBase {
        /// `gs_base`.
        gs_base: u64,
        /// `k_gs_base` (MSR_KERNEL_GS_BASE).
        k_gs_base: u64,
    },
    /// A kernel symbol needed for a read is missing from kallsyms.
    #[error("kallsyms has no {0}")]
    MissingSymbol(String),
    /// A task_struct read that makes no sense (null `current`, pid out of range).
    #[error("implausible kernel data: {0}")]
    Implausible(String),
}

/// Bits 12–51 of a page-table entry or CR3: the physical frame address.
pub const PHYS_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// CR3 bits 0–11: the PCID when CR4.PCIDE is set.
pub const CR3_PCID_MASK: u64 = 0xfff;
/// CR3 bit 12: with PTI, set in the user PGD and clear in the kernel PGD.
pub const CR3_PTI_USER_BIT: u64 = 1 << 12;
/// CR3 bit 63 (on a write): do not flush the PCID's TLB entries.
pub const CR3_NOFLUSH: u64 = 1 << 63;
/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;
/// Highest pid the kernel hands out (PID_MAX_LIMIT on 64-bit).
const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
/// Translations kept before the cache is cleared.
const TRANSLATION_CACHE_MAX: usize = 4096;

/// Whether `addr` is in the kernel half of the canonical address space.
pub fn is_kernel_address(addr: u64) -> bool {
    addr >= 0xffff_8000_0000_0000
}

/// The kernel per-cpu base from the two GS base registers (see the module docs).
pub fn per_cpu_base(gs_base: u64, k_gs_base: u64) -> Result<u64, KernelReadError> {
    if is_kernel_address(gs_base) {
        Ok(gs_base)
    } else if is_kernel_address(k_gs_base) {
        Ok(k_gs_base)
    } else {
        Err(KernelReadError::NoPerCpuBase { gs_base, k_gs_base })
    }
}

/// The kernel PGD's physical address for a CR3 value seen while the guest may be on
/// its PTI user page tables (see the module docs).
pub fn kernel_pgd(cr3: u64) -> u64 {
    cr3 & PHYS_ADDR_MASK & !CR3_PTI_USER_BIT
}

/// Where things are in this guest kernel: from its kallsyms and BTF.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelLayout {
    /// Per-cpu offset of the `current` task pointer.
    pub current_task: u64,
    /// task_struct member offsets.
    pub task: TaskOffsets,
}

impl KernelLayout {
    /// Finds `current_task` (or, on 6.2+, `pcpu_hot` plus the BTF offset of its
    /// `current_task` member) in kallsyms.
    pub fn new(kallsyms: &Kallsyms, task: TaskOffsets) -> Result<KernelLayout, KernelReadError> {
        let current_task = if let Some(s) = kallsyms.by_name("current_task") {
            s.addr
        } else if let (Some(s), Some(off)) =
            (kallsyms.by_name("pcpu_hot"), task.pcpu_hot_current_task)
        {
            s.addr + u64::from(off)
        } else {
            return Err(KernelReadError::MissingSymbol(
                "current_task (or pcpu_hot)".into(),
            ));
        };
        if is_kernel_address(current_task) {
            // A per-cpu symbol is an offset into the per-cpu area, not an address.
            return Err(KernelReadError::Implausible(format!(
                "current_task at {current_task:#x} is not a per-cpu offset"
            )));
        }
        Ok(KernelLayout { current_task, task })
    }
}

/// How a kernel read was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MemoryPath {
    /// A plain `m` read through the vCPU's current page tables.
    Virtual,
    /// A walk of the kernel page tables and physical reads.
    PageWalk,
}

/// Which way to read kernel memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Virtual first; on failure walk the kernel page tables (and, after one such
    /// fallback, walk first: at a PTI entry breakpoint virtual reads always fail).
    Auto,
    /// Only a virtual read.
    Virtual,
    /// Only a page walk.
    PageWalk,
}

/// `current`'s identity.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskIds {
    /// task_struct address.
    pub task: u64,
    /// Thread id (`task->pid`).
    pub pid: u32,
    /// Process id (`task->tgid`, what user space calls the pid).
    pub tgid: u32,
    /// How the fields were read.
    pub path: MemoryPath,
}

/// The current task of a stopped vCPU.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CurrentTask {
    /// task_struct address, pid, tgid, read path.
    pub ids: TaskIds,
    /// `task->comm`.
    pub comm: String,
    /// The per-cpu base used.
    pub per_cpu_base: u64,
}

/// Reads `current` and other kernel memory of a stopped guest.
#[derive(Debug)]
pub struct CurrentReader {
    layout: KernelLayout,
    prefer_walk: bool,
    la57: Option<bool>,
    cache: HashMap<u64, u64>,
    cache_enabled: bool,
    pgd: Option<u64>,
}

impl CurrentReader {
    /// A reader for this kernel.
    pub fn new(layout: KernelLayout) -> CurrentReader {
        CurrentReader {
            layout,
            prefer_walk: false,
            la57: None,
            cache: HashMap::new(),
            cache_enabled: true,
            pgd: None,
        }
    }

    /// The layout in use.
    pub fn layout(&self) -> &KernelLayout {
        &self.layout
    }

    /// Turns the page-walk translation cache on or off. It is sound for the
    /// addresses this reader translates — per-cpu areas and slab-allocated task
    /// structs, both in the kernel's direct map, whose translation never changes —
    /// and saves four physical reads per page. Off for anything else.
    pub fn set_translation_cache(&mut self, on: bool) {
        self.cache_enabled = on;
        self.cache.clear();
    }

    /// The kernel per-cpu base of the selected vCPU (two register reads).
    pub fn per_cpu_base(&mut self, client: &mut Client) -> Result<u64, KernelReadError> {
        let gs = client.read_register("gs_base")?;
        let kgs = client.read_register("k_gs_base")?;
        per_cpu_base(gs, kgs)
    }

    /// Translates a kernel virtual address by walking the page tables under `pgd`
    /// (physical) with physical reads.
    pub fn translate(
        &mut self,
        client: &mut Client,
        pgd: u64,
        vaddr: u64,
    ) -> Result<u64, KernelReadError> {
        let page = vaddr & !0xfff;
        if self.cache_enabled
            && let Some(phys) = self.cache.get(&page)
        {
            return Ok(phys | (vaddr & 0xfff));
        }
        let la57 = match self.la57 {
            Some(v) => v,
            None => {
                let v = client.read_register("cr4")? & CR4_LA57 != 0;
                self.la57 = Some(v);
                v
            }
        };
        client.set_phys_mem_mode(true)?;
        let shifts: &[u32] = if la57 {
            &[48, 39, 30, 21, 12]
        } else {
            &[39, 30, 21, 12]
        };
        let mut table = pgd & PHYS_ADDR_MASK;
        let mut phys = None;
        for (i, &shift) in shifts.iter().enumerate() {
            let level = (shifts.len() - i) as u8;
            let index = (vaddr >> shift) & 0x1ff;
            let entry = client.read_u64(table + index * 8)?;
            if entry & 1 == 0 {
                return Err(KernelReadError::NotMapped {
                    vaddr,
                    level,
                    entry,
                });
            }
            let large = (shift == 30 || shift == 21) && entry & 0x80 != 0;
            if large || shift == 12 {
                let span = (1u64 << shift) - 1;
                phys = Some((entry & PHYS_ADDR_MASK & !span) | (vaddr & span));
                break;
            }
            table = entry & PHYS_ADDR_MASK;
        }
        let phys = phys.ok_or_else(|| {
            KernelReadError::Implausible("page walk ended without a mapping".into())
        })?;
        if self.cache_enabled {
            if self.cache.len() >= TRANSLATION_CACHE_MAX {
                self.cache.clear();
            }
            self.cache.insert(page, phys & !0xfff);
        }
        Ok(phys)
    }

    fn walk_read(
        &mut self,
        client: &mut Client,
        vaddr: u64,
        len: usize,
    ) -> Result<Vec<u8>, KernelReadError> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let at = vaddr.wrapping_add(out.len() as u64);
            let in_page = (0x1000 - (at & 0xfff)) as usize;
            let n = in_page.min(len - out.len());
            let phys = self.translate_cached_or(client, at)?;
            client.set_phys_mem_mode(true)?;
            out.extend(client.read_memory(phys, n)?);
        }
        Ok(out)
    }

    fn translate_cached_or(
        &mut self,
        client: &mut Client,
        vaddr: u64,
    ) -> Result<u64, KernelReadError> {
        if self.cache_enabled
            && let Some(phys) = self.cache.get(&(vaddr & !0xfff))
        {
            return Ok(phys | (vaddr & 0xfff));
        }
        let pgd = match self.pgd {
            Some(p) => p,
            None => {
                let p = kernel_pgd(client.read_register("cr3")?);
                self.pgd = Some(p);
                p
            }
        };
        self.translate(client, pgd, vaddr)
    }

    /// Reads `len` bytes of kernel memory at `vaddr` the way `access` says.
    pub fn read_kernel(
        &mut self,
        client: &mut Client,
        vaddr: u64,
        len: usize,
        access: Access,
    ) -> Result<(Vec<u8>, MemoryPath), KernelReadError> {
        // The PGD is only valid while the vCPU stays stopped where it was read.
        self.pgd = None;
        let walk_first =
            matches!(access, Access::PageWalk) || (access == Access::Auto && self.prefer_walk);
        if !walk_first {
            client.set_phys_mem_mode(false)?;
            match client.read_memory(vaddr, len) {
                Ok(bytes) => return Ok((bytes, MemoryPath::Virtual)),
                Err(e @ GdbError::Memory { .. }) if access == Access::Auto => {
                    tracing::debug!(vaddr = format_args!("{vaddr:#x}"), error = %e, "virtual read failed; walking the kernel page tables");
                }
                Err(e) => return Err(e.into()),
            }
        }
        let bytes = self.walk_read(client, vaddr, len)?;
        if access == Access::Auto {
            self.prefer_walk = true;
        }
        Ok((bytes, MemoryPath::PageWalk))
    }

    /// `current`'s task pointer, pid and tgid, given the per-cpu base (two memory
    /// reads when translations are cached: the per-cpu slot, then pid+tgid).
    pub fn current_ids(
        &mut self,
        client: &mut Client,
        per_cpu_base: u64,
        access: Access,
    ) -> Result<TaskIds, KernelReadError> {
        let slot = per_cpu_base.wrapping_add(self.layout.current_task);
        let (bytes, path) = self.read_kernel(client, slot, 8, access)?;
        let task = qemu_gdb_client::packet::le_u64(&bytes)?;
        if !is_kernel_address(task) {
            return Err(KernelReadError::Implausible(format!(
                "current_task at {slot:#x} holds {task:#x}"
            )));
        }
        let access = match path {
            MemoryPath::Virtual if access == Access::Auto => Access::Virtual,
            MemoryPath::PageWalk if access == Access::Auto => Access::PageWalk,
            _ => access,
        };
        let t = self.layout.task.clone();
        let (lo, hi) = (t.pid.min(t.tgid), t.pid.max(t.tgid) + 4);
        let (pid, tgid) = if hi - lo <= 64 {
            let (b, _) =
                self.read_kernel(client, task + u64::from(lo), (hi - lo) as usize, access)?;
            (
                le_u32(&b, (t.pid - lo) as usize)?,
                le_u32(&b, (t.tgid - lo) as usize)?,
            )
        } else {
            let (p, _) = self.read_kernel(client, task + u64::from(t.pid), 4, access)?;
            let (g, _) = self.read_kernel(client, task + u64::from(t.tgid), 4, access)?;
            (le_u32(&p, 0)?, le_u32(&g, 0)?)
        };
        if pid > PID_MAX_LIMIT || tgid > PID_MAX_LIMIT {
            return Err(KernelReadError::Implausible(format!(
                "task {task:#x}: pid {pid}, tgid {tgid}"
            )));
        }
        Ok(TaskIds {
            task,
            pid,
            tgid,
            path,
        })
    }

    /// The current task of the selected (stopped) vCPU: pid, tgid and comm.
    /// Works anywhere the guest is stopped: in user mode, in the kernel, or at an
    /// entry point before `swapgs` and the PTI CR3 switch.
    pub fn current(&mut self, client: &mut Client) -> Result<CurrentTask, KernelReadError> {
        let base = self.per_cpu_base(client)?;
        let ids = self.current_ids(client, base, Access::Auto)?;
        let access = match ids.path {
            MemoryPath::Virtual => Access::Virtual,
            MemoryPath::PageWalk => Access::PageWalk,
        };
        let t = self.layout.task.clone();
        let (comm, _) = self.read_kernel(
            client,
            ids.task + u64::from(t.comm),
            t.comm_len as usize,
            access,
        )?;
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        Ok(CurrentTask {
            ids,
            comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
            per_cpu_base: base,
        })
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Result<u32, KernelReadError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| KernelReadError::Implausible("short task_struct read".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_base_takes_the_kernel_half_register() {
        assert_eq!(
            per_cpu_base(0, 0xffff_8e95_5f20_0000).unwrap(),
            0xffff_8e95_5f20_0000
        );
        assert_eq!(
            per_cpu_base(0xffff_8e95_5f20_0000, 0x7f00_0000_0000).unwrap(),
            0xffff_8e95_5f20_0000
        );
        assert!(matches!(
            per_cpu_base(0, 0x7f00_0000),
            Err(KernelReadError::NoPerCpuBase { .. })
        ));
    }

    #[test]
    fn kernel_pgd_clears_pcid_pti_and_noflush_bits() {
        assert_eq!(kernel_pgd(0x1ff0_5000), 0x1ff0_4000);
        assert_eq!(kernel_pgd(0x1ff0_4000), 0x1ff0_4000);
        assert_eq!(kernel_pgd(CR3_NOFLUSH | 0x1ff0_5801), 0x1ff0_4000);
    }
}
