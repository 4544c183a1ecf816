#!/bin/bash
# Runs inside the vmtest VM (from init.sh): every tests/vm/cases/NAME.{sh,py},
# or only the NAMEs given (bench/vm/NAME.py too: make vmbench). A case's exit code gives "PASS NAME" / "FAIL NAME";
# a case may report extra checks itself by appending "PASS x" / "FAIL x" lines
# to $VMTEST_RESULTS. Everything else a case prints goes to the console.
repo=$1; shift
: "${VMTEST_RESULTS:?}"
export VMTEST_REPO=$repo
cd "$repo" || exit 1
if [ $# -eq 0 ]; then
	set -- $(ls tests/vm/cases/ | sed -n 's/\.\(sh\|py\)$//p' | sort -u)
fi
for name in "$@"; do
	f=$(ls tests/vm/cases/"$name".sh tests/vm/cases/"$name".py bench/vm/"$name".py 2>/dev/null | head -1)
	echo "===== vmtest case $name ($f) at $(cut -d' ' -f1 /proc/uptime)s"
	if [ -z "$f" ]; then
		rc=127; echo "no such case"
	else
		case $f in
		*.py) /usr/bin/python3 "$f"; rc=$? ;;
		*)    bash "$f"; rc=$? ;;
		esac
	fi
	if [ $rc -eq 0 ]; then r="PASS $name"; else r="FAIL $name"; fi
	echo "===== $r (exit $rc) at $(cut -d' ' -f1 /proc/uptime)s"
	echo "$r" >> "$VMTEST_RESULTS"
done
