// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache daemon: the page cache sharing policy's daemon and a node agent.
 * Every interval it reports the trees' duplicated, cached and shared page
 * cache per filesystem and their whole-file clone sets: live from the BPF
 * engine (src/tracker.c, as top) when it may load, else from a snapshot
 * scan.  With --enforce it keeps the pcshare_ops policy (src/policy.c)
 * registered and its donor map equal to those sets (from the scan the
 * policy needs anyway); without, it says what a policy would share and save.
 * The figures go to stdout, to a textfile (--metrics) and to /metrics over
 * HTTP (--listen), rendered once per report (render_metrics()).
 */
#include <errno.h>
#include <getopt.h>
#include <json-c/json.h>
#include <malloc.h>
#include <pthread.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <systemd/sd-daemon.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "cgroups.h"
#include "clones.h"
#include "commands.h"
#include "httpd.h"
#include "metrics.h"
#include "output.h"
#include "policy.h"
#include "scan.h"
#include "stats.h"
#include "tracker.h"
#include "util.h"

/* Sets listed per text report, most saving first. */
#define TEXT_SETS 10

/* Cgroups exported by default, the most duplicated first (--max-cgroups). */
#define MAX_CGROUPS 100
/* How often the live engine's tracker looks for changes between reports. */
#define POLL_NS 100000000LL

struct daemon_opts {
	double interval;
	uint64_t reports;      /* 0: until SIGINT/SIGTERM */
	uint64_t min_size;
	bool json;
	const char *metrics;   /* Prometheus textfile, replaced per report */
	const char *listen;    /* serve /metrics here */
	const char *config;    /* key = value file, read again on SIGHUP */
	uint64_t max_cgroups;
	bool snapshot;         /* never the BPF engine */
	bool enforce;
	struct scan_opts scan;
	struct policy_settings policy;
	const char *trust_cgroups[PCS_MAX_CGROUPS]; /* as given, for messages */
	char **paths;          /* config trees, then the command line's PATHs */
	int npaths;
	/* what the strings above point into: the config file's words */
	char **cfg_argv;
	int cfg_argc;
};

static volatile sig_atomic_t switch_to; /* 1 off, 2 on */
static volatile sig_atomic_t reload;

static void on_switch_signal(int sig)
{
	switch_to = sig == SIGUSR1 ? 1 : 2;
}

static void on_hup(int sig)
{
	(void)sig;
	reload = 1;
}

static const char usage[] =
	"usage: dupcache daemon [--enforce [TRUST...] [--stale-after SECONDS] [--max-files N] [--off]]\n"
	"                       [-d SECONDS] [--frames COUNT] [--min-size SIZE] [--json] [--metrics FILE]\n"
	"                       [--listen ADDR:PORT] [--max-cgroups N] [--snapshot] [--config FILE]\n"
	"                       [-x] PATH...\n"
	"  every -d seconds (default 10) report the duplicated, cached and shared page cache\n"
	"  below PATH per filesystem (live from the BPF engine when it may load, else a\n"
	"  snapshot scan), the whole-file clone sets and the page cache one copy per set\n"
	"  would save\n"
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
	"  --listen ADDR:PORT  serve the same figures at http://ADDR:PORT/metrics; PORT or\n"
	"                      :PORT alone binds 127.0.0.1; [::]:PORT or 0.0.0.0:PORT all\n"
	"  --max-cgroups N     memory cgroups exported, the most duplicated first (default 100)\n"
	"  --snapshot          scan every interval, never load the BPF engine\n"
	"  -d, --interval SECS the interval\n"
	"  --config FILE       options from FILE first (key = value lines, the long option\n"
	"                      names; tree = PATH per tree); SIGHUP reads it and the trees again\n"
	"  -x, --one-file-system  stay on the filesystem of each PATH\n";

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

enum { OPT_METRICS = 256, OPT_ENFORCE, OPT_UID, OPT_CGROUP, OPT_STALE, OPT_MAXFILES, OPT_OFF,
       OPT_LISTEN, OPT_MAXCG, OPT_SNAPSHOT, OPT_CONFIG };
static const struct option longopts[] = {
	{ "json", no_argument, NULL, 'j' },
	/* -n is the same, kept for scripts written before --frames (issue 14) */
	{ "frames", required_argument, NULL, 'n' },
	{ "interval", required_argument, NULL, 'd' },
	{ "min-size", required_argument, NULL, 'm' },
	{ "metrics", required_argument, NULL, OPT_METRICS },
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "max-cgroups", required_argument, NULL, OPT_MAXCG },
	{ "snapshot", no_argument, NULL, OPT_SNAPSHOT },
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "one-file-system", no_argument, NULL, 'x' },
	{ "enforce", no_argument, NULL, OPT_ENFORCE },
	{ "trust-uid", required_argument, NULL, OPT_UID },
	{ "trust-cgroup", required_argument, NULL, OPT_CGROUP },
	{ "stale-after", required_argument, NULL, OPT_STALE },
	{ "max-files", required_argument, NULL, OPT_MAXFILES },
	{ "off", no_argument, NULL, OPT_OFF },
	{ "help", no_argument, NULL, 'h' },
	{ 0 },
};

static void opts_default(struct daemon_opts *o)
{
	/*
	 * No FIEMAP_FLAG_SYNC: forcing writeback of the trees every interval
	 * would stall writers.  A file with dirty data is left out (delayed
	 * allocations have no blocks) or, with a copy-on-write pending, looks
	 * like a clone until written back: the kernel writes it back and
	 * compares blocks before it shares, so it refuses that one.
	 */
	*o = (struct daemon_opts){ .interval = 10, .min_size = 1, .scan.no_sync = true,
				   .max_cgroups = MAX_CGROUPS,
				   .policy = { .stale_after = 3, .max_files = 1u << 18 } };
}

static void opts_free(struct daemon_opts *o)
{
	for (int i = 0; i < o->cfg_argc; i++)
		free(o->cfg_argv[i]);
	free(o->cfg_argv);
	free(o->paths);
	o->cfg_argv = NULL, o->paths = NULL;
	o->cfg_argc = o->npaths = 0;
}

/* One command line (the config file's words, or the real one) into *o. */
static int parse_args(int argc, char **argv, struct daemon_opts *o, bool *policy_opt)
{
	uint64_t max_files;
	int c;

	opterr = 0;
	optind = 0; /* glibc: start over (a reload parses again) */
	while ((c = getopt_long(argc, argv, ":d:n:xh", longopts, NULL)) != -1) {
		*policy_opt |= c >= OPT_UID && c <= OPT_OFF;
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
		case OPT_LISTEN: {
			struct sockaddr_storage ss;
			unsigned len;

			if (httpd_parse_listen(optarg, &ss, &len))
				return EXIT_USAGE;
			o->listen = optarg;
			break;
		}
		case OPT_MAXCG:
			if (!opt_count("daemon", "--max-cgroups", optarg, &o->max_cgroups))
				return EXIT_USAGE;
			break;
		case OPT_SNAPSHOT:
			o->snapshot = true;
			break;
		case OPT_CONFIG:
			o->config = optarg;
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
	o->paths = xrealloc(o->paths, o->npaths + argc - optind + 1, sizeof(char *));
	for (int i = optind; i < argc; i++)
		o->paths[o->npaths++] = argv[i];
	return EXIT_OK;
}

static char *trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

static void cfg_push(struct daemon_opts *o, const char *word)
{
	o->cfg_argv = xrealloc(o->cfg_argv, o->cfg_argc + 2, sizeof(char *));
	o->cfg_argv[o->cfg_argc++] = xstrdup(word);
	o->cfg_argv[o->cfg_argc] = NULL;
}

/*
 * The config file as words of a command line, parsed by the same code:
 * `key = value` per line, key a long option's name (`tree = PATH` for a
 * PATH), `key = yes|no` for the options without a value; # starts a
 * comment line.  The trees go last, after "--".
 */
static int read_config(const char *path, struct daemon_opts *o)
{
	FILE *f = fopen(path, "re");
	char *line = NULL, **trees = NULL;
	size_t len = 0, ntrees = 0;
	int lineno = 0, ret = EXIT_OK;

	if (!f) {
		msg("daemon: --config %s: %s", path, strerror(errno));
		return EXIT_USAGE;
	}
	cfg_push(o, "daemon");
	while (ret == EXIT_OK && getline(&line, &len, f) > 0) {
		char *key = trim(line), *eq, *val;
		const struct option *opt;

		lineno++;
		if (!*key || *key == '#')
			continue;
		eq = strchr(key, '=');
		if (!eq) {
			msg("daemon: %s:%d: not 'key = value'", path, lineno);
			ret = EXIT_USAGE;
			break;
		}
		*eq = '\0';
		key = trim(key);
		val = trim(eq + 1);
		if (!strcmp(key, "tree")) {
			trees = xrealloc(trees, ntrees + 1, sizeof(char *));
			trees[ntrees++] = xstrdup(val);
			continue;
		}
		for (opt = longopts; opt->name && strcmp(opt->name, key); opt++)
			;
		if (!opt->name || !strcmp(key, "config") || !strcmp(key, "help")) {
			msg("daemon: %s:%d: unknown key '%s'", path, lineno, key);
			ret = EXIT_USAGE;
		} else if (opt->has_arg == no_argument) {
			bool yes = !strcmp(val, "yes") || !strcmp(val, "true") || !strcmp(val, "1");

			if (!yes && strcmp(val, "no") && strcmp(val, "false") && strcmp(val, "0")) {
				msg("daemon: %s:%d: %s takes yes or no, not '%s'", path, lineno, key, val);
				ret = EXIT_USAGE;
			} else if (yes) {
				char word[64];

				snprintf(word, sizeof(word), "--%s", key);
				cfg_push(o, word);
			}
		} else {
			char *word;

			if (asprintf(&word, "--%s=%s", key, val) < 0) {
				msg("out of memory");
				exit(EXIT_FAIL);
			}
			cfg_push(o, word);
			free(word);
		}
	}
	cfg_push(o, "--");
	for (size_t i = 0; i < ntrees; i++) {
		cfg_push(o, trees[i]);
		free(trees[i]);
	}
	free(trees);
	free(line);
	fclose(f);
	return ret;
}

/*
 * Defaults, then the config file (--config), then the command line, which
 * wins.  The trees are the config's and the command line's PATHs.
 */
static int parse_opts(int argc, char **argv, struct daemon_opts *o)
{
	bool policy_opt = false;
	const char *config;
	int ret;

	opts_default(o);
	ret = parse_args(argc, argv, o, &policy_opt);
	config = o->config;
	opts_free(o);
	if (ret)
		return ret;
	opts_default(o);
	policy_opt = false;
	if (config) {
		ret = read_config(config, o);
		if (!ret)
			ret = parse_args(o->cfg_argc, o->cfg_argv, o, &policy_opt);
	}
	if (!ret)
		ret = parse_args(argc, argv, o, &policy_opt);
	o->config = config;
	if (!ret && policy_opt && !o->enforce) {
		msg("daemon: --trust-uid, --trust-cgroup, --stale-after, --max-files and --off go with --enforce");
		ret = EXIT_USAGE;
	}
	if (!ret && !o->npaths)
		ret = usage_no_path("daemon");
	if (ret)
		opts_free(o);
	return ret;
}

/* What the enforcing policy did (absent in advisory mode). */
struct enforcement {
	bool on;
	struct policy_map_state map;
	uint32_t capacity;
	struct pcs_counts policy;
};

/* One report's figures, whatever their source. */
struct figures {
	bool live;                 /* from the BPF engine; else a snapshot scan */
	const struct scan *scan;
	struct dup_stats st;        /* st.fs: per filesystem */
	struct clone_sets cs;
	const struct enforcement *e;
	bool has_kernel;           /* the kernel's pcshare_* counters exist */
	struct pcshare_vmstat kernel;
	double scan_seconds;       /* building these figures */
	double timestamp;          /* when: seconds since the epoch */
	uint64_t scan_errors;      /* since start: files the scans could not read */
	/* live only */
	struct engine_sample es;
	struct engine_window w;
	uint64_t *cgroup_share;    /* dup bytes' fair share, by cgroup slot */
};

/* A filesystem's label: its mount point, as the scan's mount table has it. */
static const char *fs_name(const struct figures *fg, size_t i)
{
	const char *type, *mount;

	scan_fs_of(fg->scan, fg->st.fs[i].sb_dev, &type, &mount);
	return mount;
}

static void print_text(const struct figures *fg)
{
	const struct clone_sets *cs = &fg->cs;
	const struct enforcement *e = fg->e;
	const struct scan *s = fg->scan;

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
			printf(" %s %llu", pcshare_event_names[i], (unsigned long long)fg->kernel.events[i]);
		printf("\n");
		if (e->map.left_out)
			printf("  %llu files left out: the policy map is full (--max-files %u)\n",
			       (unsigned long long)e->map.left_out, e->capacity);
		if (e->map.unsealed)
			printf("  %llu clone set members are not immutable (chattr +i): the kernel shares only those\n",
			       (unsigned long long)e->map.unsealed);
	} else {
		printf("dupcache daemon (advisory): %zu clone sets, %llu files; one page cache each would save %s\n",
		       cs->nsets, (unsigned long long)cs->files, HB(cs->saving_bytes));
	}
	for (size_t i = 0; i < fg->st.nfs; i++)
		printf("  %s (%s): %llu files, dup %s, cached %s, shared %s\n", fs_name(fg, i),
		       fg->live ? "live" : "snapshot", (unsigned long long)fg->st.fs[i].files,
		       HB(fg->st.fs[i].dup_bytes), HB(fg->st.fs[i].cached_bytes),
		       HB(fg->st.fs[i].shared_bytes));
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

static json_object *json_enforcement(const struct enforcement *e, const struct pcshare_vmstat *kernel)
{
	json_object *o = json_object_new_object(), *map = json_object_new_object();
	json_object *pol = json_object_new_object(), *k = json_object_new_object();

	json_object_object_add(o, "sharing", json_object_new_boolean(e->on));
	json_add_u64(map, "files", e->map.files);
	json_add_u64(map, "sets", e->map.sets);
	json_add_u64(map, "left_out", e->map.left_out);
	json_add_u64(map, "unsealed", e->map.unsealed);
	json_add_u64(map, "capacity", e->capacity);
	json_object_object_add(o, "policy_map", map);
	for (int a = 0; a < PCS_NR_ANSWERS; a++)
		json_add_u64(pol, pcs_answer_names[a], e->policy.answers[a]);
	json_object_object_add(o, "policy", pol);
	for (int i = 0; i < PCSHARE_NR_EVENTS; i++)
		json_add_u64(k, pcshare_event_names[i], kernel->events[i]);
	json_object_object_add(o, "kernel", k);
	return o;
}

static void print_json(const struct figures *fg, bool kernel_support)
{
	json_object *root = json_object_new_object(), *sets = json_object_new_array();
	json_object *totals = json_object_new_object(), *fss = json_object_new_array();
	const struct clone_sets *cs = &fg->cs;
	const struct scan *s = fg->scan;

	json_object_object_add(root, "mode", json_object_new_string(fg->e ? "enforce" : "advisory"));
	json_object_object_add(root, "kernel_support", json_object_new_boolean(kernel_support));
	json_object_object_add(root, "live", json_object_new_boolean(fg->live));
	json_add_u64(totals, "sets", cs->nsets);
	json_add_u64(totals, "files", cs->files);
	json_add_u64(totals, "saving_bytes", cs->saving_bytes);
	json_object_object_add(root, "totals", totals);
	for (size_t i = 0; i < fg->st.nfs; i++) {
		json_object *j = json_object_new_object();

		json_object_object_add(j, "fs", json_object_new_string(fs_name(fg, i)));
		json_add_u64(j, "files", fg->st.fs[i].files);
		json_add_u64(j, "groups", fg->st.fs[i].groups);
		json_add_u64(j, "dup_bytes", fg->st.fs[i].dup_bytes);
		json_add_u64(j, "cached_bytes", fg->st.fs[i].cached_bytes);
		json_add_u64(j, "shared_bytes", fg->st.fs[i].shared_bytes);
		json_object_array_add(fss, j);
	}
	json_object_object_add(root, "filesystems", fss);
	if (fg->e)
		json_object_object_add(root, "enforcement", json_enforcement(fg->e, &fg->kernel));
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

/* ---- metrics ---- */

static const char *const C = "counter", *const G = "gauge";

struct cgroup_row {
	const char *name;
	char label[40];
	uint64_t dup, cached, reclaimed, refaults;
};

static int cmp_cgroup_row(const void *a, const void *b)
{
	const struct cgroup_row *x = a, *y = b;

	if (x->dup != y->dup)
		return x->dup > y->dup ? -1 : 1;
	if (x->cached != y->cached)
		return x->cached > y->cached ? -1 : 1;
	return strcmp(x->name ? x->name : x->label, y->name ? y->name : y->label);
}

/*
 * Per memory cgroup, under names of their own (a cgroup's pages are on
 * every filesystem: summing them with the fs ones would count twice), the
 * most duplicated max_cgroups ones: a node may have thousands.
 */
static void metrics_cgroups(struct metrics *m, const struct figures *fg, uint64_t max_cgroups)
{
	const uint64_t P = fg->scan->page_size;
	struct cgroup_row *rows = xcalloc(fg->es.ncgroups ? fg->es.ncgroups : 1, sizeof(*rows));
	size_t n = 0, shown;
	char label[4200];

	for (size_t c = 0; c < fg->es.ncgroups; c++) {
		const struct dc_cgroup_stats *cg = &fg->es.cgroups[c];
		struct cgroup_row *r;

		if (!engine_cgroup_seen(cg))
			continue;
		r = &rows[n++];
		if (c == DC_CGROUP_UNKNOWN)
			snprintf(r->label, sizeof(r->label), "(unknown)");
		else if (!(r->name = cgroup_path(cg->id)))
			snprintf(r->label, sizeof(r->label), "(gone %llu)", (unsigned long long)cg->id);
		r->dup = fg->cgroup_share[c];
		r->cached = engine_cgroup_resident(cg) * P;
		r->reclaimed = cg->reclaimed;
		r->refaults = cg->refaults;
	}
	qsort(rows, n, sizeof(*rows), cmp_cgroup_row);
	shown = n < max_cgroups ? n : max_cgroups;
#define CG_METRIC(family, type, help, field)                                                         \
	for (size_t i = 0; i < shown; i++)                                                           \
		metrics_add(m, family, type, help,                                                   \
			    metrics_label(label, sizeof(label), "cgroup",                            \
					  rows[i].name ? rows[i].name : rows[i].label), rows[i].field)
	CG_METRIC("dupcache_cgroup_dup_bytes", G,
		  "Duplicate page cache charged to the memory cgroup (its fair share of each page's extra copies).",
		  dup);
	CG_METRIC("dupcache_cgroup_cached_bytes", G, "Page cache of the trees charged to the memory cgroup.",
		  cached);
	CG_METRIC("dupcache_cgroup_reclaimed_pages_total", C,
		  "Pages of the trees charged to the memory cgroup that reclaim removed.", reclaimed);
	CG_METRIC("dupcache_cgroup_refaulted_pages_total", C,
		  "Pages of the trees charged to the memory cgroup read again after reclaim removed them.",
		  refaults);
#undef CG_METRIC
	metrics_add(m, "dupcache_cgroups_dropped", G,
		    "Memory cgroups with page cache of the trees not exported (--max-cgroups).", NULL,
		    n - shown);
	free(rows);
}

static void metrics_live(struct metrics *m, const struct figures *fg, uint64_t max_cgroups)
{
	const struct dc_totals *t = &fg->es.totals;

	metrics_add(m, "dupcache_peak_dup_bytes", G, "Most duplicate page cache seen since start.", NULL,
		    t->peak_dup * fg->scan->page_size);
	metrics_add(m, "dupcache_added_pages_total", C, "Pages of the trees added to the page cache.", NULL,
		    t->added);
	metrics_add(m, "dupcache_removed_pages_total", C, "Pages of the trees removed from the page cache.",
		    NULL, t->removed);
	metrics_add(m, "dupcache_reclaimed_pages_total", C, "Of those removed, the ones reclaim removed.",
		    NULL, t->reclaimed);
	metrics_add(m, "dupcache_refaulted_pages_total", C,
		    "Pages of the trees added again after reclaim removed them.", NULL, t->refaults);
	metrics_add(m, "dupcache_extent_map_refreshes_total", C,
		    "Rebuilds of the extent map after the trees' sharing changed.", NULL, fg->w.refreshes);
	metrics_add(m, "dupcache_untracked_files", G, "Files the engine's maps had no room for.", NULL,
		    fg->w.untracked_files);
	metrics_add(m, "dupcache_vmscan_kswapd_wakes_total", C, "kswapd wake-ups (the whole machine).", NULL,
		    t->kswapd_wakes);
	metrics_add(m, "dupcache_vmscan_direct_stalls_total", C, "Direct reclaim stalls (the whole machine).",
		    NULL, t->direct_stalls);
	metrics_add_double(m, "dupcache_vmscan_direct_stall_seconds_total", C,
			   "Time spent in direct reclaim (the whole machine).", NULL, t->direct_stall_ns / 1e9);
	metrics_add(m, "dupcache_vmscan_memcg_stalls_total", C,
		    "Memory cgroup limit reclaim stalls (the whole machine).", NULL, t->memcg_stalls);
	metrics_add_double(m, "dupcache_vmscan_memcg_stall_seconds_total", C,
			   "Time spent in memory cgroup limit reclaim (the whole machine).", NULL,
			   t->memcg_stall_ns / 1e9);
	metrics_add(m, "dupcache_vmscan_reclaimed_pages_total", C, "Pages reclaim freed (the whole machine).",
		    NULL, t->pages_reclaimed);
	metrics_cgroups(m, fg, max_cgroups);
}

static void metrics_enforcement(struct metrics *m, const struct enforcement *e)
{
	char label[64];

	metrics_add(m, "dupcache_sharing_on", G, "1 while the policy's switch is on.", NULL, e->on);
	metrics_add(m, "dupcache_policy_map_files", G, "Clones in the policy's donor map.", NULL, e->map.files);
	metrics_add(m, "dupcache_policy_map_left_out_files", G,
		    "Clones left out of the donor map because it is full.", NULL, e->map.left_out);
	metrics_add(m, "dupcache_policy_map_unsealed_files", G,
		    "Clones left out of the donor map because they are not immutable.", NULL, e->map.unsealed);
	for (int a = 0; a < PCS_NR_ANSWERS; a++)
		metrics_add(m, "dupcache_policy_answers_total", C, "Opens the policy was asked about, by answer.",
			    metrics_label(label, sizeof(label), "answer", pcs_answer_names[a]),
			    e->policy.answers[a]);
}

/* The one rendering of a report's figures, for the textfile and for /metrics. */
static char *render_metrics(const struct figures *fg, uint64_t max_cgroups, size_t *len)
{
	struct metrics m;
	char label[4200];

	metrics_begin(&m);
	metrics_add(&m, "dupcache_build_info", G, "The dupcache version exporting these.",
		    "version=\"" DUPCACHE_VERSION "\"", 1);
	metrics_add(&m, "dupcache_live", G,
		    "1: the figures are the BPF engine's live counts; 0: a snapshot scan's.", NULL, fg->live);
#define FS_METRIC(family, help, field)                                                               \
	for (size_t i = 0; i < fg->st.nfs; i++)                                                      \
		metrics_add(&m, family, G, help, metrics_label(label, sizeof(label), "fs", fs_name(fg, i)), \
			    fg->st.fs[i].field)
	FS_METRIC("dupcache_dup_bytes", "Cached copies of a block already cached elsewhere, by filesystem.",
		  dup_bytes);
	FS_METRIC("dupcache_cached_bytes", "Resident page cache of the trees' files, by filesystem.",
		  cached_bytes);
	FS_METRIC("dupcache_shared_bytes", "File bytes in shared (reflinked) extents, by filesystem.",
		  shared_bytes);
	FS_METRIC("dupcache_files", "Files scanned, by filesystem.", files);
	FS_METRIC("dupcache_sharing_groups", "Groups of files sharing blocks, by filesystem.", groups);
#undef FS_METRIC
	metrics_add(&m, "dupcache_clone_sets", G, "Whole-file clone sets found by the last scan.", NULL,
		    fg->cs.nsets);
	metrics_add(&m, "dupcache_clone_set_files", G, "Files in those sets.", NULL, fg->cs.files);
	metrics_add(&m, "dupcache_saving_bytes", G,
		    "Page cache that one copy per set would save now (cached copies beyond the first).",
		    NULL, fg->cs.saving_bytes);
	if (fg->live)
		metrics_live(&m, fg, max_cgroups);
	if (fg->e)
		metrics_enforcement(&m, fg->e);
	for (int i = 0; fg->has_kernel && i < PCSHARE_NR_EVENTS; i++)
		metrics_add(&m, "dupcache_kernel_shares_total", C,
			    "The kernel's page cache sharing counters (/proc/vmstat pcshare_*).",
			    metrics_label(label, sizeof(label), "event", pcshare_event_names[i]),
			    fg->kernel.events[i]);
	metrics_add_double(&m, "dupcache_scan_duration_seconds", G,
			   "Time the last report's figures took to gather.", NULL, fg->scan_seconds);
	metrics_add_double(&m, "dupcache_last_scan_timestamp_seconds", G,
			   "When the last report's figures were gathered (Unix time).", NULL, fg->timestamp);
	metrics_add(&m, "dupcache_scan_errors_total", C,
		    "Files the scans could not read (missing, unreadable, vanished, changing).", NULL,
		    fg->scan_errors);
	return metrics_end(&m, len);
}

static uint64_t scan_errors(const struct scan *s)
{
	const struct scan_skips *k = &s->skipped;

	return k->missing + k->unreadable + k->vanished + k->changed;
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

/* Where the figures come from: the live engine, or a scan per report. */
struct source {
	bool live;
	struct tracker t;
	uint64_t generation;   /* the tracker's, at the last report */
	/* which files form clone sets: found once per scan, so once per rebuild when live */
	struct clone_layouts layouts;
	uint64_t layouts_generation;
	bool have_layouts;
	/* snapshot */
	struct scan s;
	struct extmap m;
	bool have_scan;
};

/*
 * The engine when it may load (and neither --snapshot nor --enforce, whose
 * policy needs a fresh scan per report anyway), else snapshots.  EXIT_OK or
 * the tracker's exit code for a failure that is not the engine's absence.
 */
static int source_start(struct source *src, const struct daemon_opts *o)
{
	int ret;

	*src = (struct source){ 0 };
	if (o->snapshot || o->enforce)
		return EXIT_OK;
	ret = tracker_start(&src->t, o->paths, o->npaths, &o->scan);
	if (ret == EXIT_OK) {
		src->live = true;
		src->generation = (uint64_t)-1;
		msg("live figures: the BPF engine tracks %zu files (%zu sharing groups)", src->t.scan.nfiles,
		    (size_t)src->t.map.ngroups);
		return EXIT_OK;
	}
	tracker_stop(&src->t);
	/* Its one line said what is missing. */
	msg("snapshot figures: the trees are scanned every interval instead");
	return EXIT_OK;
}

static void source_release(struct source *src)
{
	if (!src->live && src->have_layouts) { /* a snapshot's: the next report scans again */
		clone_layouts_free(&src->layouts);
		src->have_layouts = false;
	}
	if (src->have_scan) {
		scan_free(&src->s);
		extmap_free(&src->m);
		src->have_scan = false;
	}
}

static void source_stop(struct source *src)
{
	source_release(src);
	if (src->have_layouts)
		clone_layouts_free(&src->layouts);
	src->have_layouts = false;
	if (src->live)
		tracker_stop(&src->t);
	src->live = false;
}

/* The clone sets of the gathered scan, with its residency now. */
static void source_clone_sets(struct source *src, const struct daemon_opts *o, const struct scan *s,
			      struct policy *pol, struct clone_sets *cs)
{
	if (src->have_layouts && src->layouts_generation != src->generation) {
		clone_layouts_free(&src->layouts);
		src->have_layouts = false;
	}
	if (!src->have_layouts) {
		clone_layouts_find(s, o->min_size, &src->layouts);
		src->layouts_generation = src->generation;
		src->have_layouts = true;
	}
	clone_sets_measure(s, &src->layouts, pol ? policy_was_donor : NULL, pol, cs);
}

/* Between reports: the live engine acts on changes as they come. */
static int source_poll(struct source *src)
{
	return src->live ? tracker_poll(&src->t, false) : EXIT_OK;
}

/* Gather a report's figures (st, fs, scan, live parts); cs and e are the caller's. */
static int source_gather(struct source *src, struct daemon_opts *o, struct figures *fg, uint64_t *errors)
{
	long long t0 = monotonic_ns();
	int ret = EXIT_OK;

	source_release(src);
	if (src->live) {
		struct dup_counts counts;

		ret = tracker_poll(&src->t, true);
		if (ret)
			return ret;
		if (src->generation != src->t.generation)
			*errors += scan_errors(&src->t.scan);
		src->generation = src->t.generation;
		/* Residency now, for the clone sets: the engine's, no system call per file. */
		engine_residency(src->t.engine, &src->t.scan);
		engine_counts(src->t.engine, &counts);
		counts.groups_unordered = true; /* the daemon lists filesystems and clone sets, no groups */
		stats_build(&src->t.scan, &src->t.map, &counts, &fg->st);
		engine_sample(src->t.engine, &fg->es);
		engine_window(src->t.engine, &fg->w);
		fg->cgroup_share = xcalloc(DC_MAX_CGROUPS, sizeof(uint64_t));
		engine_dup_shares(src->t.engine, &src->t.map, fg->st.file_dup_share, fg->cgroup_share);
		fg->scan = &src->t.scan;
		fg->live = true;
	} else {
		struct extmap_input *in;

		scan_paths(o->paths, o->npaths, &o->scan, &src->s);
		/* Bad input is said once; later rescans keep quiet about it. */
		o->scan.quiet = true;
		*errors += scan_errors(&src->s);
		in = scan_extmap_input(&src->s);
		if (extmap_build(in, src->s.nfiles, &src->m)) {
			msg("out of memory building the extent map");
			exit(EXIT_FAIL);
		}
		free(in);
		src->have_scan = true;
		stats_from_snapshot(&src->s, &src->m, &fg->st);
		fg->scan = &src->s;
	}
	fg->scan_errors = *errors;
	fg->scan_seconds = (monotonic_ns() - t0) / 1e9;
	{
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		fg->timestamp = now.tv_sec + now.tv_nsec / 1e9;
	}
	return ret;
}

static void figures_free(struct figures *fg)
{
	clone_sets_free(&fg->cs);
	stats_free(&fg->st);
	free(fg->cgroup_share);
}

/*
 * Sleep the interval with the daemon's signals unblocked (they are blocked
 * everywhere else, so none is lost between a check and the sleep): a switch
 * signal is applied at once, a stop or a reload ends the wait.  The live
 * engine is polled for changes every POLL_NS meanwhile.
 */
static int wait_interval(double interval, struct policy *pol, struct source *src,
			 const sigset_t *unblocked)
{
	double end = monotonic_ns() / 1e9 + interval, left;

	while (!stop_signal && !reload && (left = end - monotonic_ns() / 1e9) > 0) {
		struct timespec t = seconds_ts(src->live && left > POLL_NS / 1e9 ? POLL_NS / 1e9 : left);
		int ret;

		if (ppoll(NULL, 0, &t, unblocked) == 0) {
			ret = source_poll(src);
			if (ret)
				return ret;
			continue;
		}
		if (switch_to && pol) {
			policy_switch(pol, switch_to == 2);
			msg("sharing switched %s", switch_to == 2 ? "on" : "off");
		}
		switch_to = 0;
	}
	return EXIT_OK;
}

static bool same_policy(const struct daemon_opts *a, const struct daemon_opts *b)
{
	const struct policy_settings *x = &a->policy, *y = &b->policy;

	if (a->enforce != b->enforce || a->snapshot != b->snapshot || x->nuids != y->nuids ||
	    x->ncgroups != y->ncgroups || x->stale_after != y->stale_after ||
	    x->max_files != y->max_files || x->start_off != y->start_off)
		return false;
	for (uint32_t i = 0; i < x->nuids; i++)
		if (x->uids[i] != y->uids[i])
			return false;
	for (uint32_t i = 0; i < x->ncgroups; i++)
		if (x->cgroups[i].id != y->cgroups[i].id || x->cgroups[i].level != y->cgroups[i].level)
			return false;
	return true;
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/*
 * SIGHUP: the config file and the trees again.  A config that does not
 * parse, or a listen address that cannot be had, leaves everything as it
 * was; enforce options change only with a restart (the policy's
 * registration would have to go).
 */
static void do_reload(struct daemon_opts *o, int argc, char **argv, struct source *src,
		      struct httpd **http)
{
	struct daemon_opts n;
	struct httpd *nh = NULL;

	sd_notify(0, "RELOADING=1");
	if (parse_opts(argc, argv, &n)) {
		msg("reload: %s unchanged", o->config ? o->config : "the configuration");
		sd_notify(0, "READY=1");
		return;
	}
	if (!same_policy(o, &n)) {
		msg("reload: --enforce, --snapshot and the policy's options change on restart only; kept");
		/* (trust_cgroups, the names as given, are only for the start's message.) */
		n.enforce = o->enforce, n.snapshot = o->snapshot, n.policy = o->policy;
	}
	if (!same_str(n.listen, o->listen) && n.listen) {
		if (httpd_start(n.listen, &nh)) {
			msg("reload: kept listening on %s", o->listen ? o->listen : "nothing");
			opts_free(&n);
			sd_notify(0, "READY=1");
			return;
		}
	}
	if (!same_str(n.listen, o->listen)) {
		httpd_stop(*http);
		*http = nh;
	}
	n.reports = o->reports;
	source_stop(src);
	opts_free(o);
	*o = n;
	source_start(src, o);
	msg("reloaded%s%s: %d trees, every %.1f s, %s figures%s%s", o->config ? " " : "",
	    o->config ? o->config : "", o->npaths, o->interval, src->live ? "live" : "snapshot",
	    o->listen ? ", listening on " : "", o->listen ? o->listen : "");
	sd_notify(0, "READY=1");
}

int cmd_daemon(int argc, char **argv)
{
	static const int daemon_signals[] = { SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGHUP };
	struct sigaction sa = { .sa_handler = on_switch_signal }, hup = { .sa_handler = on_hup };
	sigset_t handled, unblocked;
	struct policy *pol = NULL;
	struct httpd *http = NULL;
	struct beat beat = { 0 };
	struct source src;
	struct daemon_opts o;
	bool kernel_support, input_lost = false, ready = false;
	uint64_t errors = 0;
	int ret;

	/*
	 * Every report allocates arrays of the trees' size (figures, clone sets)
	 * and frees them: kept in the heap, not mapped and unmapped each time,
	 * their pages are not faulted in and zeroed again every interval (at a
	 * million files most of a report's time, here).
	 */
	mallopt(M_MMAP_THRESHOLD, 1 << 30);
	mallopt(M_TRIM_THRESHOLD, 1 << 30);
	ret = parse_opts(argc, argv, &o);

	if (ret)
		return ret;
	kernel_support = policy_kernel_support();
	stop_on_signals(true); /* its handled signals are blocked but in ppoll */
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGHUP, &hup, NULL);
	sigemptyset(&handled);
	for (size_t i = 0; i < sizeof(daemon_signals) / sizeof(daemon_signals[0]); i++)
		sigaddset(&handled, daemon_signals[i]);
	sigprocmask(SIG_BLOCK, &handled, &unblocked);
	if (o.listen) {
		sigset_t all, old;

		/* Signals are the main thread's. */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		ret = httpd_start(o.listen, &http);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ret) {
			opts_free(&o);
			return ret;
		}
		msg("serving /metrics on %s", o.listen);
	}
	if (o.enforce) {
		bool replaced;
		sigset_t all, old;

		ret = policy_probe();
		if (!ret)
			ret = policy_start(&pol, &o.policy, &replaced);
		if (ret) {
			httpd_stop(http);
			opts_free(&o);
			return ret;
		}
		if (replaced)
			msg("removed the policy registration of a dupcache daemon that did not stop cleanly");
		describe_domain(&o);
		beat.policy = pol;
		beat.period = o.policy.stale_after / 4 < 1 ? o.policy.stale_after / 4 : 1;
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		if (pthread_create(&beat.thread, NULL, beat_loop, &beat)) {
			msg("cannot start the heartbeat thread");
			policy_stop(pol);
			httpd_stop(http);
			opts_free(&o);
			return EXIT_FAIL;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	} else {
		msg(kernel_support ? "the kernel has pcshare_ops; without --enforce this only advises: advisory mode"
				   : "the kernel has no pcshare_ops struct_ops type (kernel/patches): advisory mode");
	}
	source_start(&src, &o);
	for (uint64_t n = 0; !stop_signal && (!o.reports || n < o.reports); n++) {
		struct enforcement e = { 0 };
		struct figures fg = { 0 };
		const struct scan *s;

		if (n)
			ret = wait_interval(o.interval, pol, &src, &unblocked);
		if (ret || stop_signal)
			break;
		if (reload) {
			reload = 0;
			do_reload(&o, argc, argv, &src, &http);
		}
		ret = source_gather(&src, &o, &fg, &errors);
		if (ret)
			break;
		s = fg.scan;
		input_lost |= s->input_lost;
		source_clone_sets(&src, &o, s, pol, &fg.cs);
		if (pol) {
			int err = policy_update(pol, s, &fg.cs, &e.map);

			if (err)
				msg("updating the policy map: %s", strerror(-err));
			e.on = policy_is_on(pol);
			e.capacity = o.policy.max_files;
			policy_counts(pol, &e.policy);
			fg.e = &e;
		}
		fg.has_kernel = pcshare_vmstat_read(&fg.kernel);
		if (o.json)
			print_json(&fg, kernel_support);
		else
			print_text(&fg);
		if (o.metrics || http) {
			size_t len;
			char *text = render_metrics(&fg, o.max_cgroups, &len);

			if (o.metrics)
				metrics_write_file(o.metrics, text, len);
			if (http)
				httpd_publish(http, text, len);
			free(text);
		}
		figures_free(&fg);
		if (!ready) {
			/* systemd's Type=notify: up once the first figures are out. */
			sd_notify(0, "READY=1");
			ready = true;
		}
	}
	sd_notify(0, "STOPPING=1");
	source_stop(&src);
	httpd_stop(http);
	if (pol) {
		beat.done = true;
		pthread_join(beat.thread, NULL);
		policy_stop(pol);
		msg("policy unregistered");
	}
	opts_free(&o);
	if (ret)
		return ret;
	return input_lost ? EXIT_PARTIAL : EXIT_OK;
}
