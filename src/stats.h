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
	uint32_t files;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
	uint32_t *members;   /* indexes into scan->files (in dup_stats.members) */
};

/* One filesystem (superblock) of the scanned files; groups never span two, so these sum to the totals. */
struct fs_stats {
	uint32_t sb_dev;     /* kernel encoding, as scanned_file.sb_dev */
	uint64_t files;
	uint64_t groups;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
};

struct dup_stats {
	unsigned page_size;
	uint64_t files;
	uint64_t shared_bytes;
	uint64_t cached_bytes;
	uint64_t dup_bytes;
	struct group_stats *groups; /* sorted: most dup_bytes first (unless groups_unordered) */
	uint32_t *members;          /* all groups' members: the groups' arrays are in here */
	size_t ngroups;
	uint64_t *file_cached_bytes; /* per scan->files entry */
	uint64_t *file_dup_share;    /* per scan->files entry: its fair share, bytes (0 until filled
				      * in: stats_from_snapshot(), engine_dup_shares()) */
	struct fs_stats *fs;         /* by sb_dev, ascending */
	size_t nfs;
};

/* The counts, in pages, from which every figure is derived. */
struct dup_counts {
	const uint64_t *file_resident; /* per file; NULL: the scan's resident_pages */
	const uint64_t *group_dup;     /* per extmap group */
	bool groups_unordered;         /* the caller lists no groups: they stay in id order, unsorted */
};

/*
 * A file's fair share of the duplicate bytes: each resident copy of a
 * physical page held c times carries (c - 1) / c of a page, rounded down
 * per page, so the shares of all files add up to dup_bytes (less rounding).
 * The one definition, for the engine's counts and the snapshot's.
 */
static inline uint64_t dup_share(uint64_t page_size, uint32_t copies)
{
	return copies < 2 ? 0 : page_size * (copies - 1) / copies;
}

void stats_build(const struct scan *s, const struct extmap *m, const struct dup_counts *c,
		 struct dup_stats *out);
/* Counts from the scan's own residency bitmaps. */
void stats_from_snapshot(const struct scan *s, const struct extmap *m, struct dup_stats *out);
void stats_free(struct dup_stats *st);


#endif
