// SPDX-License-Identifier: GPL-2.0
#include <stdlib.h>
#include <string.h>
#include "stats.h"
#include "util.h"

static const struct scan *sort_scan;

static int cmp_group(const void *a, const void *b)
{
	const struct group_stats *x = a, *y = b;

	if (x->dup_bytes != y->dup_bytes)
		return x->dup_bytes > y->dup_bytes ? -1 : 1;
	if (x->cached_bytes != y->cached_bytes)
		return x->cached_bytes > y->cached_bytes ? -1 : 1;
	return strcmp(sort_scan->files[x->members[0]].path, sort_scan->files[y->members[0]].path);
}

void stats_build(const struct scan *s, const struct extmap *m, const struct dup_counts *c,
		 struct dup_stats *st)
{
	const uint64_t P = s->page_size;

	memset(st, 0, sizeof(*st));
	st->page_size = s->page_size;
	st->files = s->nfiles;
	st->ngroups = m->ngroups;
	st->groups = xcalloc(m->ngroups, sizeof(*st->groups));
	st->file_cached_bytes = xcalloc(s->nfiles, sizeof(uint64_t));
	for (uint32_t g = 0; g < m->ngroups; g++) {
		st->groups[g].id = g;
		st->groups[g].members = xcalloc(1, sizeof(size_t));
		st->groups[g].dup_bytes = c->group_dup[g] * P;
		st->dup_bytes += c->group_dup[g] * P;
	}
	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];
		uint32_t g = m->file_group[i];

		st->file_cached_bytes[i] = c->file_resident[i] * P;
		st->cached_bytes += c->file_resident[i] * P;
		st->shared_bytes += f->shared_bytes;
		if (g == DC_NO_GROUP)
			continue;
		struct group_stats *gs = &st->groups[g];

		gs->members = xrealloc(gs->members, gs->files + 1, sizeof(size_t));
		gs->members[gs->files++] = i;
		gs->shared_bytes += f->shared_bytes;
		gs->cached_bytes += c->file_resident[i] * P;
	}
	sort_scan = s;
	qsort(st->groups, st->ngroups, sizeof(*st->groups), cmp_group);
}

void stats_from_snapshot(const struct scan *s, const struct extmap *m, struct dup_stats *st)
{
	uint32_t *copies = xcalloc(m->nslots, sizeof(uint32_t));
	uint64_t *group_dup = xcalloc(m->ngroups, sizeof(uint64_t));
	uint64_t *file_resident = xcalloc(s->nfiles, sizeof(uint64_t));

	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];

		file_resident[i] = f->resident_pages;
		if (!f->resident)
			continue;
		for (uint32_t k = 0; k < m->seg_count[i]; k++) {
			const struct dc_segment *seg = &m->segs[m->seg_first[i] + k];

			for (uint64_t p = 0; p < seg->npages; p++)
				if (bit_test(f->resident, seg->lpage + p))
					copies[seg->slot + p]++;
		}
	}
	for (size_t r = 0; r < m->nranges; r++) {
		const struct shared_range *sr = &m->ranges[r];

		for (uint64_t p = 0; p < sr->npages; p++)
			if (copies[sr->slot + p] > 1)
				group_dup[sr->group] += copies[sr->slot + p] - 1;
	}
	stats_build(s, m, &(struct dup_counts){ file_resident, group_dup }, st);
	free(copies);
	free(group_dup);
	free(file_resident);
}

void stats_free(struct dup_stats *st)
{
	for (size_t g = 0; g < st->ngroups; g++)
		free(st->groups[g].members);
	free(st->groups);
	free(st->file_cached_bytes);
	memset(st, 0, sizeof(*st));
}

static struct fs_figures *fs_of(struct fs_figures **fs, size_t *n, const struct scanned_file *f)
{
	for (size_t i = 0; i < *n; i++)
		if ((*fs)[i].sb_dev == f->sb_dev)
			return &(*fs)[i];
	*fs = xrealloc(*fs, *n + 1, sizeof(**fs));
	(*fs)[*n] = (struct fs_figures){ .sb_dev = f->sb_dev, .name = mount_point_of(f->sb_dev, f->path) };
	return &(*fs)[(*n)++];
}

static int cmp_fs(const void *a, const void *b)
{
	const struct fs_figures *x = a, *y = b;
	int d = strcmp(x->name, y->name);

	return d ? d : (x->sb_dev > y->sb_dev) - (x->sb_dev < y->sb_dev);
}

size_t stats_by_fs(const struct scan *s, const struct dup_stats *st, struct fs_figures **out)
{
	struct fs_figures *fs = NULL;
	size_t n = 0;

	for (size_t i = 0; i < s->nfiles; i++) {
		struct fs_figures *x = fs_of(&fs, &n, &s->files[i]);

		x->files++;
		x->shared_bytes += s->files[i].shared_bytes;
		x->cached_bytes += st->file_cached_bytes[i];
	}
	for (size_t g = 0; g < st->ngroups; g++) {
		struct fs_figures *x;

		if (!st->groups[g].files)
			continue;
		x = fs_of(&fs, &n, &s->files[st->groups[g].members[0]]);
		x->groups++;
		x->dup_bytes += st->groups[g].dup_bytes;
	}
	if (n)
		qsort(fs, n, sizeof(*fs), cmp_fs);
	*out = fs;
	return n;
}

void fs_figures_free(struct fs_figures *fs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(fs[i].name);
	free(fs);
}
