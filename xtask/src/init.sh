#!/bin/sh
# /init of the guestscope guest, packed into base.cpio by `cargo xtask`
# (xtask/src/initramfs.rs). It mounts the kernel file systems, loads the
# modules listed in /etc/guestscope/modules.order (dependencies first), runs
# the agent with the plan the collector appended as a second cpio layer, and
# powers off; QEMU runs with -no-reboot, so that ends QEMU. With a root file
# system image (`guestscope lab --rootfs`), the agent runs chrooted in it; with the
# host's files (`guestscope lab -- CMD`), chrooted in them under a tmpfs overlay. There
# is no network, not even loopback: the agent talks to the host over virtio-vsock.

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

# `guestscope.btf=off` on the kernel command line hides the kernel's BTF, as on a
# kernel built without CONFIG_DEBUG_INFO_BTF (to exercise the fallbacks).
case " $(cat /proc/cmdline) " in
*" guestscope.btf=off "*)
    mount -t tmpfs -o ro,size=4k btf-hidden /sys/kernel/btf &&
        echo "guestscope-init: kernel BTF hidden (guestscope.btf=off)" ;;
esac

echo "guestscope-init: start"

# One line saying what is missing, which the collector reports, then stop.
fail() {
    echo "guestscope-init: error: $*"
    poweroff -f
}

modules="/lib/modules/$(uname -r)"
# Loads the modules a file lists, one path per line, in order; none for a kernel the
# initramfs has no modules of (one built from source, its drivers built in).
load_modules() {
    if [ ! -d "$modules" ]; then
        echo "guestscope-init: no modules for kernel $(uname -r) here: its drivers must be built in"
        return
    fi
    while read -r module; do
        [ -n "$module" ] || continue
        insmod "$modules/$module" || echo "guestscope-init: cannot load module $module"
    done < "$1"
}
load_modules /etc/guestscope/modules.order
[ -d /sys/bus/virtio/drivers/vmw_vsock_virtio_transport ] ||
    fail "kernel $(uname -r) has no virtio vsock transport (it needs CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_VSOCKETS, built in or as modules): the agent cannot reach the host"

# Runs the agent ("$@" is how), and again if it dies of a signal (killed, crashed),
# up to three times: the new agent resumes the run after the workloads already
# started, and the collector takes its stream as the run's continuation. An agent
# that exits on its own (done, or an error it reported) is not restarted.
run_agent() {
    restarts=0
    while :; do
        "$@"
        status=$?
        echo "guestscope-init: agent exited with status $status"
        [ $status -gt 128 ] && [ $restarts -lt 3 ] || return
        restarts=$((restarts + 1))
        echo "guestscope-init: the agent died (signal $((status - 128))): restarting it ($restarts of 3)"
    done
}

# Gives the root file system mounted on /sysroot the guest's kernel file systems and
# guestscope's files; "tmp" as $1 also gives it a fresh /tmp.
enter_sysroot() {
    for d in proc sys dev tmp usr/lib/guestscope etc/guestscope; do
        [ -d "/sysroot/$d" ] || mkdir -p "/sysroot/$d" || fail "cannot create /$d in the root file system"
    done
    mount -o rbind /proc /sysroot/proc
    mount -o rbind /sys /sysroot/sys
    mount -o rbind /dev /sysroot/dev
    [ "$1" = tmp ] && mount -t tmpfs tmpfs /sysroot/tmp
    ln -f /bin/guestscope-agent /usr/lib/guestscope/guestscope-agent
    mount -o bind /usr/lib/guestscope /sysroot/usr/lib/guestscope
    mount -o bind /etc/guestscope /sysroot/etc/guestscope
}

if [ -f /etc/guestscope/hostfs.env ]; then
    # `guestscope lab -- CMD`: the host's files over virtio-9p, read-only, under a
    # tmpfs overlay that takes every write (none reaches the host). The agent and the
    # workloads run chrooted in it, so a host program finds its libraries; /tmp stays
    # the host's (under the overlay), where a program or its directory may live.
    . /etc/guestscope/hostfs.env
    load_modules /etc/guestscope/hostfs-modules.order
    mkdir -p /hostfs /overlay /sysroot
    mount -t 9p -o "trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000" "$GS_HOSTFS_TAG" /hostfs ||
        fail "cannot mount the host's files (9p tag $GS_HOSTFS_TAG): kernel $(uname -r) needs CONFIG_9P_FS and CONFIG_NET_9P_VIRTIO"
    mount -t tmpfs -o mode=0755 host-writes /overlay
    mkdir -p /overlay/upper /overlay/work
    mount -t overlay -o lowerdir=/hostfs,upperdir=/overlay/upper,workdir=/overlay/work host-overlay /sysroot ||
        fail "cannot lay a tmpfs over the host's files: kernel $(uname -r) needs CONFIG_OVERLAY_FS"
    enter_sysroot
    echo "guestscope-init: the host's files mounted read-only on /sysroot, writes go to a tmpfs"
    run_agent chroot /sysroot /usr/lib/guestscope/guestscope-agent --plan /etc/guestscope/plan.json
elif [ -f /etc/guestscope/rootfs.env ]; then
    # `guestscope lab --rootfs`: the user's root file system is the virtio disk
    # (writes go to a QEMU snapshot that is discarded). Mount it, give it the
    # kernel file systems and guestscope's files, run the agent chrooted in it.
    . /etc/guestscope/rootfs.env
    # An image without modules for this kernel: the disk and ext4 drivers are ours.
    [ "$GS_OWN_MODULES" = 1 ] && load_modules /etc/guestscope/rootfs-modules.order
    tries=0
    while [ ! -b "$GS_ROOT" ] && [ $tries -lt 150 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    [ -b "$GS_ROOT" ] || fail "no root device $GS_ROOT after 15 s: kernel $(uname -r) found no virtio disk (it needs CONFIG_VIRTIO_PCI and CONFIG_VIRTIO_BLK)"
    mkdir -p /sysroot
    mount "$GS_ROOT" /sysroot || fail "cannot mount $GS_ROOT (kernel $(uname -r) needs a driver for its file system, e.g. CONFIG_EXT4_FS)"
    enter_sysroot tmp
    echo "guestscope-init: root file system $GS_ROOT mounted on /sysroot"
    run_agent chroot /sysroot /usr/lib/guestscope/guestscope-agent --plan /etc/guestscope/plan.json
else
    run_agent /bin/guestscope-agent --plan /etc/guestscope/plan.json
fi

poweroff -f
# Only reached if poweroff failed.
echo o > /proc/sysrq-trigger
