/* SPDX-License-Identifier: GPL-2.0 */
/*
 * dupcache gate's metrics and budgets: what a run measures, the limits a
 * budget (flags or a JSON file) puts on them, absolute or relative to a
 * baseline (a gate JSON written earlier), and their verdicts.  No I/O but
 * reading the budget and baseline files.
 */
#ifndef DUPCACHE_BUDGET_H
#define DUPCACHE_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

enum metric {
	M_PEAK_DUP,           /* bytes: the engine's in-kernel peak of duplicate pages */
	M_END_DUP,
	M_PEAK_DUP_RATIO,     /* %: dup / cached at the timeline sample with the most dup */
	M_END_DUP_RATIO,
	M_END_CACHED,         /* bytes: tracked files' page cache at the end */
	M_CACHED_GROWTH,      /* bytes: tracked files, end - start (after the drop) */
	M_PAGE_CACHE_GROWTH,  /* bytes: Cached: of /proc/meminfo, end - start */
	M_PAGES_ADDED,
	M_REFAULTS,
	M_RECLAIMED,
	M_RECLAIM_STALLS,     /* direct + memory cgroup limit reclaim stalls */
	M_RECLAIM_STALL_MS,
	M_WORKLOAD_SECONDS,
	M_WORKLOAD_EXIT,
	M_COUNT
};

enum unit { U_BYTES, U_PERCENT, U_COUNT, U_SECONDS, U_MS };

struct metric_def {
	const char *name;     /* as in the JSON and the budget file */
	enum unit unit;
	bool needs_workload;  /* only measured around -- COMMAND (the engine) */
};
extern const struct metric_def metric_defs[M_COUNT];

/* Values of one run (or the medians); have[m] false: not measured. */
struct metrics {
	bool have[M_COUNT];
	double v[M_COUNT];
};

enum level { LEVEL_ERROR, LEVEL_WARN };
enum check_status { ST_PASS, ST_WARN, ST_FAIL, ST_UNMEASURED };
extern const char *const level_name[];
extern const char *const status_name[];

struct check {
	enum metric metric;
	enum level level;
	bool relative;        /* max_increase over the baseline, else max */
	double max;
	double max_increase;  /* percent of the baseline's value */
	double min_increase;  /* the increase always allowed, in the metric's unit */
	/* set by checks_evaluate() */
	enum check_status status;
	double value, limit, baseline;
	const char *reason;   /* why ST_UNMEASURED */
};

struct budget {
	struct check *checks;
	size_t n;
};

struct baseline {
	const char *path;
	unsigned page_size;
	char *filesystems;    /* sorted, comma-separated: "btrfs,xfs" */
	struct metrics m;
};

void budget_add(struct budget *b, const struct check *c);
bool budget_has_relative(const struct budget *b);
/* Both false after a one-line message "dupcache: gate: FILE: ...". */
bool budget_read(const char *path, struct budget *b);
bool baseline_read(const char *path, struct baseline *out);
void budget_free(struct budget *b);
void baseline_free(struct baseline *base);

/*
 * Verdict of every check; base may be NULL when no check is relative;
 * workload: whether one ran (it says why a metric is missing).
 */
void checks_evaluate(struct budget *b, const struct metrics *m, const struct baseline *base,
		     bool workload);
/* "pass", "warn" or "fail" over all checks (unmeasured ones fail). */
const char *checks_verdict(const struct budget *b);

/* A value of a metric for people: "64.0 MiB", "66.7%", "12", "1.25 s". */
const char *metric_format(enum metric m, double v, char *buf, size_t len);

#endif
