// SPDX-License-Identifier: GPL-2.0
/* dupcache report: the dedup opportunity now, or over a watched window. */
#include <getopt.h>
#include <signal.h>
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
#include "util.h"

/* A change is acted on after this much quiet, so a burst costs one rescan. */
#define REFRESH_SETTLE_NS 200000000LL
#define POLL_NS 50000000LL

static const char usage[] =
	"usage: dupcache report [--json] [--watch SECONDS] [-n TOP] [-x] PATH...\n"
	"  --json           one JSON object on stdout (schema in README.md)\n"
	"  --watch SECONDS  track the page cache in the kernel (BPF) for that long\n"
	"  -n, --top TOP    sharing groups to list (default 10, 0 = all)\n"
	"  -x, --one-file-system  stay on the filesystem of each PATH\n";

struct report_opts {
	bool json;
	double watch;      /* seconds; 0 = snapshot */
	size_t top;
	struct scan_opts scan;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static bool parse_number(const char *s, double *out)
{
	char *end;

	*out = strtod(s, &end);
	return *s && !*end;
}

static int parse_opts(int argc, char **argv, struct report_opts *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "watch", required_argument, NULL, 'w' },
		{ "top", required_argument, NULL, 'n' },
		{ "one-file-system", no_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	double num;
	int c;

	*o = (struct report_opts){ .top = 10 };
	opterr = 0; /* our own one-line messages */
	while ((c = getopt_long(argc, argv, ":n:xh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			o->json = true;
			break;
		case 'w':
			if (!parse_number(optarg, &num) || !(num > 0) || num > 86400 * 365) {
				msg("--watch takes a number of seconds > 0, not '%s'", optarg);
				return EXIT_USAGE;
			}
			o->watch = num;
			break;
		case 'n':
			if (!parse_number(optarg, &num) || num < 0 || num != (size_t)num) {
				msg("-n takes a whole number >= 0, not '%s'", optarg);
				return EXIT_USAGE;
			}
			o->top = num;
			break;
		case 'x':
			o->scan.one_fs = true;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(EXIT_OK);
		case ':':
			msg("report: %s needs a value", argv[optind - 1]);
			return EXIT_USAGE;
		default:
			msg("report: unknown option '%s' (see dupcache report --help)", argv[optind - 1]);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		msg("report: at least one PATH is needed (see dupcache report --help)");
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

/* Scan + physical page index; the scan's skips stay with the scan. */
static void survey(char **paths, int npaths, const struct scan_opts *opts, struct scan *s,
		   struct extmap *m)
{
	struct extmap_input *in;

	scan_paths(paths, npaths, opts, s);
	in = scan_extmap_input(s);
	if (extmap_build(in, s->nfiles, m)) {
		msg("out of memory building the extent map");
		exit(EXIT_FAIL);
	}
	free(in);
}

static void print(const struct report_opts *o, const struct report_view *v)
{
	if (o->json)
		output_json(stdout, v);
	else
		output_text(stdout, v);
	fflush(stdout);
}

static int watch(const struct report_opts *o, char **paths, int npaths, struct scan *s,
		 struct extmap *m)
{
	struct sigaction sa = { .sa_handler = on_signal };
	struct engine *e = NULL;
	struct engine_window w;
	struct dup_counts counts;
	struct dup_stats st;
	long long start, deadline, changed_at = 0;
	uint64_t seen_changes;
	int ret;

	ret = engine_probe();
	if (ret)
		return ret;
	ret = engine_start(&e, s, m);
	if (ret)
		return ret;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	msg("watching %zu files (%zu sharing groups) for %.1f s", s->nfiles, (size_t)m->ngroups,
	    o->watch);

	start = now_ns();
	deadline = start + (long long)(o->watch * 1e9);
	seen_changes = engine_changes(e);
	for (;;) {
		long long t = now_ns();
		uint64_t changes = engine_changes(e);
		bool done = interrupted || t >= deadline;

		if (changes != seen_changes) {
			/* Wait for quiet, unless the window is over. */
			if (!changed_at)
				changed_at = t;
			seen_changes = changes;
		}
		if (changed_at && (done || t - changed_at >= REFRESH_SETTLE_NS)) {
			struct scan_opts quiet = o->scan;

			quiet.quiet = true;
			changed_at = 0;
			seen_changes = engine_changes(e);
			scan_free(s);
			extmap_free(m);
			survey(paths, npaths, &quiet, s, m);
			ret = engine_sync(e, s, m);
			if (ret)
				break;
			continue;
		}
		if (done)
			break;
		nanosleep(&(struct timespec){ 0, POLL_NS }, NULL);
	}
	if (!ret) {
		engine_counts(e, &counts);
		engine_window(e, &w);
		stats_build(s, m, &counts, &st);
		print(o, &(struct report_view){ s, &st, o->top, &w, (now_ns() - start) / 1e9 });
		stats_free(&st);
		if (w.missing_entry)
			msg("internal error: %llu engine map lookups failed; figures may be wrong",
			    (unsigned long long)w.missing_entry);
	}
	engine_stop(e);
	return ret;
}

int cmd_report(int argc, char **argv)
{
	struct report_opts o;
	struct scan s;
	struct extmap m;
	int ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	if (o.watch) {
		/* Fail before scanning when the engine cannot run at all. */
		ret = engine_probe();
		if (ret)
			return ret;
	}
	survey(argv + optind, argc - optind, &o.scan, &s, &m);
	if (o.watch) {
		ret = watch(&o, argv + optind, argc - optind, &s, &m);
	} else {
		struct dup_stats st;

		stats_from_snapshot(&s, &m, &st);
		print(&o, &(struct report_view){ .scan = &s, .stats = &st, .top = o.top });
		stats_free(&st);
	}
	if (!ret && s.input_lost)
		ret = EXIT_PARTIAL;
	scan_free(&s);
	extmap_free(&m);
	return ret;
}
