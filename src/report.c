// SPDX-License-Identifier: GPL-2.0
/* dupcache report: the dedup opportunity now, or over a watched window. */
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
	"usage: dupcache report [--json] [--watch SECONDS] [-n TOP] [-x] PATH...\n"
	"  --json           one JSON object on stdout (schema in README.md)\n"
	"  --watch SECONDS  track the page cache in the kernel (BPF) for that long\n"
	"  -n, --top TOP    sharing groups to list (default 10, 0 = all)\n"
	"  -x, --one-file-system  stay on the filesystem of each PATH\n";

struct report_opts {
	bool json;
	double watch;      /* seconds; 0 = snapshot */
	uint64_t top;
	struct scan_opts scan;
};

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
	int c;

	*o = (struct report_opts){ .top = 10 };
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
			break;
		default:
			if (opt_common("report", c, usage, &o->scan.one_fs, argv))
				return EXIT_USAGE;
			break;
		}
	}
	if (optind >= argc)
		return usage_no_path("report");
	return EXIT_OK;
}

static void print(const struct report_opts *o, const struct report_view *v)
{
	if (o->json)
		output_json(stdout, v);
	else
		output_text(stdout, v);
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
	stop_on_signals();
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
		engine_counts(t.engine, &counts);
		engine_window(t.engine, &w);
		stats_build(&t.scan, &t.map, &counts, &st);
		print(o, &(struct report_view){ &t.scan, &st, o->top, &w,
						(monotonic_ns() - start) / 1e9 });
		stats_free(&st);
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
	bool input_lost = false;
	int ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	if (o.watch) {
		ret = watch(&o, argv + optind, argc - optind, &input_lost);
	} else {
		struct extmap_input *in;
		struct dup_stats st;

		scan_paths(argv + optind, argc - optind, &o.scan, &s);
		in = scan_extmap_input(&s);
		if (extmap_build(in, s.nfiles, &m)) {
			msg("out of memory building the extent map");
			return EXIT_FAIL;
		}
		free(in);
		stats_from_snapshot(&s, &m, &st);
		print(&o, &(struct report_view){ .scan = &s, .stats = &st, .top = o.top });
		stats_free(&st);
		input_lost = s.input_lost;
		scan_free(&s);
		extmap_free(&m);
	}
	if (!ret && input_lost)
		ret = EXIT_PARTIAL;
	return ret;
}
