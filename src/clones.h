/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Whole-file clone sets: files of one filesystem whose every page maps to
 * the same physical page (the files a page cache sharing policy may serve
 * from one donor), and what serving them from one page cache would save.
 */
#ifndef DUPCACHE_CLONES_H
#define DUPCACHE_CLONES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "scan.h"

struct clone_set {
	size_t *members;      /* indexes into scan->files; members[0] is the donor */
	size_t nmembers;
	uint64_t size;        /* bytes, the same for all members */
	uint64_t cached_bytes;
	uint64_t saving_bytes; /* cached bytes less one copy of each cached block */
	uint32_t donor_rank;  /* its donor's path rank: the order among sets saving the same */
};

struct clone_sets {
	struct clone_set *sets; /* most saving first */
	size_t nsets;
	uint64_t files;         /* members of all sets */
	uint64_t saving_bytes;
	size_t *members;        /* every set's members: the sets' arrays are in here */
};

/*
 * Which files form clone sets: sets of two or more files at least min_size
 * bytes long whose pages all map to the same physical pages or lie in holes
 * at the same offsets (no unwritten or delayed extents; something mapped).
 * Only the scan decides it, so a caller with one scan over many reports
 * (the live daemon) finds it once; residency and donors change, and
 * clone_sets_measure() reads them each time.
 */
struct clone_layouts {
	size_t *files;        /* the sets' files, a set's together */
	size_t *first;        /* set k's files are files[first[k]] .. files[first[k + 1] - 1] */
	size_t nsets;
	uint32_t *path_rank;  /* per scan file: its path's place in strcmp order (members only) */
	/* the last measure's order of set ids, and each set's sort key then */
	size_t *order;
	struct clone_key { uint64_t saving_bytes; uint32_t donor_rank; } *key;
};

void clone_layouts_find(const struct scan *s, uint64_t min_size, struct clone_layouts *out);
void clone_layouts_free(struct clone_layouts *l);

/*
 * The sets with the residency the scan holds now, most saving first (ties:
 * by donor path).  The donor is a member keep_donor() says is one already
 * (a donor that moved would leave open shares on the old one), else the
 * member with the most pages cached, else the lowest inode.  keep_donor may
 * be NULL.
 */
void clone_sets_measure(const struct scan *s, struct clone_layouts *l,
			bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
			struct clone_sets *out);
/* Both at once, for a scan used once. */
void clone_sets_find(const struct scan *s, uint64_t min_size,
		     bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
		     struct clone_sets *out);
void clone_sets_free(struct clone_sets *cs);

#endif
