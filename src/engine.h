/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The BPF detection engine's loader: probes the kernel, loads and attaches
 * the programs, fills their maps from a scan + extent map, seeds the counts
 * from residency read after attaching, and reads the counters back.
 */
#ifndef DUPCACHE_ENGINE_H
#define DUPCACHE_ENGINE_H

#include <stdint.h>
#include "extmap.h"
#include "scan.h"
#include "stats.h"

struct engine;

struct engine_window {
	uint64_t pages_added;      /* page-cache pages of tracked files added */
	uint64_t pages_removed;
	uint64_t peak_dup_pages;
	uint64_t refreshes;        /* extent map rebuilds after a change */
	uint64_t untracked_files;  /* files left out because a map was full */
	uint64_t oversize_folios;  /* folios too large to walk (change forced) */
	uint64_t missing_entry;    /* internal consistency: must be 0 */
};

/*
 * Checks BTF, the tracepoints and privileges.  Returns EXIT_OK or the exit
 * code to use, after printing one line that says what is missing.
 */
int engine_probe(void);

/* Returns EXIT_OK, or an exit code after a one-line message. */
int engine_start(struct engine **out, struct scan *s, const struct extmap *m);
/* Replace the tracked state with a new scan + map (after a change). */
int engine_sync(struct engine *e, struct scan *s, const struct extmap *m);
/* Changes noticed by the kernel side since start (monotonic). */
uint64_t engine_changes(const struct engine *e);
/* Counts for stats_build(); arrays owned by the engine until the next sync. */
void engine_counts(struct engine *e, struct dup_counts *out);
void engine_window(const struct engine *e, struct engine_window *out);
void engine_stop(struct engine *e);

#endif
