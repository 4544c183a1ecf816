#!/bin/bash
# dupcache demo: a "container image layers" scene on a loop XFS and a loop
# btrfs, partly read, then dupcache's reports next to the oracle's totals.
#
#   tests/demo.sh [./dupcache]
#
# Scene (per filesystem, under MNT/layers):
#   base/rootfs.img      32 MiB, cloned to ctr1/ ctr2/ ctr3/ (cp --reflink)
#   base/usr/            50 small files (4..64 KiB), reflinked to ctr1/usr
#                        and ctr2/usr (cp -r --reflink=always)
#   vm/disk.img          64 MiB, vm/clone.img a reflink of it with 1 MiB
#                        rewritten (copy-on-write) at 16 MiB
# Read: rootfs of base and ctr1 fully, 8 MiB of ctr2, all of base/usr and
# ctr1/usr, the first 32 MiB of both VM images.  On XFS a short --watch
# window also shows ctr3 being read.
# Everything (mounts, loop devices, images, helpers) is removed on exit.
set -euo pipefail

BIN=$(realpath "${1:-./dupcache}")
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo.sh: no executable $BIN" >&2; exit 1; }

WORK=$(mktemp -d /tmp/dupcache-demo-XXXXXX)
LOOPS=()
MNTS=()
PIDS=()

cleanup() {
	set +e
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	for m in "${MNTS[@]}"; do
		umount "$m" 2>/dev/null || { sleep 1; umount "$m" 2>/dev/null; } ||
			umount -l "$m"
	done
	for l in "${LOOPS[@]}"; do
		losetup -d "$l"
	done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# make_fs TYPE: sets MNT to a fresh TYPE filesystem mounted under $WORK
make_fs() {
	local img=$WORK/$1.img loop
	truncate -s 1G "$img"
	if [ "$1" = xfs ]; then
		mkfs.xfs -q -m reflink=1 -f "$img"
	else
		mkfs.btrfs -q -f "$img" >/dev/null
	fi
	loop=$(losetup --find --show "$img")
	LOOPS+=("$loop")
	MNT=$WORK/$1
	mkdir "$MNT"
	mount -t "$1" "$loop" "$MNT"
	MNTS+=("$MNT")
}

# random_file PATH SIZE SEED: deterministic pseudo-random content
random_file() {
	$PY -c 'import random, sys
sys.stdout.buffer.write(random.Random(int(sys.argv[2])).randbytes(int(sys.argv[1])))' \
		"$2" "$3" >"$1"
}

build_scene() {
	local L=$1/layers i
	mkdir -p "$L"/base/usr "$L"/ctr1 "$L"/ctr2 "$L"/ctr3 "$L"/vm
	random_file "$L"/base/rootfs.img $((32 << 20)) 1
	for c in ctr1 ctr2 ctr3; do
		cp --reflink=always "$L"/base/rootfs.img "$L"/$c/rootfs.img
	done
	for i in $(seq 1 50); do
		mkdir -p "$L"/base/usr/lib$((i % 5))
		random_file "$L"/base/usr/lib$((i % 5))/f$i.so $(((i * 7919 % 61 + 4) << 10)) $((100 + i))
	done
	cp -r --reflink=always "$L"/base/usr "$L"/ctr1/usr
	cp -r --reflink=always "$L"/base/usr "$L"/ctr2/usr
	random_file "$L"/vm/disk.img $((64 << 20)) 2
	cp --reflink=always "$L"/vm/disk.img "$L"/vm/clone.img
	xfs_io -c "pwrite -q -S 0x5a 16m 1m" -c fsync "$L"/vm/clone.img
	sync -f "$L"
}

# drop the whole scene from the page cache (no global drop_caches)
cold() {
	sync -f "$1"
	$PY -c 'import sys; sys.path.insert(0, sys.argv[1]); import fsimg
for p in fsimg.regular_files(sys.argv[2]): fsimg.drop(p)' "$HERE" "$1"
}

read_some() {
	local L=$1/layers
	cat "$L"/base/rootfs.img "$L"/ctr1/rootfs.img >/dev/null
	dd if="$L"/ctr2/rootfs.img of=/dev/null bs=1M count=8 status=none
	find "$L"/base/usr "$L"/ctr1/usr -type f -exec cat {} + >/dev/null
	dd if="$L"/vm/disk.img of=/dev/null bs=1M count=32 status=none
	dd if="$L"/vm/clone.img of=/dev/null bs=1M count=32 status=none
}

# keep what is cached mapped, so the VM's proactive reclaim of idle page
# cache (if any) does not change the numbers between the two reports
hold() {
	$PY "$HERE"/fsimg.py hold "$1" >"$WORK"/hold.out &
	PIDS+=($!)
	for _ in $(seq 100); do
		[ -s "$WORK"/hold.out ] && break
		sleep 0.1
	done
}

oracle_totals() {
	$PY "$HERE"/oracle.py "$1" | $PY -c 'import json, sys
r = json.load(sys.stdin); t = r["totals"]
print("oracle: files %d  shared %.1f MiB  cached %.1f MiB  dup %.1f MiB  "
      "groups %d" % (t["files"], t["shared_bytes"] / 2**20,
      t["cached_bytes"] / 2**20, t["dup_bytes"] / 2**20, len(r["groups"])))'
}

run() {
	echo "\$ $*"
	"$@" || echo "(exit status $?)"
}

for FS in xfs btrfs; do
	make_fs "$FS"
	build_scene "$MNT"
	cold "$MNT"
	read_some "$MNT"
	hold "$MNT"
	echo
	echo "================ $FS: $MNT/layers ================"
	run "$BIN" report "$MNT"/layers
	echo
	run "$BIN" report --json -n 5 "$MNT"/layers
	echo
	oracle_totals "$MNT"/layers
	echo
	echo "--- what one page cache per whole-file clone set would save (daemon, advisory mode) ---"
	run "$BIN" daemon -n 1 "$MNT"/layers
	if [ "$FS" = xfs ]; then
		echo
		echo "--- --watch 3 while ctr3/rootfs.img is read ---"
		"$BIN" report --watch 3 -n 5 "$MNT"/layers 2>"$WORK"/watch.err &
		wpid=$!
		PIDS+=($wpid)
		for _ in $(seq 300); do
			grep -q 'dupcache: watching' "$WORK"/watch.err && break
			kill -0 $wpid 2>/dev/null || break
			sleep 0.1
		done
		cat "$MNT"/layers/ctr3/rootfs.img >/dev/null
		hold "$MNT"/layers/ctr3
		wait $wpid || echo "(exit status $?)"
		cat "$WORK"/watch.err
		oracle_totals "$MNT"/layers
	fi
done
