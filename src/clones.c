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

/* Paths in strcmp order (ties between sets are broken by the donor's). */
static int cmp_path(const void *a, const void *b)
{
	return strcmp(sort_scan->files[*(const size_t *)a].path, sort_scan->files[*(const size_t *)b].path);
}

static int cmp_saving(const void *a, const void *b)
{
	const struct clone_set *x = a, *y = b;

	if (x->saving_bytes != y->saving_bytes)
		return x->saving_bytes > y->saving_bytes ? -1 : 1;
	return x->donor_rank < y->donor_rank ? -1 : x->donor_rank > y->donor_rank;
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

static int cmp_index(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

static const struct clone_layouts *sort_layouts;

static int cmp_first_member(const void *a, const void *b)
{
	size_t x = sort_layouts->files[sort_layouts->first[*(const size_t *)a]];
	size_t y = sort_layouts->files[sort_layouts->first[*(const size_t *)b]];

	return x < y ? -1 : x > y;
}

/*
 * Each set's members by scan index, and the sets by their first: every
 * report reads the members' records in a few ascending streams, which the
 * CPU prefetches, not in block order (a cache miss per member).
 */
static void in_scan_order(struct clone_layouts *l)
{
	size_t *ids = xcalloc(l->nsets ? l->nsets : 1, sizeof(size_t));
	size_t *files = xcalloc(l->first[l->nsets] ? l->first[l->nsets] : 1, sizeof(size_t));
	size_t *first = xcalloc(l->nsets + 1, sizeof(size_t)), at = 0;

	for (size_t k = 0; k < l->nsets; k++) {
		qsort(&l->files[l->first[k]], l->first[k + 1] - l->first[k], sizeof(size_t), cmp_index);
		ids[k] = k;
	}
	sort_layouts = l;
	qsort(ids, l->nsets, sizeof(*ids), cmp_first_member);
	for (size_t i = 0; i < l->nsets; i++) {
		size_t k = ids[i], n = l->first[k + 1] - l->first[k];

		first[i] = at;
		memcpy(&files[at], &l->files[l->first[k]], n * sizeof(size_t));
		at += n;
	}
	first[l->nsets] = at;
	free(l->files);
	free(l->first);
	free(ids);
	l->files = files;
	l->first = first;
}

void clone_layouts_find(const struct scan *s, uint64_t min_size, struct clone_layouts *out)
{
	size_t *cand = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(size_t)), n = 0, kept = 0;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < s->nfiles; i++)
		if (s->files[i].size >= min_size && plainly_mapped(&s->files[i]))
			cand[n++] = i;
	sort_scan = s;
	qsort(cand, n, sizeof(*cand), cmp_layout);
	out->first = xcalloc(n / 2 + 1, sizeof(size_t));
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && cmp_layout(&cand[i], &cand[j]) == 0; j++)
			;
		if (j - i < 2)
			continue;
		out->first[out->nsets++] = kept;
		memmove(&cand[kept], &cand[i], (j - i) * sizeof(*cand));
		kept += j - i;
	}
	out->first[out->nsets] = kept;
	out->files = cand;
	in_scan_order(out);
	/* the members' paths ranked once: a report breaks ties between sets with integers */
	size_t *by_path = xcalloc(kept ? kept : 1, sizeof(size_t));

	memcpy(by_path, out->files, kept * sizeof(size_t));
	qsort(by_path, kept, sizeof(*by_path), cmp_path);
	out->path_rank = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(uint32_t));
	for (size_t k = 0; k < kept; k++)
		out->path_rank[by_path[k]] = k;
	free(by_path);
}

void clone_layouts_free(struct clone_layouts *l)
{
	free(l->files);
	free(l->first);
	free(l->path_rank);
	free(l->order);
	free(l->key);
	memset(l, 0, sizeof(*l));
}

/* Orders set ids by their sets, most saving first (qsort_r: sorts ids, not 56-byte sets). */
static int cmp_saving_id(const void *a, const void *b, void *sets)
{
	const struct clone_set *v = sets;

	return cmp_saving(&v[*(const size_t *)a], &v[*(const size_t *)b]);
}

static bool same_key(const struct clone_key *k, const struct clone_set *set)
{
	return k->saving_bytes == set->saving_bytes && k->donor_rank == set->donor_rank;
}

/*
 * The sets in order, most saving first.  Only the sets whose key moved since
 * the last report are sorted, then merged with the others, which keep their
 * order: a report costs O(sets + moved log moved), not a sort of them all.
 */
static void order_sets(struct clone_layouts *l, struct clone_sets *out)
{
	size_t n = l->nsets, nkeep = 0, nmoved = 0, i = 0, j = 0, k = 0;
	size_t *keep = xcalloc(n ? n : 1, sizeof(size_t)), *moved = xcalloc(n ? n : 1, sizeof(size_t));
	struct clone_set *sorted;

	if (!l->order) {
		l->order = xcalloc(n ? n : 1, sizeof(size_t));
		l->key = xcalloc(n ? n : 1, sizeof(*l->key));
		for (size_t id = 0; id < n; id++)
			moved[nmoved++] = id;
	} else {
		for (size_t x = 0; x < n; x++) {
			size_t id = l->order[x];

			if (same_key(&l->key[id], &out->sets[id]))
				keep[nkeep++] = id;
			else
				moved[nmoved++] = id;
		}
	}
	qsort_r(moved, nmoved, sizeof(size_t), cmp_saving_id, out->sets);
	while (i < nkeep || j < nmoved)
		l->order[k++] = j == nmoved || (i < nkeep && cmp_saving(&out->sets[keep[i]],
								       &out->sets[moved[j]]) < 0)
					? keep[i++] : moved[j++];
	sorted = xcalloc(n ? n : 1, sizeof(*sorted));
	for (size_t x = 0; x < n; x++) {
		const struct clone_set *set = &out->sets[l->order[x]];

		l->key[l->order[x]] = (struct clone_key){ set->saving_bytes, set->donor_rank };
		sorted[x] = *set;
	}
	free(out->sets);
	out->sets = sorted;
	free(keep);
	free(moved);
}

void clone_sets_measure(const struct scan *s, struct clone_layouts *l,
			bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
			struct clone_sets *out)
{
	memset(out, 0, sizeof(*out));
	out->nsets = l->nsets;
	out->sets = xcalloc(l->nsets ? l->nsets : 1, sizeof(*out->sets));
	out->members = xcalloc(l->first[l->nsets] ? l->first[l->nsets] : 1, sizeof(size_t));
	memcpy(out->members, l->files, l->first[l->nsets] * sizeof(size_t));
	for (size_t k = 0; k < l->nsets; k++) {
		struct clone_set *set = &out->sets[k];
		size_t donor = 0, first;

		set->members = out->members + l->first[k];
		set->nmembers = l->first[k + 1] - l->first[k];
		for (size_t m = 1; m < set->nmembers; m++)
			if (better_donor(s, set->members[m], set->members[donor], keep_donor, ctx))
				donor = m;
		first = set->members[donor];
		set->members[donor] = set->members[0];
		set->members[0] = first;
		set->size = s->files[first].size;
		set->donor_rank = l->path_rank[first];
		measure(s, set);
		out->files += set->nmembers;
		out->saving_bytes += set->saving_bytes;
	}
	order_sets(l, out);
}

void clone_sets_find(const struct scan *s, uint64_t min_size,
		     bool (*keep_donor)(const struct scanned_file *f, void *ctx), void *ctx,
		     struct clone_sets *out)
{
	struct clone_layouts l;

	clone_layouts_find(s, min_size, &l);
	clone_sets_measure(s, &l, keep_donor, ctx, out);
	clone_layouts_free(&l);
}

void clone_sets_free(struct clone_sets *cs)
{
	free(cs->sets);
	free(cs->members);
	memset(cs, 0, sizeof(*cs));
}
