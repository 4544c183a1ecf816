// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache top: a live view of duplicated page cache, by sharing group,
 * file or memory cgroup, with reclaim activity.  Full screen (ncurses) on a
 * terminal; plain text frames (-b) or JSON Lines (--json) otherwise.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <ncurses.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cgroups.h"
#include "commands.h"
#include "output.h"
#include "tracker.h"
#include "util.h"

enum by { BY_GROUP, BY_FILE, BY_CGROUP, BY_COUNT };
static const char *const by_name[] = { "group", "file", "cgroup" };

/* Columns, in display order; the sort keys are their names. */
enum col { C_DUP, C_CACHED, C_SHARED, C_ADDED, C_REMOVED, C_RECLAIMED, C_REFAULTS, C_NAME, C_COUNT };
static const char *const col_name[] = { "dup", "cached", "shared", "added", "removed",
					"reclaimed", "refaults", "name" };
static const char *const col_title[] = { "DUP", "CACHED", "SHARED", "ADDED/s", "REMOVED/s",
					 "RECLAIM/s", "REFAULT/s", "NAME" };

struct row {
	const char *name;             /* a path, or NULL for `label` */
	char label[48];
	size_t more;                  /* group rows: members besides `name` */
	uint64_t dup, cached, shared; /* bytes; shared is -1 where it means nothing */
	double rate[4];               /* added, removed, reclaimed, refaults: pages/s */
	uint64_t count[4];            /* the same since start of row's counters */
};

struct header {
	double seconds;              /* since start */
	uint64_t page_cache, shared, cached, dup;
	double kswapd_wakes, direct_stalls, direct_stall_ms, memcg_stalls, memcg_stall_ms,
		pages_reclaimed;     /* per second, stall ms = mean per stall */
	uint64_t files, groups;
	uint64_t untracked;          /* files the engine's maps had no room for */
	uint64_t cgroups_full;       /* pages of cgroups past DC_MAX_CGROUPS */
};

struct top_opts {
	double delay;
	enum col sort;
	bool reverse;
	uint64_t rows;   /* 0: as many as fit (screen) / all (batch) */
	enum by by;
	bool batch, json;
	uint64_t frames; /* batch: frames to print, 0 = until interrupted */
	struct scan_opts scan;
};

/* Counters at the previous frame, to turn them into rates. */
struct prev {
	uint64_t generation;
	long long at;
	struct dc_totals totals;
	uint64_t (*file)[4];
	size_t nfiles;
	uint64_t cgroup[DC_MAX_CGROUPS][4];
};

static const char usage[] =
	"usage: dupcache top [-d SECONDS] [-s KEY] [-r ROWS] [--by group|file|cgroup]\n"
	"                    [-b] [--frames COUNT] [--json] [-x] PATH...\n"
	"  -d SECONDS     refresh interval (default 1)\n"
	"  -s KEY         sort by dup, cached, shared, added, removed, reclaimed, refaults, name\n"
	"  -r ROWS        rows to show (default: what fits; all in batch mode)\n"
	"  --by WHAT      one row per sharing group (default), file or memory cgroup\n"
	"  -b             batch mode: plain text frames (the default when stdout is no terminal)\n"
	"  --frames COUNT frames to print in batch or JSON mode, then exit (default: until ^C);\n"
	"                 -n COUNT is the same\n"
	"  --json         one JSON object per interval (JSON Lines)\n"
	"  -x             stay on the filesystem of each PATH\n"
	"keys: q quit, s/< > sort column, r reverse, g group/file/cgroup, p pause, h help\n";

static int parse_opts(int argc, char **argv, struct top_opts *o)
{
	static const struct option longopts[] = {
		{ "by", required_argument, NULL, 'B' },
		{ "json", no_argument, NULL, 'j' },
		/* -n is the same, kept for scripts written before --frames (issue 14) */
		{ "frames", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	*o = (struct top_opts){ .delay = 1 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":d:s:r:bn:xh", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (!opt_seconds("top", "-d", optarg, 0.1, 3600, &o->delay))
				return EXIT_USAGE;
			break;
		case 's':
			for (o->sort = 0; o->sort < C_COUNT && strcmp(col_name[o->sort], optarg); o->sort++)
				;
			if (o->sort == C_COUNT) {
				msg("top: -s takes dup, cached, shared, added, removed, reclaimed, refaults "
				    "or name, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'r':
			if (!opt_count("top", "-r", optarg, &o->rows))
				return EXIT_USAGE;
			break;
		case 'n':
			if (!opt_count("top", "--frames", optarg, &o->frames))
				return EXIT_USAGE;
			break;
		case 'B':
			for (o->by = 0; o->by < BY_COUNT && strcmp(by_name[o->by], optarg); o->by++)
				;
			if (o->by == BY_COUNT) {
				msg("top: --by takes group, file or cgroup, not '%s'", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'b':
			o->batch = true;
			break;
		case 'j':
			o->json = true;
			break;
		default:
			if (opt_common("top", c, usage, &o->scan.one_fs, argv))
				return EXIT_USAGE;
			break;
		}
	}
	if (optind >= argc)
		return usage_no_path("top");
	if (!o->json && !isatty(STDOUT_FILENO))
		o->batch = true;
	return EXIT_OK;
}

static double per_s(uint64_t now, uint64_t then, double seconds)
{
	return seconds > 0 && now >= then ? (now - then) / seconds : 0;
}

static void set_rates(struct row *r, const uint64_t now[4], const uint64_t then[4], double seconds)
{
	for (int i = 0; i < 4; i++) {
		r->count[i] = now[i];
		r->rate[i] = per_s(now[i], then[i], seconds);
	}
}

static void file_counts(const struct dc_file *f, uint64_t out[4])
{
	out[0] = f->added, out[1] = f->removed, out[2] = f->reclaimed, out[3] = f->refaults;
}

static void cgroup_counts(const struct dc_cgroup_stats *c, uint64_t out[4])
{
	out[0] = c->added, out[1] = c->removed, out[2] = c->reclaimed, out[3] = c->refaults;
}

static enum col sort_col;
static bool sort_reverse;

static const char *row_name(const struct row *r)
{
	return r->name ? r->name : r->label;
}

/* The name as shown: a group's first member and how many more. */
static const char *row_title(const struct row *r, char *buf, size_t len)
{
	if (!r->more)
		return row_name(r);
	snprintf(buf, len, "%s (+%zu more)", row_name(r), r->more);
	return buf;
}

static double row_key(const struct row *r, enum col c)
{
	switch (c) {
	case C_DUP: return r->dup;
	case C_CACHED: return r->cached;
	case C_SHARED: return (double)r->shared;
	case C_ADDED: case C_REMOVED: case C_RECLAIMED: case C_REFAULTS: return r->rate[c - C_ADDED];
	default: return 0;
	}
}

static int cmp_row(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	int d;

	if (sort_col == C_NAME) {
		d = strcmp(row_name(x), row_name(y));
	} else {
		double kx = row_key(x, sort_col), ky = row_key(y, sort_col);

		d = kx > ky ? -1 : kx < ky; /* biggest first */
		if (!d)
			d = strcmp(row_name(x), row_name(y));
	}
	return sort_reverse ? -d : d;
}

/* One frame's rows and header from the engine; rates against `prev`. */
static struct row *collect(struct tracker *t, enum by by, struct prev *prev, struct header *h,
			   size_t *nrows, long long started)
{
	const struct scan *s = &t->scan;
	const struct extmap *m = &t->map;
	const uint64_t P = s->page_size;
	long long now = monotonic_ns();
	double dt = (now - prev->at) / 1e9;
	struct engine_sample es;
	uint64_t *file_share = NULL, *cgroup_share = NULL;
	uint64_t counts[4];
	struct row *rows = NULL;
	size_t n = 0;

	engine_sample(t->engine, &es);
	/* Fair shares walk every shared page: only for the rows that show them. */
	if (by != BY_GROUP) {
		file_share = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(uint64_t));
		cgroup_share = xcalloc(DC_MAX_CGROUPS, sizeof(uint64_t));
		engine_dup_shares(t->engine, m, file_share, cgroup_share);
	}
	if (prev->generation != t->generation || prev->nfiles != es.nfiles) {
		/*
		 * File ids changed with a rebuild, not their counters (the engine
		 * carries them): the last frame's counts move to the new ids.  A
		 * file new since then starts from 0 (its counts are all new).
		 */
		uint64_t (*moved)[4] = xcalloc(es.nfiles ? es.nfiles : 1, sizeof(*moved));
		/* More than one rebuild since the last frame: no rates this frame. */
		bool one_rebuild = prev->generation + 1 == t->generation;

		for (size_t i = 0; i < es.nfiles; i++) {
			int64_t old = engine_previous_id(t->engine, i);

			if (!one_rebuild)
				file_counts(&es.files[i], moved[i]);
			else if (old >= 0 && (size_t)old < prev->nfiles)
				memcpy(moved[i], prev->file[old], sizeof(moved[i]));
		}
		free(prev->file);
		prev->file = moved;
		prev->nfiles = es.nfiles;
		prev->generation = t->generation;
	}

	*h = (struct header){
		.seconds = (now - started) / 1e9,
		.page_cache = meminfo_cached_bytes(),
		.cached = 0,
		.dup = es.totals.dup * P,
		.kswapd_wakes = per_s(es.totals.kswapd_wakes, prev->totals.kswapd_wakes, dt),
		.direct_stalls = per_s(es.totals.direct_stalls, prev->totals.direct_stalls, dt),
		.memcg_stalls = per_s(es.totals.memcg_stalls, prev->totals.memcg_stalls, dt),
		.pages_reclaimed = per_s(es.totals.pages_reclaimed, prev->totals.pages_reclaimed, dt),
		.files = s->nfiles,
		.groups = m->ngroups,
	};
	if (es.totals.direct_stalls > prev->totals.direct_stalls)
		h->direct_stall_ms = (es.totals.direct_stall_ns - prev->totals.direct_stall_ns) / 1e6 /
				     (es.totals.direct_stalls - prev->totals.direct_stalls);
	if (es.totals.memcg_stalls > prev->totals.memcg_stalls)
		h->memcg_stall_ms = (es.totals.memcg_stall_ns - prev->totals.memcg_stall_ns) / 1e6 /
				    (es.totals.memcg_stalls - prev->totals.memcg_stalls);
	for (size_t i = 0; i < s->nfiles; i++)
		h->shared += s->files[i].shared_bytes;
	for (size_t i = 0; i < es.nfiles; i++)
		h->cached += engine_file_resident(&es.files[i]) * P;

	switch (by) {
	case BY_FILE:
		rows = xcalloc(s->nfiles, sizeof(*rows));
		for (size_t i = 0; i < s->nfiles && i < es.nfiles; i++) {
			struct row *r = &rows[n++];

			r->name = s->files[i].path;
			r->dup = file_share[i];
			r->cached = engine_file_resident(&es.files[i]) * P;
			r->shared = s->files[i].shared_bytes;
			file_counts(&es.files[i], counts);
			set_rates(r, counts, prev->file[i], dt);
		}
		break;
	case BY_GROUP:
		rows = xcalloc(m->ngroups, sizeof(*rows));
		n = m->ngroups;
		for (uint32_t g = 0; g < m->ngroups && g < es.ngroups; g++)
			rows[g].dup = es.groups[g].dup * P;
		for (size_t i = 0; i < s->nfiles && i < es.nfiles; i++) {
			uint32_t g = m->file_group[i];
			uint64_t then[4];
			struct row *r;

			if (g == DC_NO_GROUP || g >= n)
				continue;
			r = &rows[g];
			if (!r->name)
				r->name = s->files[i].path;
			else
				r->more++;
			r->cached += engine_file_resident(&es.files[i]) * P;
			r->shared += s->files[i].shared_bytes;
			file_counts(&es.files[i], counts);
			for (int k = 0; k < 4; k++) {
				then[k] = prev->file[i][k];
				r->count[k] += counts[k];
				r->rate[k] += per_s(counts[k], then[k], dt);
			}
		}
		break;
	case BY_CGROUP:
		rows = xcalloc(es.ncgroups, sizeof(*rows));
		for (size_t c = 0; c < es.ncgroups; c++) {
			const struct dc_cgroup_stats *cg = &es.cgroups[c];
			const char *path = c == DC_CGROUP_UNKNOWN ? NULL : cgroup_path(cg->id);
			struct row *r;

			if (!engine_cgroup_seen(cg))
				continue;
			r = &rows[n++];
			if (c == DC_CGROUP_UNKNOWN)
				snprintf(r->label, sizeof(r->label), "(cached before start)");
			else if (path)
				r->name = path;
			else
				snprintf(r->label, sizeof(r->label), "(cgroup id %llu, gone)",
					 (unsigned long long)cg->id);
			r->dup = cgroup_share[c];
			r->cached = engine_cgroup_resident(cg) * P;
			r->shared = (uint64_t)-1;
			cgroup_counts(cg, counts);
			set_rates(r, counts, prev->cgroup[c], dt);
		}
		break;
	default:
		break;
	}

	/* Remember this frame's counters. */
	prev->at = now;
	prev->totals = es.totals;
	for (size_t i = 0; i < es.nfiles && i < prev->nfiles; i++)
		file_counts(&es.files[i], prev->file[i]);
	for (size_t c = 0; c < es.ncgroups; c++)
		cgroup_counts(&es.cgroups[c], prev->cgroup[c]);
	{
		struct engine_window w;

		engine_window(t->engine, &w);
		h->untracked = w.untracked_files;
		h->cgroups_full = es.totals.cgroups_full;
	}
	free(file_share);
	free(cgroup_share);
	*nrows = n;
	return rows;
}

static void sort_rows(struct row *rows, size_t n, const struct top_opts *o)
{
	sort_col = o->sort;
	sort_reverse = o->reverse;
	qsort(rows, n, sizeof(*rows), cmp_row);
}

/* ---- plain text and JSON ---- */

static void format_header(const struct header *h, char lines[3][256])
{
	double pct = h->page_cache ? 100.0 * h->dup / h->page_cache : 0;

	snprintf(lines[0], 256, "dupcache top - %.0f s, %llu files, %llu sharing groups%s%s",
		 h->seconds, (unsigned long long)h->files, (unsigned long long)h->groups,
		 h->untracked ? ", SOME FILES UNTRACKED (maps full)" : "",
		 h->cgroups_full ? ", TOO MANY CGROUPS (some shown as unknown)" : "");
	snprintf(lines[1], 256, "Page cache %s, tracked: shared %s, cached %s, dup %s (%.1f%% of page cache)",
		 HB(h->page_cache), HB(h->shared), HB(h->cached), HB(h->dup), pct);
	snprintf(lines[2], 256, "Reclaim: kswapd wakes %.1f/s, direct stalls %.1f/s (%.2f ms), "
		 "cgroup stalls %.1f/s (%.2f ms), pages reclaimed %.0f/s",
		 h->kswapd_wakes, h->direct_stalls, h->direct_stall_ms, h->memcg_stalls,
		 h->memcg_stall_ms, h->pages_reclaimed);
}

static void format_row(const struct row *r, char *buf, size_t len)
{
	char title[PATH_MAX + 32];

	snprintf(buf, len, "%10s %10s %10s %9.0f %9.0f %9.0f %9.0f  %s", HB(r->dup), HB(r->cached),
		 r->shared == (uint64_t)-1 ? "-" : HB(r->shared), r->rate[0], r->rate[1],
		 r->rate[2], r->rate[3], row_title(r, title, sizeof(title)));
}

static void format_titles(char *buf, size_t len)
{
	snprintf(buf, len, "%10s %10s %10s %9s %9s %9s %9s  %s", col_title[0], col_title[1],
		 col_title[2], col_title[3], col_title[4], col_title[5], col_title[6], col_title[7]);
}

static void print_text(const struct header *h, const struct row *rows, size_t n,
		       const struct top_opts *o)
{
	char lines[3][256], buf[PATH_MAX + 256];

	format_header(h, lines);
	for (int i = 0; i < 3; i++)
		printf("%s\n", lines[i]);
	format_titles(buf, sizeof(buf));
	printf("\n%s\n", buf);
	for (size_t i = 0; i < n && (!o->rows || i < o->rows); i++) {
		format_row(&rows[i], buf, sizeof(buf));
		printf("%s\n", buf);
	}
	printf("\n");
	fflush(stdout);
}


static void print_json(const struct header *h, const struct row *rows, size_t n,
		       const struct top_opts *o, size_t page_size)
{
	json_object *root = json_object_new_object(), *jh = json_object_new_object();
	json_object *jr = json_object_new_array(), *rec = json_object_new_object();

	json_add_double(root, "seconds", h->seconds);
	json_object_object_add(root, "by", json_object_new_string(by_name[o->by]));
	json_add_u64(root, "page_size", page_size);
	json_add_u64(jh, "page_cache_bytes", h->page_cache);
	json_add_u64(jh, "files", h->files);
	json_add_u64(jh, "groups", h->groups);
	json_add_u64(jh, "shared_bytes", h->shared);
	json_add_u64(jh, "cached_bytes", h->cached);
	json_add_u64(jh, "dup_bytes", h->dup);
	json_add_u64(jh, "untracked_files", h->untracked);
	json_add_u64(jh, "cgroups_full_pages", h->cgroups_full);
	json_object_object_add(root, "totals", jh);
	json_add_double(rec, "kswapd_wakes_per_s", h->kswapd_wakes);
	json_add_double(rec, "direct_stalls_per_s", h->direct_stalls);
	json_add_double(rec, "direct_stall_ms", h->direct_stall_ms);
	json_add_double(rec, "memcg_stalls_per_s", h->memcg_stalls);
	json_add_double(rec, "memcg_stall_ms", h->memcg_stall_ms);
	json_add_double(rec, "pages_reclaimed_per_s", h->pages_reclaimed);
	json_object_object_add(root, "reclaim", rec);
	for (size_t i = 0; i < n && (!o->rows || i < o->rows); i++) {
		const struct row *r = &rows[i];
		json_object *j = json_object_new_object();

		char title[PATH_MAX + 32];

		json_object_object_add(j, "name",
				       json_object_new_string(row_title(r, title, sizeof(title))));
		json_add_u64(j, "dup_bytes", r->dup);
		json_add_u64(j, "cached_bytes", r->cached);
		if (r->shared != (uint64_t)-1)
			json_add_u64(j, "shared_bytes", r->shared);
		json_add_double(j, "added_per_s", r->rate[0]);
		json_add_double(j, "removed_per_s", r->rate[1]);
		json_add_double(j, "reclaimed_per_s", r->rate[2]);
		json_add_double(j, "refaults_per_s", r->rate[3]);
		json_add_u64(j, "added", r->count[0]);
		json_add_u64(j, "removed", r->count[1]);
		json_add_u64(j, "reclaimed", r->count[2]);
		json_add_u64(j, "refaults", r->count[3]);
		json_object_array_add(jr, j);
	}
	json_object_object_add(root, "rows", jr);
	printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(root);
}

/* ---- the screen ---- */

static void draw(const struct header *h, const struct row *rows, size_t n, const struct top_opts *o,
		 bool paused, bool help)
{
	char lines[3][256], buf[PATH_MAX + 256];
	int y = 0, maxy = getmaxy(stdscr);

	erase();
	format_header(h, lines);
	for (int i = 0; i < 3; i++)
		mvprintw(y++, 0, "%s", lines[i]);
	mvprintw(y++, 0, "by %s, sort %s%s, every %.1f s%s   (h for help)", by_name[o->by],
		 col_name[o->sort], o->reverse ? " reversed" : "", o->delay, paused ? ", PAUSED" : "");
	y++;
	format_titles(buf, sizeof(buf));
	attron(A_REVERSE);
	mvprintw(y++, 0, "%-*s", COLS, buf);
	attroff(A_REVERSE);
	if (help) {
		mvprintw(y++, 0, "q quit   s or > next sort column   < previous sort column   r reverse");
		mvprintw(y++, 0, "g rows by group / file / cgroup   p pause   h this help");
	}
	for (size_t i = 0; i < n && y < maxy && (!o->rows || i < o->rows); i++) {
		format_row(&rows[i], buf, sizeof(buf));
		mvprintw(y++, 0, "%.*s", COLS, buf);
	}
	refresh();
}

/* Keys; true when the view must be redrawn from fresh data. */
static bool handle_key(int ch, struct top_opts *o, bool *paused, bool *help, bool *quit)
{
	switch (ch) {
	case 'q':
		*quit = true;
		return false;
	case 's':
	case '>':
		o->sort = (o->sort + 1) % C_COUNT;
		return true;
	case '<':
		o->sort = (o->sort + C_COUNT - 1) % C_COUNT;
		return true;
	case 'r':
		o->reverse = !o->reverse;
		return true;
	case 'g':
		o->by = (o->by + 1) % BY_COUNT;
		return true;
	case 'p':
		*paused = !*paused;
		return true;
	case 'h':
		*help = !*help;
		return true;
	case KEY_RESIZE:
		return true;
	default:
		return false;
	}
}

int cmd_top(int argc, char **argv)
{
	struct top_opts o;
	struct tracker t;
	struct prev prev = { 0 };
	struct header h;
	struct row *rows = NULL;
	size_t nrows = 0;
	bool screen, paused = false, help = false, quit = false;
	long long started, next;
	uint64_t frames = 0;
	int ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	ret = tracker_start(&t, argv + optind, argc - optind, &o.scan);
	if (ret) {
		tracker_stop(&t);
		return ret;
	}
	stop_on_signals();
	screen = !o.batch && !o.json;
	if (screen) {
		initscr();
		cbreak();
		noecho();
		keypad(stdscr, TRUE);
		curs_set(0);
	}
	started = monotonic_ns();
	prev.at = started;
	prev.generation = (uint64_t)-1;
	free(collect(&t, o.by, &prev, &h, &nrows, started)); /* baseline for rates */
	next = started + (long long)(o.delay * 1e9);
	while (!stop_signal && !quit) {
		long long now = monotonic_ns();
		bool redraw = false;

		ret = tracker_poll(&t, false);
		if (ret)
			break;
		if (now >= next) {
			next += (long long)(o.delay * 1e9);
			if (next < now)
				next = now + (long long)(o.delay * 1e9);
			if (!paused) {
				free(rows);
				rows = collect(&t, o.by, &prev, &h, &nrows, started);
				redraw = true;
				if (!screen) {
					sort_rows(rows, nrows, &o);
					if (o.json)
						print_json(&h, rows, nrows, &o, t.scan.page_size);
					else
						print_text(&h, rows, nrows, &o);
					if (o.frames && ++frames >= o.frames)
						break;
				}
			}
		}
		if (screen) {
			int ch;

			timeout(100);
			ch = getch();
			if (ch != ERR && handle_key(ch, &o, &paused, &help, &quit) && !paused) {
				/* A new grouping needs new rows; the rest re-sorts what we have. */
				free(rows);
				rows = collect(&t, o.by, &prev, &h, &nrows, started);
			}
			if (rows && (redraw || ch != ERR)) {
				sort_rows(rows, nrows, &o);
				draw(&h, rows, nrows, &o, paused, help);
			}
		} else {
			nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
		}
	}
	if (screen)
		endwin();
	free(rows);
	free(prev.file);
	if (!ret && t.scan.input_lost)
		ret = EXIT_PARTIAL;
	tracker_stop(&t);
	return ret;
}
