// SPDX-License-Identifier: GPL-2.0
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include "output.h"
#include "util.h"

static size_t shown_groups(const struct report_view *v)
{
	return v->top && v->top < v->stats->ngroups ? v->top : v->stats->ngroups;
}

static size_t shown_files(const struct report_view *v)
{
	return v->top && v->top < v->scan->nfiles ? v->top : v->scan->nfiles;
}

/* A size as the text shows it: human units, or bytes with --bytes. */
static const char *size_str(const struct report_view *v, uint64_t n, char *buf, size_t len)
{
	if (!v->bytes)
		return human_bytes(n, buf, len);
	snprintf(buf, len, "%llu", (unsigned long long)n);
	return buf;
}
#define SZ(v, x) size_str((v), (x), (char[32]){ 0 }, 32)

/* ---- files in their listing order ---- */

static const struct report_view *sort_view;

static int cmp_file(const void *a, const void *b)
{
	const struct dup_stats *st = sort_view->stats;
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	if (st->file_dup_share[x] != st->file_dup_share[y])
		return st->file_dup_share[x] > st->file_dup_share[y] ? -1 : 1;
	if (st->file_cached_bytes[x] != st->file_cached_bytes[y])
		return st->file_cached_bytes[x] > st->file_cached_bytes[y] ? -1 : 1;
	return strcmp(sort_view->scan->files[x].path, sort_view->scan->files[y].path);
}

/* Most duplicate share first, then most cached, then by path. */
static size_t *file_order(const struct report_view *v)
{
	size_t n = v->scan->nfiles, *order = xcalloc(n ? n : 1, sizeof(size_t));

	for (size_t i = 0; i < n; i++)
		order[i] = i;
	sort_view = v;
	qsort(order, n, sizeof(size_t), cmp_file);
	return order;
}

/* Each file's group as listed (1 = most duplicate bytes), 0 for none. */
static size_t *file_group_rank(const struct report_view *v)
{
	size_t *rank = xcalloc(v->scan->nfiles ? v->scan->nfiles : 1, sizeof(size_t));

	for (size_t g = 0; g < v->stats->ngroups; g++)
		for (size_t i = 0; i < v->stats->groups[g].files; i++)
			rank[v->stats->groups[g].members[i]] = g + 1;
	return rank;
}

static const char *fs_dev(const struct fs_stats *fs, char *buf, size_t len)
{
	snprintf(buf, len, "%u:%u", fs->sb_dev >> 20, fs->sb_dev & 0xfffff);
	return buf;
}

static void text_skips(FILE *out, const struct scan_skips *k)
{
	const struct { const char *what; uint64_t n; } rows[] = {
		{ "missing", k->missing }, { "unreadable", k->unreadable },
		{ "vanished", k->vanished }, { "changing", k->changed },
		{ "not regular", k->special },
		{ "on filesystems without FIEMAP (cache counted, sharing unknown)", k->no_fiemap },
	};
	bool any = false;

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		if (!rows[i].n)
			continue;
		fprintf(out, "%s %llu %s", any ? "," : "skipped:", (unsigned long long)rows[i].n,
			rows[i].what);
		any = true;
	}
	if (any)
		fputc('\n', out);
}

void output_text(FILE *out, const struct report_view *v)
{
	const struct dup_stats *st = v->stats;
	const struct scan *s = v->scan;
	size_t shown = shown_groups(v);

	fprintf(out, "dupcache report: %llu files, page size %u\n",
		(unsigned long long)st->files, st->page_size);
	fprintf(out, "  cached     %10s  resident page cache of these files\n", SZ(v, st->cached_bytes));
	fprintf(out, "  shared     %10s  file bytes in shared (reflinked) extents\n", SZ(v, st->shared_bytes));
	fprintf(out, "  duplicate  %10s  cached copies of a block already cached elsewhere",
		SZ(v, st->dup_bytes));
	if (st->cached_bytes)
		fprintf(out, " (%.1f%% of cached)", 100.0 * st->dup_bytes / st->cached_bytes);
	fputc('\n', out);
	if (v->window) {
		const struct engine_window *w = v->window;

		fprintf(out, "  window     %.1f s: peak duplicate %s, pages added %llu, removed %llu, "
			"extent map refreshes %llu\n", v->window_seconds,
			SZ(v, w->peak_dup_pages * st->page_size), (unsigned long long)w->pages_added,
			(unsigned long long)w->pages_removed, (unsigned long long)w->refreshes);
		if (w->untracked_files)
			fprintf(out, "  warning    %llu files not tracked: the engine's maps are full\n",
				(unsigned long long)w->untracked_files);
	}
	if (st->nfs)
		fprintf(out, "\nFilesystems:\n  %-8s %-9s %7s %10s %10s %10s  %s\n", "TYPE", "DEVICE",
			"FILES", "SHARED", "CACHED", "DUP", "MOUNT");
	for (size_t i = 0; i < st->nfs; i++) {
		const struct fs_stats *fs = &st->fs[i];
		const char *type, *mount;
		char dev[24];

		scan_fs_of(s, fs->sb_dev, &type, &mount);
		fprintf(out, "  %-8s %-9s %7llu %10s %10s %10s  %s\n", type, fs_dev(fs, dev, sizeof(dev)),
			(unsigned long long)fs->files, SZ(v, fs->shared_bytes), SZ(v, fs->cached_bytes),
			SZ(v, fs->dup_bytes), mount);
	}
	if (v->files) {
		size_t *order = file_order(v), nshown = shown_files(v);

		fprintf(out, "\nFiles by duplicate share (%zu of %zu):\n", nshown, s->nfiles);
		fprintf(out, "  %10s %10s %10s %10s  %s\n", "SIZE", "CACHED", "SHARED", "DUP SHARE", "PATH");
		for (size_t k = 0; k < nshown; k++) {
			size_t i = order[k];

			fprintf(out, "  %10s %10s %10s %10s  %s\n", SZ(v, s->files[i].size),
				SZ(v, st->file_cached_bytes[i]), SZ(v, s->files[i].shared_bytes),
				SZ(v, st->file_dup_share[i]), s->files[i].path);
		}
		free(order);
		shown = 0; /* files replace the groups */
	} else if (st->ngroups) {
		fprintf(out, "\nSharing groups by duplicate bytes (%zu of %zu):\n", shown, st->ngroups);
		fprintf(out, "  %5s %10s %10s %10s  %s\n", "FILES", "SHARED", "CACHED", "DUP", "FILES");
	}
	for (size_t g = 0; g < shown; g++) {
		const struct group_stats *gs = &st->groups[g];

		fprintf(out, "  %5llu %10s %10s %10s  %s", (unsigned long long)gs->files,
			SZ(v, gs->shared_bytes), SZ(v, gs->cached_bytes), SZ(v, gs->dup_bytes),
			s->files[gs->members[0]].path);
		if (gs->files > 1)
			fprintf(out, " (+%llu more)", (unsigned long long)gs->files - 1);
		fputc('\n', out);
	}
	text_skips(out, &s->skipped);
}

/* RFC 4180: a field with a comma, quote, CR or LF is quoted, quotes doubled. */
static void csv_field(FILE *out, const char *f)
{
	if (!strpbrk(f, ",\"\r\n")) {
		fputs(f, out);
		return;
	}
	fputc('"', out);
	for (; *f; f++) {
		if (*f == '"')
			fputc('"', out);
		fputc(*f, out);
	}
	fputc('"', out);
}

void output_csv(FILE *out, const struct report_view *v)
{
	const struct dup_stats *st = v->stats;
	const struct scan *s = v->scan;

	if (v->files) {
		size_t *order = file_order(v), *rank = file_group_rank(v), n = shown_files(v);

		fputs("path,dev,ino,size,cached_bytes,shared_bytes,dup_share_bytes,group\n", out);
		for (size_t k = 0; k < n; k++) {
			const struct scanned_file *f = &s->files[order[k]];

			csv_field(out, f->path);
			fprintf(out, ",%llu,%llu,%llu,%llu,%llu,%llu,", (unsigned long long)file_st_dev(f),
				(unsigned long long)f->ino, (unsigned long long)f->size,
				(unsigned long long)st->file_cached_bytes[order[k]],
				(unsigned long long)f->shared_bytes,
				(unsigned long long)st->file_dup_share[order[k]]);
			if (rank[order[k]])
				fprintf(out, "%zu", rank[order[k]]);
			fputc('\n', out);
		}
		free(order);
		free(rank);
		return;
	}
	fputs("group,files,shared_bytes,cached_bytes,dup_bytes,first_path\n", out);
	for (size_t g = 0; g < shown_groups(v); g++) {
		const struct group_stats *gs = &st->groups[g];

		fprintf(out, "%zu,%llu,%llu,%llu,%llu,", g + 1, (unsigned long long)gs->files,
			(unsigned long long)gs->shared_bytes, (unsigned long long)gs->cached_bytes,
			(unsigned long long)gs->dup_bytes);
		csv_field(out, s->files[gs->members[0]].path);
		fputc('\n', out);
	}
}

void json_add_u64(json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

void json_add_double(json_object *o, const char *key, double v)
{
	json_object_object_add(o, key, json_object_new_double(v));
}

void output_json(FILE *out, const struct report_view *v)
{
	const struct dup_stats *st = v->stats;
	const struct scan *s = v->scan;
	json_object *root = json_object_new_object();
	json_object *totals = json_object_new_object();
	json_object *groups = json_object_new_array();
	json_object *skipped = json_object_new_object();
	size_t shown = shown_groups(v);

	json_add_u64(root, "page_size", st->page_size);
	json_add_u64(totals, "files", st->files);
	json_add_u64(totals, "shared_bytes", st->shared_bytes);
	json_add_u64(totals, "cached_bytes", st->cached_bytes);
	json_add_u64(totals, "dup_bytes", st->dup_bytes);
	json_add_u64(totals, "groups", st->ngroups);
	json_object_object_add(root, "totals", totals);

	for (size_t g = 0; g < shown; g++) {
		const struct group_stats *gs = &st->groups[g];
		json_object *jg = json_object_new_object(), *members = json_object_new_array();

		json_add_u64(jg, "files", gs->files);
		json_add_u64(jg, "shared_bytes", gs->shared_bytes);
		json_add_u64(jg, "cached_bytes", gs->cached_bytes);
		json_add_u64(jg, "dup_bytes", gs->dup_bytes);
		for (size_t i = 0; i < gs->files; i++) {
			const struct scanned_file *f = &s->files[gs->members[i]];
			json_object *jm = json_object_new_object();

			json_object_object_add(jm, "path", json_object_new_string(f->path));
			json_add_u64(jm, "dev", file_st_dev(f));
			json_add_u64(jm, "ino", f->ino);
			json_add_u64(jm, "cached_bytes", st->file_cached_bytes[gs->members[i]]);
			json_add_u64(jm, "shared_bytes", f->shared_bytes);
			json_object_array_add(members, jm);
		}
		json_object_object_add(jg, "members", members);
		json_object_array_add(groups, jg);
	}
	json_object_object_add(root, "groups", groups);

	json_object *jfs = json_object_new_array();

	for (size_t i = 0; i < st->nfs; i++) {
		const struct fs_stats *fs = &st->fs[i];
		json_object *j = json_object_new_object();
		const char *type, *mount;
		char dev[24];

		scan_fs_of(s, fs->sb_dev, &type, &mount);
		json_object_object_add(j, "fstype", json_object_new_string(type));
		json_object_object_add(j, "device", json_object_new_string(fs_dev(fs, dev, sizeof(dev))));
		json_object_object_add(j, "mount", json_object_new_string(mount));
		json_add_u64(j, "files", fs->files);
		json_add_u64(j, "shared_bytes", fs->shared_bytes);
		json_add_u64(j, "cached_bytes", fs->cached_bytes);
		json_add_u64(j, "dup_bytes", fs->dup_bytes);
		json_object_array_add(jfs, j);
	}
	json_object_object_add(root, "filesystems", jfs);

	if (v->files) {
		size_t *order = file_order(v), *rank = file_group_rank(v), n = shown_files(v);
		json_object *jf = json_object_new_array();

		for (size_t k = 0; k < n; k++) {
			const struct scanned_file *f = &s->files[order[k]];
			json_object *j = json_object_new_object();

			json_object_object_add(j, "path", json_object_new_string(f->path));
			json_add_u64(j, "dev", file_st_dev(f));
			json_add_u64(j, "ino", f->ino);
			json_add_u64(j, "size", f->size);
			json_add_u64(j, "cached_bytes", st->file_cached_bytes[order[k]]);
			json_add_u64(j, "shared_bytes", f->shared_bytes);
			json_add_u64(j, "dup_share_bytes", st->file_dup_share[order[k]]);
			json_object_object_add(j, "group", rank[order[k]] ? json_object_new_uint64(rank[order[k]])
									  : NULL);
			json_object_array_add(jf, j);
		}
		json_object_object_add(root, "files", jf);
		free(order);
		free(rank);
	}

	json_add_u64(skipped, "missing", s->skipped.missing);
	json_add_u64(skipped, "unreadable", s->skipped.unreadable);
	json_add_u64(skipped, "vanished", s->skipped.vanished);
	json_add_u64(skipped, "changed", s->skipped.changed);
	json_add_u64(skipped, "special", s->skipped.special);
	json_add_u64(skipped, "no_fiemap", s->skipped.no_fiemap);
	json_object_object_add(root, "skipped", skipped);

	if (v->window) {
		const struct engine_window *w = v->window;
		json_object *jw = json_object_new_object();

		json_add_u64(root, "peak_dup_bytes", w->peak_dup_pages * st->page_size);
		json_add_double(jw, "seconds", v->window_seconds);
		json_add_u64(jw, "pages_added", w->pages_added);
		json_add_u64(jw, "pages_removed", w->pages_removed);
		json_add_u64(jw, "refreshes", w->refreshes);
		json_add_u64(jw, "untracked_files", w->untracked_files);
		json_add_u64(jw, "oversize_folios", w->oversize_folios);
		json_add_u64(jw, "hole_pages_uncounted", w->hole_pages_uncounted);
		json_object_object_add(root, "window", jw);
	}
	fprintf(out, "%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
}
