#!/usr/bin/env bash
# Runs the unit tests (cmocka) and the integration tests (real XFS/btrfs on
# loop devices, the real BPF engine) and ends with one summary line.
# usage: tests/run_all.sh BINARY UNIT_TEST...
set -u
bin=${1:?usage: tests/run_all.sh BINARY UNIT_TEST...}
shift
passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

if [ "$(id -u)" != 0 ]; then
	echo "tests/run_all.sh: the integration tests mount loop devices and load BPF: run as root" >&2
	exit 1
fi

for t in "$@"; do
	"$t" 2>&1 | tee "$log"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test(s)\./\1/p' "$log" | tail -1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test(s), listed below:/\1/p' "$log" | tail -1)
	n=$(sed -n 's/^\[==========\] \([0-9]*\) test(s) run\./\1/p' "$log" | tail -1)
	p=${p:-0} f=${f:-0}
	# A crash before cmocka's summary still counts as a failure.
	if [ -z "$n" ] || [ $((p + f)) -lt "${n:-0}" ]; then f=$((f + 1)); fi
	passed=$((passed + p)) failed=$((failed + f))
done

# Python suites end with "NAME: N passed, N failed, N skipped".
for suite in integration:tests/test_integration.py top:tests/test_top.py gate:tests/test_gate.py daemon:tests/test_daemon.py; do
	name=${suite%%:*}
	/usr/bin/python3 "${suite#*:}" --bin "$bin" 2>&1 | tee "$log"
	line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
	if [ -z "$line" ]; then
		echo "$name tests did not finish"
		failed=$((failed + 1))
		continue
	fi
	read -r p f s <<<"$(echo "$line" | sed -E "s/^$name: ([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?.*/\\1 \\2 \\4/")"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + ${s:-0}))
done

echo "total: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
