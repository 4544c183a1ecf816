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
};

struct clone_sets {
	struct clone_set *sets; /* most saving first */
	size_t nsets;
	uint64_t files;         /* members of all sets */
	uint64_t saving_bytes;
};

/*
 * Sets of two or more files at least min_size bytes long whose pages all
 * map to the same physical pages or lie in holes at the same offsets (no
 * unwritten or delayed extents; something mapped).  The donor is a member keep_donor() says is one already (a donor
 * that moved would leave open shares on the old one), else the member with
 * the most pages cached, else the lowest inode.  keep_donor may be NULL.
 */
void clone_sets_find(const struct scan *s, uint64_t min_size,
		     bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
		     struct clone_sets *out);
void clone_sets_free(struct clone_sets *cs);

#endif
