#!/bin/sh
# /init of the guestscope guest, packed into base.cpio by `cargo xtask`
# (xtask/src/initramfs.rs). It mounts the kernel file systems, loads the
# modules listed in /etc/guestscope/modules.order (dependencies first), runs
# the agent with the plan the collector appended as a second cpio layer, and
# powers off; QEMU runs with -no-reboot, so that ends QEMU. There is no
# network, not even loopback: the agent talks to the host over virtio-vsock.

# `--install` finds busybox through /proc/self/exe, so /proc comes first.
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin

mnt() {
    mount -t "$1" "$1" "$2" || echo "guestscope-init: cannot mount $1 on $2"
}
mnt sysfs /sys
mnt devtmpfs /dev
mnt debugfs /sys/kernel/debug
mnt tracefs /sys/kernel/tracing
mnt bpf /sys/fs/bpf
mnt tmpfs /tmp

echo "guestscope-init: start"

modules="/lib/modules/$(uname -r)"
while read -r module; do
    [ -n "$module" ] || continue
    insmod "$modules/$module" || echo "guestscope-init: cannot load module $module"
done < /etc/guestscope/modules.order

/bin/guestscope-agent --plan /etc/guestscope/plan.json
echo "guestscope-init: agent exited with status $?"

poweroff -f
# Only reached if poweroff failed.
echo o > /proc/sysrq-trigger
