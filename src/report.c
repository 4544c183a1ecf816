// SPDX-License-Identifier: GPL-2.0
/* dupcache report: the dedup opportunity now, or over a watched window. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "commands.h"
#include "engine.h"
#include "extmap.h"
#include "output.h"
#include "scan.h"
#include "stats.h"
#include "tracker.h"
#include "util.h"

#define POLL_NS 50000000LL

static const char usage[] =
	"usage: dupcache report [--json | --csv] [--files] [--bytes] [--watch SECONDS] [-n TOP]\n"
	"                       [--include GLOB]... [--exclude GLOB]... [--min-size SIZE] [-x]\n"
	"                       PATH... | --files0-from FILE\n"
	"  --json           one JSON object on stdout (schema in README.md)\n"
	"  --csv            the listed rows (groups, or files with --files) as CSV, bytes\n"
	"  --files          list files (path, size, cached, shared, dup share), not groups\n"
	"  --bytes          raw byte counts instead of KiB/MiB/GiB\n"
	"  --watch SECONDS  track the page cache in the kernel (BPF) for that long\n"
	"  -n, --top TOP    rows to list (default 10 groups, or every file with --files; 0 = all)\n"
	"  --include GLOB   only files matching GLOB (repeatable; any of them)\n"
	"  --exclude GLOB   leave out files and directories matching GLOB (repeatable)\n"
	"                   GLOB with a '/' matches the path below PATH, else the name\n"
	"  --min-size SIZE  leave out files smaller than SIZE (e.g. 4096, 64K, 1.5MiB)\n"
	"  --files0-from FILE  the PATHs, NUL-separated, from FILE ('-': stdin)\n"
	"  -x, --one-file-system  stay on the filesystem of each PATH\n";

#define MAX_PATTERNS 64

struct report_opts {
	bool json, csv, files, bytes;
	double watch;      /* seconds; 0 = snapshot */
	uint64_t top;
	bool top_given;
	const char *files0_from;
	char *include[MAX_PATTERNS], *exclude[MAX_PATTERNS];
	struct scan_opts scan;
};

static bool add_pattern(char **list, size_t *n, const char *opt, char *arg)
{
	const char *why = scan_pattern_error(arg);

	if (why) {
		msg("report: %s '%s': %s", opt, arg, why);
		return false;
	}
	if (*n == MAX_PATTERNS) {
		msg("report: at most %d %s patterns", MAX_PATTERNS, opt);
		return false;
	}
	list[(*n)++] = arg;
	return true;
}

static int parse_opts(int argc, char **argv, struct report_opts *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "watch", required_argument, NULL, 'w' },
		{ "top", required_argument, NULL, 'n' },
		{ "one-file-system", no_argument, NULL, 'x' },
		{ "csv", no_argument, NULL, 'C' },
		{ "files", no_argument, NULL, 'F' },
		{ "bytes", no_argument, NULL, 'b' },
		{ "include", required_argument, NULL, 'I' },
		{ "exclude", required_argument, NULL, 'E' },
		{ "min-size", required_argument, NULL, 'M' },
		{ "files0-from", required_argument, NULL, '0' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct scan_filter *f = &o->scan.filter;
	int c;

	*o = (struct report_opts){ .top = 10 };
	f->include = o->include;
	f->exclude = o->exclude;
	opterr = 0; /* our own one-line messages */
	while ((c = getopt_long(argc, argv, ":n:xh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'w':
			if (!opt_seconds("report", "--watch", optarg, 0.001, 86400 * 365, &o->watch))
				return EXIT_USAGE;
			break;
		case 'n':
			if (!opt_count("report", "-n", optarg, &o->top))
				return EXIT_USAGE;
			o->top_given = true;
			break;
		case 'C':
			o->csv = true;
			break;
		case 'F':
			o->files = true;
			break;
		case 'b':
			o->bytes = true;
			break;
		case 'I':
			if (!add_pattern(o->include, &f->ninclude, "--include", optarg))
				return EXIT_USAGE;
			break;
		case 'E':
			if (!add_pattern(o->exclude, &f->nexclude, "--exclude", optarg))
				return EXIT_USAGE;
			break;
		case 'M':
			if (!opt_size("report", "--min-size", optarg, &f->min_size))
				return EXIT_USAGE;
			break;
		case '0':
			o->files0_from = optarg;
			break;
		default:
			if (opt_common("report", c, usage, &o->scan.one_fs, argv))
				return EXIT_USAGE;
			break;
		}
	}
	if (o->json && o->csv) {
		msg("report: --json and --csv exclude each other");
		return EXIT_USAGE;
	}
	if (o->files && !o->top_given)
		o->top = 0; /* every file */
	if (o->files0_from && optind < argc) {
		msg("report: PATH '%s' given with --files0-from: the paths come from %s alone",
		    argv[optind], o->files0_from);
		return EXIT_USAGE;
	}
	if (!o->files0_from && optind >= argc)
		return usage_no_path("report");
	return EXIT_OK;
}

/*
 * --files0-from: NUL-separated names, as du(1) and fincore(1) read them.
 * Returns EXIT_OK with the names in *paths (an empty name is said, left out
 * and makes the exit 3), or EXIT_USAGE when FILE cannot be read or names
 * nothing.
 */
static int read_files0(const char *name, char ***paths, int *npaths, char **buf, bool *lost)
{
	FILE *f = strcmp(name, "-") ? fopen(name, "re") : stdin;
	size_t len = 0, cap = 0, entry = 0;
	char chunk[65536];
	size_t n;

	*paths = NULL;
	*npaths = 0;
	*buf = NULL;
	if (!f) {
		msg("report: --files0-from %s: %s", name, strerror(errno));
		return EXIT_USAGE;
	}
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (len + n + 1 > cap) {
			cap = 2 * (len + n + 1);
			*buf = xrealloc(*buf, cap, 1);
		}
		memcpy(*buf + len, chunk, n);
		len += n;
	}
	if (ferror(f)) {
		msg("report: --files0-from %s: %s", name, strerror(errno));
		if (f != stdin)
			fclose(f);
		free(*buf);
		*buf = NULL;
		return EXIT_USAGE;
	}
	if (f != stdin)
		fclose(f);
	if (!len) {
		msg("report: --files0-from %s names no file", name);
		return EXIT_USAGE;
	}
	if ((*buf)[len - 1] != 0)
		(*buf)[len++] = 0; /* the last name may lack its NUL */
	for (size_t at = 0; at < len; at += strlen(*buf + at) + 1, entry++) {
		if (!(*buf)[at]) {
			msg("report: --files0-from %s: entry %zu is an empty file name, skipped", name,
			    entry + 1);
			*lost = true;
			continue;
		}
		*paths = xrealloc(*paths, *npaths + 1, sizeof(char *));
		(*paths)[(*npaths)++] = *buf + at;
	}
	if (!*npaths) {
		msg("report: --files0-from %s names no file", name);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static void print(const struct report_opts *o, struct report_view v)
{
	v.files = o->files;
	v.bytes = o->bytes;
	if (o->json)
		output_json(stdout, &v);
	else if (o->csv)
		output_csv(stdout, &v);
	else
		output_text(stdout, &v);
	fflush(stdout);
}

static int watch(const struct report_opts *o, char **paths, int npaths, bool *input_lost)
{
	struct tracker t;
	struct engine_window w;
	struct dup_counts counts;
	struct dup_stats st;
	long long start, deadline;
	int ret;

	ret = tracker_start(&t, paths, npaths, &o->scan);
	if (ret) {
		tracker_stop(&t);
		return ret;
	}
	stop_on_signals(true);
	msg("watching %zu files (%zu sharing groups) for %.1f s", t.scan.nfiles,
	    (size_t)t.map.ngroups, o->watch);
	start = monotonic_ns();
	deadline = start + (long long)(o->watch * 1e9);
	while (!stop_signal && monotonic_ns() < deadline && !ret) {
		nanosleep(&(struct timespec){ 0, POLL_NS }, NULL);
		ret = tracker_poll(&t, false);
	}
	/* The end state reflects changes not yet acted on. */
	if (!ret)
		ret = tracker_poll(&t, true);
	if (!ret) {
		uint64_t *cgroup_share = NULL;

		engine_counts(t.engine, &counts);
		engine_window(t.engine, &w);
		stats_build(&t.scan, &t.map, &counts, &st);
		if (o->files) { /* the fair shares walk every shared page: only when listed */
			cgroup_share = xcalloc(DC_MAX_CGROUPS, sizeof(uint64_t));
			engine_dup_shares(t.engine, &t.map, st.file_dup_share, cgroup_share);
		}
		print(o, (struct report_view){ .scan = &t.scan, .stats = &st, .top = o->top,
					       .window = &w,
					       .window_seconds = (monotonic_ns() - start) / 1e9 });
		stats_free(&st);
		free(cgroup_share);
		if (w.missing_entry)
			msg("internal error: %llu engine map lookups failed; figures may be wrong",
			    (unsigned long long)w.missing_entry);
		if (w.hole_pages_uncounted)
			msg("%llu pages cached in holes were not counted: the engine keeps state for "
			    "%u such pages at most", (unsigned long long)w.hole_pages_uncounted,
			    DC_MAX_HOLE_PAGES);
	}
	*input_lost = t.scan.input_lost;
	tracker_stop(&t);
	return ret;
}

int cmd_report(int argc, char **argv)
{
	struct report_opts o;
	struct scan s;
	struct extmap m;
	bool input_lost = false, list_lost = false;
	char **paths, **list = NULL, *list_buf = NULL;
	int npaths, ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	paths = argv + optind;
	npaths = argc - optind;
	if (o.files0_from) {
		ret = read_files0(o.files0_from, &list, &npaths, &list_buf, &list_lost);
		if (ret)
			return ret;
		paths = list;
	}
	if (o.watch) {
		ret = watch(&o, paths, npaths, &input_lost);
	} else {
		struct extmap_input *in;
		struct dup_stats st;

		/* A snapshot: the generations only key the engine's files. */
		o.scan.no_gen = true;
		scan_paths(paths, npaths, &o.scan, &s);
		in = scan_extmap_input(&s);
		if (extmap_build(in, s.nfiles, &m)) {
			msg("out of memory building the extent map");
			return EXIT_FAIL;
		}
		free(in);
		stats_from_snapshot(&s, &m, &st);
		print(&o, (struct report_view){ .scan = &s, .stats = &st, .top = o.top });
		stats_free(&st);
		input_lost = s.input_lost;
		scan_free(&s);
		extmap_free(&m);
	}
	free(list);
	free(list_buf);
	if (!ret && (input_lost || list_lost))
		ret = EXIT_PARTIAL;
	return ret;
}
