#!/bin/bash
# vmtest case: page cache sharing (kernel/patches, CONFIG_PCSHARE) with the test
# policy tests/vm/pcshare_policy.bpf.c registered through bpftool.
# On loop XFS: a 64 MiB file a and clones b c d share a's page cache (growth of
# Cached: at most 1.05 x one copy, every checksum its own file's, 3 shares
# granted); clone e with one block rewritten is refused by the kernel although
# the policy asks; writes to a shared clone or its donor get ETXTBSY while the
# shared open exists and succeed after it closes; mmap reads are right.
set -u
R=${VMTEST_RESULTS:-/dev/stdout}
REPO=${VMTEST_REPO:-/work/main}
POLICY=$REPO/build/vmtest/pcshare_policy.bpf.o
W=/tmp/pcshare
fails=0

ok() { echo "PASS pcshare.$1" >>"$R"; echo "[pcshare] PASS $1"; }
ko() { echo "FAIL pcshare.$1" >>"$R"; echo "[pcshare] FAIL $1: $2"; fails=$((fails + 1)); }
vmstat() { awk -v k="$1" '$1 == k { print $2 }' /proc/vmstat; }
cached_kib() { awk '/^Cached:/ { print $2 }' /proc/meminfo; }
le64() { python3 -c 'import struct, sys; print(" ".join("%02x" % b for b in struct.pack("<Q", int(sys.argv[1]))))' "$1"; }

cleanup() {
	exec 3<&- 2>/dev/null
	bpftool struct_ops unregister name vmtest_pcs >/dev/null 2>&1
	umount "$W/m" 2>/dev/null
	losetup -D
	rm -rf "$W"
}
trap cleanup EXIT

if bpftool btf dump file /sys/kernel/btf/vmlinux | grep -q "STRUCT 'pcshare_ops'"; then
	ok btf_type
else
	ko btf_type "the kernel has no struct pcshare_ops (CONFIG_PCSHARE, kernel/patches)"
	exit 1
fi
[ -n "$(vmstat pcshare_granted)" ] && ok vmstat_counters || ko vmstat_counters "no pcshare_* in /proc/vmstat"
[ -r "$POLICY" ] || { ko setup "no $POLICY (make vmtest builds it)"; exit 1; }

mkdir -p "$W/m"
truncate -s 1G "$W/img"
mkfs.xfs -q -m reflink=1 "$W/img" && mount -o loop "$W/img" "$W/m" || { ko setup "mkfs/mount"; exit 1; }
head -c 64M /dev/urandom >"$W/m/a"
for c in b c d e; do cp --reflink=always "$W/m/a" "$W/m/$c"; done
dd if=/dev/urandom of="$W/m/e" bs=4k count=1 seek=10 conv=notrunc status=none
sync
sum=$(md5sum <"$W/m/a")

bpftool struct_ops register "$POLICY" >/dev/null && ok register || { ko register "bpftool struct_ops register"; exit 1; }
donor=$(stat -c %i "$W/m/a")
for c in b c d e; do
	bpftool map update name donor_of key hex $(le64 "$(stat -c %i "$W/m/$c")") value hex $(le64 "$donor") ||
		ko map_update "$c"
done

echo 3 >/proc/sys/vm/drop_caches
g0=$(vmstat pcshare_granted) k0=$(vmstat pcshare_kernel_refused) c0=$(cached_kib)
for f in a b c d; do
	[ "$(md5sum <"$W/m/$f")" = "$sum" ] || ko "checksum_$f" "not a's bytes"
done
c1=$(cached_kib)
growth=$((c1 - c0))
echo "[pcshare] Cached: grew $growth KiB reading a b c d (one copy: 65536 KiB)"
[ "$growth" -le $((65536 * 105 / 100)) ] && ok one_copy || ko one_copy "Cached: grew $growth KiB reading 4 x 64 MiB"
granted=$(($(vmstat pcshare_granted) - g0))
[ "$granted" -eq 3 ] && ok granted || ko granted "pcshare_granted +$granted, want +3"

[ "$(md5sum <"$W/m/e")" != "$sum" ] && ok e_own_bytes || ko e_own_bytes "e read a's bytes"
refused=$(($(vmstat pcshare_kernel_refused) - k0))
[ "$refused" -ge 1 ] && ok kernel_refused || ko kernel_refused "pcshare_kernel_refused +$refused"

exec 3<"$W/m/b"
if (echo x >>"$W/m/b") 2>/dev/null; then ko etxtbsy_clone "a write to a shared clone went through"; else ok etxtbsy_clone; fi
if (echo x >>"$W/m/a") 2>/dev/null; then ko etxtbsy_donor "a write to the donor went through"; else ok etxtbsy_donor; fi
python3 - "$W/m/b" "$sum" <<'PY' && ok mmap_read || ko mmap_read "mmap of the shared clone"
import hashlib, mmap, sys
with open(sys.argv[1], 'rb') as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
    sys.exit(hashlib.md5(m).hexdigest() + '  -' != sys.argv[2])
PY
exec 3<&-
(echo x >>"$W/m/b") && (echo x >>"$W/m/a") && ok write_after_close || ko write_after_close "still refused"

bpftool struct_ops unregister name vmtest_pcs >/dev/null && ok unregister || ko unregister "bpftool"
[ "$fails" -eq 0 ]
