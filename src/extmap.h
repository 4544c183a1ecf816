/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Physical page index: from each file's mapped page runs (file page ->
 * physical page), find the physical pages referenced by two or more
 * (file, page) pairs, number them ("slots"), cut every file's runs down to
 * the parts that touch such pages ("segments"), and join files that share
 * pages into sharing groups.  Pure computation, no I/O.
 */
#ifndef DUPCACHE_EXTMAP_H
#define DUPCACHE_EXTMAP_H

#include <stddef.h>
#include <stdint.h>
#include "dupcache.h"

/* file pages [lpage, lpage + npages) map to physical [ppage, ppage + npages) */
struct page_run {
	uint64_t lpage;
	uint64_t ppage;
	uint64_t npages;
};

struct extmap_input {
	uint32_t dev;               /* physical address space (filesystem) */
	const struct page_run *runs;
	size_t nruns;
};

/* A maximal range of shared physical pages, and the slots it was given. */
struct shared_range {
	uint32_t dev;
	uint32_t group;
	uint64_t ppage;
	uint64_t npages;
	uint64_t slot;
};

struct extmap {
	size_t nfiles;
	uint32_t *file_group;      /* per file: group id, or DC_NO_GROUP */
	uint32_t *seg_first;       /* per file: first index into segs */
	uint32_t *seg_count;       /* per file */
	struct dc_segment *segs;   /* grouped by file, each file's sorted by lpage */
	size_t nsegs;
	struct shared_range *ranges; /* sorted by (dev, ppage) */
	size_t nranges;
	uint64_t nslots;
	uint32_t ngroups;
};

/* Returns 0, or -ENOMEM. */
int extmap_build(const struct extmap_input *files, size_t nfiles, struct extmap *out);
void extmap_free(struct extmap *m);

/* Group owning a slot (slots are numbered range by range). */
uint32_t extmap_slot_group(const struct extmap *m, uint64_t slot);

#endif
