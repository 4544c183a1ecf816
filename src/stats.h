/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The figures dupcache prints, built from one set of counts whatever their
 * source: a snapshot (mincore) or the BPF engine.
 */
#ifndef DUPCACHE_STATS_H
#define DUPCACHE_STATS_H

#include <stdint.h>
#include "extmap.h"
#include "scan.h"

struct group_stats {
	uint32_t id;
	uint64_t files;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
	size_t *members;     /* indexes into scan->files */
};

struct dup_stats {
	unsigned page_size;
	uint64_t files;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
	struct group_stats *groups; /* sorted: most dup_bytes first */
	size_t ngroups;
	uint64_t *file_cached_bytes; /* per scan->files entry */
};

/* The counts, in pages, from which every figure is derived. */
struct dup_counts {
	const uint64_t *file_resident; /* per file */
	const uint64_t *group_dup;     /* per extmap group */
};

void stats_build(const struct scan *s, const struct extmap *m, const struct dup_counts *c,
		 struct dup_stats *out);
/* Counts from the scan's own residency bitmaps. */
void stats_from_snapshot(const struct scan *s, const struct extmap *m, struct dup_stats *out);
void stats_free(struct dup_stats *st);

/*
 * The figures of one filesystem (superblock): a sharing group never spans
 * two, so summing these gives the totals.
 */
struct fs_figures {
	uint32_t sb_dev;
	char *name;           /* its mount point (mount_point_of()) */
	uint64_t files;
	uint64_t groups;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
};

/* Per filesystem of the scan, sorted by name; returns how many. */
size_t stats_by_fs(const struct scan *s, const struct dup_stats *st, struct fs_figures **out);
void fs_figures_free(struct fs_figures *f, size_t n);

#endif
