/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A live view of the scanned trees: scan + extent map + BPF engine, kept
 * current when the kernel says a tracked file's sharing may have changed.
 * Shared by `report --watch` and `top`.
 */
#ifndef DUPCACHE_TRACKER_H
#define DUPCACHE_TRACKER_H

#include <stdbool.h>
#include <stdint.h>
#include "engine.h"
#include "extmap.h"
#include "scan.h"

struct tracker {
	struct scan scan;
	struct extmap map;
	struct engine *engine;
	uint64_t generation;   /* bumped by every rebuild: file ids changed */
	/* private */
	char **paths;
	int npaths;
	struct scan_opts opts;
	uint64_t seen_changes;
	uint64_t seen_tree_changes;
	bool reread_all;          /* the next rebuild re-reads every file's extents */
	long long changed_at;     /* last change not yet acted on; 0: none */
	long long pending_since;  /* first change not yet acted on */
	struct btrfs_drops drops; /* btrfs subvolumes deleted, not yet dropped, at the last look */
	long long drops_seen_at;
};

/* Scan, build the map, start the engine.  EXIT_OK or an exit code (said). */
int tracker_start(struct tracker *t, char **paths, int npaths, const struct scan_opts *opts);
/*
 * Rebuild after a change once things have been quiet for a moment, or at
 * once when `now` is set (end of a window).  EXIT_OK or an exit code.
 */
int tracker_poll(struct tracker *t, bool now);
void tracker_stop(struct tracker *t);

#endif
