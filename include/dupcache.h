/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types shared by the BPF engine (bpf/dupcache.bpf.c) and the loader.
 *
 * The loader turns the extent map into flat arrays the BPF programs can
 * search without allocation:
 *   tracked   dc_file_key -> file id
 *   files     file id     -> where its pages and segments live, its counts
 *   segments  per file, sorted by file page: runs of file pages that map to
 *             physical pages referenced by two or more (file, page) pairs;
 *             only those can ever hold duplicate copies
 *   runs      per file, sorted by file page: its data pages (not holes) and
 *             where their entries in `pages` start
 *   pages     a 16-bit state per data page of every tracked file
 *             (resident, reclaimed, the cgroup slot of its add), changed by
 *             compare-and-swap, so adds and removes are idempotent and events
 *             and the start-up seeding can race; four pages to a word, so
 *             an event touches one random line for its state
 *   hole_pages the same state for a page cached in a hole, made when the
 *             kernel caches one: holes cost nothing until then
 *   slot_copies one counter per shared physical page ("slot")
 */
#ifndef DUPCACHE_H
#define DUPCACHE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Largest folio handled in one event; bigger ones are counted, not walked. */
#define DC_MAX_FOLIO_PAGES 2048
/* Binary search depth over a file's segments or runs: 2^24 per file. */
#define DC_SEG_SEARCH_STEPS 24
/* Pages cached in holes that the engine keeps state for, over all files. */
#define DC_MAX_HOLE_PAGES (1u << 20)
/* Pages per seeding call (one BPF_PROG_TEST_RUN of the seed program). */
#define DC_SEED_MAX_PAGES (1u << 20)

struct dc_inode_key {
	__u64 ino;
	__u32 dev; /* the superblock's s_dev, kernel encoding (major << 20 | minor) */
	__u32 pad;
};

/*
 * A tracked file as the kernel tells files apart: the superblock, the btrfs
 * subvolume (a snapshot keeps its files' inode numbers), the inode number,
 * and its generation (a reused inode number is another file) on the
 * filesystems whose bit in struct dc_config gen_mask says the loader could
 * read it.
 */
struct dc_file_key {
	__u64 ino;
	__u64 subvol; /* btrfs: the subvolume's root id; 0 elsewhere */
	__u32 dev;    /* the superblock's s_dev, kernel encoding */
	__u32 gen;    /* i_generation where gen_mask says so, else 0 */
};

#ifndef __VMLINUX_H__
static inline int dc_file_key_cmp(const struct dc_file_key *a, const struct dc_file_key *b)
{
	if (a->dev != b->dev)
		return a->dev < b->dev ? -1 : 1;
	if (a->subvol != b->subvol)
		return a->subvol < b->subvol ? -1 : 1;
	if (a->ino != b->ino)
		return a->ino < b->ino ? -1 : 1;
	return a->gen < b->gen ? -1 : a->gen > b->gen;
}

/* The loaders' order of keys: by device, then inode. */
static inline int dc_inode_key_cmp(const struct dc_inode_key *a, const struct dc_inode_key *b)
{
	if (a->dev != b->dev)
		return a->dev < b->dev ? -1 : 1;
	return a->ino < b->ino ? -1 : a->ino > b->ino;
}
#endif

/*
 * One per tracked file.  The loader writes the layout; the programs (and
 * the seed program) count; the loader reads the counts from the mmapped map.
 */
struct dc_file {
	/* layout */
	__u64 npages;    /* pages up to EOF at the scan */
	__u32 run_first;
	__u32 run_count;
	__u32 seg_first;
	__u32 seg_count;
	__u32 group;     /* sharing group id, DC_NO_GROUP when it has none */
	__u32 blocks_changed; /* set by the programs: re-read this file's extents */
	/*
	 * Events over the window (the loader carries them across rebuilds);
	 * resident pages = resident_base + added - removed
	 */
	__u64 resident_base; /* seeded pages, less the carried added - removed */
	__u64 added;     /* pages added to the page cache */
	__u64 removed;   /* pages removed from the page cache */
	__u64 reclaimed; /* of those removed, by reclaim (kswapd, direct, memcg, proactive) */
	__u64 refaults;  /* of those added, pages reclaim had removed */
};
#define DC_NO_GROUP 0xffffffffu

/* File pages [lpage, lpage + npages) hold data; page lpage + k's entry in `pages` is bit + k. */
struct dc_run {
	__u64 lpage;
	__u64 npages;
	__u64 bit;
};

/*
 * The programs' one view of a segment and of a run: file pages
 * [lpage, lpage + npages) map to base + k (slots, or entries in `pages`).
 */
struct dc_span {
	__u64 lpage;
	__u64 npages;
	__u64 base;
};

/* A page cached in a hole: its file and page; the value is its state, as in `pages`. */
struct dc_hole_key {
	__u32 file_id;
	__u32 pad;
	__u64 index;
};

struct dc_segment {
	__u64 lpage;  /* first file page */
	__u64 npages;
	__u64 slot;   /* slot of lpage; lpage + k uses slot + k */
};

_Static_assert(sizeof(struct dc_segment) == sizeof(struct dc_span) &&
	       __builtin_offsetof(struct dc_segment, slot) == __builtin_offsetof(struct dc_span, base),
	       "a segment is a span");
_Static_assert(sizeof(struct dc_run) == sizeof(struct dc_span) &&
	       __builtin_offsetof(struct dc_run, bit) == __builtin_offsetof(struct dc_span, base),
	       "a run is a span");

struct dc_group_stats {
	__u64 dup;    /* sum over the group's slots of max(0, copies - 1) */
};

/*
 * Memory cgroups that pages of tracked files are charged to, by slot.
 * Slot 0 holds pages whose cgroup is unknown: cached before the engine
 * started (seeded from mincore), or past DC_MAX_CGROUPS cgroups.
 */
#define DC_MAX_CGROUPS 1024
#define DC_CGROUP_UNKNOWN 0
struct dc_cgroup_stats {
	__u64 id;        /* cgroup id (its kernfs inode number) */
	__u64 resident_base; /* resident pages = resident_base + added - removed */
	__u64 added;     /* events over the window, as for dc_file */
	__u64 removed;
	__u64 reclaimed;
	__u64 refaults;
};

/*
 * Per tracked page, one 16-bit state in `pages` (four pages to a word):
 * resident, removed by reclaim last (its next add is a refault), removed
 * while not counted resident (since the maps were filled: the seeding,
 * whose mincore may predate that removal, must not count it), and the
 * cgroup slot its add was counted in (DC_CGROUP_UNKNOWN when seeded
 * without one).  One word for everything an event changes about a page.
 */
#define DC_PAGE_BITS 16
#define DC_PAGES_PER_WORD 4
#define DC_PAGE_RESIDENT 0x1
#define DC_PAGE_RECLAIMED 0x2
#define DC_PAGE_GONE 0x4
#define DC_PAGE_CGROUP_SHIFT 4
#define DC_PAGE_CGROUP_MASK 0x3ff
_Static_assert(DC_MAX_CGROUPS <= DC_PAGE_CGROUP_MASK + 1, "a cgroup slot fits in a page's state");

/* Filesystems (s_dev) of the scanned trees; more turn the filter off. */
#define DC_MAX_WATCHED_SB 13
/*
 * What every event reads before anything else, in one cache line: whether
 * the loader is rewriting the maps, which fill of them is live, and the
 * filter (how many filesystems, their s_dev, and on which ones keys carry
 * the inode generation).
 */
struct dc_config {
	__u32 paused;   /* set by the loader while it rewrites the maps: accounting waits */
	__u32 fill;     /* bumped at every fill: a per-CPU memo of an older one is void */
	__u16 n;        /* watched filesystems; 0: filter off */
	__u16 gen_mask; /* bit k: keys on dev[k]'s filesystem carry the inode generation */
	__u32 dev[DC_MAX_WATCHED_SB];
};
_Static_assert(sizeof(struct dc_config) == 64, "the configuration is one cache line");
_Static_assert(DC_MAX_WATCHED_SB <= 16, "gen_mask has a bit per filesystem");

/*
 * Global counters, in the programs' .data.totals (mmapped by the skeleton),
 * except the four of struct dc_event_counts, which the loader sums from the
 * per-CPU map cpu_state into this view.
 */
struct dc_totals {
	__u64 dup;
	__u64 peak_dup;
	__u64 added;          /* pages of tracked files added (events) */
	__u64 removed;
	__u64 changes;        /* sharing of a tracked file may have changed */
	__u64 tree_changes;   /* of those, ones that may touch any file (re-read all) */
	__u64 beyond_map;     /* tracked pages past the mapped size */
	__u64 oversize_folio; /* folios larger than DC_MAX_FOLIO_PAGES */
	__u64 paused_events;  /* events seen while the loader was rebuilding */
	__u64 missing_entry;  /* map lookups that failed (must stay 0) */
	__u64 holes_full;     /* pages cached in holes past DC_MAX_HOLE_PAGES: not counted */
	__u64 reclaimed;      /* tracked pages removed by reclaim */
	__u64 refaults;       /* tracked pages added again after reclaim removed them */
	__u64 ncgroups;       /* cgroup slots handed out (slot 0 excluded) */
	__u64 cgroups_full;   /* pages added for a cgroup that found no slot */
	/* Reclaim on the whole machine (mm_vmscan_* tracepoints). */
	__u64 kswapd_wakes;
	__u64 direct_stalls;  /* direct reclaim, ended */
	__u64 direct_stall_ns;
	__u64 memcg_stalls;   /* memory cgroup limit reclaim, ended */
	__u64 memcg_stall_ns;
	__u64 pages_reclaimed;
};

/*
 * What every tracked event counts, kept per CPU: no cache line that all
 * CPUs write, and no locked instruction.  The programs' per-CPU map
 * cpu_state holds a value that opens with it.
 */
struct dc_event_counts {
	__u64 added;     /* pages of tracked files added */
	__u64 removed;
	__u64 reclaimed; /* tracked pages removed by reclaim */
	__u64 refaults;  /* tracked pages added again after reclaim removed them */
};

/* Context of the seed program: account [index, index + npages) of a file. */
struct dc_seed_ctx {
	__u32 file_id;
	__u32 npages;
	__u64 index;
	__u32 cgroup;   /* slot the pages were charged to, as far as known */
	__u32 pad;
};

/*
 * Task attribution (top --by process), off unless the loader sets
 * attribute_tasks: per process (tgid), the pages of shared extents its
 * page-cache adds brought in, and of those the ones that became
 * duplicates (a copy of a physical page already cached).  Key
 * DC_TASKS_FULL (tgid 0, never a reader's) counts the pages of processes
 * the full map had no room for: each is one map-full event.
 */
#define DC_MAX_TASKS 4096
#define DC_TASKS_FULL 0
struct dc_task {
	__u64 added;      /* pages of shared extents added to the page cache */
	__u64 dup_added;  /* of those, copies of a physical page already cached */
	__u64 cgroup_id;  /* cgroup v2 id of the process at its first add */
	char comm[16];    /* its command at its first add */
};

/* The counters a file and a cgroup both keep, in this order (the programs add to either alike). */
struct dc_counts {
	__u64 resident_base;
	__u64 added;
	__u64 removed;
	__u64 reclaimed;
	__u64 refaults;
};

#define DC_COUNTS_AT(type) \
	(__builtin_offsetof(type, added) == __builtin_offsetof(type, resident_base) + 8 && \
	 __builtin_offsetof(type, removed) == __builtin_offsetof(type, resident_base) + 16 && \
	 __builtin_offsetof(type, reclaimed) == __builtin_offsetof(type, resident_base) + 24 && \
	 __builtin_offsetof(type, refaults) == __builtin_offsetof(type, resident_base) + 32)
_Static_assert(DC_COUNTS_AT(struct dc_file), "a file's counters are a struct dc_counts");
_Static_assert(DC_COUNTS_AT(struct dc_cgroup_stats), "a cgroup's counters are a struct dc_counts");

#endif /* DUPCACHE_H */
