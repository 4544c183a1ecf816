#!/bin/bash
# vmtest host side: boot the kernel from kernel/build.sh under QEMU (TCG) with
# the host's / as a read-only 9p root, run tests/vm/cases/* inside through
# tests/vm/init.sh, and judge the result.
#
#   tests/vm/run.sh [CASE...]        (as root; `make vmtest` builds ./dupcache first)
#
# env: VMTEST_TIMEOUT  hard limit for the VM in seconds (default 1200)
#      VMTEST_OUT      where logs go (default /var/cache/dupcache/vmtest)
#      VMTEST_KERNEL   a bzImage to boot instead of building one
#      VMTEST_VERBOSE=1  also stream the serial console to stdout
#      VMTEST_BIN      the dupcache binary the cases run, relative to the repo
#                      (default dupcache; e.g. build/asan/dupcache after make asan)
#
# Output: one "PASS name" / "FAIL name" line per check, then
#   vmtest: N passed, N failed
# Host-side checks: boot (init reached), guest_complete (init ran to the end),
# kernel_log_clean (no BUG:/WARNING:/Oops/Call Trace/panic), timeout.
# Exit 0 only when nothing failed.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
OUT=${VMTEST_OUT:-/var/cache/dupcache/vmtest}
TIMEOUT=${VMTEST_TIMEOUT:-1200}
SERIAL=$OUT/serial.log
RESULTS=$OUT/results.log
t_start=$(date +%s.%N)

die() { echo "vmtest: $*" >&2; echo "FAIL vmtest_setup"; echo "vmtest: 0 passed, 1 failed"; exit 1; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", b-a}'; }

case $repo in
	/proc/*|/sys/*|/dev/*) die "the repo ($repo) must not be under /proc, /sys or /dev" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (qemu reads / through 9p as the caller)"
bin=${VMTEST_BIN:-dupcache}
[ -x "$repo/$bin" ] || die "$repo/$bin missing: run make first"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
mkdir -p "$OUT" || die "cannot create $OUT"
rm -f "$SERIAL" "$RESULTS" "$OUT/bpf-debug.log"

# --- kernel ------------------------------------------------------------------
t0=$(date +%s.%N)
if [ -n "${VMTEST_KERNEL:-}" ]; then
	kernel=$VMTEST_KERNEL
else
	kernel=$("$repo/kernel/build.sh" | tail -1) || die "kernel/build.sh failed"
fi
[ -f "$kernel" ] || die "no kernel at '$kernel'"
echo "vmtest: kernel $kernel (ready in $(elapsed "$t0" "$(date +%s.%N)")s)"

# --- boot --------------------------------------------------------------------
tests=$(IFS=,; echo "${*:-}")
cmdline="root=/dev/root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,cache=loose,msize=262144"
cmdline+=" ro console=ttyS0 printk.time=1 panic=-1 init=$repo/tests/vm/init.sh"
# 512 MiB of the guest's 3 GiB (2-2.5 GiB: section-aligned, below the top QEMU keeps; mkfs.xfs wants 300 MB) as emulated pmem (/dev/pmem0) for the fs-dax case.
cmdline+=" memmap=512M!2G"
cmdline+=" dupcache.repo=$repo dupcache.bin=$bin${tests:+ dupcache.tests=$tests}"

qemu=(qemu-system-x86_64 -accel tcg -cpu max -m 3G -smp 2 -nographic -no-reboot
	-monitor none
	-kernel "$kernel" -append "$cmdline"
	-fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap
	-device virtio-9p-pci,fsdev=root,mount_tag=/dev/root
	# The repo again, mounted at its own path after init covers /tmp and /run.
	-fsdev local,id=repo,path="$repo",security_model=none,readonly=on,multidevs=remap
	-device virtio-9p-pci,fsdev=repo,mount_tag=dupcache_repo
	-serial "file:$SERIAL"      # ttyS0: console
	-serial stdio)              # ttyS1: results, timestamped below
echo "vmtest: booting (TCG, timeout ${TIMEOUT}s), serial log: $SERIAL"
tail_pid=
if [ "${VMTEST_VERBOSE:-}" = 1 ]; then
	touch "$SERIAL"; tail -F -n +1 "$SERIAL" 2>/dev/null & tail_pid=$!
fi
t_boot=$(date +%s.%N)
timeout -k 10 "$TIMEOUT" "${qemu[@]}" </dev/null 2>"$OUT/qemu.stderr" |
	while IFS= read -r line; do          # no filter before this loop: it would buffer
		printf '%s %s\n' "$(date +%s.%N)" "${line%$'\r'}" >> "$RESULTS"
	done
rc=${PIPESTATUS[0]}
t_end=$(date +%s.%N)
[ -n "$tail_pid" ] && kill "$tail_pid" 2>/dev/null
touch "$RESULTS" "$SERIAL"

# --- judge -------------------------------------------------------------------
pass=0 fail=0
res() { echo "$1 $2"; if [ "$1" = PASS ]; then pass=$((pass+1)); else fail=$((fail+1)); fi; }

init_line=$(grep -m1 ' INIT ' "$RESULTS" || true)
if [ -n "$init_line" ]; then
	res PASS boot
else
	res FAIL boot
fi
# guest results, in order
while read -r _ts verdict name; do
	case $verdict in PASS|FAIL) res "$verdict" "$name" ;; esac
done < "$RESULTS"
if grep -q ' DONE ' "$RESULTS"; then res PASS guest_complete; else res FAIL guest_complete; fi
# Kernel messages carry a "[ seconds]" stamp (printk.time=1); only they are judged.
bad=$(grep -aE '\[ *[0-9]+\.[0-9]+\].*(BUG:|WARNING:|Oops|Call Trace|Kernel panic)' "$SERIAL" | head -20)
if [ -z "$bad" ]; then res PASS kernel_log_clean; else res FAIL kernel_log_clean; echo "$bad" | sed 's/^/  kernel: /'; fi
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
	res FAIL timeout
	echo "  qemu killed after ${TIMEOUT}s"
elif [ "$rc" != 0 ]; then
	echo "  qemu exited $rc: $(head -c 500 "$OUT/qemu.stderr")"
fi
# The libbpf/verifier log, when the case had to capture one.
sed -n '/----- BEGIN DUPCACHE_DEBUG/,/----- END DUPCACHE_DEBUG/p' "$SERIAL" > "$OUT/bpf-debug.log"
[ -s "$OUT/bpf-debug.log" ] && echo "  BPF engine log (DUPCACHE_DEBUG=1): $OUT/bpf-debug.log" || rm -f "$OUT/bpf-debug.log"

# timings
if [ -n "$init_line" ]; then
	read -r ts _ up <<<"$init_line"
	echo "vmtest: init reached ${up}s after kernel start, $(elapsed "$t_boot" "$ts")s after qemu start"
fi
echo "vmtest: VM ran $(elapsed "$t_boot" "$t_end")s, total $(elapsed "$t_start" "$t_end")s; logs in $OUT"
if [ "$fail" -gt 0 ]; then
	echo "--- last 40 lines of $SERIAL"
	tail -n 40 "$SERIAL" | tr -d '\r'
	echo "---"
fi
echo "vmtest: $pass passed, $fail failed"
[ "$fail" = 0 ]
