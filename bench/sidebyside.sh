#!/bin/bash
# bench/sidebyside.sh BIN_A BIN_B [ROUNDS] [rand|seq]
#
# Two builds of dupcache compared on the same events: both watch one loop
# XFS (in /dev/shm) holding a file f0 and its reflink f1, so every
# page-cache event runs both engines' folio_added, and bpf_stats gives each
# one's run time on exactly those events.  On this workplace's hosts the
# per-event figure of one run drifts by up to 50% from minute to minute
# (bench/run.sh's 2b); the ratio B/A here moves by a few percent.  The
# engine attached second runs on lines the first warmed: rounds alternate
# which starts first, and the mean of B/A over an even number of rounds
# cancels that.
#   rand: f0 resident, 16,384 random 4 KiB reads of f1 (bench/run.sh's 2b:
#         every page a duplicate);
#   seq:  both files cold, read through (large folios; ns per page).
# SBS_MIB sets the file's size (default 256): how far apart an event's random
# lines are (its page's state, its physical page's copy count).
set -u
A=${1:?usage: sidebyside.sh BIN_A BIN_B [ROUNDS] [rand|seq]} B=${2:?BIN_B}
ROUNDS=${3:-6} MODE=${4:-rand} MIB=${SBS_MIB:-256}
READS=$((MIB * 256 < 16384 ? MIB * 256 : 16384)) # random reads of distinct pages
HERE=$(cd "$(dirname "$0")" && pwd)
H="/usr/bin/python3 $HERE/helper.py"
W=$(mktemp -d /dev/shm/dupcache-sbs.XXXXXX) M= LOOP= PIDS=()
STATS_PREV=$(sysctl -n kernel.bpf_stats_enabled) || exit 1

cleanup() {
	((${#PIDS[@]})) && kill "${PIDS[@]}" 2>/dev/null && wait "${PIDS[@]}" 2>/dev/null
	[ -n "$M" ] && umount "$M" 2>/dev/null
	[ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
	rm -rf "$W"
	sysctl -qw kernel.bpf_stats_enabled="$STATS_PREV"
}
trap cleanup EXIT
die() { echo "sidebyside.sh: $*" >&2; exit 1; }

M=$W/m
mkdir -p "$M" && truncate -s 1G "$W/img" && mkfs.xfs -q -f -m reflink=1 "$W/img" || die "mkfs.xfs failed"
LOOP=$(losetup -f --show "$W/img") && mount "$LOOP" "$M" || die "cannot mount the loop XFS"
head -c "${MIB}M" /dev/urandom >"$M/f0" && cp --reflink=always "$M/f0" "$M/f1" && sync || die "no files"
sysctl -qw kernel.bpf_stats_enabled=1 || die "cannot set kernel.bpf_stats_enabled"

start() { # start BIN NAME: its pid in PID_NAME once it watches
	"$1" report --json --watch 600 "$M" >/dev/null 2>"$W/$2.err" &
	PIDS+=($!)
	printf -v "PID_$2" %s $!
	for ((i = 0; i < 600; i++)); do
		grep -q '^dupcache: watching' "$W/$2.err" && return 0
		sleep 0.05
	done
	die "engine $2 did not start: $(tail -1 "$W/$2.err")"
}

sum=0
for ((r = 0; r < ROUNDS; r++)); do
	PIDS=()
	if ((r % 2)); then start "$B" B; start "$A" A; order="B first"; else start "$A" A; start "$B" B; order="A first"; fi
	if [ "$MODE" = seq ]; then
		$H drop "$M/f0" "$M/f1"
	else
		$H warm "$M/f0"
		$H drop "$M/f1"
	fi
	a0=($($H progstat "$PID_A" folio_added)) b0=($($H progstat "$PID_B" folio_added))
	if [ "$MODE" = seq ]; then $H warm "$M/f0" "$M/f1"; else $H randread "$M/f1" $READS $((300 + r)) >/dev/null; fi
	a1=($($H progstat "$PID_A" folio_added)) b1=($($H progstat "$PID_B" folio_added))
	# progstat: prog_id run_time_ns run_cnt added_pages removed_pages
	line=$(awk -v o="$order" -v ta=$((a1[1] - a0[1])) -v ca=$((a1[2] - a0[2])) -v pa=$((a1[3] - a0[3])) \
		-v tb=$((b1[1] - b0[1])) -v cb=$((b1[2] - b0[2])) -v pb=$((b1[3] - b0[3])) 'BEGIN {
		# an engine older than the per-CPU counters shows no pages here: the same events
		if (pa <= 0) pa = pb; if (pb <= 0) pb = pa
		if (!ca || !cb || pa <= 0) { print "nan"; exit }
		printf "%.4f round (%s): A %.1f ns/event, %.2f ns/page; B %.1f ns/event, %.2f ns/page (%d events, %d pages); B/A %.3f\n",
			(tb / cb) / (ta / ca), o, ta / ca, ta / pa, tb / cb, tb / pb, ca, pa, (tb / cb) / (ta / ca) }')
	[ "$line" = nan ] && die "round $r: no events counted (A ${a1[*]}, B ${b1[*]})"
	echo "${line#* }"
	sum=$(awk -v s="$sum" -v x="${line%% *}" 'BEGIN { print s + x }')
	kill "${PIDS[@]}" && wait "${PIDS[@]}" 2>/dev/null
	PIDS=()
done
awk -v s="$sum" -v n="$ROUNDS" -v m="$MODE" 'BEGIN { printf "%s: B/A %.3f (mean of %d rounds)\n", m, s / n, n }'
