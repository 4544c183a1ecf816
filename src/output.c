// SPDX-License-Identifier: GPL-2.0
#include <json-c/json.h>
#include "output.h"
#include "util.h"

static size_t shown_groups(const struct report_view *v)
{
	return v->top && v->top < v->stats->ngroups ? v->top : v->stats->ngroups;
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
	fprintf(out, "  cached     %10s  resident page cache of these files\n", HB(st->cached_bytes));
	fprintf(out, "  shared     %10s  file bytes in shared (reflinked) extents\n", HB(st->shared_bytes));
	fprintf(out, "  duplicate  %10s  cached copies of a block already cached elsewhere",
		HB(st->dup_bytes));
	if (st->cached_bytes)
		fprintf(out, " (%.1f%% of cached)", 100.0 * st->dup_bytes / st->cached_bytes);
	fputc('\n', out);
	if (v->window) {
		const struct engine_window *w = v->window;

		fprintf(out, "  window     %.1f s: peak duplicate %s, pages added %llu, removed %llu, "
			"extent map refreshes %llu\n", v->window_seconds,
			HB(w->peak_dup_pages * st->page_size), (unsigned long long)w->pages_added,
			(unsigned long long)w->pages_removed, (unsigned long long)w->refreshes);
		if (w->untracked_files)
			fprintf(out, "  warning    %llu files not tracked: the engine's maps are full\n",
				(unsigned long long)w->untracked_files);
	}
	if (st->ngroups) {
		fprintf(out, "\nSharing groups by duplicate bytes (%zu of %zu):\n", shown, st->ngroups);
		fprintf(out, "  %5s %10s %10s %10s  %s\n", "FILES", "SHARED", "CACHED", "DUP", "FILES");
	}
	for (size_t g = 0; g < shown; g++) {
		const struct group_stats *gs = &st->groups[g];

		fprintf(out, "  %5llu %10s %10s %10s  %s", (unsigned long long)gs->files,
			HB(gs->shared_bytes), HB(gs->cached_bytes), HB(gs->dup_bytes),
			s->files[gs->members[0]].path);
		if (gs->files > 1)
			fprintf(out, " (+%llu more)", (unsigned long long)gs->files - 1);
		fputc('\n', out);
	}
	text_skips(out, &s->skipped);
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
			json_add_u64(jm, "dev", f->st_dev);
			json_add_u64(jm, "ino", f->ino);
			json_add_u64(jm, "cached_bytes", st->file_cached_bytes[gs->members[i]]);
			json_add_u64(jm, "shared_bytes", f->shared_bytes);
			json_object_array_add(members, jm);
		}
		json_object_object_add(jg, "members", members);
		json_object_array_add(groups, jg);
	}
	json_object_object_add(root, "groups", groups);

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
