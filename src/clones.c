// SPDX-License-Identifier: GPL-2.0
#include <stdlib.h>
#include <string.h>
#include "clones.h"
#include "util.h"

static const struct scan *sort_scan;

/*
 * Every page of it maps to a physical page or lies in a hole, and some map:
 * two such files with the same runs read the same bytes (zeros in holes).
 * An unwritten or delayed extent looks like a hole in the runs, but is not.
 */
static bool plainly_mapped(const struct scanned_file *f)
{
	return f->nruns && !f->unmapped_extent;
}

/* Same filesystem, size and block map sort together. */
static int cmp_layout(const void *a, const void *b)
{
	const struct scanned_file *x = &sort_scan->files[*(const size_t *)a];
	const struct scanned_file *y = &sort_scan->files[*(const size_t *)b];

	if (x->sb_dev != y->sb_dev)
		return x->sb_dev < y->sb_dev ? -1 : 1;
	if (x->size != y->size)
		return x->size < y->size ? -1 : 1;
	if (x->nruns != y->nruns)
		return x->nruns < y->nruns ? -1 : 1;
	return memcmp(x->runs, y->runs, x->nruns * sizeof(*x->runs));
}

static int cmp_saving(const void *a, const void *b)
{
	const struct clone_set *x = a, *y = b;

	if (x->saving_bytes != y->saving_bytes)
		return x->saving_bytes > y->saving_bytes ? -1 : 1;
	return strcmp(sort_scan->files[x->members[0]].path, sort_scan->files[y->members[0]].path);
}

/* Cached bytes, and what one page cache for all members would save. */
static void measure(const struct scan *s, struct clone_set *set)
{
	const struct scanned_file *first = &s->files[set->members[0]];
	uint64_t P = s->page_size;

	for (size_t m = 0; m < set->nmembers; m++)
		set->cached_bytes += s->files[set->members[m]].resident_pages * P;
	for (uint64_t page = 0; page < first->npages; page++) {
		uint64_t copies = 0;
		bool any = false;

		/* a chunk no member has a page of (a sparse image's holes) in one step */
		for (size_t m = 0; m < set->nmembers && !any; m++)
			any = resident_chunk(&s->files[set->members[m]], page);
		if (!any) {
			page += RESIDENT_CHUNK_PAGES - 1 - page % RESIDENT_CHUNK_PAGES;
			continue;
		}
		for (size_t m = 0; m < set->nmembers; m++)
			copies += file_page_resident(&s->files[set->members[m]], page);
		if (copies > 1)
			set->saving_bytes += (copies - 1) * P;
	}
}

/* Is file a a better donor than file b? */
static bool better_donor(const struct scan *s, size_t a, size_t b,
			 bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx)
{
	const struct scanned_file *x = &s->files[a], *y = &s->files[b];
	bool kx = keep_donor && keep_donor(x, ctx), ky = keep_donor && keep_donor(y, ctx);

	if (kx != ky)
		return kx;
	/* Most pages cached already: the fewest reads. */
	if (x->resident_pages != y->resident_pages)
		return x->resident_pages > y->resident_pages;
	return x->ino < y->ino;
}

void clone_sets_find(const struct scan *s, uint64_t min_size,
		     bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
		     struct clone_sets *out)
{
	size_t *cand = xcalloc(s->nfiles, sizeof(size_t)), n = 0;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < s->nfiles; i++)
		if (s->files[i].size >= min_size && plainly_mapped(&s->files[i]))
			cand[n++] = i;
	sort_scan = s;
	qsort(cand, n, sizeof(*cand), cmp_layout);

	for (size_t i = 0, j; i < n; i = j) {
		struct clone_set set = { 0 };
		size_t donor = 0;

		for (j = i + 1; j < n && cmp_layout(&cand[i], &cand[j]) == 0; j++)
			;
		if (j - i < 2)
			continue;
		set.nmembers = j - i;
		set.members = xcalloc(set.nmembers, sizeof(size_t));
		memcpy(set.members, &cand[i], set.nmembers * sizeof(size_t));
		for (size_t m = 1; m < set.nmembers; m++)
			if (better_donor(s, set.members[m], set.members[donor], keep_donor, ctx))
				donor = m;
		set.members[donor] = set.members[0];
		set.members[0] = cand[i + donor];
		set.size = s->files[set.members[0]].size;
		measure(s, &set);
		out->sets = xrealloc(out->sets, out->nsets + 1, sizeof(*out->sets));
		out->sets[out->nsets++] = set;
		out->files += set.nmembers;
		out->saving_bytes += set.saving_bytes;
	}
	if (out->nsets)
		qsort(out->sets, out->nsets, sizeof(*out->sets), cmp_saving);
	free(cand);
}

void clone_sets_free(struct clone_sets *cs)
{
	for (size_t i = 0; i < cs->nsets; i++)
		free(cs->sets[i].members);
	free(cs->sets);
	memset(cs, 0, sizeof(*cs));
}
