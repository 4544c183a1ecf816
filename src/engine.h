/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The BPF detection engine's loader: probes the kernel, loads and attaches
 * the programs, fills their maps from a scan + extent map, seeds the counts
 * from residency read after attaching, and reads the counters back.
 */
#ifndef DUPCACHE_ENGINE_H
#define DUPCACHE_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include "extmap.h"
#include "scan.h"
#include "stats.h"

struct engine;

struct engine_window {
	uint64_t pages_added;      /* page-cache pages of tracked files added */
	uint64_t pages_removed;
	uint64_t peak_dup_pages;
	uint64_t refreshes;        /* extent map rebuilds after a change */
	uint64_t untracked_files;  /* files left out because a map was full */
	uint64_t oversize_folios;  /* folios too large to walk (change forced) */
	uint64_t missing_entry;    /* internal consistency: must be 0 */
	uint64_t hole_pages_uncounted; /* cached in holes past DC_MAX_HOLE_PAGES: figures short */
};

/*
 * Checks BTF, the tracepoints and privileges.  Returns EXIT_OK or the exit
 * code to use, after printing one line that says what is missing.
 */
int engine_probe(void);

/*
 * Returns EXIT_OK, or an exit code after a one-line message.  Attached
 * with no file yet (engine_sync() gives it the scan): every
 * clone, dedupe or snapshot syscall on any filesystem counts as a tree
 * change from now on, so one made while the trees are scanned is seen.
 */
int engine_attach(struct engine **out);
/* Replace the tracked state with a new scan + map (after a change). */
int engine_sync(struct engine *e, struct scan *s, const struct extmap *m);
/* A file id's id before the last sync (the same file, by key), or -1 if it is new. */
int64_t engine_previous_id(const struct engine *e, size_t id);
/* Changes noticed by the kernel side since start (monotonic). */
uint64_t engine_changes(const struct engine *e);
/* Of those, the ones that may concern any file (a clone, dedupe, snapshot...). */
uint64_t engine_tree_changes(const struct engine *e);
/* Every program that notices block map changes is attached (no kernel lacked one). */
bool engine_sees_every_change(const struct engine *e);
/* Whether a change of this file's blocks was noticed since the last call; clears it. */
bool engine_take_file_changed(struct engine *e, size_t id);
/* Counts for stats_build(); arrays owned by the engine until the next sync. */
void engine_counts(struct engine *e, struct dup_counts *out);
void engine_window(const struct engine *e, struct engine_window *out);
/* Everything the kernel side counts, for a live view; valid until the next sync. */
struct engine_sample {
	struct dc_totals totals;            /* since start (window counters carried) */
	const struct dc_file *files;        /* by file id; counts over the window */
	size_t nfiles;
	const struct dc_group_stats *groups;
	size_t ngroups;
	const struct dc_cgroup_stats *cgroups; /* by slot; slot 0: unknown */
	size_t ncgroups;
};
void engine_sample(const struct engine *e, struct engine_sample *out);

/*
 * Resident pages: the resident base (what the last sync seeded, less the
 * counts it carried over) plus what was added less what went.  `removed`
 * is read first: a page's removal is counted after its add, so an add and
 * removal between the reads cannot make the result negative.
 */
static inline uint64_t engine_resident(const __u64 *base, const __u64 *added, const __u64 *removed)
{
	uint64_t r = __atomic_load_n(removed, __ATOMIC_ACQUIRE);

	return __atomic_load_n(base, __ATOMIC_ACQUIRE) + __atomic_load_n(added, __ATOMIC_ACQUIRE) - r;
}

static inline uint64_t engine_file_resident(const struct dc_file *f)
{
	return engine_resident(&f->resident_base, &f->added, &f->removed);
}

static inline uint64_t engine_cgroup_resident(const struct dc_cgroup_stats *c)
{
	return engine_resident(&c->resident_base, &c->added, &c->removed);
}

/* A cgroup slot with something to show: pages came, went or are cached. */
static inline bool engine_cgroup_seen(const struct dc_cgroup_stats *c)
{
	return c->added || c->removed || engine_cgroup_resident(c);
}
/*
 * The scan's residency (what scan_residency() reads with a few system calls
 * per file) from the engine's page state, which follows every add and
 * removal of a tracked page: a file in the page tables whose pages all hold
 * data gets its bitmap from there; any other (holes, which the engine keeps
 * apart, or left out of the tables) is read with scan_file_residency().
 */
void engine_residency(const struct engine *e, struct scan *s);
/*
 * Each resident copy of a physical page held c times carries (c - 1) / c of a
 * page of duplicate bytes (rounded down per page), so shares add up to the
 * total: per file id and per cgroup slot (arrays of nfiles / DC_MAX_CGROUPS).
 */
void engine_dup_shares(const struct engine *e, const struct extmap *m, uint64_t *file_share,
		       uint64_t *cgroup_share);
/*
 * Whether the program `prog` of bpf/dupcache.bpf.c is attached: an optional
 * one is left out on a kernel without its tracepoint, and what it counts
 * then cannot be measured.
 */
bool engine_attached(const struct engine *e, const char *prog);
/*
 * Task attribution, for top --by process: on, engines loaded from now on
 * count per process the shared pages its adds brought in and the
 * duplicates among them (bpf/dupcache.bpf.c attribute_task()).  Off by
 * default: the programs then pay nothing for it.  A reload with bigger
 * maps starts the counts again.
 */
void engine_attribute_tasks(bool on);
bool engine_attributes_tasks(void);
struct engine_task {
	uint32_t tgid;       /* DC_TASKS_FULL: the pages of processes left out (map full) */
	struct dc_task t;
};
/* The processes counted so far (a malloc()ed array in *out); 0 when attribution is off. */
size_t engine_tasks(const struct engine *e, struct engine_task **out);
void engine_stop(struct engine *e);

#endif
