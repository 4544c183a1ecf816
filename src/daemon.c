// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache daemon: the page cache sharing policy's daemon.  Every interval
 * it rescans the trees for whole-file clone sets.  With --enforce it keeps
 * the pcshare_ops policy (src/policy.c) registered and its donor map equal
 * to those sets; without, it says what a policy would share and save.
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <pthread.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "cgroups.h"
#include "clones.h"
#include "commands.h"
#include "metrics.h"
#include "output.h"
#include "policy.h"
#include "scan.h"
#include "util.h"

/* Sets listed per text report, most saving first. */
#define TEXT_SETS 10

struct daemon_opts {
	double interval;
	uint64_t reports;      /* 0: until SIGINT/SIGTERM */
	uint64_t min_size;
	bool json;
	const char *metrics;   /* Prometheus textfile, replaced per report */
	bool enforce;
	struct scan_opts scan;
	struct policy_settings policy;
	const char *trust_cgroups[PCS_MAX_CGROUPS]; /* as given, for messages */
};

static volatile sig_atomic_t switch_to; /* 1 off, 2 on */

static void on_switch_signal(int sig)
{
	switch_to = sig == SIGUSR1 ? 1 : 2;
}

static const char usage[] =
	"usage: dupcache daemon [--enforce [TRUST...] [--stale-after SECONDS] [--max-files N] [--off]]\n"
	"                       [-d SECONDS] [--frames COUNT] [--min-size SIZE] [--json] [--metrics FILE]\n"
	"                       [-x] PATH...\n"
	"  every -d seconds (default 10) find the whole-file clone sets below PATH and report\n"
	"  the page cache one copy per set would save\n"
	"  --enforce           register the page cache sharing policy (kernel/patches): opens of\n"
	"                      a clone read through its set's donor; SIGUSR1 switches sharing\n"
	"                      off, SIGUSR2 on; SIGINT/SIGTERM unregister it and stop\n"
	"  --trust-uid USER    share only for openers with this fs uid (up to 16)\n"
	"  --trust-cgroup DIR  share only for openers in this cgroup v2 subtree (up to 16)\n"
	"  --stale-after SECS  the policy stops proposing when the daemon has not beaten for\n"
	"                      this long, e.g. killed (default 3)\n"
	"  --max-files N       capacity of the policy's map (default 262144)\n"
	"  --off               start with sharing switched off\n"
	"  --frames COUNT      stop after COUNT reports (default: until SIGINT or SIGTERM);\n"
	"                      -n COUNT is the same\n"
	"  --min-size SIZE     only files at least this large (default 1; units: K, MiB, GB...)\n"
	"  --json              one JSON object per report (JSON Lines)\n"
	"  --metrics FILE      also write each report's figures to FILE (Prometheus text\n"
	"                      format, replaced whole: node_exporter's textfile collector)\n"
	"  -x                  stay on the filesystem of each PATH\n";

static bool opt_uid(const char *arg, struct policy_settings *p)
{
	struct passwd *pw = getpwnam(arg);
	uint64_t uid;

	if (p->nuids == PCS_MAX_UIDS) {
		msg("daemon: at most %d --trust-uid", PCS_MAX_UIDS);
		return false;
	}
	if (pw) {
		p->uids[p->nuids++] = pw->pw_uid;
		return true;
	}
	if (!opt_count("daemon", "--trust-uid", arg, &uid))
		return false;
	if (uid > UINT32_MAX - 1) {
		msg("daemon: --trust-uid %s: not a uid", arg);
		return false;
	}
	p->uids[p->nuids++] = (uint32_t)uid;
	return true;
}

static bool opt_cgroup(const char *arg, struct daemon_opts *o)
{
	struct policy_settings *p = &o->policy;
	uint64_t id;
	uint32_t level;
	int err;

	if (p->ncgroups == PCS_MAX_CGROUPS) {
		msg("daemon: at most %d --trust-cgroup", PCS_MAX_CGROUPS);
		return false;
	}
	err = cgroup2_subtree(arg, &id, &level);
	if (err) {
		msg("daemon: --trust-cgroup %s: %s", arg,
		    err == -EXDEV ? "not in a mounted cgroup v2 hierarchy" : strerror(-err));
		return false;
	}
	p->cgroups[p->ncgroups] = (struct pcs_cgroup){ .id = id, .level = level };
	o->trust_cgroups[p->ncgroups++] = arg;
	return true;
}

static int parse_opts(int argc, char **argv, struct daemon_opts *o)
{
	enum { OPT_METRICS = 256, OPT_ENFORCE, OPT_UID, OPT_CGROUP, OPT_STALE, OPT_MAXFILES, OPT_OFF };
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		/* -n is the same, kept for scripts written before --frames (issue 14) */
		{ "frames", required_argument, NULL, 'n' },
		{ "min-size", required_argument, NULL, 'm' },
		{ "metrics", required_argument, NULL, OPT_METRICS },
		{ "enforce", no_argument, NULL, OPT_ENFORCE },
		{ "trust-uid", required_argument, NULL, OPT_UID },
		{ "trust-cgroup", required_argument, NULL, OPT_CGROUP },
		{ "stale-after", required_argument, NULL, OPT_STALE },
		{ "max-files", required_argument, NULL, OPT_MAXFILES },
		{ "off", no_argument, NULL, OPT_OFF },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool policy_opt = false;
	uint64_t max_files;
	int c;

	/*
	 * No FIEMAP_FLAG_SYNC: forcing writeback of the trees every interval
	 * would stall writers.  A file with dirty data is left out (delayed
	 * allocations have no blocks) or, with a copy-on-write pending, looks
	 * like a clone until written back: the kernel writes it back and
	 * compares blocks before it shares, so it refuses that one.
	 */
	*o = (struct daemon_opts){ .interval = 10, .min_size = 1, .scan.no_sync = true,
				   .policy = { .stale_after = 3, .max_files = 1u << 18 } };
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":d:n:xh", longopts, NULL)) != -1) {
		policy_opt |= c >= OPT_UID;
		switch (c) {
		case 'd':
			if (!opt_seconds("daemon", "-d", optarg, 0.1, 86400, &o->interval))
				return EXIT_USAGE;
			break;
		case 'n':
			if (!opt_count("daemon", "--frames", optarg, &o->reports))
				return EXIT_USAGE;
			break;
		case 'm':
			if (!opt_size("daemon", "--min-size", optarg, &o->min_size))
				return EXIT_USAGE;
			break;
		case 'j':
			o->json = true;
			break;
		case OPT_METRICS:
			if (!opt_writable("daemon", "--metrics", optarg))
				return EXIT_USAGE;
			o->metrics = optarg;
			break;
		case OPT_ENFORCE:
			o->enforce = true;
			break;
		case OPT_UID:
			if (!opt_uid(optarg, &o->policy))
				return EXIT_USAGE;
			break;
		case OPT_CGROUP:
			if (!opt_cgroup(optarg, o))
				return EXIT_USAGE;
			break;
		case OPT_STALE:
			if (!opt_seconds("daemon", "--stale-after", optarg, 0.1, 3600, &o->policy.stale_after))
				return EXIT_USAGE;
			break;
		case OPT_MAXFILES:
			if (!opt_count("daemon", "--max-files", optarg, &max_files))
				return EXIT_USAGE;
			if (!max_files || max_files > (1u << 24)) {
				msg("daemon: --max-files %s: between 1 and %u", optarg, 1u << 24);
				return EXIT_USAGE;
			}
			o->policy.max_files = (uint32_t)max_files;
			break;
		case OPT_OFF:
			o->policy.start_off = true;
			break;
		default:
			if (opt_common("daemon", c, usage, &o->scan.one_fs, argv))
				return EXIT_USAGE;
			break;
		}
	}
	if (policy_opt && !o->enforce) {
		msg("daemon: --trust-uid, --trust-cgroup, --stale-after, --max-files and --off go with --enforce");
		return EXIT_USAGE;
	}
	if (optind >= argc)
		return usage_no_path("daemon");
	return EXIT_OK;
}

/* What the enforcing policy did (absent in advisory mode). */
struct enforcement {
	bool on;
	struct policy_map_state map;
	uint32_t capacity;
	struct pcs_counts policy;
	struct pcshare_vmstat kernel;
};

static void print_text(const struct scan *s, const struct clone_sets *cs, const struct enforcement *e)
{
	if (e) {
		printf("dupcache daemon (enforcing, sharing %s): %zu clone sets, %llu files in the policy map;"
		       " one page cache each would save %s\n",
		       e->on ? "on" : "off", cs->nsets, (unsigned long long)e->map.files,
		       HB(cs->saving_bytes));
		printf("  policy:");
		for (int a = 0; a < PCS_NR_ANSWERS; a++)
			printf(" %s %llu", pcs_answer_names[a], (unsigned long long)e->policy.answers[a]);
		printf("\n  kernel:");
		for (int i = 0; i < PCSHARE_NR_EVENTS; i++)
			printf(" %s %llu", pcshare_event_names[i], (unsigned long long)e->kernel.events[i]);
		printf("\n");
		if (e->map.left_out)
			printf("  %llu files left out: the policy map is full (--max-files %u)\n",
			       (unsigned long long)e->map.left_out, e->capacity);
	} else {
		printf("dupcache daemon (advisory): %zu clone sets, %llu files; one page cache each would save %s\n",
		       cs->nsets, (unsigned long long)cs->files, HB(cs->saving_bytes));
	}
	if (cs->nsets)
		printf("  %5s %10s %10s %10s  %s\n", "FILES", "SIZE", "CACHED", "SAVING", "DONOR");
	for (size_t i = 0; i < cs->nsets && i < TEXT_SETS; i++) {
		const struct clone_set *set = &cs->sets[i];

		printf("  %5zu %10s %10s %10s  %s\n", set->nmembers, HB(set->size),
		       HB(set->cached_bytes), HB(set->saving_bytes), s->files[set->members[0]].path);
	}
	if (cs->nsets > TEXT_SETS)
		printf("  (%zu more sets, saving less; --json lists all)\n", cs->nsets - TEXT_SETS);
	fflush(stdout);
}

static json_object *json_enforcement(const struct enforcement *e)
{
	json_object *o = json_object_new_object(), *map = json_object_new_object();
	json_object *pol = json_object_new_object(), *k = json_object_new_object();

	json_object_object_add(o, "sharing", json_object_new_boolean(e->on));
	json_add_u64(map, "files", e->map.files);
	json_add_u64(map, "sets", e->map.sets);
	json_add_u64(map, "left_out", e->map.left_out);
	json_add_u64(map, "capacity", e->capacity);
	json_object_object_add(o, "policy_map", map);
	for (int a = 0; a < PCS_NR_ANSWERS; a++)
		json_add_u64(pol, pcs_answer_names[a], e->policy.answers[a]);
	json_object_object_add(o, "policy", pol);
	for (int i = 0; i < PCSHARE_NR_EVENTS; i++)
		json_add_u64(k, pcshare_event_names[i], e->kernel.events[i]);
	json_object_object_add(o, "kernel", k);
	return o;
}

static void print_json(const struct scan *s, const struct clone_sets *cs, bool kernel_support,
		       const struct enforcement *e)
{
	json_object *root = json_object_new_object(), *sets = json_object_new_array();
	json_object *totals = json_object_new_object();

	json_object_object_add(root, "mode", json_object_new_string(e ? "enforce" : "advisory"));
	json_object_object_add(root, "kernel_support", json_object_new_boolean(kernel_support));
	json_add_u64(totals, "sets", cs->nsets);
	json_add_u64(totals, "files", cs->files);
	json_add_u64(totals, "saving_bytes", cs->saving_bytes);
	json_object_object_add(root, "totals", totals);
	if (e)
		json_object_object_add(root, "enforcement", json_enforcement(e));
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

static void write_metrics(const char *path, const struct clone_sets *cs, const struct enforcement *e)
{
	static const char *const C = "counter", *const G = "gauge";
	struct metrics m;

	if (!metrics_begin(&m, path))
		return;
	metrics_add(&m, "dupcache_clone_sets", G, "Whole-file clone sets found by the last scan.", NULL,
		    cs->nsets);
	metrics_add(&m, "dupcache_clone_set_files", G, "Files in those sets.", NULL, cs->files);
	metrics_add(&m, "dupcache_saving_bytes", G,
		    "Page cache that one copy per set would save now (cached copies beyond the first).",
		    NULL, cs->saving_bytes);
	if (e) {
		char label[64];

		metrics_add(&m, "dupcache_sharing_on", G, "1 while the policy's switch is on.", NULL, e->on);
		metrics_add(&m, "dupcache_policy_map_files", G, "Clones in the policy's donor map.", NULL,
			    e->map.files);
		metrics_add(&m, "dupcache_policy_map_left_out_files", G,
			    "Clones left out of the donor map because it is full.", NULL, e->map.left_out);
		for (int a = 0; a < PCS_NR_ANSWERS; a++) {
			snprintf(label, sizeof(label), "answer=\"%s\"", pcs_answer_names[a]);
			metrics_add(&m, "dupcache_policy_answers_total", C,
				    "Opens the policy was asked about, by answer.", label, e->policy.answers[a]);
		}
		for (int i = 0; i < PCSHARE_NR_EVENTS; i++) {
			snprintf(label, sizeof(label), "event=\"%s\"", pcshare_event_names[i]);
			metrics_add(&m, "dupcache_kernel_shares_total", C,
				    "The kernel's page cache sharing counters (/proc/vmstat pcshare_*).", label,
				    e->kernel.events[i]);
		}
	}
	metrics_commit(&m);
}

static struct timespec seconds_ts(double s)
{
	return (struct timespec){ (time_t)s, (long)((s - (time_t)s) * 1e9) };
}

/*
 * The heartbeat, on its own thread so that a long scan never lets the
 * policy go stale; a killed or stopped daemon stops it.
 */
struct beat {
	struct policy *policy;
	double period;
	pthread_t thread;
	volatile bool done;
};

static void *beat_loop(void *arg)
{
	struct beat *b = arg;
	struct timespec t = seconds_ts(b->period);

	while (!b->done) {
		policy_beat(b->policy);
		nanosleep(&t, NULL);
	}
	return NULL;
}

static void describe_domain(const struct daemon_opts *o)
{
	char buf[1024] = "";
	size_t n = 0;

	for (uint32_t i = 0; i < o->policy.nuids && n < sizeof(buf); i++)
		n += snprintf(buf + n, sizeof(buf) - n, "%suid %u", n ? ", " : "", o->policy.uids[i]);
	for (uint32_t i = 0; i < o->policy.ncgroups && n < sizeof(buf); i++)
		n += snprintf(buf + n, sizeof(buf) - n, "%scgroup %s", n ? ", " : "", o->trust_cgroups[i]);
	msg("enforcing: sharing %s; trust domain: %s; no new shares %.1f s after the daemon stops beating",
	    o->policy.start_off ? "off (SIGUSR2 switches it on)" : "on",
	    n ? buf : "every opener (no --trust-uid or --trust-cgroup)", o->policy.stale_after);
}

/*
 * Sleep the interval with the daemon's signals unblocked (they are blocked
 * everywhere else, so none is lost between a check and the sleep): a switch
 * signal is applied at once, a stop ends the wait.
 */
static void wait_interval(double interval, struct policy *pol, const sigset_t *unblocked)
{
	double end = monotonic_ns() / 1e9 + interval, left;

	while (!stop_signal && (left = end - monotonic_ns() / 1e9) > 0) {
		struct timespec t = seconds_ts(left);

		if (ppoll(NULL, 0, &t, unblocked) >= 0)
			break;
		if (switch_to && pol) {
			policy_switch(pol, switch_to == 2);
			msg("sharing switched %s", switch_to == 2 ? "on" : "off");
		}
		switch_to = 0;
	}
}

int cmd_daemon(int argc, char **argv)
{
	static const int daemon_signals[] = { SIGINT, SIGTERM, SIGUSR1, SIGUSR2 };
	struct sigaction sa = { .sa_handler = on_switch_signal };
	sigset_t handled, unblocked;
	struct policy *pol = NULL;
	struct beat beat = { 0 };
	struct daemon_opts o;
	bool kernel_support, input_lost = false;
	int ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	kernel_support = policy_kernel_support();
	stop_on_signals();
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigemptyset(&handled);
	for (size_t i = 0; i < sizeof(daemon_signals) / sizeof(daemon_signals[0]); i++)
		sigaddset(&handled, daemon_signals[i]);
	sigprocmask(SIG_BLOCK, &handled, &unblocked);
	if (o.enforce) {
		bool replaced;
		sigset_t all, old;

		ret = policy_probe();
		if (!ret)
			ret = policy_start(&pol, &o.policy, &replaced);
		if (ret)
			return ret;
		if (replaced)
			msg("removed the policy registration of a dupcache daemon that did not stop cleanly");
		describe_domain(&o);
		beat.policy = pol;
		beat.period = o.policy.stale_after / 4 < 1 ? o.policy.stale_after / 4 : 1;
		/* Signals are the main thread's. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		if (pthread_create(&beat.thread, NULL, beat_loop, &beat)) {
			msg("cannot start the heartbeat thread");
			policy_stop(pol);
			return EXIT_FAIL;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	} else {
		msg(kernel_support ? "the kernel has pcshare_ops; without --enforce this only advises: advisory mode"
				   : "the kernel has no pcshare_ops struct_ops type (kernel/patches): advisory mode");
	}
	for (uint64_t n = 0; !stop_signal && (!o.reports || n < o.reports); n++) {
		struct enforcement e = { 0 };
		struct clone_sets cs;
		struct scan s;

		if (n)
			wait_interval(o.interval, pol, &unblocked);
		if (stop_signal)
			break;
		scan_paths(argv + optind, argc - optind, &o.scan, &s);
		/* Bad input is said once; later rescans keep quiet about it. */
		o.scan.quiet = true;
		input_lost |= s.input_lost;
		clone_sets_find(&s, o.min_size, pol ? policy_was_donor : NULL, pol, &cs);
		if (pol) {
			int err = policy_update(pol, &s, &cs, &e.map);

			if (err)
				msg("updating the policy map: %s", strerror(-err));
			e.on = policy_is_on(pol);
			e.capacity = o.policy.max_files;
			policy_counts(pol, &e.policy);
			pcshare_vmstat_read(&e.kernel);
		}
		if (o.json)
			print_json(&s, &cs, kernel_support, pol ? &e : NULL);
		else
			print_text(&s, &cs, pol ? &e : NULL);
		if (o.metrics)
			write_metrics(o.metrics, &cs, pol ? &e : NULL);
		clone_sets_free(&cs);
		scan_free(&s);
	}
	if (pol) {
		beat.done = true;
		pthread_join(beat.thread, NULL);
		policy_stop(pol);
		msg("policy unregistered");
	}
	return input_lost ? EXIT_PARTIAL : EXIT_OK;
}
