// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache daemon: the page cache sharing policy's daemon.  This version
 * runs in advisory mode only: every interval it rescans the trees and says
 * which whole-file clone sets a sharing policy would serve from one donor,
 * and how much page cache that would save.  Enforcement (the pcshare_ops
 * struct_ops policy of kernel/patches) is not built yet.
 */
#include <getopt.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/btf.h>
#include "clones.h"
#include "commands.h"
#include "output.h"
#include "scan.h"
#include "util.h"

#define HB(x) human_bytes((x), (char[32]){ 0 }, 32)

struct daemon_opts {
	double interval;
	uint64_t reports;      /* 0: until SIGINT/SIGTERM */
	uint64_t min_size;
	bool json;
	struct scan_opts scan;
};

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	(void)sig;
	stopping = 1;
}

static const char usage[] =
	"usage: dupcache daemon [-d SECONDS] [-n COUNT] [--min-size BYTES] [--json] [-x] PATH...\n"
	"  advisory mode: every -d seconds (default 10) report the whole-file clone sets\n"
	"  a page cache sharing policy would serve from one donor, and the memory saved\n"
	"  -n COUNT         stop after COUNT reports (default: until SIGINT or SIGTERM)\n"
	"  --min-size BYTES only files at least this large (default 1)\n"
	"  --json           one JSON object per report (JSON Lines)\n"
	"  -x               stay on the filesystem of each PATH\n";

static int parse_opts(int argc, char **argv, struct daemon_opts *o)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "min-size", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int c;

	*o = (struct daemon_opts){ .interval = 10, .min_size = 1 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":d:n:xh", longopts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (!opt_seconds("daemon", "-d", optarg, 0.1, 86400, &o->interval))
				return EXIT_USAGE;
			break;
		case 'n':
			if (!opt_count("daemon", "-n", optarg, &o->reports))
				return EXIT_USAGE;
			break;
		case 'm':
			if (!opt_count("daemon", "--min-size", optarg, &o->min_size))
				return EXIT_USAGE;
			break;
		case 'j':
			o->json = true;
			break;
		case 'x':
			o->scan.one_fs = true;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(EXIT_OK);
		default:
			return usage_bad_option("daemon", c, argv);
		}
	}
	if (optind >= argc)
		return usage_no_path("daemon");
	return EXIT_OK;
}

/* Does the running kernel have our page cache sharing struct_ops type? */
static bool kernel_has_pcshare(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	bool has = btf && btf__find_by_name_kind(btf, "pcshare_ops", BTF_KIND_STRUCT) >= 0;

	btf__free(btf);
	return has;
}

static void print_text(const struct scan *s, const struct clone_sets *cs)
{
	printf("dupcache daemon (advisory): %zu clone sets, %llu files; one page cache each would save %s\n",
	       cs->nsets, (unsigned long long)cs->files, HB(cs->saving_bytes));
	if (cs->nsets)
		printf("  %5s %10s %10s %10s  %s\n", "FILES", "SIZE", "CACHED", "SAVING", "DONOR");
	for (size_t i = 0; i < cs->nsets; i++) {
		const struct clone_set *set = &cs->sets[i];

		printf("  %5zu %10s %10s %10s  %s\n", set->nmembers, HB(set->size),
		       HB(set->cached_bytes), HB(set->saving_bytes), s->files[set->members[0]].path);
	}
	fflush(stdout);
}

static void print_json(const struct scan *s, const struct clone_sets *cs, bool kernel_support)
{
	json_object *root = json_object_new_object(), *sets = json_object_new_array();
	json_object *totals = json_object_new_object();

	json_object_object_add(root, "mode", json_object_new_string("advisory"));
	json_object_object_add(root, "kernel_support", json_object_new_boolean(kernel_support));
	json_add_u64(totals, "sets", cs->nsets);
	json_add_u64(totals, "files", cs->files);
	json_add_u64(totals, "saving_bytes", cs->saving_bytes);
	json_object_object_add(root, "totals", totals);
	for (size_t i = 0; i < cs->nsets; i++) {
		const struct clone_set *set = &cs->sets[i];
		json_object *js = json_object_new_object(), *members = json_object_new_array();

		json_object_object_add(js, "donor",
				       json_object_new_string(s->files[set->members[0]].path));
		for (size_t m = 0; m < set->nmembers; m++)
			json_object_array_add(members,
					      json_object_new_string(s->files[set->members[m]].path));
		json_object_object_add(js, "members", members);
		json_add_u64(js, "size", set->size);
		json_add_u64(js, "cached_bytes", set->cached_bytes);
		json_add_u64(js, "saving_bytes", set->saving_bytes);
		json_object_array_add(sets, js);
	}
	json_object_object_add(root, "clone_sets", sets);
	printf("%s\n", json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN |
							   JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
	json_object_put(root);
}

int cmd_daemon(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal };
	struct daemon_opts o;
	bool kernel_support, input_lost = false;
	int ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	kernel_support = kernel_has_pcshare();
	msg(kernel_support ? "the kernel has pcshare_ops, but this version only advises: advisory mode"
			   : "the kernel has no pcshare_ops struct_ops type (kernel/patches): advisory mode");
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	for (uint64_t n = 0; !stopping && (!o.reports || n < o.reports); n++) {
		struct clone_sets cs;
		struct scan s;

		if (n) {
			struct timespec t = { (time_t)o.interval,
					      (long)((o.interval - (time_t)o.interval) * 1e9) };

			/* A signal cuts the sleep short and ends the loop. */
			if (nanosleep(&t, NULL) && stopping)
				break;
		}
		scan_paths(argv + optind, argc - optind, &o.scan, &s);
		/* Bad input is said once; later rescans keep quiet about it. */
		o.scan.quiet = true;
		input_lost |= s.input_lost;
		clone_sets_find(&s, o.min_size, &cs);
		if (o.json)
			print_json(&s, &cs, kernel_support);
		else
			print_text(&s, &cs);
		clone_sets_free(&cs);
		scan_free(&s);
	}
	return input_lost ? EXIT_PARTIAL : EXIT_OK;
}
