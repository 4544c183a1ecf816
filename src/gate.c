// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache gate: a CI gate on page-cache duplication.  Around a workload
 * (-- COMMAND) it drops the tracked files' cache, tracks them with the BPF
 * engine while COMMAND runs, and checks the run's metrics (the median of
 * --runs) against budgets; without a workload it checks a snapshot.
 * Rendering of the results: gate_output.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "commands.h"
#include "gate.h"
#include "tracker.h"
#include "util.h"

#define POLL_NS 50000000LL
#define SAMPLE_NS 100000000LL
/* Past this many points the timeline keeps every other one and samples half as often. */
#define TIMELINE_MAX 4096
#define MAX_RUNS 100

static const char usage[] =
	"usage: dupcache gate [--max-dup SIZE] [--max-dup-ratio PCT] [--max-growth SIZE]\n"
	"                     [--max-refaults N] [--budget FILE] [--baseline FILE]\n"
	"                     [--max-increase PCT] [--save-baseline FILE] [--runs N] [--warm]\n"
	"                     [--json FILE] [--junit FILE] [--markdown FILE]\n"
	"                     [--allow-workload-failure] [-x] PATH... [-- COMMAND [ARG...]]\n"
	"  with -- COMMAND: drop the page cache of the files below PATH, track them (BPF)\n"
	"  while COMMAND runs, and check the run; without: check the current state\n"
	"  --max-dup SIZE         limit on peak_dup_bytes (end_dup_bytes without COMMAND)\n"
	"  --max-dup-ratio PCT    limit on peak_dup_ratio (end_dup_ratio without COMMAND)\n"
	"  --max-growth SIZE      limit on cached_growth_bytes (the tracked files)\n"
	"  --max-refaults N       limit on refaults\n"
	"  --budget FILE          budgets from a JSON file (format in README.md)\n"
	"  --baseline FILE        a gate JSON to compare with (--save-baseline, --json)\n"
	"  --max-increase PCT     limit peak_dup_bytes (end_dup_bytes) to the baseline's + PCT\n"
	"  --save-baseline FILE   write the results as a baseline (the --json schema)\n"
	"  --runs N               run COMMAND N times from a cold cache, check the median\n"
	"  --warm                 keep the cache of the tracked files (no drop before a run)\n"
	"  --json FILE, --junit FILE, --markdown FILE   write the results there too\n"
	"  --allow-workload-failure  a COMMAND exiting non-zero does not fail the gate\n"
	"  -x                     stay on the filesystem of each PATH\n"
	"sizes: bytes, or K KiB M MiB G GiB T TiB (1024) or KB MB GB TB (1000)\n"
	"exit: 0 pass (warnings printed), 6 an error-level check failed or could not be measured,\n"
	"      7 COMMAND failed; 2-5 as for report\n";

struct cli_limits {
	bool dup, ratio, growth, refaults, increase;
	uint64_t max_dup, max_growth, max_refaults;
	double max_ratio, max_increase;
};

static int parse_opts(int argc, char **argv, struct gate_opts *o)
{
	enum { O_MAX_DUP = 256, O_MAX_RATIO, O_MAX_GROWTH, O_MAX_REFAULTS, O_BUDGET, O_BASELINE,
	       O_MAX_INCREASE, O_SAVE, O_RUNS, O_WARM, O_JSON, O_JUNIT, O_MARKDOWN, O_ALLOW };
	static const struct option longopts[] = {
		{ "max-dup", required_argument, NULL, O_MAX_DUP },
		{ "max-dup-ratio", required_argument, NULL, O_MAX_RATIO },
		{ "max-growth", required_argument, NULL, O_MAX_GROWTH },
		{ "max-refaults", required_argument, NULL, O_MAX_REFAULTS },
		{ "budget", required_argument, NULL, O_BUDGET },
		{ "baseline", required_argument, NULL, O_BASELINE },
		{ "max-increase", required_argument, NULL, O_MAX_INCREASE },
		{ "save-baseline", required_argument, NULL, O_SAVE },
		{ "runs", required_argument, NULL, O_RUNS },
		{ "warm", no_argument, NULL, O_WARM },
		{ "json", required_argument, NULL, O_JSON },
		{ "junit", required_argument, NULL, O_JUNIT },
		{ "markdown", required_argument, NULL, O_MARKDOWN },
		{ "allow-workload-failure", no_argument, NULL, O_ALLOW },
		{ "one-file-system", no_argument, NULL, 'x' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct cli_limits lim = { 0 };
	const char *budget_file = NULL;
	bool workload_opt = false;
	int c, nopts = argc;

	*o = (struct gate_opts){ .runs = 1 };
	/* COMMAND is everything after the first "--": its options are its own. */
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--")) {
			nopts = i;
			o->command = argv + i + 1;
			if (!o->command[0]) {
				msg("gate: -- needs a COMMAND after it (see dupcache gate --help)");
				return EXIT_USAGE;
			}
			break;
		}
	}
	opterr = 0;
	while ((c = getopt_long(nopts, argv, ":xh", longopts, NULL)) != -1) {
		workload_opt |= c == O_RUNS || c == O_WARM || c == O_ALLOW;
		switch (c) {
		case O_MAX_DUP:
			if (!opt_size("gate", "--max-dup", optarg, &lim.max_dup))
				return EXIT_USAGE;
			lim.dup = true;
			break;
		case O_MAX_RATIO:
			if (!opt_percent("gate", "--max-dup-ratio", optarg, 100, &lim.max_ratio))
				return EXIT_USAGE;
			lim.ratio = true;
			break;
		case O_MAX_GROWTH:
			if (!opt_size("gate", "--max-growth", optarg, &lim.max_growth))
				return EXIT_USAGE;
			lim.growth = true;
			break;
		case O_MAX_REFAULTS:
			if (!opt_count("gate", "--max-refaults", optarg, &lim.max_refaults))
				return EXIT_USAGE;
			lim.refaults = true;
			break;
		case O_MAX_INCREASE:
			if (!opt_percent("gate", "--max-increase", optarg, 1e9, &lim.max_increase))
				return EXIT_USAGE;
			lim.increase = true;
			break;
		case O_BUDGET:
			budget_file = optarg;
			break;
		case O_BASELINE:
			o->baseline_file = optarg;
			break;
		case O_SAVE:
		case O_JSON:
		case O_JUNIT:
		case O_MARKDOWN: {
			static const char *const names[] = { "--save-baseline", "--json", "--junit",
							     "--markdown" };
			const char **dst[] = { &o->save_baseline, &o->json, &o->junit, &o->markdown };
			int k = c == O_SAVE ? 0 : c - O_JSON + 1;

			if (!opt_writable("gate", names[k], optarg))
				return EXIT_USAGE;
			*dst[k] = optarg;
			break;
		}
		case O_RUNS:
			if (!opt_count("gate", "--runs", optarg, &o->runs))
				return EXIT_USAGE;
			if (o->runs < 1 || o->runs > MAX_RUNS) {
				msg("gate: --runs takes 1 to %d, not '%s'", MAX_RUNS, optarg);
				return EXIT_USAGE;
			}
			break;
		case O_WARM:
			o->warm = true;
			break;
		case O_ALLOW:
			o->allow_workload_failure = true;
			break;
		default:
			if (opt_common("gate", c, usage, &o->scan.one_fs, argv))
				return EXIT_USAGE;
			break;
		}
	}
	if (optind >= nopts)
		return usage_no_path("gate");
	o->paths = argv + optind;
	o->npaths = nopts - optind;
	if (workload_opt && !o->command) {
		msg("gate: --runs, --warm and --allow-workload-failure go with -- COMMAND");
		return EXIT_USAGE;
	}

	/* Without a workload the duplication flags gate the state now. */
	enum metric dup = o->command ? M_PEAK_DUP : M_END_DUP;
	enum metric ratio = o->command ? M_PEAK_DUP_RATIO : M_END_DUP_RATIO;

	if (lim.dup)
		budget_add(&o->budget, &(struct check){ .metric = dup, .max = lim.max_dup });
	if (lim.ratio)
		budget_add(&o->budget, &(struct check){ .metric = ratio, .max = lim.max_ratio });
	if (lim.growth)
		budget_add(&o->budget, &(struct check){ .metric = M_CACHED_GROWTH, .max = lim.max_growth });
	if (lim.refaults)
		budget_add(&o->budget, &(struct check){ .metric = M_REFAULTS, .max = lim.max_refaults });
	if (lim.increase)
		budget_add(&o->budget, &(struct check){ .metric = dup, .relative = true,
							 .max_increase = lim.max_increase });
	if (budget_file && !budget_read(budget_file, &o->budget))
		return EXIT_USAGE;
	if (budget_has_relative(&o->budget) && !o->baseline_file) {
		msg("gate: --max-increase and max_increase budgets need a --baseline FILE");
		return EXIT_USAGE;
	}
	if (o->baseline_file && !budget_has_relative(&o->budget)) {
		msg("gate: --baseline: no budget is relative to it (--max-increase, or max_increase in "
		    "--budget)");
		return EXIT_USAGE;
	}
	if (o->baseline_file && !baseline_read(o->baseline_file, &o->baseline))
		return EXIT_USAGE;
	return EXIT_OK;
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct filesystem types of the scanned files, sorted: "btrfs,xfs". */
static char *filesystems_of(const struct scan *s)
{
	static const struct { unsigned long magic; const char *name; } known[] = {
		{ XFS_SUPER_MAGIC, "xfs" }, { BTRFS_SUPER_MAGIC, "btrfs" },
		{ EXT4_SUPER_MAGIC, "ext4" }, { TMPFS_MAGIC, "tmpfs" },
		{ OVERLAYFS_SUPER_MAGIC, "overlay" }, { NFS_SUPER_MAGIC, "nfs" },
	};
	char **names = xcalloc(s->nfiles, sizeof(*names));
	uint32_t *devs = xcalloc(s->nfiles, sizeof(*devs));
	size_t n = 0, len = 0;
	char *out = xstrdup("");

	for (size_t i = 0; i < s->nfiles; i++) {
		struct statfs sf;
		char hex[32];
		size_t k;

		/* One statfs per filesystem. */
		for (k = 0; k < n && devs[k] != s->files[i].sb_dev; k++)
			;
		if (k < n || statfs(s->files[i].path, &sf))
			continue;
		snprintf(hex, sizeof(hex), "0x%lx", (unsigned long)sf.f_type);
		names[n] = hex;
		for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++)
			if ((unsigned long)sf.f_type == known[j].magic)
				names[n] = (char *)known[j].name;
		names[n] = xstrdup(names[n]);
		devs[n++] = s->files[i].sb_dev;
	}
	qsort(names, n, sizeof(*names), cmp_name);
	for (size_t i = 0; i < n; i++) {
		if (i && !strcmp(names[i], names[i - 1]))
			continue;
		out = xrealloc(out, len + strlen(names[i]) + 2, 1);
		len += sprintf(out + len, "%s%s", len ? "," : "", names[i]);
	}
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	free(devs);
	return out;
}

/*
 * POSIX_FADV_DONTNEED on each tracked file: their cache only, never the
 * machine's (drop_caches).  Dirty pages are not dropped (DONTNEED skips
 * them; the survey's FIEMAP_FLAG_SYNC wrote back what was dirty then), nor
 * are pages some process has mapped.
 */
static void drop_cache(const struct scan *s)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		int fd = open(s->files[i].path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);

		if (fd < 0)
			continue;
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

static void offenders_free(struct run *r)
{
	for (size_t i = 0; i < r->noffenders; i++)
		free(r->offenders[i].path);
	free(r->offenders);
	r->offenders = NULL;
	r->noffenders = 0;
}

static void add_offender(struct run *r, bool group, const char *path, uint64_t files, uint64_t dup)
{
	r->offenders = xrealloc(r->offenders, r->noffenders + 1, sizeof(*r->offenders));
	r->offenders[r->noffenders++] = (struct offender){ .group = group, .path = xstrdup(path),
							   .files = files, .dup_bytes = dup };
}

static void group_offenders(struct run *r, const struct scan *s, const struct dup_stats *st)
{
	for (size_t g = 0; g < st->ngroups && g < GATE_OFFENDERS && st->groups[g].dup_bytes; g++)
		add_offender(r, true, s->files[st->groups[g].members[0]].path, st->groups[g].files,
			     st->groups[g].dup_bytes);
}

static const uint64_t *sort_share;

static int cmp_share(const void *a, const void *b)
{
	uint64_t x = sort_share[*(const size_t *)a], y = sort_share[*(const size_t *)b];

	return x < y ? 1 : x > y ? -1 : 0;
}

/* The groups and files holding the most duplicate bytes now (a file: its fair share). */
static void capture_offenders(struct tracker *t, struct run *r)
{
	size_t n = t->scan.nfiles;
	uint64_t *share = xcalloc(n, sizeof(*share)), *cgroup = xcalloc(DC_MAX_CGROUPS, sizeof(*cgroup));
	size_t *order = xcalloc(n, sizeof(*order));
	struct dup_counts c;
	struct dup_stats st;

	offenders_free(r);
	engine_counts(t->engine, &c);
	stats_build(&t->scan, &t->map, &c, &st);
	group_offenders(r, &t->scan, &st);
	stats_free(&st);
	engine_dup_shares(t->engine, &t->map, share, cgroup);
	for (size_t i = 0; i < n; i++)
		order[i] = i;
	sort_share = share;
	qsort(order, n, sizeof(*order), cmp_share);
	for (size_t i = 0; i < n && i < GATE_OFFENDERS && share[order[i]]; i++)
		add_offender(r, false, t->scan.files[order[i]].path, 1, share[order[i]]);
	free(order);
	free(share);
	free(cgroup);
}

/* A timeline point; the one with the most duplicate bytes keeps its offenders. */
static void take_sample(struct tracker *t, struct run *r, double seconds)
{
	struct engine_sample es;
	uint64_t cached = 0;
	unsigned P = t->scan.page_size;
	struct sample s;

	engine_sample(t->engine, &es);
	for (size_t i = 0; i < es.nfiles; i++)
		cached += engine_file_resident(&es.files[i]);
	s = (struct sample){ seconds, es.totals.dup * P, cached * P };
	if (r->ntimeline == TIMELINE_MAX) {
		for (size_t i = 0; i < TIMELINE_MAX / 2; i++)
			r->timeline[i] = r->timeline[2 * i];
		r->ntimeline = TIMELINE_MAX / 2;
		r->sample_ns *= 2;
	}
	r->timeline = xrealloc(r->timeline, r->ntimeline + 1, sizeof(*r->timeline));
	r->timeline[r->ntimeline++] = s;
	if (r->ntimeline == 1 || s.dup_bytes > r->peak_sample.dup_bytes) {
		r->peak_sample = s;
		if (s.dup_bytes)
			capture_offenders(t, r);
	}
}

static double ratio(uint64_t dup, uint64_t cached)
{
	return cached ? 100.0 * dup / cached : 0;
}

static int exit_status(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The engine's programs (bpf/dupcache.bpf.c) that time reclaim stalls. */
static const char *const stall_progs[] = { "direct_reclaim_began", "direct_reclaim_ended",
					   "memcg_reclaim_began", "memcg_reclaim_ended" };

/* One run of the workload, from a fresh tracker.  EXIT_OK or an exit code (said). */
static int workload_run(const struct gate_opts *o, const struct scan *survey, struct run *r,
			bool *interrupted)
{
	struct scan_opts quiet = o->scan;
	struct engine_window w;
	struct engine_sample es;
	struct dup_counts counts;
	struct dup_stats st;
	struct tracker t;
	uint64_t cached_start = 0, page_cache_start;
	long long start, next_sample;
	int status, ret;
	pid_t pid, done = 0;

	if (!o->warm)
		drop_cache(survey);
	page_cache_start = meminfo_cached_bytes();
	/* The survey said what was wrong with the input; the runs keep quiet. */
	quiet.quiet = true;
	ret = tracker_start(&t, o->paths, o->npaths, &quiet);
	if (ret) {
		tracker_stop(&t);
		return ret;
	}
	for (size_t i = 0; i < t.scan.nfiles; i++)
		cached_start += t.scan.files[i].resident_pages * t.scan.page_size;
	r->sample_ns = SAMPLE_NS;
	fflush(stdout);
	fflush(stderr);
	start = monotonic_ns();
	take_sample(&t, r, 0);
	pid = fork();
	if (pid < 0) {
		msg("gate: cannot start the workload: %s", strerror(errno));
		tracker_stop(&t);
		return EXIT_FAIL;
	}
	if (pid == 0) {
		execvp(o->command[0], o->command);
		msg("gate: cannot run '%s': %s", o->command[0], strerror(errno));
		_exit(127);
	}
	next_sample = start + r->sample_ns;
	while (done != pid) {
		long long now;

		if (stop_signal) {
			/* Ctrl-C or a CI timeout: the workload stops too; we report what we saw. */
			kill(pid, stop_signal);
			stop_signal = 0;
			*interrupted = true;
		}
		done = waitpid(pid, &status, WNOHANG);
		if (done < 0 && errno != EINTR) {
			msg("gate: waiting for the workload: %s", strerror(errno));
			tracker_stop(&t);
			return EXIT_FAIL;
		}
		if (done == pid)
			break;
		nanosleep(&(struct timespec){ 0, POLL_NS }, NULL);
		/* A failed rebuild ends the measurement, not the workload: it is waited for. */
		if (!ret)
			ret = tracker_poll(&t, false);
		now = monotonic_ns();
		if (!ret && now >= next_sample) {
			take_sample(&t, r, (now - start) / 1e9);
			next_sample = now + r->sample_ns;
		}
	}
	r->m.v[M_WORKLOAD_SECONDS] = (monotonic_ns() - start) / 1e9;
	r->exit_status = exit_status(status);
	/* The end state reflects changes not yet acted on. */
	if (!ret)
		ret = tracker_poll(&t, true);
	if (ret) {
		tracker_stop(&t);
		return ret;
	}
	take_sample(&t, r, r->m.v[M_WORKLOAD_SECONDS]);
	engine_window(t.engine, &w);
	engine_sample(t.engine, &es);
	engine_counts(t.engine, &counts);
	stats_build(&t.scan, &t.map, &counts, &st);
	if (w.missing_entry)
		msg("internal error: %llu engine map lookups failed; figures may be wrong",
		    (unsigned long long)w.missing_entry);
	if (w.untracked_files)
		msg("gate: %llu files not tracked: the engine's maps are full",
		    (unsigned long long)w.untracked_files);
	if (w.hole_pages_uncounted)
		msg("gate: %llu pages cached in holes not counted: the engine's hole map is full",
		    (unsigned long long)w.hole_pages_uncounted);
	/* Figures that miss files are not a pass: at best exit 3, as for skipped input. */
	r->incomplete = w.missing_entry || w.untracked_files || w.hole_pages_uncounted;

	double *v = r->m.v;

	v[M_PEAK_DUP] = (double)w.peak_dup_pages * st.page_size;
	v[M_END_DUP] = st.dup_bytes;
	v[M_PEAK_DUP_RATIO] = ratio(r->peak_sample.dup_bytes, r->peak_sample.cached_bytes);
	v[M_END_DUP_RATIO] = ratio(st.dup_bytes, st.cached_bytes);
	v[M_END_CACHED] = st.cached_bytes;
	v[M_CACHED_GROWTH] = (double)st.cached_bytes - (double)cached_start;
	v[M_PAGE_CACHE_GROWTH] = (double)meminfo_cached_bytes() - (double)page_cache_start;
	v[M_PAGES_ADDED] = w.pages_added;
	v[M_REFAULTS] = es.totals.refaults;
	v[M_RECLAIMED] = es.totals.reclaimed;
	v[M_RECLAIM_STALLS] = es.totals.direct_stalls + es.totals.memcg_stalls;
	v[M_RECLAIM_STALL_MS] = (es.totals.direct_stall_ns + es.totals.memcg_stall_ns) / 1e6;
	v[M_WORKLOAD_EXIT] = r->exit_status;
	for (int m = 0; m < M_COUNT; m++)
		r->m.have[m] = true;
	/* Stalls are timed by tracepoints a kernel may lack: then they are not 0, but unknown. */
	for (size_t i = 0; i < sizeof(stall_progs) / sizeof(stall_progs[0]); i++)
		if (!engine_attached(t.engine, stall_progs[i]))
			r->m.have[M_RECLAIM_STALLS] = r->m.have[M_RECLAIM_STALL_MS] = false;
	stats_free(&st);
	tracker_stop(&t);
	return EXIT_OK;
}

/* The state now, through the same path as dupcache report. */
static int snapshot_run(const struct scan *s, struct run *r)
{
	struct extmap_input *in = scan_extmap_input(s);
	struct extmap m;
	struct dup_stats st;

	if (extmap_build(in, s->nfiles, &m)) {
		msg("out of memory building the extent map");
		free(in);
		return EXIT_FAIL;
	}
	free(in);
	stats_from_snapshot(s, &m, &st);
	r->m.v[M_END_DUP] = st.dup_bytes;
	r->m.v[M_END_DUP_RATIO] = ratio(st.dup_bytes, st.cached_bytes);
	r->m.v[M_END_CACHED] = st.cached_bytes;
	r->m.have[M_END_DUP] = r->m.have[M_END_DUP_RATIO] = r->m.have[M_END_CACHED] = true;
	group_offenders(r, s, &st);
	stats_free(&st);
	extmap_free(&m);
	return EXIT_OK;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * Each metric's median over the runs (the lower one for an even count, so
 * it is always a value some run had); workload_exit is the first non-zero
 * exit.  Returns the run whose peak_dup_bytes is the median: its timeline
 * and offenders stand for all.
 */
static size_t medians(const struct run *runs, size_t n, struct metrics *out)
{
	double *vals = xcalloc(n, sizeof(*vals));
	size_t rep = 0;

	*out = (struct metrics){ 0 };
	for (int m = 0; m < M_COUNT; m++) {
		size_t k = 0;

		for (size_t i = 0; i < n; i++)
			if (runs[i].m.have[m])
				vals[k++] = runs[i].m.v[m];
		if (!k)
			continue;
		qsort(vals, k, sizeof(*vals), cmp_double);
		out->have[m] = true;
		out->v[m] = vals[(k - 1) / 2];
	}
	for (size_t i = 0; i < n && out->have[M_WORKLOAD_EXIT]; i++) {
		out->v[M_WORKLOAD_EXIT] = runs[i].m.v[M_WORKLOAD_EXIT];
		if (runs[i].m.v[M_WORKLOAD_EXIT])
			break;
	}
	for (size_t i = 0; i < n; i++)
		if (runs[i].m.have[M_PEAK_DUP] && runs[i].m.v[M_PEAK_DUP] == out->v[M_PEAK_DUP]) {
			rep = i;
			break;
		}
	free(vals);
	return rep;
}

/* A baseline of another page size or filesystem counts other pages: no comparison. */
static bool baseline_comparable(const struct baseline *b, const struct gate_result *g)
{
	if (b->page_size != g->page_size) {
		msg("gate: --baseline %s was measured with %u-byte pages, this machine has %u: not "
		    "comparable", b->path, b->page_size, g->page_size);
		return false;
	}
	if (strcmp(b->filesystems, g->filesystems)) {
		msg("gate: --baseline %s was measured on %s, these files are on %s: not comparable",
		    b->path, *b->filesystems ? b->filesystems : "no files",
		    *g->filesystems ? g->filesystems : "no files");
		return false;
	}
	return true;
}

int cmd_gate(int argc, char **argv)
{
	struct gate_opts o;
	struct gate_result g = { .opts = &o };
	struct scan survey;
	int ret = parse_opts(argc, argv, &o);

	if (ret) {
		budget_free(&o.budget);
		return ret;
	}
	/* A workload needs the engine: say so before scanning (and running anything). */
	if (o.command && (ret = engine_probe())) {
		budget_free(&o.budget);
		baseline_free(&o.baseline);
		return ret;
	}
	/* Before any run: which files, on which filesystems (and the check of a baseline). */
	scan_paths(o.paths, o.npaths, &o.scan, &survey);
	g.page_size = survey.page_size;
	g.filesystems = filesystems_of(&survey);
	g.nfiles = survey.nfiles;
	g.input_lost = survey.input_lost;
	if (o.baseline_file && !baseline_comparable(&o.baseline, &g)) {
		ret = EXIT_USAGE;
		goto out;
	}
	g.runs = xcalloc(o.runs, sizeof(*g.runs));
	if (!o.command) {
		ret = snapshot_run(&survey, &g.runs[0]);
		g.nruns = ret ? 0 : 1;
	} else {
		stop_on_signals(true);
		for (size_t i = 0; i < o.runs && !g.interrupted; i++) {
			if (o.runs > 1)
				msg("gate: run %zu of %llu", i + 1, (unsigned long long)o.runs);
			ret = workload_run(&o, &survey, &g.runs[i], &g.interrupted);
			if (ret)
				break;
			g.nruns++;
			g.workload_failed |= g.runs[i].exit_status != 0;
			g.input_lost |= g.runs[i].incomplete;
		}
		if (g.interrupted && g.nruns < o.runs)
			msg("gate: interrupted after %zu of %llu runs", g.nruns, (unsigned long long)o.runs);
	}
	if (ret)
		goto out;
	g.median_run = medians(g.runs, g.nruns, &g.metrics);
	checks_evaluate(&o.budget, &g.metrics, o.baseline_file ? &o.baseline : NULL, o.command);
	g.verdict = checks_verdict(&o.budget);

	/*
	 * A failed (or interrupted) workload wins over a failed check: what ran
	 * was not the workload the budget is for.  --allow-workload-failure
	 * excuses an exit status, not an interruption.
	 */
	if (g.interrupted || (g.workload_failed && !o.allow_workload_failure))
		ret = EXIT_WORKLOAD_FAILED;
	else if (strcmp(g.verdict, "fail") == 0)
		ret = EXIT_GATE_FAILED;
	else if (g.input_lost)
		ret = EXIT_PARTIAL;
	g.exit_code = ret;
	if (g.workload_failed)
		msg("gate: the workload exited %d%s", (int)g.metrics.v[M_WORKLOAD_EXIT],
		    o.allow_workload_failure ? " (allowed)" : "");
	if (gate_write(&g) && !ret)
		ret = EXIT_FAIL;
out:
	for (size_t i = 0; g.runs && i < o.runs; i++) {
		offenders_free(&g.runs[i]);
		free(g.runs[i].timeline);
	}
	free(g.runs);
	free(g.filesystems);
	scan_free(&survey);
	budget_free(&o.budget);
	baseline_free(&o.baseline);
	return ret;
}
