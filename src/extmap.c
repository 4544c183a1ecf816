// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "extmap.h"

struct ref {
	uint32_t dev;
	uint32_t file;
	uint64_t ppage;
	uint64_t npages;
	uint64_t lpage;
};

struct edge {
	uint32_t dev;
	int32_t delta;  /* +1 a reference starts, -1 one ends */
	uint64_t pos;
	uint32_t file;
};

/* By position; at one position ends before starts: touching is not sharing. */
static int cmp_edge(const void *a, const void *b)
{
	const struct edge *x = a, *y = b;

	if (x->dev != y->dev)
		return x->dev < y->dev ? -1 : 1;
	if (x->pos != y->pos)
		return x->pos < y->pos ? -1 : 1;
	return x->delta - y->delta;
}

struct owned_seg {
	uint32_t file;
	struct dc_segment seg;
};

static int cmp_owned_seg(const void *a, const void *b)
{
	const struct owned_seg *x = a, *y = b;

	if (x->file != y->file)
		return x->file < y->file ? -1 : 1;
	return x->seg.lpage < y->seg.lpage ? -1 : x->seg.lpage > y->seg.lpage;
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
 * One sweep over the reference edges: the maximal ranges of physical pages
 * covered by two or more references get consecutive slots, and overlapping
 * references join their files (union-find).  All references active at a
 * position overlap there, so a starting reference need only join one of
 * them.  A range is cut where coverage drops to zero between two edges at
 * the same position: the files on either side may share nothing.
 * range_file[k] receives a file of range k, to name its group later.
 */
static int sweep(const struct ref *refs, size_t nrefs, uint32_t *parent, struct extmap *m,
		 uint32_t **range_file)
{
	struct edge *edges = malloc(2 * nrefs * sizeof(*edges) + 1);
	uint32_t *rfile = NULL, active_file = 0;
	size_t cap = 0, rcap = 0;
	uint64_t slot = 0, start = 0;
	long depth = 0;
	bool open = false;

	if (!edges)
		return -ENOMEM;
	for (size_t i = 0; i < nrefs; i++) {
		edges[2 * i] = (struct edge){ refs[i].dev, 1, refs[i].ppage, refs[i].file };
		edges[2 * i + 1] = (struct edge){ refs[i].dev, -1, refs[i].ppage + refs[i].npages,
						  refs[i].file };
	}
	qsort(edges, 2 * nrefs, sizeof(*edges), cmp_edge);

	for (size_t i = 0; i < 2 * nrefs;) {
		uint32_t dev = edges[i].dev;
		uint64_t pos = edges[i].pos;

		for (; i < 2 * nrefs && edges[i].dev == dev && edges[i].pos == pos && edges[i].delta < 0; i++)
			depth--;
		if (open && depth < 2) {
			/* Closed here unless the starts below reopen it seamlessly. */
			bool cut = depth == 0;
			long after = depth;

			for (size_t j = i; j < 2 * nrefs && edges[j].dev == dev && edges[j].pos == pos; j++)
				after++;
			if (cut || after < 2) {
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
		}
		for (; i < 2 * nrefs && edges[i].dev == dev && edges[i].pos == pos; i++) {
			if (depth > 0)
				uf_union(parent, active_file, edges[i].file);
			else
				active_file = edges[i].file;
			depth++;
		}
		if (!open && depth >= 2) {
			open = true;
			start = pos;
		}
	}
	free(edges);
	m->nslots = slot;
	*range_file = rfile;
	return 0;
nomem:
	free(edges);
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

int extmap_build(const struct extmap_input *files, size_t nfiles, struct extmap *m)
{
	struct ref *refs = NULL;
	struct owned_seg *osegs = NULL;
	uint32_t *parent = NULL, *range_file = NULL, *group_of_root = NULL;
	size_t nrefs = 0, nosegs = 0, cap_osegs = 0;

	memset(m, 0, sizeof(*m));
	m->nfiles = nfiles;
	for (size_t f = 0; f < nfiles; f++)
		nrefs += files[f].nruns;
	refs = malloc(nrefs * sizeof(*refs) + 1);
	m->file_group = malloc(nfiles * sizeof(uint32_t) + 1);
	m->seg_first = calloc(nfiles + 1, sizeof(uint32_t));
	m->seg_count = calloc(nfiles + 1, sizeof(uint32_t));
	parent = malloc(nfiles * sizeof(uint32_t) + 1);
	if (!refs || !m->file_group || !m->seg_first || !m->seg_count || !parent)
		goto nomem;

	nrefs = 0;
	for (size_t f = 0; f < nfiles; f++) {
		parent[f] = f;
		for (size_t r = 0; r < files[f].nruns; r++) {
			const struct page_run *run = &files[f].runs[r];

			if (run->npages)
				refs[nrefs++] = (struct ref){ files[f].dev, f, run->ppage,
							      run->npages, run->lpage };
		}
	}
	if (sweep(refs, nrefs, parent, m, &range_file))
		goto nomem;

	/* Cut every reference down to its overlap with the shared ranges. */
	for (size_t i = 0; i < nrefs; i++) {
		const struct ref *r = &refs[i];
		uint64_t rend = r->ppage + r->npages;

		for (size_t k = first_range_after(m, r->dev, r->ppage);
		     k < m->nranges && m->ranges[k].dev == r->dev && m->ranges[k].ppage < rend; k++) {
			const struct shared_range *sr = &m->ranges[k];
			uint64_t lo = r->ppage > sr->ppage ? r->ppage : sr->ppage;
			uint64_t hi = rend < sr->ppage + sr->npages ? rend : sr->ppage + sr->npages;

			if (nosegs == cap_osegs) {
				size_t nc = cap_osegs ? 2 * cap_osegs : 64;
				struct owned_seg *p = realloc(osegs, nc * sizeof(*osegs));

				if (!p)
					goto nomem;
				osegs = p;
				cap_osegs = nc;
			}
			osegs[nosegs++] = (struct owned_seg){ r->file, {
				.lpage = r->lpage + (lo - r->ppage),
				.npages = hi - lo,
				.slot = sr->slot + (lo - sr->ppage) } };
		}
	}

	/* Compact group ids, in order of each group's first file. */
	group_of_root = malloc(nfiles * sizeof(uint32_t) + 1);
	if (!group_of_root)
		goto nomem;
	for (size_t f = 0; f < nfiles; f++) {
		group_of_root[f] = DC_NO_GROUP;
		m->file_group[f] = DC_NO_GROUP;
	}
	if (nosegs)
		qsort(osegs, nosegs, sizeof(*osegs), cmp_owned_seg);
	for (size_t i = 0; i < nosegs; i++) {
		uint32_t f = osegs[i].file, root = uf_find(parent, f);

		if (group_of_root[root] == DC_NO_GROUP)
			group_of_root[root] = m->ngroups++;
		m->file_group[f] = group_of_root[root];
	}
	for (size_t k = 0; k < m->nranges; k++)
		m->ranges[k].group = m->file_group[range_file[k]];

	m->segs = malloc(nosegs * sizeof(*m->segs) + 1);
	if (!m->segs)
		goto nomem;
	for (size_t i = 0; i < nosegs; i++) {
		uint32_t f = osegs[i].file;

		if (!m->seg_count[f])
			m->seg_first[f] = i;
		m->seg_count[f]++;
		m->segs[i] = osegs[i].seg;
	}
	m->nsegs = nosegs;

	free(refs);
	free(osegs);
	free(parent);
	free(range_file);
	free(group_of_root);
	return 0;
nomem:
	free(refs);
	free(osegs);
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
