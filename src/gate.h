/* SPDX-License-Identifier: GPL-2.0 */
/* dupcache gate: what a gate measured, and its outputs (gate_output.c). */
#ifndef DUPCACHE_GATE_H
#define DUPCACHE_GATE_H

#include <stdbool.h>
#include <stdint.h>
#include "budget.h"
#include "scan.h"

/* Groups and files listed as offenders (each). */
#define GATE_OFFENDERS 10

struct gate_opts {
	struct budget budget;
	const char *baseline_file;
	struct baseline baseline;
	const char *save_baseline, *json, *junit, *markdown;
	uint64_t runs;
	bool warm, allow_workload_failure;
	struct scan_opts scan;
	char **paths;
	int npaths;
	char **command;  /* NULL: a snapshot */
};

struct sample {
	double seconds;  /* since the workload started */
	uint64_t dup_bytes, cached_bytes;
};

struct offender {
	bool group;      /* a sharing group (path: its first member), else a file */
	char *path;
	uint64_t files;
	uint64_t dup_bytes; /* a file's: its fair share (README.md, top) */
};

struct run {
	struct metrics m;
	int exit_status;         /* the workload's; 128 + N when killed by signal N */
	bool incomplete;         /* some files untracked (maps full) or lookups failed */
	struct sample *timeline;
	size_t ntimeline;
	long long sample_ns;
	struct sample peak_sample; /* the point with the most duplicate bytes */
	struct offender *offenders; /* at peak_sample */
	size_t noffenders;
};

struct gate_result {
	const struct gate_opts *opts;
	unsigned page_size;
	char *filesystems;       /* "btrfs,xfs" */
	size_t nfiles;
	struct run *runs;
	size_t nruns;
	size_t median_run;       /* stands for all: timeline, offenders */
	struct metrics metrics;  /* medians */
	const char *verdict;
	bool workload_failed, interrupted;
	bool input_lost;         /* input skipped, or a run's figures miss files: exit 3 */
	int exit_code;
};

/*
 * The table on stdout, GitHub annotations (GITHUB_ACTIONS=true), and the
 * files asked for (JSON, baseline, JUnit, Markdown, $GITHUB_STEP_SUMMARY).
 * Returns the number of files that could not be written (each said).
 */
int gate_write(const struct gate_result *g);

#endif
