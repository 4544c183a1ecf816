#!/bin/bash
# vmtest case: the engine's change detection on 6.1 through the VFS functions
# (fexit), which the host kernel may refuse: the integration tests of changes
# made without a clone syscall (overlayfs copy-up reflinks inside the kernel,
# fallocate), by a 32-bit program, and of btrfs snapshots (made, deleted and
# dropped), run here for real. Passes only if every
# one passed: none may skip, since 6.1 has every hook they need.
: "${VMTEST_BIN:?}"
log=/tmp/changes_on_6_1.log
export DUPCACHE_TEST_READY_SECONDS=300 DUPCACHE_TEST_SLOW=4
/usr/bin/python3 tests/test_integration.py --bin "$VMTEST_BIN" \
	-k watch_overlayfs_copy_up -k watch_fallocate -k watch_ia32_clone \
	-k watch_btrfs_snapshot 2>&1 | tee "$log"
line=$(grep -E '^integration: [0-9]+ passed' "$log" | tail -1)
echo "changes_on_6_1: $line"
case $line in
"integration: 8 passed, 0 failed, 0 skipped") exit 0 ;;
*) exit 1 ;;
esac
