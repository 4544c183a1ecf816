// SPDX-License-Identifier: GPL-2.0
/*
 * dupcache detection engine: keeps, in the kernel, the number of resident
 * page-cache copies of every shared physical page of the tracked files.
 *
 * Nothing is sent to userspace per event: the loader reads the counters
 * (all in mmapped arrays) when it wants them.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "dupcache.h"

char LICENSE[] SEC("license") = "GPL";

/* Sizes are set by the loader before load, from the extent map. */
/* Not preallocated: the headroom for files to come costs nothing until they do. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct dc_file_key);
	__type(value, __u32);
} tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dc_file);
} files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dc_span); /* struct dc_segment */
} segments SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dc_span); /* struct dc_run */
} runs SEC(".maps");

/*
 * Made when a hole's page is cached, not before; emptied by the loader's
 * fill, which sizes it by the holes' pages it saw cached (a hash table's
 * buckets are allocated whole).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct dc_hole_key);
	__type(value, __u64);
} hole_pages SEC(".maps");

/* The 16-bit state (DC_PAGE_*) of every tracked data page, four pages to a word. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pages SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64); /* two 32-bit counters: array values are 8-aligned */
} slot_copies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dc_group_stats);
} group_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, DC_MAX_CGROUPS);
	__type(key, __u32);
	__type(value, struct dc_cgroup_stats);
} cgroup_stats SEC(".maps");

/* Filled as cgroups are seen: their entries cost nothing before. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, DC_MAX_CGROUPS);
	__type(key, __u64);
	__type(value, __u32);
} cgroup_slots SEC(".maps");

/*
 * The last memory cgroup seen on this CPU and its slot: consecutive pages
 * mostly share one, and this spares three pointer reads and a hash lookup.
 * The css serial number guards against a freed mem_cgroup's address coming
 * back: it is never reused (the memcg id is: the lowest free one is taken).
 */
struct cgroup_memo {
	__u64 memcg;
	__u64 serial;
	__u32 slot;
	__u32 pad;
};

/*
 * The file of this CPU's last page-cache event, tracked or not: the next
 * folio of the same file (readahead, a reader's next page) skips the hash
 * lookup.  File ids change when the loader fills the maps: a memo of an
 * earlier fill is void.
 */
#define DC_UNTRACKED 0xffffffffu
struct file_memo {
	struct dc_file_key key;
	__u32 file_id;      /* DC_UNTRACKED: not a tracked file */
	__u32 fill;         /* cfg.fill it was made in; 0: never made */
};

/*
 * What a thread is in the middle of, in the thread's own storage: no
 * capacity to fill or evict (a hash by thread id could be filled by
 * anyone who starts enough threads, and lose the marks of others), no
 * preallocation, freed with the thread; only threads that did one of
 * these things have one.
 */
struct thread_state {
	__u64 reclaim_start; /* ktime of a direct or memcg reclaim's start, 0 outside one */
	__u8 changing;       /* inside a syscall that may change sharing on a watched fs */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} thread_states SEC(".maps");

static __always_inline struct thread_state *thread_state(bool create)
{
	return bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), NULL,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/*
 * Not used by any program: an update of an ARRAY_OF_MAPS from userspace
 * returns only after an RCU grace period (the kernel's
 * maybe_wait_bpf_programs()), so every program that ran before it, under
 * the old `cfg.paused`, has finished.  That is the loader's barrier.
 */
struct grace_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} grace_inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct grace_inner);
} grace SEC(".maps") = {
	.values = { [0] = &grace_inner },
};

/* Apart from the configuration below, which every event reads: these lines are written. */
struct dc_totals totals SEC(".data.totals");
const volatile __u32 page_shift = 12;
/*
 * The scanned trees' filesystems, so that a page of any other filesystem
 * costs a few compares in the line every event reads anyway, not a hash
 * lookup; and the loader's pause.
 */
struct dc_config cfg __attribute__((aligned(64)));

/* 6.1 keeps a large folio's page count here; 6.18 calls it _nr_pages. */
struct folio___v61 {
	unsigned int _folio_nr_pages;
} __attribute__((preserve_access_index));

static __always_inline __u64 folio_pages(struct folio *folio)
{
	/*
	 * The flags word opens the folio on every kernel (6.1: unsigned long,
	 * 6.18: memdesc_flags_t): a plain load at offset 0 needs no CO-RE
	 * relocation, which could not match both types.
	 */
	unsigned long flags = *(unsigned long *)folio;

	if (!(flags & (1UL << bpf_core_enum_value(enum pageflags, PG_head))))
		return 1;
	/* Plain loads: the tracepoint's folio is a typed pointer (no probe read). */
	if (bpf_core_field_exists(folio->_nr_pages))
		return folio->_nr_pages;
	return ((struct folio___v61 *)folio)->_folio_nr_pages;
}

/* The filter's entry for a filesystem: -1 not watched, DC_MAX_WATCHED_SB filter off. */
static __always_inline int watched_index(__u32 dev)
{
	__u32 n = cfg.n;

	if (!n)
		return DC_MAX_WATCHED_SB;
	for (int i = 0; i < DC_MAX_WATCHED_SB; i++) {
		if ((__u32)i >= n)
			return -1;
		if (cfg.dev[i] == dev)
			return i;
	}
	return -1;
}

static __always_inline bool sb_watched(__u32 dev)
{
	return watched_index(dev) >= 0;
}

static __always_inline void note_change(void)
{
	__sync_fetch_and_add(&totals.changes, 1);
}

/*
 * Changes of the block map of one tracked file: the loader re-reads that
 * file and its sharing group only.  A change that may touch files the
 * programs cannot name (a clone's source, a dedupe's targets, a snapshot)
 * is a tree change: everything is re-read.
 */
static __always_inline void note_file_change(struct dc_file *file)
{
	file->blocks_changed = 1;
	note_change();
}

static __always_inline void note_tree_change(void)
{
	__sync_fetch_and_add(&totals.tree_changes, 1);
	note_change();
}

static __always_inline void raise_peak(__u64 dup)
{
	/* Bounded compare-and-swap: a lost race only under-reports by one. */
	for (int i = 0; i < 4; i++) {
		__u64 peak = totals.peak_dup;

		if (dup <= peak)
			return;
		if (__sync_val_compare_and_swap(&totals.peak_dup, peak, dup) == peak)
			return;
	}
}

/*
 * One event's (or one seeding call's) accounting.  The per-page work is
 * the page's state and its physical page's copy count; everything else is
 * gathered here and added once per folio: a large folio pays one atomic
 * per counter, not one per page.  A folio enters the page cache (or
 * leaves it) as a whole, so adding its duplicates at once also keeps the
 * peak exact: the peak is the duplicate count after an event.
 */
struct range_ctx {
	__u32 file_id;
	__u64 index;        /* next page to account */
	__u64 end;          /* past the last one */
	int delta;          /* +1 pages added, -1 pages removed */
	__u32 cgroup;       /* adds: slot of the folio's memory cgroup */
	bool reclaim;       /* removed by reclaim */
	bool seeding;       /* the loader's replay of mincore, not an event */
	/*
	 * The segment and the run found last, kept from one range to the next
	 * of the same file (folios walk pages in order; a reader's next folio
	 * skips the searches); fill: the fill of the maps they were found in.
	 */
	__u32 fill;
	struct dc_span seg;
	struct dc_span run;
	/* Gathered over the range. */
	__u64 pages;        /* pages whose state changed */
	__u64 refaults;
	__s64 dup;          /* change of the duplicate count */
	__u32 cg_slot;      /* the cgroup the pending count below goes to */
	__u64 cg_pages, cg_refaults;
	/*
	 * The piece being accounted: pages [index, piece_end) share a state
	 * word, changed at once; their old states, the lanes that changed,
	 * and the lane of its first page.
	 */
	__u64 piece_end;
	__u64 piece_old, piece_changed;
	__u32 piece_lane;
};

/* The range contexts of a CPU, by kind: events can interrupt a seeding call. */
#define RANGE_ADD 0
#define RANGE_REMOVE 1
#define RANGE_SEED 2
#define RANGE_KINDS 3

/*
 * Everything a CPU keeps, in one map value: one lookup, and the lines an
 * add touches next to each other.  The event counters open it (the loader
 * sums them from there).  Plain adds to them, not atomic ones: each has one
 * writer, one program (added and refaults folio_added, removed and
 * reclaimed folio_removed), and a program runs with preemption off and
 * never nested in itself on a CPU (page-cache adds and removals do not
 * happen in interrupts).
 */
struct cpu_state {
	struct dc_event_counts counts;
	struct file_memo file;
	struct cgroup_memo cgroup;
	struct range_ctx range[RANGE_KINDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_state SEC(".maps");

static __always_inline struct cpu_state *this_cpu(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cpu_state, &zero);
}

static __always_inline struct range_ctx *range_of(__u32 which)
{
	struct cpu_state *st = this_cpu();

	return st && which < RANGE_KINDS ? &st->range[which] : NULL;
}

/*
 * The span of map (segments or runs) that holds file page idx, among a
 * file's count spans from first (sorted by lpage), into *last, which is
 * looked at first; false when none holds it.
 */
static __always_inline bool find_span(void *map, __u32 first, __u32 count, struct dc_span *last,
				      __u64 idx)
{
	__u32 lo = 0, hi = count, key;
	struct dc_span *s;

	if (idx >= last->lpage && idx < last->lpage + last->npages)
		return true;
	/* The last span starting at or before idx. */
	for (int i = 0; i < DC_SEG_SEARCH_STEPS && lo < hi; i++) {
		__u32 mid = lo + (hi - lo) / 2;

		key = first + mid;
		s = bpf_map_lookup_elem(map, &key);
		if (!s) {
			__sync_fetch_and_add(&totals.missing_entry, 1);
			return false;
		}
		if (s->lpage <= idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == 0)
		return false;
	key = first + lo - 1;
	s = bpf_map_lookup_elem(map, &key);
	if (!s || idx >= s->lpage + s->npages)
		return false;
	*last = *s;
	return true;
}

/*
 * Task attribution (top --by process): the knob, the map and the one
 * function, together.  Off unless the loader sets attribute_tasks before
 * load: the verifier then prunes the body as dead code (rodata), so the
 * hot path pays nothing for it, and the map is sized to one entry.
 */
const volatile bool attribute_tasks = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DC_MAX_TASKS);
	__type(key, __u32);
	__type(value, struct dc_task);
} tasks SEC(".maps");

/* An event's add of a shared page, by the current process; dup: it became a duplicate. */
static __always_inline void attribute_task(bool dup)
{
	__u32 tgid, full = DC_TASKS_FULL;
	struct dc_task *t, fresh = {};

	if (!attribute_tasks)
		return;
	tgid = bpf_get_current_pid_tgid() >> 32;
	t = bpf_map_lookup_elem(&tasks, &tgid);
	if (!t) {
		fresh.cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(fresh.comm, sizeof(fresh.comm));
		/* NOEXIST: another CPU may have put it there first; then use that one */
		bpf_map_update_elem(&tasks, &tgid, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&tasks, &tgid);
		if (!t) /* full: the loader's DC_TASKS_FULL entry counts it */
			t = bpf_map_lookup_elem(&tasks, &full);
		if (!t)
			return;
	}
	__sync_fetch_and_add(&t->added, 1);
	if (dup)
		__sync_fetch_and_add(&t->dup_added, 1);
}

/*
 * Add a range's pages (and refaults) to the five counters from
 * resident_base on, laid out alike in struct dc_file and struct
 * dc_cgroup_stats (asserted in dupcache.h).
 */
static __always_inline void add_counts(struct range_ctx *c, __u64 *resident_base, __u64 pages,
				       __u64 refaults)
{
	struct dc_counts *n = (struct dc_counts *)resident_base;

	if (c->seeding) {
		__sync_fetch_and_add(&n->resident_base, pages);
	} else if (c->delta > 0) {
		__sync_fetch_and_add(&n->added, pages);
		if (refaults)
			__sync_fetch_and_add(&n->refaults, refaults);
	} else {
		__sync_fetch_and_add(&n->removed, pages);
		if (c->reclaim)
			__sync_fetch_and_add(&n->reclaimed, pages);
	}
}

/* The cgroup counts gathered so far, into their cgroup. */
static __always_inline void flush_cgroup(struct range_ctx *c)
{
	struct dc_cgroup_stats *cg;
	__u32 slot = c->cg_slot;

	if (!c->cg_pages)
		return;
	cg = bpf_map_lookup_elem(&cgroup_stats, &slot);
	if (cg)
		add_counts(c, &cg->resident_base, c->cg_pages, c->cg_refaults);
	c->cg_pages = c->cg_refaults = 0;
}

/* One copy count's old value: the duplicate count's change is gathered. */
static __always_inline void count_copy(struct range_ctx *c, __u32 old)
{
	if (c->delta > 0 && !c->seeding)
		attribute_task(old >= 1);
	/* Only a second or later copy changes the duplicate count. */
	if (c->delta > 0 ? old >= 1 : old >= 2)
		c->dup += c->delta;
}

/*
 * The physical pages' copy counts of the piece's changed pages.  Two
 * counters share a word of slot_copies: where two pages of the piece have
 * the two slots of one word (consecutive pages of a segment, the first
 * slot even), one atomic on the word changes both (a large folio pays one
 * per two pages).  Neither half can carry or borrow into the other: a
 * count is below 2^32, and only a page counted resident is taken out.
 */
static __always_inline void account_copies(struct range_ctx *c, struct dc_file *file, __u64 idx)
{
	for (__u32 j = 0; j < DC_PAGES_PER_WORD; j++) {
		__u32 shift = (c->piece_lane + j) * DC_PAGE_BITS, word, old;
		__u64 slot, *pair, olds;
		bool both;

		if (idx + j >= c->piece_end)
			break;
		if (!(c->piece_changed >> shift & 1) ||
		    !find_span(&segments, file->seg_first, file->seg_count, &c->seg, idx + j))
			continue;
		slot = c->seg.base + (idx + j - c->seg.lpage);
		word = slot / 2;
		pair = bpf_map_lookup_elem(&slot_copies, &word);
		if (!pair) {
			__sync_fetch_and_add(&totals.missing_entry, 1);
			return;
		}
		both = !(slot & 1) && idx + j + 1 < c->piece_end &&
		       idx + j + 1 < c->seg.lpage + c->seg.npages &&
		       (c->piece_changed >> (shift + DC_PAGE_BITS) & 1);
		if (both) {
			olds = c->delta > 0 ? __sync_fetch_and_add(pair, 0x100000001ULL)
					    : __sync_fetch_and_sub(pair, 0x100000001ULL);
			count_copy(c, (__u32)olds);
			count_copy(c, olds >> 32);
			j++;
			continue;
		}
		old = __sync_fetch_and_add((__u32 *)pair + (slot & 1), c->delta > 0 ? 1 : (__u32)-1);
		count_copy(c, old);
	}
}

/* A page whose state changed (old: its state before): its counts. */
static __always_inline void account_page(struct range_ctx *c, __u32 old)
{
	/* A removal goes to the cgroup its add was counted in. */
	__u32 slot = c->delta > 0 ? c->cgroup : old >> DC_PAGE_CGROUP_SHIFT & DC_PAGE_CGROUP_MASK;

	if (slot != c->cg_slot) {
		flush_cgroup(c);
		c->cg_slot = slot;
	}
	c->pages++;
	c->cg_pages++;
	if (c->delta > 0 && !c->seeding && (old & DC_PAGE_RECLAIMED)) {
		c->refaults++;
		c->cg_refaults++;
	}
}

/* Bit 0 of each page's 16-bit state in a word of `pages`. */
#define LANES 0x0001000100010001ULL

/*
 * New states for the pages of a state word whose lanes are set in `lanes`
 * (bit 0 of each), all at once; *changed: the lanes whose counts change.
 * An add makes a page resident, tagged with its cgroup, unless it is
 * resident already or (a seeded add) an event removed it since the fill:
 * the event is newer than the seed's mincore.  A removal takes a resident
 * page out (reclaim marks it, for its refault) and marks one that is not
 * GONE, for the seeding.
 */
static __always_inline __u64 next_states(struct range_ctx *c, __u64 old, __u64 lanes, __u64 *changed)
{
	__u64 resident = old & lanes, gone = old >> 2 & lanes, ch, state;

	_Static_assert(DC_PAGE_RESIDENT == 1 && DC_PAGE_GONE == 1 << 2, "lane bits");
	if (c->delta > 0) {
		ch = lanes & ~resident & (c->seeding ? ~gone : ~0ULL);
		state = DC_PAGE_RESIDENT | (__u64)c->cgroup << DC_PAGE_CGROUP_SHIFT;
		*changed = ch;
		return (old & ~(ch * 0xffff)) | ch * state;
	}
	ch = resident;
	state = c->reclaim ? DC_PAGE_RECLAIMED : 0;
	*changed = ch;
	return (old & ~(ch * 0xffff)) | ch * state | (lanes & ~resident) << 2;
}

/*
 * Change the states of n pages, in lanes first .. first + n - 1 of *w, in
 * one compare-and-swap (neighbours share the word: retry when another CPU
 * changed it first); the piece remembers the old states and which pages
 * changed, for the page-by-page accounting that follows.
 */
static __always_inline void change_states(struct range_ctx *c, __u64 *w, __u32 first, __u32 n)
{
	__u64 lanes = LANES >> (DC_PAGE_BITS * (DC_PAGES_PER_WORD - n)) << (DC_PAGE_BITS * first);
	__u64 old = *w, new, seen, changed = 0;

	c->piece_changed = 0;
	for (int try = 0; try < 8; try++) {
		new = next_states(c, old, lanes, &changed);
		if (new == old)
			break;
		seen = __sync_val_compare_and_swap(w, old, new);
		if (seen == old)
			break;
		old = seen;
		if (try == 7) {
			__sync_fetch_and_add(&totals.missing_entry, 1);
			return;
		}
	}
	c->piece_old = old;
	c->piece_changed = changed;
	c->piece_lane = first;
}

/*
 * The next piece of the range: data pages of one run in one word of
 * `pages`, or one page cached in a hole, whose state gets an entry of its
 * own in hole_pages the first time the kernel caches it (or drops it: a
 * removal marks it GONE for the seeding).  With no room there, the page is
 * left out of every count, its adds and removals alike, and counted in
 * holes_full; its file is marked, so that the next rebuild sizes the map
 * for it (a seeding's, the loader sizes for at once).  Returns false when
 * the pages past idx cannot be accounted.
 */
static __always_inline bool start_piece(struct range_ctx *c, struct dc_file *file, __u64 idx)
{
	struct dc_hole_key key = { .file_id = c->file_id, .index = idx };
	__u64 zero = 0, *w, entry, n;
	__u32 word;

	if (find_span(&runs, file->run_first, file->run_count, &c->run, idx)) {
		entry = c->run.base + (idx - c->run.lpage);
		n = DC_PAGES_PER_WORD - entry % DC_PAGES_PER_WORD;
		if (n > c->end - idx)
			n = c->end - idx;
		if (n > c->run.lpage + c->run.npages - idx)
			n = c->run.lpage + c->run.npages - idx;
		word = entry / DC_PAGES_PER_WORD;
		w = bpf_map_lookup_elem(&pages, &word);
		if (!w) {
			__sync_fetch_and_add(&totals.missing_entry, 1);
			return false;
		}
		c->piece_end = idx + n;
		change_states(c, w, entry % DC_PAGES_PER_WORD, n);
		return true;
	}
	c->piece_end = idx + 1;
	w = bpf_map_lookup_elem(&hole_pages, &key);
	if (!w) {
		bpf_map_update_elem(&hole_pages, &key, &zero, BPF_NOEXIST);
		w = bpf_map_lookup_elem(&hole_pages, &key);
	}
	if (w) {
		change_states(c, w, 0, 1);
	} else {
		__sync_fetch_and_add(&totals.holes_full, 1);
		/* a seeding's overflow is the loader's to size for, at once */
		if (!c->seeding)
			note_file_change(file);
		c->piece_changed = 0;
	}
	return true;
}

/* The range's next piece (up to a state word's pages); 1 when the range is done. */
static __always_inline int account_next(struct range_ctx *c, struct dc_file *file)
{
	__u64 idx = c->index;

	if (idx >= c->end)
		return 1;
	if (idx >= file->npages) {
		/* Grown since the scan: the loader must map it first. */
		__sync_fetch_and_add(&totals.beyond_map, 1);
		note_file_change(file);
		return 1;
	}
	if (!start_piece(c, file, idx))
		return 1;
	for (__u32 j = 0; j < DC_PAGES_PER_WORD; j++) {
		__u32 shift = (c->piece_lane + j) * DC_PAGE_BITS;

		if (idx + j >= c->piece_end)
			break;
		if (c->piece_changed >> shift & 1)
			account_page(c, c->piece_old >> shift & 0xffff);
	}
	if (file->seg_count && c->piece_changed)
		account_copies(c, file, idx);
	c->index = c->piece_end;
	return c->index >= c->end;
}

/*
 * The next piece of this CPU's range of kind which; 1 when it is done.  A
 * global function: the verifier checks it once, not once per state of its
 * callers (the per-page work was most of the folio programs' verification,
 * 600,000 instructions and seconds per load).
 */
__noinline int account_step(__u32 which)
{
	struct range_ctx *c = range_of(which);
	struct dc_file *file = c ? bpf_map_lookup_elem(&files, &c->file_id) : NULL;

	return file ? account_next(c, file) : 1;
}

/* bpf_loop's callback: the range is this CPU's of kind *which. */
static int account_next_cb(__u32 i, __u32 *which)
{
	return account_step(*which) ? 1 : 0; /* a callback returns 0 or 1 */
}

/* What the range gathered, into the file's, the group's and the global counters. */
static __always_inline void flush_range(struct range_ctx *c, struct dc_file *file)
{
	struct dc_group_stats *g;
	__u32 group = file->group;

	flush_cgroup(c);
	if (c->pages) {
		add_counts(c, &file->resident_base, c->pages, c->refaults);
		if (c->refaults || (c->delta < 0 && c->reclaim)) {
			struct cpu_state *st = this_cpu();

			if (st) {
				st->counts.refaults += c->refaults;
				if (c->delta < 0 && c->reclaim)
					st->counts.reclaimed += c->pages;
			}
		}
	}
	if (!c->dup)
		return;
	g = bpf_map_lookup_elem(&group_stats, &group);
	if (!g) {
		__sync_fetch_and_add(&totals.missing_entry, 1);
		return;
	}
	__sync_fetch_and_add(&g->dup, (__u64)c->dup);
	if (c->dup > 0)
		raise_peak(__sync_fetch_and_add(&totals.dup, (__u64)c->dup) + c->dup);
	else
		__sync_fetch_and_add(&totals.dup, (__u64)c->dup);
}

/*
 * Account pages [index, index + npages) of a file, through this CPU's
 * range context for events of kind which (its fields are map memory,
 * not stack: the verifier then need not follow every combination of
 * their values through the counters).
 */
static __always_inline void account_range(__u32 which, struct dc_file *file, __u32 file_id,
					  __u64 index, __u64 npages, int delta, __u32 cgroup,
					  bool reclaim, bool seeding)
{
	struct range_ctx *c = range_of(which);

	if (!c)
		return;
	/* Spans of another file, or of an earlier fill (file ids change), are no guess. */
	if (c->file_id != file_id || c->fill != cfg.fill) {
		c->seg = c->run = (struct dc_span){};
		c->fill = cfg.fill;
	}
	c->file_id = file_id;
	c->index = index;
	c->end = index + npages;
	c->delta = delta;
	c->cgroup = cgroup;
	c->reclaim = reclaim;
	c->seeding = seeding;
	c->pages = c->refaults = c->cg_pages = c->cg_refaults = 0;
	c->dup = 0;
	c->cg_slot = DC_CGROUP_UNKNOWN;
	/* Most folios are one page: no loop for them. */
	if (!account_step(which))
		bpf_loop(npages, account_next_cb, &which, 0);
	flush_range(c, file);
}

#define BTRFS_SUPER_MAGIC 0x9123683E

/* The root id of a btrfs inode's subvolume (CO-RE: btrfs may be a module, or absent). */
static __always_inline __u64 btrfs_subvol(struct inode *inode)
{
	struct btrfs_inode *bi;

	if (!bpf_core_type_exists(struct btrfs_inode))
		return 0;
	bi = (void *)((unsigned long)inode - bpf_core_field_offset(struct btrfs_inode, vfs_inode));
	return BPF_CORE_READ(bi, root, root_key.objectid);
}

/* Inode's key in `tracked`; false when its filesystem is not watched. */
static __always_inline bool file_key(struct inode *inode, struct dc_file_key *key)
{
	struct super_block *sb;
	int w;

	if (!inode)
		return false;
	sb = inode->i_sb;
	key->dev = sb->s_dev;
	w = watched_index(key->dev);
	if (w < 0)
		return false;
	key->ino = inode->i_ino;
	key->subvol = sb->s_magic == BTRFS_SUPER_MAGIC ? btrfs_subvol(inode) : 0;
	key->gen = w < DC_MAX_WATCHED_SB && (cfg.gen_mask >> w & 1) ? inode->i_generation : 0;
	return true;
}

static __always_inline __u32 *tracked_file(struct inode *inode)
{
	struct dc_file_key key;

	return file_key(inode, &key) ? bpf_map_lookup_elem(&tracked, &key) : NULL;
}

/* The engine's record of a tracked inode, or NULL. */
static __always_inline struct dc_file *tracked_dc_file(struct inode *inode)
{
	__u32 *fid = tracked_file(inode);

	return fid ? bpf_map_lookup_elem(&files, fid) : NULL;
}

static __always_inline void note_inode_change(struct inode *inode)
{
	struct dc_file *file = tracked_dc_file(inode);

	if (file)
		note_file_change(file);
}

#define PF_MEMALLOC 0x00000800 /* set by every reclaimer: kswapd, direct, memcg, DAMON */

/*
 * The css serial number of a folio's mem_cgroup.  The folio holds it as a
 * scalar, which only a probe read can follow (some 45 ns in an earlier
 * session's ablation of a tracked add).  The folio is charged to the memory cgroup of the
 * task that adds it almost always (the reader's own readahead): when the
 * task's memory css, which the programs reach through typed pointers with
 * plain loads, is the same object, read the number through it.
 */
static __always_inline __u64 memcg_serial(struct mem_cgroup *memcg)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cgroup_subsys_state *css =
		task->cgroups->subsys[bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id)];

	if ((unsigned long)css == (unsigned long)memcg + bpf_core_field_offset(struct mem_cgroup, css))
		return css->serial_nr;
	return BPF_CORE_READ(memcg, css.serial_nr);
}

/* The slot of a memory cgroup, handed out on first sight (bounded). */
static __always_inline __u32 cgroup_slot(struct folio *folio, __u64 npages, struct cgroup_memo *memo)
{
	/* Page cache folios point at their mem_cgroup; the low bits are flags. */
	struct mem_cgroup *memcg = (struct mem_cgroup *)(folio->memcg_data & ~3UL);
	struct dc_cgroup_stats *cg;
	__u32 *slot, new;
	__u64 id, serial;

	if (!memcg)
		return DC_CGROUP_UNKNOWN;
	serial = memcg_serial(memcg);
	if (memo && memo->memcg == (__u64)memcg && memo->serial == serial)
		return memo->slot;
	id = BPF_CORE_READ(memcg, css.cgroup, kn, id);
	slot = bpf_map_lookup_elem(&cgroup_slots, &id);
	if (slot) {
		if (memo) {
			memo->memcg = (__u64)memcg;
			memo->serial = serial;
			memo->slot = *slot;
		}
		return *slot;
	}
	new = __sync_fetch_and_add(&totals.ncgroups, 1) + 1;
	if (new >= DC_MAX_CGROUPS) {
		__sync_fetch_and_add(&totals.cgroups_full, npages);
		return DC_CGROUP_UNKNOWN;
	}
	/*
	 * Lost a race for the same cgroup: use the winner's slot.  The slot
	 * taken stays without an id (and without pages), so no two slots
	 * ever name one cgroup.
	 */
	if (bpf_map_update_elem(&cgroup_slots, &id, &new, BPF_NOEXIST)) {
		slot = bpf_map_lookup_elem(&cgroup_slots, &id);
		return slot ? *slot : DC_CGROUP_UNKNOWN;
	}
	cg = bpf_map_lookup_elem(&cgroup_stats, &new);
	if (cg)
		cg->id = id;
	return new;
}

static __always_inline bool same_key(const struct dc_file_key *a, const struct dc_file_key *b)
{
	return a->ino == b->ino && a->subvol == b->subvol && a->dev == b->dev && a->gen == b->gen;
}

static __always_inline int on_folio(struct folio *folio, int delta)
{
	struct address_space *mapping = folio->mapping;
	struct file_memo *memo = NULL;
	__u32 *fid, file_id, fill, cgroup = DC_CGROUP_UNKNOWN;
	struct dc_file_key key;
	struct cpu_state *st;
	struct dc_file *file;
	bool reclaim = false, paused;
	struct inode *host;
	__u64 npages;

	if (!mapping || !(host = mapping->host) || !file_key(host, &key))
		return 0;
	/*
	 * One read of the pause: a program that saw none finishes before the
	 * loader, which waits for that, rewrites anything.  While paused, no
	 * memo is used or made.
	 */
	paused = *(volatile __u32 *)&cfg.paused;
	fill = cfg.fill;
	st = this_cpu();
	if (st && !paused)
		memo = &st->file;
	if (memo && memo->fill == fill && same_key(&memo->key, &key)) {
		file_id = memo->file_id;
	} else {
		fid = bpf_map_lookup_elem(&tracked, &key);
		file_id = fid ? *fid : DC_UNTRACKED;
		if (memo) {
			memo->key = key;
			memo->file_id = file_id;
			memo->fill = fill;
		}
	}
	if (file_id == DC_UNTRACKED || !(file = bpf_map_lookup_elem(&files, &file_id)))
		return 0;
	npages = folio_pages(folio);
	if (delta > 0) {
		if (st)
			st->counts.added += npages;
	} else {
		if (st)
			st->counts.removed += npages;
		/* Truncate sets i_size before it drops pages; unlink drops i_nlink. */
		if (!host->i_nlink ||
		    folio->index >= (__u64)(host->i_size + (1 << page_shift) - 1) >> page_shift)
			note_file_change(file);
	}
	if (paused) {
		__sync_fetch_and_add(&totals.paused_events, 1);
		return 0;
	}
	if (npages > DC_MAX_FOLIO_PAGES) {
		__sync_fetch_and_add(&totals.oversize_folio, 1);
		note_file_change(file);
		return 0;
	}
	/* Adds are tagged with the folio's cgroup; a removal goes where its add went. */
	if (delta > 0)
		cgroup = cgroup_slot(folio, npages, st ? &st->cgroup : NULL);
	else
		reclaim = bpf_get_current_task_btf()->flags & PF_MEMALLOC;
	account_range(delta > 0 ? RANGE_ADD : RANGE_REMOVE, file, file_id, folio->index, npages,
		      delta, cgroup, reclaim, false);
	return 0;
}

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(folio_added, struct folio *folio)
{
	return on_folio(folio, 1);
}

SEC("tp_btf/mm_filemap_delete_from_page_cache")
int BPF_PROG(folio_removed, struct folio *folio)
{
	return on_folio(folio, -1);
}

/*
 * Change detection: the loader re-reads extents when `totals.changes` moves
 * (note_file_change / note_tree_change say how much).  A dirtied page of a
 * tracked file that shares may be copied on write; a page removed past EOF
 * or from an unlinked inode means truncate or unlink; the filesystems'
 * own tracepoints say blocks moved; a clone, dedupe, snapshot,
 * copy_file_range or fallocate on a watched filesystem may create or move
 * sharing, also with files the scan has not seen yet.  Tracepoints (tp_btf)
 * and fexit programs, none needing tracefs; fexit needs ftrace trampolines,
 * which some kernels refuse: then the raw syscall tracepoints stand in.
 */
/* A write into a file that shares no page with another cannot change sharing. */
SEC("tp_btf/writeback_dirty_folio")
int BPF_PROG(folio_dirtied, struct folio *folio, struct address_space *mapping)
{
	struct dc_file *file = mapping ? tracked_dc_file(mapping->host) : NULL;

	if (file && file->group != DC_NO_GROUP)
		note_file_change(file);
	return 0;
}

/*
 * Block map changes made inside the filesystems, whoever asked (in-kernel
 * callers too: overlayfs copy-up, nfsd, ksmbd, io_uring): XFS remapping
 * blocks into a file (reflink, dedupe), ending a copy-on-write (buffered
 * writeback and O_DIRECT alike) or exchanging extents; btrfs finishing an
 * ordered extent (its data writes all land in new blocks, O_DIRECT too).
 */
SEC("tp_btf/xfs_reflink_remap_blocks")
int BPF_PROG(xfs_remapped, struct xfs_inode *src, xfs_fileoff_t soffset, xfs_filblks_t len,
	     struct xfs_inode *dest)
{
	/* The destination may be new to the scan, the source newly shared. */
	if (sb_watched(dest->i_vnode.i_sb->s_dev))
		note_tree_change();
	return 0;
}

SEC("tp_btf/xfs_reflink_end_cow")
int BPF_PROG(xfs_cow_ended, struct xfs_inode *ip)
{
	note_inode_change(&ip->i_vnode);
	return 0;
}

SEC("tp_btf/xfs_swap_extent_before")
int BPF_PROG(xfs_extents_swapped, struct xfs_inode *ip)
{
	note_inode_change(&ip->i_vnode);
	return 0;
}

SEC("tp_btf/xfs_exchrange_before")
int BPF_PROG(xfs_ranges_exchanged, struct xfs_inode *ip)
{
	note_inode_change(&ip->i_vnode);
	return 0;
}

SEC("tp_btf/btrfs_ordered_extent_remove")
int BPF_PROG(btrfs_ordered_done, struct btrfs_inode *inode)
{
	note_inode_change(&inode->vfs_inode);
	return 0;
}

/*
 * Sharing made or moved through the VFS, by whoever calls it: the clone,
 * dedupe, copy and fallocate syscalls (native and compat alike), io_uring,
 * and the kernel's own callers (overlayfs copy-up, nfsd, ksmbd).  Counted
 * at exit, when the extents have changed.  These cost nothing to any other
 * syscall; the raw syscall hooks further down are loaded only when one of
 * them cannot be (engine.c).
 */
static __always_inline bool file_watched(struct file *file)
{
	return file && sb_watched(file->f_inode->i_sb->s_dev);
}

/* Before 6.8 the kernel's callers (overlayfs) call do_clone_file_range(): the loader picks it then. */
SEC("fexit/vfs_clone_file_range")
int BPF_PROG(clone_done, struct file *in, loff_t pos_in, struct file *out, loff_t pos_out,
	     loff_t len, unsigned int flags, loff_t ret)
{
	/* The destination may be new to the scan, the source newly shared. */
	if (ret > 0 && file_watched(out))
		note_tree_change();
	return 0;
}

SEC("fexit/vfs_dedupe_file_range_one")
int BPF_PROG(dedupe_done, struct file *src, loff_t src_pos, struct file *dst, loff_t dst_pos,
	     loff_t len, unsigned int flags, loff_t ret)
{
	/* Either side may be outside the scanned trees and still change the other's sharing. */
	if (ret > 0 && (file_watched(src) || file_watched(dst)))
		note_tree_change();
	return 0;
}

SEC("fexit/vfs_copy_file_range")
int BPF_PROG(copy_done, struct file *in, loff_t pos_in, struct file *out, loff_t pos_out,
	     size_t len, unsigned int flags, ssize_t ret)
{
	/* XFS and btrfs copy by reflinking: as a clone. */
	if (ret > 0 && file_watched(out))
		note_tree_change();
	return 0;
}

SEC("fexit/vfs_fallocate")
int BPF_PROG(fallocate_done, struct file *file, int mode, loff_t offset, loff_t len, long ret)
{
	/* Punching, collapsing, unsharing: that file's block map only. */
	if (!ret && file)
		note_inode_change(file->f_inode);
	return 0;
}

#define BTRFS_IOC_SNAP_CREATE		0x50009401
#define BTRFS_IOC_SNAP_CREATE_V2	0x50009417

/*
 * btrfs snapshots share every block of a subvolume.  Their ioctls are
 * static functions, some with more arguments than 6.1 can trace: caught in
 * btrfs's ioctl entry (compat ones pass there too), by command.
 */
SEC("fexit/btrfs_ioctl")
int BPF_PROG(snapshot_made, struct file *file, unsigned int cmd, unsigned long arg, long ret)
{
	if (!ret && (cmd == BTRFS_IOC_SNAP_CREATE || cmd == BTRFS_IOC_SNAP_CREATE_V2) &&
	    file_watched(file))
		note_tree_change();
	return 0;
}

/*
 * Deleting a snapshot unshares its blocks: SNAP_DESTROY and rmdir alike.
 * The directory's type changed in 6.6; the dentry is the second argument in all.
 */
SEC("fexit/btrfs_delete_subvolume")
int BPF_PROG(subvolume_deleted, void *dir, struct dentry *dentry, int ret)
{
	if (!ret && sb_watched(BPF_CORE_READ(dentry, d_sb, s_dev)))
		note_tree_change();
	return 0;
}

#define FICLONE		0x40049409
#define FICLONERANGE	0x4020940d
#define FIDEDUPERANGE	0xc0189436
#define BTRFS_IOC_SNAP_DESTROY		0x5000940f
#define BTRFS_IOC_SNAP_DESTROY_V2	0x5000943f

static __always_inline bool sharing_ioctl(unsigned int cmd)
{
	return cmd == FICLONE || cmd == FICLONERANGE || cmd == FIDEDUPERANGE ||
	       cmd == BTRFS_IOC_SNAP_CREATE || cmd == BTRFS_IOC_SNAP_CREATE_V2 ||
	       cmd == BTRFS_IOC_SNAP_DESTROY || cmd == BTRFS_IOC_SNAP_DESTROY_V2;
}

/*
 * The fallback when a VFS function above cannot be traced: the syscalls
 * that may create or move sharing, by number.  The raw
 * syscall tracepoints (sys_enter/sys_exit) need no tracefs, unlike the
 * per-syscall events, and see compat (ia32) syscalls too, under their own
 * numbers and registers.
 */
#if defined(__TARGET_ARCH_x86)
#define NR_IOCTL		16
#define NR_FALLOCATE		285
#define NR_COPY_FILE_RANGE	326
#define NR32_IOCTL		54
#define NR32_FALLOCATE		324
#define NR32_COPY_FILE_RANGE	377
#define TS_COMPAT		0x0002	/* thread_info.status: in a 32-bit syscall */
#elif defined(__TARGET_ARCH_arm64)
#define NR_IOCTL		29
#define NR_FALLOCATE		47
#define NR_COPY_FILE_RANGE	285
#else
#error "syscall numbers for this architecture"
#endif

/*
 * Threads with `changing` set: every syscall's exit checks this before
 * looking at its own state, so the common case costs one load.  A thread's
 * own increment precedes its exit, so it never misses one.
 */
__u32 changing_threads;

static __always_inline bool fd_on_watched_sb(unsigned long fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file *file = NULL;
	struct file **fds;
	__u32 dev;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return false;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_core_read(&file, sizeof(file), &fds[fd]);
	if (!file)
		return false;
	dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
	return sb_watched(dev);
}

/* The fd a sharing syscall works on, or -1 for any other syscall. */
static __always_inline long sharing_syscall_fd(struct pt_regs *regs, long id)
{
#ifdef TS_COMPAT
	if (bpf_get_current_task_btf()->thread_info.status & TS_COMPAT) {
		/* ia32: arguments in bx, cx, dx */
		unsigned int cmd = BPF_CORE_READ(regs, cx);

		if (id == NR32_IOCTL)
			return sharing_ioctl(cmd) ? (unsigned int)BPF_CORE_READ(regs, bx) : -1;
		if (id == NR32_FALLOCATE)
			return (unsigned int)BPF_CORE_READ(regs, bx);
		if (id == NR32_COPY_FILE_RANGE)
			return (unsigned int)BPF_CORE_READ(regs, dx); /* fd_out */
		return -1;
	}
#endif
	if (id == NR_IOCTL) {
		unsigned int cmd = PT_REGS_PARM2_CORE_SYSCALL(regs);

		return sharing_ioctl(cmd) ? (unsigned int)PT_REGS_PARM1_CORE_SYSCALL(regs) : -1;
	}
	if (id == NR_FALLOCATE)
		return (unsigned int)PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (id == NR_COPY_FILE_RANGE)
		return (unsigned int)PT_REGS_PARM3_CORE_SYSCALL(regs); /* fd_out */
	return -1;
}

/* Caught at entry, where the fd is; counted at exit, when the extents have changed. */
SEC("tp_btf/sys_enter")
int BPF_PROG(syscall_entered, struct pt_regs *regs, long id)
{
	long fd = sharing_syscall_fd(regs, id);
	struct thread_state *ts;

	if (fd < 0 || !fd_on_watched_sb(fd))
		return 0;
	ts = thread_state(true);
	if (!ts) {
		/* no memory for it: the change is noted now, before it is made, at least */
		__sync_fetch_and_add(&totals.missing_entry, 1);
		note_tree_change();
		return 0;
	}
	if (!ts->changing) {
		ts->changing = 1;
		__sync_fetch_and_add(&changing_threads, 1);
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(syscall_exited)
{
	struct thread_state *ts;

	/* Nothing was caught at entry: the common case costs one load. */
	if (!changing_threads)
		return 0;
	ts = thread_state(false);
	if (ts && ts->changing) {
		ts->changing = 0;
		__sync_fetch_and_sub(&changing_threads, 1);
		note_tree_change();
	}
	return 0;
}

/* Reclaim on the whole machine, for the view's header. */
SEC("tp_btf/mm_vmscan_kswapd_wake")
int BPF_PROG(kswapd_woke)
{
	__sync_fetch_and_add(&totals.kswapd_wakes, 1);
	return 0;
}

static __always_inline void stall_begin(void)
{
	struct thread_state *ts = thread_state(true);

	if (ts)
		ts->reclaim_start = bpf_ktime_get_ns();
}

/* A stall whose start was not seen (the engine attached during it) is not counted. */
static __always_inline void stall_end(__u64 *stalls, __u64 *stall_ns)
{
	struct thread_state *ts = thread_state(false);

	if (!ts || !ts->reclaim_start)
		return;
	__sync_fetch_and_add(stalls, 1);
	__sync_fetch_and_add(stall_ns, bpf_ktime_get_ns() - ts->reclaim_start);
	ts->reclaim_start = 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_begin")
int BPF_PROG(direct_reclaim_began)
{
	stall_begin();
	return 0;
}

SEC("tp_btf/mm_vmscan_direct_reclaim_end")
int BPF_PROG(direct_reclaim_ended)
{
	stall_end(&totals.direct_stalls, &totals.direct_stall_ns);
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_begin")
int BPF_PROG(memcg_reclaim_began)
{
	stall_begin();
	return 0;
}

SEC("tp_btf/mm_vmscan_memcg_reclaim_end")
int BPF_PROG(memcg_reclaim_ended)
{
	stall_end(&totals.memcg_stalls, &totals.memcg_stall_ns);
	return 0;
}

SEC("tp_btf/mm_vmscan_lru_shrink_inactive")
int BPF_PROG(lru_shrunk, int nid, unsigned long nr_scanned, unsigned long nr_reclaimed)
{
	__sync_fetch_and_add(&totals.pages_reclaimed, nr_reclaimed);
	return 0;
}

/*
 * Seeding: the loader replays what mincore found resident through the
 * same accounting as the events, so there is one definition of a count.
 */
SEC("syscall")
int seed_range(struct dc_seed_ctx *ctx)
{
	__u64 npages = ctx->npages;

	if (npages > DC_SEED_MAX_PAGES)
		return -1;
	__u32 id = ctx->file_id;
	struct dc_file *file = bpf_map_lookup_elem(&files, &id);

	if (!file)
		return -1;
	account_range(RANGE_SEED, file, id, ctx->index, npages, 1, ctx->cgroup, false, true);
	return 0;
}
