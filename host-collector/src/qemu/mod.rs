//! Running the guest: QEMU, its accelerator, its serial console and the vsock device.
//!
//! - [`accel`]: KVM when it can really run a guest, else TCG.
//! - [`command`]: the QEMU command line.
//! - [`firmware`]: qboot, where QEMU ships it.
//! - [`kernel_cmdline`]: the guest kernel's command line for each kind of boot.
//! - [`serial`]: the serial console, line by line, timestamped on the host.
//! - [`vhost`]: the vhost-user vsock device process (when /dev/vhost-vsock is absent).
//! - [`child`]: a child process that is killed when dropped.

pub mod accel;
pub mod child;
pub mod command;
pub mod firmware;
pub mod kernel_cmdline;
pub mod serial;
pub mod vhost;
