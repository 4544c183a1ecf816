// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "extmap.h"

/* A file's run, as the sweep sees it: where it sits among physical pages. */
struct ref {
	uint32_t dev;
	uint32_t file;
	uint64_t ppage;
	uint64_t npages;
};

static int cmp_ref(const void *a, const void *b)
{
	const struct ref *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	return x->ppage < y->ppage ? -1 : x->ppage > y->ppage;
}

static int cmp_seg(const void *a, const void *b)
{
	const struct dc_segment *x = a, *y = b;

	return x->lpage < y->lpage ? -1 : x->lpage > y->lpage;
}

/* A min-heap of the end positions of the references active in the sweep. */
struct ends {
	uint64_t *v;
	size_t n, cap;
};

static int ends_push(struct ends *h, uint64_t end)
{
	size_t i;

	if (h->n == h->cap) {
		size_t nc = h->cap ? 2 * h->cap : 64;
		uint64_t *p = realloc(h->v, nc * sizeof(*p));

		if (!p)
			return -ENOMEM;
		h->v = p;
		h->cap = nc;
	}
	for (i = h->n++; i && h->v[(i - 1) / 2] > end; i = (i - 1) / 2)
		h->v[i] = h->v[(i - 1) / 2];
	h->v[i] = end;
	return 0;
}

static void ends_pop(struct ends *h)
{
	uint64_t last = h->v[--h->n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->v[c + 1] < h->v[c])
			c++;
		if (h->v[c] >= last)
			break;
		h->v[i] = h->v[c];
		i = c;
	}
	if (h->n)
		h->v[i] = last;
}

/* p resized to n elements when realloc can; else p as it was */
static void *shrink_to(void *p, size_t n, size_t size)
{
	void *q = n ? realloc(p, n * size) : NULL;

	return q ? q : p;
}

static uint32_t uf_find(uint32_t *parent, uint32_t x)
{
	while (parent[x] != x) {
		parent[x] = parent[parent[x]];
		x = parent[x];
	}
	return x;
}

static void uf_union(uint32_t *parent, uint32_t a, uint32_t b)
{
	a = uf_find(parent, a);
	b = uf_find(parent, b);
	if (a != b)
		parent[a < b ? b : a] = a < b ? a : b;
}

static int add_range(struct extmap *m, size_t *cap, struct shared_range r)
{
	if (m->nranges == *cap) {
		size_t nc = *cap ? 2 * *cap : 16;
		struct shared_range *p = realloc(m->ranges, nc * sizeof(*p));

		if (!p)
			return -ENOMEM;
		m->ranges = p;
		*cap = nc;
	}
	m->ranges[m->nranges++] = r;
	return 0;
}

/*
 * One sweep over the references in physical order, with the ends of the
 * active ones in a min-heap (so there are no edge records to sort, only
 * the references): the maximal ranges of physical pages covered by two or
 * more references get consecutive slots, and overlapping references join
 * their files (union-find).  At one position ends come before starts:
 * touching is not sharing.  All references active at a position overlap
 * there, so a starting reference need only join one of them.  A range is
 * cut where coverage drops to zero between the ends and the starts at one
 * position: the files on either side may share nothing.  range_file[k]
 * receives a file of range k, to name its group later.
 */
static int sweep(const struct ref *refs, size_t nrefs, uint32_t *parent, struct extmap *m,
		 uint32_t **range_file)
{
	struct ends active = { 0 };
	uint32_t *rfile = NULL, active_file = 0, dev = 0;
	size_t cap = 0, rcap = 0, i = 0;
	uint64_t slot = 0, start = 0;
	bool open = false;

	while (i < nrefs || active.n) {
		uint64_t pos;
		size_t starts = 0;

		if (!active.n)
			dev = refs[i].dev; /* nothing active: a new position, maybe a new filesystem */
		pos = active.n ? active.v[0] : refs[i].ppage;
		if (i < nrefs && refs[i].dev == dev && refs[i].ppage < pos)
			pos = refs[i].ppage;
		while (active.n && active.v[0] == pos)
			ends_pop(&active);
		while (i + starts < nrefs && refs[i + starts].dev == dev && refs[i + starts].ppage == pos)
			starts++;
		if (open && active.n < 2 && (!active.n || active.n + starts < 2)) {
			if (add_range(m, &cap, (struct shared_range){ .dev = dev,
					.group = DC_NO_GROUP, .ppage = start,
					.npages = pos - start, .slot = slot }))
				goto nomem;
			if (m->nranges > rcap) {
				uint32_t *p = realloc(rfile, cap * sizeof(*p));

				if (!p)
					goto nomem;
				rfile = p;
				rcap = cap;
			}
			rfile[m->nranges - 1] = active_file;
			slot += pos - start;
			open = false;
		}
		for (; starts; starts--, i++) {
			if (active.n)
				uf_union(parent, active_file, refs[i].file);
			else
				active_file = refs[i].file;
			if (ends_push(&active, refs[i].ppage + refs[i].npages))
				goto nomem;
		}
		if (!open && active.n >= 2) {
			open = true;
			start = pos;
		}
	}
	free(active.v);
	m->nslots = slot;
	*range_file = rfile;
	return 0;
nomem:
	free(active.v);
	free(rfile);
	return -ENOMEM;
}

/* First shared range that ends after (dev, ppage). */
static size_t first_range_after(const struct extmap *m, uint32_t dev, uint64_t ppage)
{
	size_t lo = 0, hi = m->nranges;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct shared_range *r = &m->ranges[mid];

		if (r->dev < dev || (r->dev == dev && r->ppage + r->npages <= ppage))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Each file's runs cut down to their overlap with the shared ranges, file
 * by file: a file's segments come out in the order of its runs, sorted by
 * file page unless its runs were not.
 */
static int cut_segments(const struct extmap_input *files, size_t nfiles, struct extmap *m)
{
	size_t cap = 0;

	for (size_t f = 0; f < nfiles; f++) {
		bool sorted = true;

		m->seg_first[f] = m->nsegs;
		for (size_t r = 0; r < files[f].nruns; r++) {
			const struct page_run *run = &files[f].runs[r];
			uint64_t rend = run->ppage + run->npages;

			sorted &= !r || run[-1].lpage < run->lpage;
			for (size_t k = first_range_after(m, files[f].dev, run->ppage);
			     run->npages && k < m->nranges && m->ranges[k].dev == files[f].dev &&
			     m->ranges[k].ppage < rend; k++) {
				const struct shared_range *sr = &m->ranges[k];
				uint64_t lo = run->ppage > sr->ppage ? run->ppage : sr->ppage;
				uint64_t hi = rend < sr->ppage + sr->npages ? rend : sr->ppage + sr->npages;

				if (m->nsegs == cap) {
					size_t nc = cap ? 2 * cap : 64;
					struct dc_segment *p = realloc(m->segs, nc * sizeof(*p));

					if (!p)
						return -ENOMEM;
					m->segs = p;
					cap = nc;
				}
				m->segs[m->nsegs++] = (struct dc_segment){
					.lpage = run->lpage + (lo - run->ppage),
					.npages = hi - lo,
					.slot = sr->slot + (lo - sr->ppage) };
			}
		}
		m->seg_count[f] = m->nsegs - m->seg_first[f];
		if (!sorted)
			qsort(m->segs + m->seg_first[f], m->seg_count[f], sizeof(*m->segs), cmp_seg);
	}
	return 0;
}

int extmap_build(const struct extmap_input *files, size_t nfiles, struct extmap *m)
{
	struct ref *refs = NULL;
	uint32_t *parent = NULL, *range_file = NULL, *group_of_root = NULL;
	size_t nrefs = 0;

	memset(m, 0, sizeof(*m));
	m->nfiles = nfiles;
	for (size_t f = 0; f < nfiles; f++)
		nrefs += files[f].nruns;
	refs = malloc(nrefs * sizeof(*refs) + 1);
	parent = malloc(nfiles * sizeof(uint32_t) + 1);
	if (!refs || !parent)
		goto nomem;

	nrefs = 0;
	for (size_t f = 0; f < nfiles; f++) {
		parent[f] = f;
		for (size_t r = 0; r < files[f].nruns; r++) {
			const struct page_run *run = &files[f].runs[r];

			if (run->npages)
				refs[nrefs++] = (struct ref){ files[f].dev, f, run->ppage, run->npages };
		}
	}
	qsort(refs, nrefs, sizeof(*refs), cmp_ref);
	if (sweep(refs, nrefs, parent, m, &range_file))
		goto nomem;
	free(refs);
	refs = NULL;

	m->file_group = malloc(nfiles * sizeof(uint32_t) + 1);
	m->seg_first = calloc(nfiles + 1, sizeof(uint32_t));
	m->seg_count = calloc(nfiles + 1, sizeof(uint32_t));
	group_of_root = malloc(nfiles * sizeof(uint32_t) + 1);
	if (!m->file_group || !m->seg_first || !m->seg_count || !group_of_root ||
	    cut_segments(files, nfiles, m))
		goto nomem;

	/* Compact group ids, in order of each group's first file with a segment. */
	for (size_t f = 0; f < nfiles; f++) {
		group_of_root[f] = DC_NO_GROUP;
		m->file_group[f] = DC_NO_GROUP;
	}
	for (size_t f = 0; f < nfiles; f++) {
		uint32_t root;

		if (!m->seg_count[f])
			continue;
		root = uf_find(parent, f);
		if (group_of_root[root] == DC_NO_GROUP)
			group_of_root[root] = m->ngroups++;
		m->file_group[f] = group_of_root[root];
	}
	for (size_t k = 0; k < m->nranges; k++)
		m->ranges[k].group = m->file_group[range_file[k]];
	if (!m->segs)
		m->segs = malloc(1);
	if (!m->segs)
		goto nomem;
	/* grown by doubling: give back what was never used (kept as long as the map) */
	m->segs = shrink_to(m->segs, m->nsegs, sizeof(*m->segs));
	m->ranges = shrink_to(m->ranges, m->nranges, sizeof(*m->ranges));

	free(parent);
	free(range_file);
	free(group_of_root);
	return 0;
nomem:
	free(refs);
	free(parent);
	free(range_file);
	free(group_of_root);
	extmap_free(m);
	return -ENOMEM;
}

uint32_t extmap_slot_group(const struct extmap *m, uint64_t slot)
{
	size_t lo = 0, hi = m->nranges;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->ranges[mid].slot + m->ranges[mid].npages <= slot)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->nranges ? m->ranges[lo].group : DC_NO_GROUP;
}

void extmap_free(struct extmap *m)
{
	free(m->file_group);
	free(m->seg_first);
	free(m->seg_count);
	free(m->segs);
	free(m->ranges);
	memset(m, 0, sizeof(*m));
}
