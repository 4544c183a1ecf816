#!/bin/bash
# PID 1 of the vmtest VM (kernel cmdline: init=<repo>/tests/vm/init.sh).
#
# The root is the host's / over 9p, read-only. This mounts the pseudo
# filesystems and tmpfs on /tmp and /run (the only writable places), the
# repo (its own 9p share) at its host path again, since a repo under /tmp
# is covered by the tmpfs, runs tests/vm/guest.sh, then powers off. Never
# exits: PID 1 exiting panics.
#
# Channels: ttyS0 = console (kernel log + everything printed here), captured
# by the host as the serial log; ttyS1 = results, one line each:
#   INIT <uptime s>   PASS <name>   FAIL <name>   DONE <uptime s>
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8 TERM=dumb
RES=/dev/ttyS1

mount -t proc proc /proc
mount -t devtmpfs devtmpfs /dev 2>/dev/null   # CONFIG_DEVTMPFS_MOUNT may have done it
echo "INIT $(cut -d' ' -f1 /proc/uptime)" > $RES
echo "vmtest-init: up at $(cut -d' ' -f1 /proc/uptime)s, kernel $(uname -r)"

poweroff_now() {
	sync
	echo "vmtest-init: powering off"
	echo o > /proc/sysrq-trigger
	sleep 30
	# still here: let the kernel panic (panic=-1 + qemu -no-reboot ends qemu)
	exit 1
}
trap poweroff_now EXIT

mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# No tracefs or debugfs: the tool must not need them (a fresh machine has neither).
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ulimit -l unlimited              # old kernels charge BPF maps to RLIMIT_MEMLOCK (6.1 uses memcg)
hostname vmtest

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -1; }
repo=$(arg dupcache.repo)
tests=$(arg dupcache.tests)
export VMTEST_BIN=$repo/$(arg dupcache.bin)
if [ -n "$repo" ]; then
	mkdir -p "$repo" 2>/dev/null
	mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 dupcache_repo "$repo" ||
		echo "vmtest-init: cannot mount the repo share at $repo"
fi
if [ -z "$repo" ] || [ ! -x "$repo/tests/vm/guest.sh" ]; then
	echo "vmtest-init: no repo (dupcache.repo='$repo' on the kernel command line)"
	echo "FAIL guest_setup" > $RES
else
	cd "$repo" && VMTEST_RESULTS=$RES bash tests/vm/guest.sh "$repo" ${tests//,/ }
fi
echo "DONE $(cut -d' ' -f1 /proc/uptime)" > $RES
