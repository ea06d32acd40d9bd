//! Where a stop lies on the guest's clock, read from the stopped kernel: the host only
//! sees a stop when its reply arrives, and each hold's ends are placed on the host's
//! clock give or take the stub's latency, so the time line's estimate of a stop
//! drifts with the holds before it. The kernel's tick bookkeeping does not.

use serde::{Deserialize, Serialize};

use guest_kernel::kallsyms::Kallsyms;
use guest_kernel::kernel::{Access, CurrentReader};
use qemu_gdb_client::Client;

/// The guest's tick bookkeeping at a stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestTicks {
    /// `last_jiffies_update`: CLOCK_MONOTONIC of the last tick that advanced jiffies,
    /// ns. The stop came after it.
    pub last_ns: u64,
    /// `tick_next_period`: when the next one is due, ns. The stop came before it
    /// unless that tick was late.
    pub next_ns: u64,
}

/// Where the kernel keeps [`GuestTicks`], looked up once a run (a name lookup scans
/// every symbol, and the VM is held while a stop reads).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TickSymbols {
    /// `last_jiffies_update`.
    last: u64,
    /// `tick_next_period`.
    next: u64,
}

impl TickSymbols {
    /// `None` when the kernel's symbols lack them (a kernel without
    /// `CONFIG_KALLSYMS_ALL`).
    pub(crate) fn find(kallsyms: &Kallsyms) -> Option<TickSymbols> {
        Some(TickSymbols {
            last: kallsyms.by_name("last_jiffies_update")?.addr,
            next: kallsyms.by_name("tick_next_period")?.addr,
        })
    }

    /// Reads [`GuestTicks`] from the stopped kernel; `None` when a read fails or the
    /// values make no sense.
    pub(crate) fn read(
        self,
        client: &mut Client,
        reader: &mut CurrentReader,
    ) -> Option<GuestTicks> {
        let mut read = |addr: u64| -> Option<u64> {
            match reader.read_kernel(client, addr, 8, Access::Auto) {
                Ok((bytes, _)) => Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)),
                Err(e) => {
                    tracing::debug!(addr, error = %e, "guest tick bookkeeping not read");
                    None
                }
            }
        };
        let last_ns = read(self.last)?;
        let next_ns = read(self.next)?;
        (last_ns > 0 && next_ns > last_ns).then_some(GuestTicks { last_ns, next_ns })
    }
}
