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

enum by { BY_GROUP, BY_FILE, BY_CGROUP, BY_PROCESS, BY_COUNT };
static const char *const by_name[] = { "group", "file", "cgroup", "process" };

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
	size_t file;                  /* group and file rows: the scan index of `name` */
	uint32_t group;               /* group and file rows: extent map group, DC_NO_GROUP */
	uint64_t cgroup_id;           /* cgroup rows: the kernel's id, 0 when unknown */
	uint32_t pid;                 /* process rows: the tgid, DC_TASKS_FULL for the rest */
	const char *comm;             /* process rows */
	uint64_t dup_added;           /* process rows: duplicate copies its adds made, pages */
	double dup_rate;              /* the same per second */
	uint64_t dup, cached, shared; /* bytes; shared is -1 where it means nothing */
	double rate[4];               /* added, removed, reclaimed, refaults: pages/s */
	uint64_t count[4];            /* the same since start of row's counters */
	uint32_t rank;                /* group and file rows: its name's order (prev.name_rank), 0 other rows */
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
	uint32_t *name_rank;          /* by scan index: 1 + the place of its path in name order */
	uint64_t shared;              /* the scan's shared bytes, all files */
	uint64_t cgroup[DC_MAX_CGROUPS][4];
	struct engine_task *tasks;    /* by tgid, with attribution (--by process) */
	size_t ntasks;
	struct row *rows;             /* the frame's rows, reused: no fresh pages to fault in */
	size_t rows_cap;
};

/* n zeroed rows in prev's buffer, grown if need be. */
static struct row *frame_rows(struct prev *prev, size_t n)
{
	if (!prev->rows || n > prev->rows_cap) { /* never NULL, even for no rows */
		prev->rows_cap = n > prev->rows_cap ? n : prev->rows_cap ? prev->rows_cap : 1;
		prev->rows = xrealloc(prev->rows, prev->rows_cap, sizeof(*prev->rows));
	}
	memset(prev->rows, 0, n * sizeof(*prev->rows));
	return prev->rows;
}

static const char usage[] =
	"usage: dupcache top [-d SECONDS] [-s KEY] [-r ROWS] [--by group|file|cgroup|process]\n"
	"                    [-b] [--frames COUNT] [--json] [-x] PATH...\n"
	"  -d SECONDS     refresh interval (default 1)\n"
	"  -s KEY         sort by dup, cached, shared, added, removed, reclaimed, refaults, name\n"
	"  -r ROWS        rows to show (default: what fits; all in batch mode)\n"
	"  --by WHAT      one row per sharing group (default), file, memory cgroup, or process\n"
	"                 (process: the readers that added duplicates; loads the attribution)\n"
	"  -b             batch mode: plain text frames (the default when stdout is no terminal)\n"
	"  --frames COUNT frames to print in batch or JSON mode, then exit (default: until ^C);\n"
	"                 -n COUNT is the same\n"
	"  --json         one JSON object per interval (JSON Lines)\n"
	"  -x             stay on the filesystem of each PATH\n"
	"keys: q quit, s/< > sort column, r reverse, g group/file/cgroup, p pause, h help,\n"
	"      Up/Down/PgUp/PgDn/Home/End select, Enter a group's files, Esc/Left back,\n"
	"      / search, n next match, f or \\ filter, d delay\n";

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
				msg("top: --by takes group, file, cgroup or process, not '%s'", optarg);
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
	/* the process view needs the engine's attribution, which costs only when loaded */
	engine_attribute_tasks(o->by == BY_PROCESS);
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

static int cmp_task(const void *a, const void *b)
{
	const struct engine_task *x = a, *y = b;

	return x->tgid < y->tgid ? -1 : x->tgid > y->tgid;
}

static const struct engine_task *find_task(const struct prev *prev, uint32_t tgid)
{
	struct engine_task key = { .tgid = tgid };

	return prev->ntasks ? bsearch(&key, prev->tasks, prev->ntasks, sizeof(key), cmp_task) : NULL;
}

/* Process rows' names ("PID COMM CGROUP"): valid until the next collect(). */
static char (*task_names)[PATH_MAX + 64];

static enum col sort_col;
static bool sort_reverse;

static const char *row_name(const struct row *r)
{
	return r->name ? r->name : r->label;
}

/* The name as shown: a group's first member and how many more. */
static const char *row_title(const struct row *r, char *buf, size_t len)
{
	if (r->comm)
		return row_name(r);
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

/* Name order; ranks, where both rows have one, say it without comparing strings. */
static int cmp_names(const struct row *x, const struct row *y)
{
	if (x->rank && y->rank)
		return x->rank < y->rank ? -1 : x->rank > y->rank;
	return strcmp(row_name(x), row_name(y));
}

static int cmp_row(const void *a, const void *b)
{
	const struct row *x = a, *y = b;
	int d;

	if (sort_col == C_NAME) {
		d = cmp_names(x, y);
	} else {
		double kx = row_key(x, sort_col), ky = row_key(y, sort_col);

		d = kx > ky ? -1 : kx < ky; /* biggest first */
		if (!d)
			d = cmp_names(x, y);
	}
	return sort_reverse ? -d : d;
}

static int cmp_path_index(const void *a, const void *b, void *files)
{
	const struct scanned_file *f = files;

	return strcmp(f[*(const uint32_t *)a].path, f[*(const uint32_t *)b].path);
}

/*
 * Each scanned file's place in name order, once per scan: rows tied on the
 * sort key (most, at a million files) then compare two integers, not paths.
 */
static void rank_names(struct prev *prev, const struct scan *s)
{
	uint32_t *order = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(*order));

	free(prev->name_rank);
	prev->name_rank = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(*prev->name_rank));
	for (size_t i = 0; i < s->nfiles; i++)
		order[i] = i;
	qsort_r(order, s->nfiles, sizeof(*order), cmp_path_index, s->files);
	for (size_t i = 0; i < s->nfiles; i++)
		prev->name_rank[order[i]] = i + 1;
	free(order);
}

/*
 * One frame's rows and header from the engine; rates against `prev`.
 * only_group (not DC_NO_GROUP): file rows of that group's members only.
 */
static struct row *collect(struct tracker *t, enum by by, uint32_t only_group, struct prev *prev,
			   struct header *h, size_t *nrows, long long started)
{
	const struct scan *s = &t->scan;
	const struct extmap *m = &t->map;
	const uint64_t P = s->page_size;
	long long now = monotonic_ns();
	double dt = (now - prev->at) / 1e9;
	struct engine_sample es;
	struct engine_task *tasks = NULL;
	size_t ntasks;
	uint64_t *file_share = NULL, *cgroup_share = NULL;
	uint64_t counts[4];
	struct row *rows = NULL;
	size_t n = 0;

	engine_sample(t->engine, &es);
	/* every frame, whatever the view: the rates need the last frame's counts */
	ntasks = engine_tasks(t->engine, &tasks);
	if (ntasks)
		qsort(tasks, ntasks, sizeof(*tasks), cmp_task);
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
		rank_names(prev, s);
		/* the scan's figure: the same for every frame until the next rebuild */
		prev->shared = 0;
		for (size_t i = 0; i < s->nfiles; i++)
			prev->shared += s->files[i].shared_bytes;
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
	h->shared = prev->shared;
	for (size_t i = 0; i < es.nfiles; i++)
		h->cached += engine_file_resident(&es.files[i]) * P;

	switch (by) {
	case BY_FILE:
		rows = frame_rows(prev, s->nfiles);
		for (size_t i = 0; i < s->nfiles && i < es.nfiles; i++) {
			struct row *r;

			if (only_group != DC_NO_GROUP && m->file_group[i] != only_group)
				continue;
			r = &rows[n++];
			r->name = s->files[i].path;
			r->rank = prev->name_rank[i];
			r->file = i;
			r->group = m->file_group[i];
			r->dup = file_share[i];
			r->cached = engine_file_resident(&es.files[i]) * P;
			r->shared = s->files[i].shared_bytes;
			file_counts(&es.files[i], counts);
			set_rates(r, counts, prev->file[i], dt);
		}
		break;
	case BY_GROUP:
		rows = frame_rows(prev, m->ngroups);
		n = m->ngroups;
		for (uint32_t g = 0; g < m->ngroups; g++) {
			rows[g].group = g;
			if (g < es.ngroups)
				rows[g].dup = es.groups[g].dup * P;
		}
		for (size_t i = 0; i < s->nfiles && i < es.nfiles; i++) {
			uint32_t g = m->file_group[i];
			uint64_t then[4];
			struct row *r;

			if (g == DC_NO_GROUP || g >= n)
				continue;
			r = &rows[g];
			if (!r->name) {
				r->name = s->files[i].path;
				r->rank = prev->name_rank[i];
				r->file = i;
			} else
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
		rows = frame_rows(prev, es.ncgroups);
		for (size_t c = 0; c < es.ncgroups; c++) {
			const struct dc_cgroup_stats *cg = &es.cgroups[c];
			const char *path = c == DC_CGROUP_UNKNOWN ? NULL : cgroup_path(cg->id);
			struct row *r;

			if (!engine_cgroup_seen(cg))
				continue;
			r = &rows[n++];
			r->cgroup_id = c == DC_CGROUP_UNKNOWN ? 0 : cg->id;
			r->group = DC_NO_GROUP;
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
	case BY_PROCESS:
		rows = frame_rows(prev, ntasks ? ntasks : 1);
		task_names = xrealloc(task_names, ntasks ? ntasks : 1, sizeof(*task_names));
		for (size_t k = 0; k < ntasks; k++) {
			const struct dc_task *x = &tasks[k].t;
			const struct engine_task *old = find_task(prev, tasks[k].tgid);
			uint64_t then[4] = { old ? old->t.added : 0 };
			char cg[PATH_MAX];
			const char *where;
			struct row *r;

			if (tasks[k].tgid == DC_TASKS_FULL && !x->added)
				continue; /* the map never ran full */
			r = &rows[n];
			r->group = DC_NO_GROUP;
			r->pid = tasks[k].tgid;
			r->comm = x->comm;
			r->cgroup_id = x->cgroup_id;
			if (r->pid == DC_TASKS_FULL) {
				snprintf(task_names[n], sizeof(task_names[n]),
					 "(other processes: the task map was full)");
			} else {
				where = cgroup_of_pid(r->pid, cg, sizeof(cg));
				snprintf(task_names[n], sizeof(task_names[n]), "%u %.16s %s", r->pid,
					 x->comm, where ? where : "(exited)");
			}
			r->name = task_names[n];
			n++;
			r->dup = x->dup_added * P;
			r->cached = x->added * P;
			r->shared = (uint64_t)-1;
			r->dup_added = x->dup_added;
			r->dup_rate = per_s(x->dup_added, old ? old->t.dup_added : 0, dt);
			set_rates(r, (uint64_t[4]){ x->added }, then, dt);
		}
		break;
	default:
		break;
	}

	/* Remember this frame's counters. */
	free(prev->tasks);
	prev->tasks = tasks;
	prev->ntasks = ntasks;
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

/* sift_down for a heap of row indices whose top is the row that sorts last */
static void heap_sift(const struct row *rows, size_t *heap, size_t n, size_t at)
{
	for (;;) {
		size_t big = at, l = 2 * at + 1, r = l + 1, t;

		if (l < n && cmp_row(&rows[heap[l]], &rows[heap[big]]) > 0)
			big = l;
		if (r < n && cmp_row(&rows[heap[r]], &rows[heap[big]]) > 0)
			big = r;
		if (big == at)
			return;
		t = heap[at], heap[at] = heap[big], heap[big] = t;
		at = big;
	}
}

static int cmp_row_index(const void *a, const void *b, void *rows)
{
	const struct row *r = rows;

	return cmp_row(&r[*(const size_t *)a], &r[*(const size_t *)b]);
}

/*
 * Rows in order, the first `need` of them at least (0: all); the rest
 * follow in no order.  A frame shows a page: the first `need` are picked in
 * one pass (a heap of `need`, most rows rejected by one compare) and only
 * they are sorted and moved, not every row of a million-file tree.
 */
static void sort_rows(struct row *rows, size_t n, const struct top_opts *o, size_t need)
{
	size_t *heap, *displaced, nd = 0, h = 0;
	struct row *picked;
	bool *front_picked;

	sort_col = o->sort;
	sort_reverse = o->reverse;
	if (!need || need >= n / 2) {
		qsort(rows, n, sizeof(*rows), cmp_row);
		return;
	}
	heap = xcalloc(need, sizeof(*heap));
	for (size_t i = 0; i < n; i++) {
		if (h < need) {
			heap[h++] = i;
			if (h == need)
				for (size_t k = need / 2; k-- > 0;)
					heap_sift(rows, heap, need, k);
		} else if (cmp_row(&rows[i], &rows[heap[0]]) < 0) {
			heap[0] = i;
			heap_sift(rows, heap, need, 0);
		}
	}
	qsort_r(heap, need, sizeof(*heap), cmp_row_index, rows);
	/* The picked rows go to the front in order; the front's others take their places. */
	picked = xcalloc(need, sizeof(*picked));
	displaced = xcalloc(need, sizeof(*displaced));
	front_picked = xcalloc(need, sizeof(*front_picked));

	for (size_t k = 0; k < need; k++) {
		picked[k] = rows[heap[k]];
		if (heap[k] < need)
			front_picked[heap[k]] = true;
	}
	for (size_t i = 0; i < need; i++)
		if (!front_picked[i])
			displaced[nd++] = i;
	for (size_t k = 0, d = 0; k < need; k++)
		if (heap[k] >= need)
			rows[heap[k]] = rows[displaced[d++]];
	memcpy(rows, picked, need * sizeof(*rows));
	free(front_picked);
	free(displaced);
	free(picked);
	free(heap);
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


/* The wall clock: RFC 3339 in UTC with milliseconds, and Unix seconds. */
static void json_add_time(json_object *root)
{
	struct timespec ts;
	struct tm tm;
	char buf[64];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), ".%03ldZ", ts.tv_nsec / 1000000);
	json_object_object_add(root, "time", json_object_new_string(buf));
	json_add_double(root, "unix_time", ts.tv_sec + ts.tv_nsec / 1e9);
}

/* Ids that name a row across frames (see README: JSON Lines). */
static void json_add_ids(json_object *j, const struct row *r, enum by by, const struct scan *s)
{
	if (by == BY_PROCESS) {
		json_object_object_add(j, "pid", r->pid == DC_TASKS_FULL ? NULL
							 : json_object_new_uint64(r->pid));
		json_object_object_add(j, "comm", json_object_new_string(r->comm));
		json_object_object_add(j, "cgroup_id", r->cgroup_id ? json_object_new_uint64(r->cgroup_id)
								    : NULL);
		json_add_u64(j, "dup_added", r->dup_added);
		json_add_double(j, "dup_added_per_s", r->dup_rate);
		return;
	}
	if (by == BY_CGROUP) {
		json_object_object_add(j, "cgroup_id",
				       r->cgroup_id ? json_object_new_uint64(r->cgroup_id) : NULL);
		return;
	}
	json_object_object_add(j, "group_id",
			       r->group == DC_NO_GROUP ? NULL : json_object_new_uint64(r->group));
	json_object_object_add(j, "path", json_object_new_string(s->files[r->file].path));
	json_add_u64(j, "dev", file_st_dev(&s->files[r->file]));
	json_add_u64(j, "ino", s->files[r->file].ino);
	if (by == BY_GROUP)
		json_add_u64(j, "files", r->more + 1);
}

static void print_json(const struct header *h, const struct row *rows, size_t n,
		       const struct top_opts *o, const struct scan *s)
{
	json_object *root = json_object_new_object(), *jh = json_object_new_object();
	json_object *jr = json_object_new_array(), *rec = json_object_new_object();

	json_add_time(root);
	json_add_double(root, "seconds", h->seconds);
	json_object_object_add(root, "by", json_object_new_string(by_name[o->by]));
	json_add_u64(root, "page_size", s->page_size);
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
		json_add_ids(j, r, o->by, s);
		json_object_array_add(jr, j);
	}
	json_object_object_add(root, "rows", jr);
	printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(root);
}

/* ---- the screen ---- */

/* What the screen shows besides the data: selection, search, filter, drill-down. */
struct ui {
	size_t sel, first;      /* selected row and first row shown, of the filtered rows */
	char *sel_name;         /* the selected row's name: kept across refreshes and sorts */
	char search[200];       /* last '/' text: n jumps to its next match */
	char filter[200];       /* rows whose name holds this (any case); "" = all */
	char *open;             /* Enter on a group: its first member's path; NULL = none */
	char status[320];       /* a message on the bottom line until the next key */
	bool paused, help, quit;
	bool refresh;           /* new rows needed (grouping, drill-down, delay) */
};

static const char *const help_lines[] = {
	"q quit   s or > next sort column   < previous sort column   r reverse",
	"g rows by group / file / cgroup   p pause   h this help",
	"Up/Down PgUp/PgDn Home/End select   Enter files of a group   Esc/Left/Backspace back",
	"/ search   n next match   f or \\ filter names   d delay",
};
#define HELP_LINES (sizeof(help_lines) / sizeof(help_lines[0]))

static bool row_matches(const struct row *r, const char *text)
{
	char title[PATH_MAX + 32];

	return strcasestr(row_title(r, title, sizeof(title)), text) != NULL;
}

/* Keeps the rows the filter lets through, in order. */
static void filter_rows(struct row *rows, size_t *n, const char *filter)
{
	size_t k = 0;

	if (!*filter)
		return;
	for (size_t i = 0; i < *n; i++)
		if (row_matches(&rows[i], filter))
			rows[k++] = rows[i];
	*n = k;
}

/* The drill-down's group now (ids change with a rebuild), or DC_NO_GROUP. */
static uint32_t open_group(const struct tracker *t, const struct ui *u)
{
	for (size_t i = 0; u->open && i < t->scan.nfiles; i++)
		if (!strcmp(t->scan.files[i].path, u->open))
			return t->map.file_group[i];
	return DC_NO_GROUP;
}

/* Rows the screen has room for below the titles (the last line is the status line). */
static size_t page_rows(const struct top_opts *o, const struct ui *u)
{
	int n = getmaxy(stdscr) - 6 - (u->help ? (int)HELP_LINES : 0) - 1;

	if (n < 1)
		n = 1;
	return o->rows && o->rows < (uint64_t)n ? o->rows : (size_t)n;
}

static void select_row(struct ui *u, const struct row *rows, size_t n, size_t sel)
{
	u->sel = n ? (sel < n ? sel : n - 1) : 0;
	free(u->sel_name);
	u->sel_name = n ? xstrdup(row_name(&rows[u->sel])) : NULL;
}

/* After new rows or a new order: the selected row again, by name. */
static void keep_selection(struct ui *u, const struct row *rows, size_t n)
{
	for (size_t i = 0; u->sel_name && i < n; i++)
		if (!strcmp(row_name(&rows[i]), u->sel_name)) {
			u->sel = i;
			return;
		}
	select_row(u, rows, n, u->sel);
}

static void draw(const struct header *h, const struct row *rows, size_t n, const struct top_opts *o,
		 struct ui *u)
{
	char lines[3][256], buf[PATH_MAX + 256], where[PATH_MAX + 64] = "", extra[600] = "";
	size_t page = page_rows(o, u), shown = n;
	int y = 0, maxy = getmaxy(stdscr);

	if (o->rows && o->rows < shown)
		shown = o->rows;
	if (u->sel >= shown)
		u->sel = shown ? shown - 1 : 0;
	if (u->sel < u->first)
		u->first = u->sel;
	if (u->sel >= u->first + page)
		u->first = u->sel - page + 1;
	if (u->first + page > shown)
		u->first = shown > page ? shown - page : 0;
	erase();
	format_header(h, lines);
	for (int i = 0; i < 3; i++)
		mvprintw(y++, 0, "%s", lines[i]);
	if (u->open)
		snprintf(where, sizeof(where), ": files of the group of %s", u->open);
	if (*u->filter)
		snprintf(extra, sizeof(extra), ", filter '%s'", u->filter);
	if (shown > page)
		snprintf(extra + strlen(extra), sizeof(extra) - strlen(extra), ", rows %zu-%zu of %zu",
			 u->first + 1, u->first + page < shown ? u->first + page : shown, shown);
	mvprintw(y++, 0, "by %s%s, sort %s%s, every %.1f s%s%s   (h for help)", by_name[o->by], where,
		 col_name[o->sort], o->reverse ? " reversed" : "", o->delay,
		 u->paused ? ", PAUSED" : "", extra);
	y++;
	format_titles(buf, sizeof(buf));
	attron(A_REVERSE);
	mvprintw(y++, 0, "%-*s", COLS, buf);
	attroff(A_REVERSE);
	if (u->help)
		for (size_t i = 0; i < HELP_LINES; i++)
			mvprintw(y++, 0, "%s", help_lines[i]);
	for (size_t i = u->first; i < shown && i < u->first + page && y < maxy - 1; i++) {
		format_row(&rows[i], buf, sizeof(buf));
		if (i == u->sel) { /* the selection: a bar the width of the screen */
			attron(A_BOLD | A_REVERSE);
			mvprintw(y++, 0, "%-*.*s", COLS, COLS, buf);
			attroff(A_BOLD | A_REVERSE);
		} else {
			mvprintw(y++, 0, "%.*s", COLS, buf);
		}
	}
	if (*u->status)
		mvprintw(maxy - 1, 0, "%.*s", COLS, u->status);
	refresh();
}

/* A line typed on the bottom row (the frames wait meanwhile); false when empty. */
static bool prompt(const char *label, char *buf, size_t len)
{
	int maxy = getmaxy(stdscr);

	move(maxy - 1, 0);
	clrtoeol();
	mvprintw(maxy - 1, 0, "%s", label);
	echo();
	curs_set(1);
	timeout(-1);
	if (getnstr(buf, (int)len - 1) == ERR)
		buf[0] = 0;
	noecho();
	curs_set(0);
	return buf[0] != 0;
}

/* The next row after the selection (wrapping) whose name holds the text. */
static void search_next(struct ui *u, const struct row *rows, size_t n)
{
	for (size_t k = 1; k <= n; k++) {
		size_t i = (u->sel + k) % n;

		if (row_matches(&rows[i], u->search)) {
			select_row(u, rows, n, i);
			return;
		}
	}
	snprintf(u->status, sizeof(u->status), "no row matches '%s'", u->search);
}

/* One key; rows are the filtered, sorted rows shown. */
static void handle_key(int ch, struct top_opts *o, struct ui *u, const struct row *rows, size_t n,
		       long long *next)
{
	size_t page = page_rows(o, u);
	char buf[200];

	u->status[0] = 0;
	switch (ch) {
	case 'q':
		u->quit = true;
		break;
	case 's':
	case '>':
		o->sort = (o->sort + 1) % C_COUNT;
		break;
	case '<':
		o->sort = (o->sort + C_COUNT - 1) % C_COUNT;
		break;
	case 'r':
		o->reverse = !o->reverse;
		break;
	case 'g':
		free(u->open);
		u->open = NULL;
		/* the process view only where the engine was loaded with attribution */
		o->by = (o->by + 1) % (engine_attributes_tasks() ? BY_COUNT : BY_PROCESS);
		u->refresh = true;
		break;
	case 'p':
		u->paused = !u->paused;
		u->refresh = !u->paused;
		break;
	case 'h':
		u->help = !u->help;
		break;
	case KEY_UP:
	case 'k':
		select_row(u, rows, n, u->sel ? u->sel - 1 : 0);
		break;
	case KEY_DOWN:
	case 'j':
		select_row(u, rows, n, u->sel + 1);
		break;
	case KEY_PPAGE:
		select_row(u, rows, n, u->sel > page ? u->sel - page : 0);
		break;
	case KEY_NPAGE:
		select_row(u, rows, n, u->sel + page);
		break;
	case KEY_HOME:
		select_row(u, rows, n, 0);
		break;
	case KEY_END:
		select_row(u, rows, n, n ? n - 1 : 0);
		break;
	case '\n':
	case '\r':
	case KEY_ENTER:
		if (o->by == BY_GROUP && !u->open && n) {
			u->open = xstrdup(row_name(&rows[u->sel]));
			u->refresh = true;
			select_row(u, rows, 0, 0);
		}
		break;
	case 27: /* Esc */
	case KEY_LEFT:
	case KEY_BACKSPACE:
	case 127:
	case '\b':
		if (u->open) {
			/* back on the group's row */
			free(u->sel_name);
			u->sel_name = u->open;
			u->open = NULL;
			u->refresh = true;
		}
		break;
	case '/':
		if (prompt("search: ", u->search, sizeof(u->search)))
			search_next(u, rows, n);
		break;
	case 'n':
		if (*u->search)
			search_next(u, rows, n);
		break;
	case 'f':
	case '\\':
		prompt("filter (empty: none): ", u->filter, sizeof(u->filter));
		u->refresh = true;
		break;
	case 'd':
		if (prompt("delay (seconds, 0.1 to 3600): ", buf, sizeof(buf))) {
			char *end;
			double d = strtod(buf, &end);

			if (*end || !(d >= 0.1 && d <= 3600)) {
				snprintf(u->status, sizeof(u->status),
					 "the delay is 0.1 to 3600 seconds, not '%s'", buf);
			} else {
				o->delay = d;
				*next = monotonic_ns() + (long long)(d * 1e9);
			}
		}
		break;
	default:
		break;
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
	struct ui u = { 0 };
	bool screen;
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
	stop_on_signals(false); /* a prompt's read must end on ^C */
	screen = !o.batch && !o.json;
	if (screen) {
		initscr();
		cbreak();
		noecho();
		keypad(stdscr, TRUE);
		set_escdelay(25); /* Esc alone: back from a group at once */
		curs_set(0);
	}
	started = monotonic_ns();
	prev.at = started;
	prev.generation = (uint64_t)-1;
	collect(&t, o.by, DC_NO_GROUP, &prev, &h, &nrows, started); /* baseline for rates */
	next = started + (long long)(o.delay * 1e9);
	while (!stop_signal && !u.quit) {
		long long now = monotonic_ns();
		bool redraw = false, stale;

		ret = tracker_poll(&t, false);
		if (ret)
			break;
		/* A rebuild freed the paths the shown rows name: new rows at once, even paused. */
		stale = screen && prev.generation != t.generation;

		if (now >= next || u.refresh || stale) {
			if (now >= next) {
				next += (long long)(o.delay * 1e9);
				if (next < now)
					next = now + (long long)(o.delay * 1e9);
			}
			if (!u.paused || stale) {
				uint32_t g = screen ? open_group(&t, &u) : DC_NO_GROUP;

				if (u.open && g == DC_NO_GROUP) { /* the group is gone */
					free(u.open);
					u.open = NULL;
				}
				rows = collect(&t, u.open ? BY_FILE : o.by, g, &prev, &h, &nrows, started);
				redraw = true;
				if (!screen) {
					sort_rows(rows, nrows, &o, o.rows);
					if (o.json)
						print_json(&h, rows, nrows, &o, &t.scan);
					else
						print_text(&h, rows, nrows, &o);
					if (o.frames && ++frames >= o.frames)
						break;
				}
			}
			u.refresh = false;
		}
		if (screen) {
			int ch;

			if (rows && redraw) {
				/* what the page shows, and a page more for the selection to move */
				size_t need = u.sel + 2 * page_rows(&o, &u);

				filter_rows(rows, &nrows, u.filter);
				sort_rows(rows, nrows, &o, need);
				keep_selection(&u, rows, nrows);
				if (u.sel >= need) { /* the selected row fell behind: all in order */
					sort_rows(rows, nrows, &o, 0);
					keep_selection(&u, rows, nrows);
				}
			}
			if (rows && redraw)
				draw(&h, rows, nrows, &o, &u);
			timeout(100);
			ch = getch();
			if (ch != ERR && rows) {
				enum col was_sort = o.sort;
				bool was_reverse = o.reverse;

				/* a key may move the selection anywhere: every row in order first */
				sort_rows(rows, nrows, &o, 0);
				keep_selection(&u, rows, nrows);
				handle_key(ch, &o, &u, rows, nrows, &next);
				if (o.sort != was_sort || o.reverse != was_reverse)
					sort_rows(rows, nrows, &o, 0);
				keep_selection(&u, rows, nrows);
				if (!u.refresh || u.paused)
					draw(&h, rows, nrows, &o, &u);
			}
		} else {
			nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
		}
	}
	if (screen)
		endwin();
	free(prev.rows);
	free(prev.file);
	free(prev.name_rank);
	free(prev.tasks);
	free(task_names);
	free(u.sel_name);
	free(u.open);
	if (!ret && t.scan.input_lost)
		ret = EXIT_PARTIAL;
	tracker_stop(&t);
	return ret;
}
