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

static struct fs_stats *fs_of(struct dup_stats *st, uint32_t sb_dev)
{
	size_t i = 0;

	while (i < st->nfs && st->fs[i].sb_dev < sb_dev)
		i++;
	if (i == st->nfs || st->fs[i].sb_dev != sb_dev) {
		st->fs = xrealloc(st->fs, st->nfs + 1, sizeof(*st->fs));
		memmove(&st->fs[i + 1], &st->fs[i], (st->nfs - i) * sizeof(*st->fs));
		st->fs[i] = (struct fs_stats){ .sb_dev = sb_dev };
		st->nfs++;
	}
	return &st->fs[i];
}

/* Per-filesystem totals; a group's duplicates are on its members' filesystem. */
static void build_fs(const struct scan *s, struct dup_stats *st)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		struct fs_stats *fs = fs_of(st, s->files[i].sb_dev);

		fs->files++;
		fs->shared_bytes += s->files[i].shared_bytes;
		fs->cached_bytes += st->file_cached_bytes[i];
	}
	for (size_t g = 0; g < st->ngroups; g++) {
		struct fs_stats *fs;

		if (!st->groups[g].files)
			continue;
		fs = fs_of(st, s->files[st->groups[g].members[0]].sb_dev);
		fs->groups++;
		fs->dup_bytes += st->groups[g].dup_bytes;
	}
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
	st->file_dup_share = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(uint64_t));
	/* Every group's members in one array, a group's after the previous group's. */
	size_t nmembers = 0;

	for (size_t i = 0; i < s->nfiles; i++)
		if (m->file_group[i] != DC_NO_GROUP) {
			st->groups[m->file_group[i]].files++;
			nmembers++;
		}
	st->members = xcalloc(nmembers ? nmembers : 1, sizeof(*st->members));
	nmembers = 0;
	for (uint32_t g = 0; g < m->ngroups; g++) {
		st->groups[g].id = g;
		st->groups[g].members = st->members + nmembers;
		nmembers += st->groups[g].files;
		st->groups[g].files = 0;
		st->groups[g].dup_bytes = c->group_dup[g] * P;
		st->dup_bytes += c->group_dup[g] * P;
	}
	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];
		uint32_t g = m->file_group[i];
		uint64_t resident = c->file_resident ? c->file_resident[i] : f->resident_pages;

		st->file_cached_bytes[i] = resident * P;
		st->cached_bytes += resident * P;
		st->shared_bytes += f->shared_bytes;
		if (g == DC_NO_GROUP)
			continue;
		struct group_stats *gs = &st->groups[g];

		gs->members[gs->files++] = i;
		gs->shared_bytes += f->shared_bytes;
		gs->cached_bytes += resident * P;
	}
	build_fs(s, st);
	sort_scan = s;
	if (!c->groups_unordered)
		qsort(st->groups, st->ngroups, sizeof(*st->groups), cmp_group);
}

void stats_from_snapshot(const struct scan *s, const struct extmap *m, struct dup_stats *st)
{
	uint32_t *copies = xcalloc(m->nslots ? m->nslots : 1, sizeof(uint32_t));
	uint64_t *group_dup = xcalloc(m->ngroups ? m->ngroups : 1, sizeof(uint64_t));

	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];

		if (!f->resident_pages)
			continue;
		for (uint32_t k = 0; k < m->seg_count[i]; k++) {
			const struct dc_segment *seg = &m->segs[m->seg_first[i] + k];

			for (uint64_t p = 0; p < seg->npages; p++)
				if (file_page_resident(f, seg->lpage + p))
					copies[seg->slot + p]++;
		}
	}
	for (size_t r = 0; r < m->nranges; r++) {
		const struct shared_range *sr = &m->ranges[r];

		for (uint64_t p = 0; p < sr->npages; p++)
			if (copies[sr->slot + p] > 1)
				group_dup[sr->group] += copies[sr->slot + p] - 1;
	}
	stats_build(s, m, &(struct dup_counts){ .group_dup = group_dup }, st);
	free(group_dup);
	/* the fair shares: a second pass, once every copy is counted, straight into st */
	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];

		for (uint32_t k = 0; f->resident_pages && k < m->seg_count[i]; k++) {
			const struct dc_segment *seg = &m->segs[m->seg_first[i] + k];

			for (uint64_t p = 0; p < seg->npages; p++)
				if (file_page_resident(f, seg->lpage + p))
					st->file_dup_share[i] += dup_share(s->page_size, copies[seg->slot + p]);
		}
	}
	free(copies);
}

void stats_free(struct dup_stats *st)
{
	free(st->members);
	free(st->groups);
	free(st->file_cached_bytes);
	free(st->file_dup_share);
	free(st->fs);
	memset(st, 0, sizeof(*st));
}
