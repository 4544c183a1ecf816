// SPDX-License-Identifier: GPL-2.0
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "dupcache.h"
#include "dupcache.skel.h"
#include "engine.h"
#include "util.h"

/* Entries of optional_progs[] below. */
#define NOPTIONAL_PROGS 20
#define NCHANGE_PROGS 14

/*
 * Room to grow before a change forces a reload with bigger maps (a
 * quarter: the maps are most of the engine's memory, and a reload costs
 * no more than the rebuild that needs it), in 64 bits and within what a
 * map can hold.
 */
static uint32_t headroom(uint32_t n, uint32_t min, uint64_t max)
{
	uint64_t want = (uint64_t)n + n / 4 + min;

	return want < max ? want : max;
}

/*
 * The page table costs 16 bits per data page (holes cost nothing until
 * the kernel caches a page there: hole_pages), so it is bounded: 2^28
 * data pages (1 TiB with 4 KiB pages) take 512 MiB.  Files past that
 * are left untracked, counted and said.
 */
#define DC_MAX_TRACKED_PAGES (1ULL << 28)
#define DC_MAX_PAGE_WORDS (DC_MAX_TRACKED_PAGES / DC_PAGES_PER_WORD)

/* Whether a file of npages still fits in the page tables after `*bits`; if so, take them. */
static bool take_pages(uint64_t *bits, uint64_t npages)
{
	if (npages > DC_MAX_TRACKED_PAGES - *bits)
		return false;
	*bits += npages;
	return true;
}

struct capacity {
	uint32_t files, segs, runs, groups, slot_words, page_words, holes;
};

/*
 * A file's data runs as the programs look them up: its page runs, sorted by
 * file page, with the ones that touch merged (their physical pages do not
 * matter here), numbered from `bit` on.  Writes them to out when given;
 * returns how many, and the data pages in *npages.
 */
static size_t data_runs(const struct scanned_file *f, struct dc_run *out, uint64_t bit,
			uint64_t *npages)
{
	size_t n = 0;

	*npages = 0;
	for (size_t k = 0; k < f->nruns; k++) {
		const struct page_run *r = &f->runs[k];
		bool joins = n && k && f->runs[k - 1].lpage + f->runs[k - 1].npages == r->lpage;

		if (!joins) {
			if (out)
				out[n] = (struct dc_run){ .lpage = r->lpage, .bit = bit + *npages };
			n++;
		}
		if (out)
			out[n - 1].npages += r->npages;
		*npages += r->npages;
	}
	return n;
}

/* The entry in `pages` of file page p, from the file's runs; false in a hole. */
static bool run_bit(const struct dc_run *runs, uint32_t count, uint64_t p, uint64_t *bit)
{
	uint32_t lo = 0, hi = count;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (runs[mid].lpage <= p)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (!lo || p >= runs[lo - 1].lpage + runs[lo - 1].npages)
		return false;
	*bit = runs[lo - 1].bit + (p - runs[lo - 1].lpage);
	return true;
}

/* Where a file's pages sat in the maps at the last sync. */
struct file_layout {
	struct dc_file_key key;
	uint64_t npages;
	uint32_t run_first, run_count;
	uint32_t id;
};

/* A page cached in a hole at the last sync: its file id then, and its state word. */
struct hole_memo {
	struct dc_hole_key key;
	uint64_t word;
};

/*
 * What the last sync's maps held that the next one carries over: each
 * page's cgroup slot, the cgroups' slots and counters, the files' counters
 * (found again by key: file ids change).
 */
struct sync_memo {
	struct file_layout *files;  /* sorted by key */
	size_t nfiles;
	struct dc_file *counts;     /* by old file id */
	uint16_t *slots;            /* by old bit */
	struct dc_run *runs;        /* the old runs, by the layouts' run_first */
	struct hole_memo *holes;    /* sorted by key */
	size_t nholes;
	struct dc_cgroup_stats cgroups[DC_MAX_CGROUPS];
	uint64_t nslots;
};

struct engine {
	struct dupcache_bpf *skel;
	struct capacity cap;
	/* mmapped map values */
	uint64_t *pages;      /* DC_PAGE_* bits, DC_PAGES_PER_WORD pages a word */
	uint64_t *slot_words;
	struct dc_file *files;
	struct dc_group_stats *group_stats;
	struct dc_cgroup_stats *cgroup_stats;
	struct file_layout *layout; /* by file id, of the last sync */
	struct dc_run *runs;        /* the runs written at the last sync */
	uint64_t nbits;
	/* what was put in `tracked`, to take it out again */
	struct dc_file_key *keys;
	size_t nkeys;
	/* window figures carried over a reload */
	struct dc_totals carried;
	uint64_t refreshes, untracked;
	/* counts handed out by engine_counts(), sized by the last sync */
	uint64_t *file_resident, *group_dup;
	/* each file id's id before the last sync, or -1 */
	int64_t *prev_id;
	size_t nfiles, ngroups;
	bool started;
	/* optional programs the kernel lacks, decided (and said) at the first load */
	bool lacking[NOPTIONAL_PROGS];
	bool programs_chosen;
	bool clone_inner;   /* trace do_clone_file_range(), not vfs_clone_file_range() */
	bool change_blind;  /* a change detector is missing: events do not cover every change */
};

static const char *kernel_btf_path(void)
{
	/* For kernels (and tests) whose BTF is not in sysfs. */
	const char *p = getenv("DUPCACHE_KERNEL_BTF");

	return p && *p ? p : NULL;
}

static struct btf *load_kernel_btf(void)
{
	const char *path = kernel_btf_path();

	return path ? btf__parse(path, NULL) : btf__load_vmlinux_btf();
}

static bool btf_has(const struct btf *btf, const char *name, int kind)
{
	return btf__find_by_name_kind(btf, name, kind) >= 0;
}

/*
 * Optional programs: the engine works without them, with less to go on.
 * Each is probed on its own in the kernel's BTF (a tracepoint's
 * btf_trace_<name> type, a traced function's FUNC: no tracefs needed) and
 * attached on its own, so that what a kernel lacks costs only what the
 * program gave.
 */
enum prog_role {
	ON_TRACEPOINT,
	ON_FUNCTION,   /* fexit: a kernel function every caller goes through */
	FALLBACK,      /* loaded only when an ON_FUNCTION one cannot be */
};

static const struct {
	const char *prog, *lost;
	enum prog_role role;
	/*
	 * A filesystem's or feature's own tracepoint or function: a kernel
	 * without it has no such filesystem or feature either, so nothing is
	 * lost to say.
	 */
	bool with_feature;
} optional_progs[] = {
	/* the first NCHANGE_PROGS notice block map changes */
	{ "folio_dirtied", "copy-on-write writes to tracked files are not noticed", ON_TRACEPOINT, false },
	{ "xfs_remapped", "XFS reflinks and dedupes made inside the kernel are not noticed", ON_TRACEPOINT, true },
	{ "xfs_cow_ended", "XFS copy-on-write writes (O_DIRECT ones too) are not noticed", ON_TRACEPOINT, true },
	{ "xfs_extents_swapped", "XFS extent swaps are not noticed", ON_TRACEPOINT, true },
	{ "xfs_ranges_exchanged", "XFS range exchanges are not noticed", ON_TRACEPOINT, true },
	{ "btrfs_ordered_done", "btrfs data writes (O_DIRECT ones too) are not noticed", ON_TRACEPOINT, true },
	{ "clone_done", "clones are seen only as syscalls", ON_FUNCTION, false },
	{ "dedupe_done", "dedupes are seen only as syscalls", ON_FUNCTION, false },
	{ "copy_done", "copy_file_range is seen only as a syscall", ON_FUNCTION, false },
	{ "fallocate_done", "fallocate is seen only as a syscall", ON_FUNCTION, false },
	{ "snapshot_made", "btrfs snapshots are seen only as syscalls", ON_FUNCTION, true },
	{ "subvolume_deleted", "btrfs snapshot deletions are seen only as syscalls", ON_FUNCTION, true },
	{ "syscall_entered", "clones, dedupes, copy_file_range and fallocate are not noticed", FALLBACK, false },
	{ "syscall_exited", "clones, dedupes, copy_file_range and fallocate are not noticed", FALLBACK, false },
	{ "kswapd_woke", "machine-wide kswapd wake-ups are not shown", ON_TRACEPOINT, false },
	{ "direct_reclaim_began", "machine-wide direct reclaim stalls are not shown", ON_TRACEPOINT, false },
	{ "direct_reclaim_ended", "machine-wide direct reclaim stalls are not shown", ON_TRACEPOINT, false },
	{ "memcg_reclaim_began", "memory cgroup reclaim stalls are not shown", ON_TRACEPOINT, false },
	{ "memcg_reclaim_ended", "memory cgroup reclaim stalls are not shown", ON_TRACEPOINT, false },
	{ "lru_shrunk", "machine-wide pages reclaimed are not shown", ON_TRACEPOINT, false },
};
_Static_assert(sizeof(optional_progs) / sizeof(optional_progs[0]) == NOPTIONAL_PROGS,
	       "NOPTIONAL_PROGS");

static int optional_index(const char *prog)
{
	for (size_t i = 0; i < NOPTIONAL_PROGS; i++)
		if (!strcmp(optional_progs[i].prog, prog))
			return i;
	return -1;
}

/* "tp_btf/NAME", "fexit/NAME" -> NAME: the tracepoint or the function */
static const char *hook_of(const struct bpf_program *prog)
{
	const char *sec = bpf_program__section_name(prog), *slash = strchr(sec, '/');

	return slash ? slash + 1 : sec;
}

/*
 * The kernel's BTF names a type btf_trace_<tp> for every tracepoint it
 * has, the modules' BTF (/sys/kernel/btf/<module>) for theirs: a
 * filesystem built as a module (Debian's XFS and btrfs) has its own.  The
 * modules' are read once, when a tracepoint is not in the kernel's own.
 */
struct kernel_btfs {
	struct btf *vmlinux;
	struct btf **modules;
	size_t nmodules;
	bool modules_read;
};

static void read_module_btfs(struct kernel_btfs *k)
{
	struct dirent *d;
	DIR *dir;

	k->modules_read = true;
	/* a custom BTF stands for the whole kernel */
	if (kernel_btf_path() || !(dir = opendir("/sys/kernel/btf")))
		return;
	while ((d = readdir(dir))) {
		char path[300];
		struct btf *mod;

		if (d->d_name[0] == '.' || !strcmp(d->d_name, "vmlinux"))
			continue;
		snprintf(path, sizeof(path), "/sys/kernel/btf/%s", d->d_name);
		mod = btf__parse_split(path, k->vmlinux);
		if (!mod)
			continue;
		k->modules = xrealloc(k->modules, k->nmodules + 1, sizeof(*k->modules));
		k->modules[k->nmodules++] = mod;
	}
	closedir(dir);
}

static bool kernel_has(struct kernel_btfs *k, const char *name, int kind)
{
	if (btf_has(k->vmlinux, name, kind))
		return true;
	if (!k->modules_read)
		read_module_btfs(k);
	for (size_t i = 0; i < k->nmodules; i++)
		if (btf_has(k->modules[i], name, kind))
			return true;
	return false;
}

static bool kernel_has_tracepoint(struct kernel_btfs *k, const char *tp)
{
	char name[128];

	snprintf(name, sizeof(name), "btf_trace_%s", tp);
	return kernel_has(k, name, BTF_KIND_TYPEDEF);
}

static void free_kernel_btfs(struct kernel_btfs *k)
{
	for (size_t i = 0; i < k->nmodules; i++)
		btf__free(k->modules[i]);
	free(k->modules);
	btf__free(k->vmlinux);
}

/* The least program there is: return 0. */
static const struct bpf_insn ret0[] = {
	{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0 },
	{ .code = BPF_JMP | BPF_EXIT },
};
#define RET0_LEN (sizeof(ret0) / sizeof(ret0[0]))

int engine_probe(void)
{
	static const char *const required[] = {
		"btf_trace_mm_filemap_add_to_page_cache",
		"btf_trace_mm_filemap_delete_from_page_cache",
	};
	struct btf *btf;

	if (!kernel_btf_path() && access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		msg("the kernel has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF): --watch needs it");
		return EXIT_NOKERNEL;
	}
	btf = load_kernel_btf();
	if (!btf) {
		msg("cannot read the kernel's BTF: %s", strerror(errno));
		return EXIT_NOKERNEL;
	}
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		if (!btf_has(btf, required[i], BTF_KIND_TYPEDEF)) {
			msg("the kernel lacks the tracepoint %s (tp_btf): --watch needs it",
			    required[i] + strlen("btf_trace_"));
			btf__free(btf);
			return EXIT_NOKERNEL;
		}
	}
	btf__free(btf);
	if (geteuid() != 0) {
		/* CAP_BPF + CAP_PERFMON would do; the load below says if not. */
		int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, NULL, "GPL", ret0, RET0_LEN, NULL);

		if (fd < 0 && (errno == EPERM || errno == EACCES)) {
			msg("loading BPF programs needs root (or CAP_BPF and CAP_PERFMON); "
			    "a snapshot (report without --watch, gate without a COMMAND) needs neither");
			return EXIT_NOPERM;
		}
		if (fd >= 0)
			close(fd);
	}
	return EXIT_OK;
}

static void *map_mmap(struct bpf_map *map)
{
	size_t len = (size_t)bpf_map__max_entries(map) * bpf_map__value_size(map);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(map), 0);

	return p == MAP_FAILED ? NULL : p;
}

static void map_munmap(struct bpf_map *map, void *p)
{
	if (p)
		munmap(p, (size_t)bpf_map__max_entries(map) * bpf_map__value_size(map));
}

static uint32_t at_least_one(uint64_t n)
{
	return n ? (n > UINT32_MAX ? UINT32_MAX : n) : 1;
}

static struct capacity need(const struct scan *s, const struct extmap *m)
{
	uint64_t bits = 0, runs = 0;

	for (size_t i = 0; i < s->nfiles; i++) {
		uint64_t npages;
		size_t n = data_runs(&s->files[i], NULL, 0, &npages);

		if (take_pages(&bits, npages))
			runs += n;
	}
	return (struct capacity){
		.files = at_least_one(s->nfiles),
		.segs = at_least_one(m->nsegs),
		.runs = at_least_one(runs),
		.groups = at_least_one(m->ngroups),
		.slot_words = at_least_one((m->nslots + 1) / 2),
		.page_words = at_least_one((bits + DC_PAGES_PER_WORD - 1) / DC_PAGES_PER_WORD),
	};
}

static bool fits(const struct capacity *have, const struct capacity *want)
{
	return want->files <= have->files && want->segs <= have->segs && want->runs <= have->runs &&
	       want->groups <= have->groups && want->slot_words <= have->slot_words &&
	       want->page_words <= have->page_words && want->holes <= have->holes;
}

static void unload(struct engine *e)
{
	if (!e->skel)
		return;
	map_munmap(e->skel->maps.pages, e->pages);
	map_munmap(e->skel->maps.slot_copies, e->slot_words);
	map_munmap(e->skel->maps.files, e->files);
	map_munmap(e->skel->maps.group_stats, e->group_stats);
	map_munmap(e->skel->maps.cgroup_stats, e->cgroup_stats);
	e->pages = e->slot_words = NULL;
	e->files = NULL;
	e->group_stats = NULL;
	e->cgroup_stats = NULL;
	dupcache_bpf__destroy(e->skel);
	e->skel = NULL;
	e->nkeys = 0;
}

/*
 * Whether the kernel loads fexit programs at all (0) or why not (an
 * errno): a kernel may have the functions in its BTF and still refuse
 * (no trampolines on the architecture, a security module).
 */
static int fexit_refusal(struct kernel_btfs *k)
{
	int id = btf__find_by_name_kind(k->vmlinux, "vfs_fallocate", BTF_KIND_FUNC);
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FEXIT,
		    .attach_btf_id = id);
	int fd;

	if (id < 0)
		return ENOENT;
	fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, NULL, "GPL", ret0, RET0_LEN, &opts);
	if (fd < 0)
		return errno;
	close(fd);
	return 0;
}

/*
 * Leave out the optional programs whose tracepoint or function the kernel
 * lacks (said once), and the fallbacks when nothing is lacking that they
 * stand in for.
 */
static int choose_programs(struct engine *e, struct dupcache_bpf *skel)
{
	struct kernel_btfs k = { 0 };

	if (!e->programs_chosen) {
		bool fallback = false;
		int refusal;

		k.vmlinux = load_kernel_btf();
		if (!k.vmlinux)
			return bpf_load_error(-errno, "reading the kernel's BTF");
		/* Before 6.8, overlayfs calls the clone's inner half directly. */
		e->clone_inner = kernel_has(&k, "do_clone_file_range", BTF_KIND_FUNC);
		refusal = fexit_refusal(&k);
		if (refusal) {
			msg("the kernel refuses fexit programs (%s): clones, dedupes, copies, "
			    "fallocate and btrfs snapshots are seen as syscalls only, and those "
			    "the kernel makes itself (overlayfs copy-up, nfsd) only on XFS",
			    strerror(refusal));
			fallback = true;
		}
		for (size_t i = 0; i < NOPTIONAL_PROGS; i++) {
			const char *hook = hook_of(
				bpf_object__find_program_by_name(skel->obj, optional_progs[i].prog));
			bool function = optional_progs[i].role == ON_FUNCTION;
			bool has = function ? !refusal && kernel_has(&k, hook, BTF_KIND_FUNC)
					    : kernel_has_tracepoint(&k, hook);

			if (has)
				continue;
			e->lacking[i] = true;
			if (optional_progs[i].with_feature || (function && refusal))
				continue;
			if (function) {
				msg("the kernel cannot trace %s: %s", hook, optional_progs[i].lost);
				fallback = true;
				continue;
			}
			msg("the kernel has no tracepoint %s: %s", hook, optional_progs[i].lost);
			e->change_blind |= i < NCHANGE_PROGS;
		}
		for (size_t i = 0; i < NOPTIONAL_PROGS && !fallback; i++)
			if (optional_progs[i].role == FALLBACK)
				e->lacking[i] = true;
		free_kernel_btfs(&k);
		e->programs_chosen = true;
	}
	for (size_t i = 0; i < NOPTIONAL_PROGS; i++)
		if (e->lacking[i])
			bpf_program__set_autoload(
				bpf_object__find_program_by_name(skel->obj, optional_progs[i].prog), false);
	if (e->clone_inner && !e->lacking[optional_index("clone_done")]) {
		int err = bpf_program__set_attach_target(skel->progs.clone_done, 0,
							 "do_clone_file_range");

		if (err)
			return bpf_load_error(err, "choosing the clone hook");
	}
	return EXIT_OK;
}

/*
 * Attach the programs one by one (the skeleton's attach is all or
 * nothing): an optional one that fails is said and left out, also from
 * later loads.  Links go where the skeleton's destroy detaches them.
 */
static int attach_programs(struct engine *e, struct dupcache_bpf *skel)
{
	const struct bpf_object_skeleton *sk = skel->skeleton;

	for (int i = 0; i < sk->prog_cnt; i++) {
		struct bpf_program *prog = *sk->progs[i].prog;
		int opt = optional_index(bpf_program__name(prog));
		struct bpf_link *link;

		/* Not loaded, or run by the loader (seeding) rather than attached. */
		if (!bpf_program__autoload(prog) || bpf_program__type(prog) == BPF_PROG_TYPE_SYSCALL)
			continue;
		link = bpf_program__attach(prog);
		if (link) {
			*sk->progs[i].link = link;
			continue;
		}
		if (opt < 0)
			return bpf_load_error(-errno, "attaching the BPF engine");
		msg("cannot attach to %s (%s): %s", hook_of(prog),
		    strerror(errno), optional_progs[opt].lost);
		e->lacking[opt] = true;
		e->change_blind |= opt < NCHANGE_PROGS;
	}
	return EXIT_OK;
}

/* ---- task attribution (top --by process): off unless asked ---- */

static bool attribute_tasks;

void engine_attribute_tasks(bool on)
{
	attribute_tasks = on;
}

bool engine_attributes_tasks(void)
{
	return attribute_tasks;
}

/* The knob is rodata: off, the programs' attribution is pruned and its map holds one entry. */
static void tasks_before_load(struct dupcache_bpf *skel)
{
	skel->rodata->attribute_tasks = attribute_tasks;
	bpf_map__set_max_entries(skel->maps.tasks, attribute_tasks ? DC_MAX_TASKS : 1);
}

/* The entry that counts the pages of processes a full map had no room for. */
static int tasks_after_load(struct dupcache_bpf *skel)
{
	struct dc_task full = { .comm = "(map full)" };
	__u32 key = DC_TASKS_FULL;

	if (attribute_tasks &&
	    bpf_map__update_elem(skel->maps.tasks, &key, sizeof(key), &full, sizeof(full), BPF_ANY))
		return bpf_load_error(-errno, "filling the engine's task map");
	return EXIT_OK;
}

size_t engine_tasks(const struct engine *e, struct engine_task **out)
{
	struct bpf_map *map = e->skel->maps.tasks;
	__u32 key, next;
	size_t n = 0;
	void *prev = NULL;

	*out = NULL;
	if (!attribute_tasks)
		return 0;
	/* bounded by the map: DC_MAX_TASKS entries */
	while (n < DC_MAX_TASKS && !bpf_map__get_next_key(map, prev, &next, sizeof(next))) {
		*out = xrealloc(*out, n + 1, sizeof(**out));
		(*out)[n].tgid = next;
		if (!bpf_map__lookup_elem(map, &next, sizeof(next), &(*out)[n].t, sizeof((*out)[n].t), 0))
			n++;
		key = next;
		prev = &key;
	}
	return n;
}

static int load(struct engine *e, const struct capacity *want)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = kernel_btf_path());
	struct capacity cap = {
		.files = headroom(want->files, 256, UINT32_MAX),
		.segs = headroom(want->segs, 1024, UINT32_MAX),
		.runs = headroom(want->runs, 1024, UINT32_MAX),
		.groups = headroom(want->groups, 256, UINT32_MAX),
		.slot_words = headroom(want->slot_words, 4096, UINT32_MAX),
		.page_words = headroom(want->page_words, 4096, DC_MAX_PAGE_WORDS),
		.holes = headroom(want->holes, 1024, DC_MAX_HOLE_PAGES),
	};
	struct dupcache_bpf *skel;
	int err;

	skel = dupcache_bpf__open_opts(&opts);
	if (!skel)
		return bpf_load_error(-errno, "opening the BPF engine");
	bpf_map__set_max_entries(skel->maps.tracked, cap.files);
	bpf_map__set_max_entries(skel->maps.files, cap.files);
	bpf_map__set_max_entries(skel->maps.segments, cap.segs);
	bpf_map__set_max_entries(skel->maps.runs, cap.runs);
	bpf_map__set_max_entries(skel->maps.group_stats, cap.groups);
	bpf_map__set_max_entries(skel->maps.slot_copies, cap.slot_words);
	bpf_map__set_max_entries(skel->maps.pages, cap.page_words);
	bpf_map__set_max_entries(skel->maps.hole_pages, cap.holes);

	skel->rodata->page_shift = __builtin_ctz(sysconf(_SC_PAGESIZE));
	tasks_before_load(skel);
	err = choose_programs(e, skel);
	if (!err && (err = dupcache_bpf__load(skel)))
		err = bpf_load_error(err, "loading the BPF engine");
	if (!err)
		err = tasks_after_load(skel);
	if (!err)
		err = attach_programs(e, skel);
	if (err) {
		dupcache_bpf__destroy(skel);
		return err;
	}
	/* Attached but idle until the maps are filled. */
	skel->bss->cfg.paused = 1;
	e->skel = skel;
	e->cap = cap;
	e->pages = map_mmap(skel->maps.pages);
	e->slot_words = map_mmap(skel->maps.slot_copies);
	e->files = map_mmap(skel->maps.files);
	e->group_stats = map_mmap(skel->maps.group_stats);
	e->cgroup_stats = map_mmap(skel->maps.cgroup_stats);
	if (!e->pages || !e->slot_words || !e->files || !e->group_stats ||
	    !e->cgroup_stats) {
		err = -errno;
		unload(e);
		return bpf_load_error(err, "mapping the engine's counters");
	}
	return EXIT_OK;
}

/*
 * Add the counters of t to sum (the peak is a maximum).  State that a
 * reload rebuilds (dup, ncgroups, beyond_map...) is left alone.
 */
static void add_counters(struct dc_totals *sum, const struct dc_totals *t)
{
	sum->added += t->added;
	sum->removed += t->removed;
	sum->changes += t->changes;
	sum->tree_changes += t->tree_changes;
	sum->oversize_folio += t->oversize_folio;
	sum->missing_entry += t->missing_entry;
	sum->holes_full += t->holes_full;
	sum->reclaimed += t->reclaimed;
	sum->refaults += t->refaults;
	sum->cgroups_full += t->cgroups_full;
	sum->kswapd_wakes += t->kswapd_wakes;
	sum->direct_stalls += t->direct_stalls;
	sum->direct_stall_ns += t->direct_stall_ns;
	sum->memcg_stalls += t->memcg_stalls;
	sum->memcg_stall_ns += t->memcg_stall_ns;
	sum->pages_reclaimed += t->pages_reclaimed;
	if (t->peak_dup > sum->peak_dup)
		sum->peak_dup = t->peak_dup;
}

/*
 * The counters of one load of the programs: the global ones, and the
 * per-CPU event counters summed (a failed read leaves those at 0 and is
 * counted as a missing entry: the figures are then known to be short).
 */
static struct dc_totals skel_totals(const struct dupcache_bpf *skel)
{
	struct dc_totals t = skel->data_totals->totals;
	/* Each CPU's value opens with its struct dc_event_counts; values are 8-aligned. */
	size_t stride = (bpf_map__value_size(skel->maps.cpu_state) + 7) / 8 * 8;
	int ncpus = libbpf_num_possible_cpus();
	char *cpu = ncpus > 0 ? calloc(ncpus, stride) : NULL;
	uint32_t zero = 0;

	if (!cpu || bpf_map_lookup_elem(bpf_map__fd(skel->maps.cpu_state), &zero, cpu)) {
		t.missing_entry++;
		free(cpu);
		return t;
	}
	for (int c = 0; c < ncpus; c++) {
		const struct dc_event_counts *n = (const void *)(cpu + c * stride);

		t.added += n->added;
		t.removed += n->removed;
		t.reclaimed += n->reclaimed;
		t.refaults += n->refaults;
	}
	free(cpu);
	return t;
}

static int update_batch(struct bpf_map *map, const void *keys, const void *values, uint32_t n)
{
	LIBBPF_OPTS(bpf_map_batch_opts, opts);
	uint32_t count = n;

	if (!n)
		return 0;
	return bpf_map_update_batch(bpf_map__fd(map), keys, values, &count, &opts);
}

/*
 * The filesystems of the scanned files, for the programs' cheap first test,
 * and whether their keys carry the inode generation: only where every
 * scanned file of that filesystem told its generation, since the programs
 * read it from every inode there.
 */
static void set_watched_sb(struct engine *e, const struct scan *s)
{
	struct dc_config *cfg = &e->skel->bss->cfg;
	uint32_t n = 0;

	cfg->gen_mask = 0;
	for (size_t i = 0; i < s->nfiles && n <= DC_MAX_WATCHED_SB; i++) {
		uint32_t k = 0;

		while (k < n && cfg->dev[k] != s->files[i].sb_dev)
			k++;
		if (k == n && n < DC_MAX_WATCHED_SB) {
			cfg->dev[n] = s->files[i].sb_dev;
			cfg->gen_mask |= 1u << n;
		}
		if (k == n)
			n++;
		if (k < DC_MAX_WATCHED_SB && !s->files[i].has_gen)
			cfg->gen_mask &= ~(1u << k);
	}
	/* More filesystems than the filter holds: 0 turns it off (and generations). */
	cfg->n = n <= DC_MAX_WATCHED_SB ? n : 0;
}

/* A scanned file's key, as the programs build it (set_watched_sb first). */
static struct dc_file_key file_key(const struct engine *e, const struct scanned_file *f)
{
	const struct dc_config *cfg = &e->skel->bss->cfg;
	struct dc_file_key key = { .ino = f->ino, .subvol = f->subvol, .dev = f->sb_dev };

	for (uint32_t k = 0; k < cfg->n; k++)
		if (cfg->dev[k] == f->sb_dev && (cfg->gen_mask >> k & 1))
			key.gen = f->gen;
	return key;
}

static const struct file_layout *memo_layout(const struct sync_memo *memo,
					     const struct dc_file_key *key);

/*
 * Counters run over the whole window, across rebuilds: a file or cgroup
 * keeps its event counts, and its resident base is set so that it counts
 * no resident page until the seeding replays them.
 */
static void carry_counts(__u64 *resident_base, const __u64 *added, const __u64 *removed)
{
	*resident_base = *removed - *added;
}

/* Replace the maps' contents; the programs skip accounting meanwhile. */
static int fill_maps(struct engine *e, const struct scan *s, const struct extmap *m,
		     const struct sync_memo *memo)
{
	struct dupcache_bpf *skel = e->skel;
	uint32_t *ids = xcalloc(m->nsegs > e->cap.runs ? m->nsegs : e->cap.runs, sizeof(uint32_t));
	struct dc_hole_key hole;
	uint64_t bit = 0;
	uint32_t nruns = 0;
	int err = 0;

	for (size_t i = 0; i < e->nkeys; i++)
		bpf_map_delete_elem(bpf_map__fd(skel->maps.tracked), &e->keys[i]);
	e->keys = xrealloc(e->keys, s->nfiles ? s->nfiles : 1, sizeof(*e->keys));
	e->nkeys = 0;
	e->untracked = 0;

	memset(e->pages, 0, (size_t)e->cap.page_words * sizeof(uint64_t));
	memset(e->slot_words, 0, (size_t)e->cap.slot_words * sizeof(uint64_t));
	memset(e->files, 0, (size_t)e->cap.files * sizeof(*e->files));
	memset(e->group_stats, 0, (size_t)e->cap.groups * sizeof(*e->group_stats));
	/* The programs' per-CPU memos name files by their old ids: void them. */
	skel->bss->cfg.fill++;
	if (!skel->bss->cfg.fill) /* 0 is no fill's */
		skel->bss->cfg.fill = 1;
	/* File ids change: the holes' pages start again (the seeding replays them). */
	while (!bpf_map_get_next_key(bpf_map__fd(skel->maps.hole_pages), NULL, &hole))
		bpf_map_delete_elem(bpf_map__fd(skel->maps.hole_pages), &hole);
	e->runs = xrealloc(e->runs, e->cap.runs, sizeof(*e->runs));
	for (size_t i = 0; i < DC_MAX_CGROUPS; i++) {
		struct dc_cgroup_stats *cg = &e->cgroup_stats[i];

		*cg = memo->cgroups[i];
		carry_counts(&cg->resident_base, &cg->added, &cg->removed);
	}
	skel->data_totals->totals.dup = 0;
	set_watched_sb(e, s);

	e->layout = xrealloc(e->layout, s->nfiles ? s->nfiles : 1, sizeof(*e->layout));
	e->prev_id = xrealloc(e->prev_id, s->nfiles ? s->nfiles : 1, sizeof(*e->prev_id));
	for (size_t i = 0; i < s->nfiles; i++) {
		struct dc_file_key key = file_key(e, &s->files[i]);
		const struct file_layout *old = memo_layout(memo, &key);
		struct dc_file *f = &e->files[i];
		uint32_t id = i;

		uint64_t data;
		size_t n = data_runs(&s->files[i], NULL, 0, &data);
		bool fits_pages = n <= e->cap.runs - nruns && take_pages(&bit, data);

		*f = (struct dc_file){ .npages = fits_pages ? s->files[i].npages : 0,
				       .seg_first = m->seg_first[i], .seg_count = m->seg_count[i],
				       .group = m->file_group[i] };
		if (fits_pages) {
			data_runs(&s->files[i], e->runs + nruns, bit - data, &data);
			f->run_first = nruns;
			f->run_count = n;
			nruns += n;
		}
		if (old) {
			const struct dc_file *c = &memo->counts[old->id];

			f->added = c->added, f->removed = c->removed;
			f->reclaimed = c->reclaimed, f->refaults = c->refaults;
			/* set after the tracker took the flags: the next rebuild re-reads it */
			f->blocks_changed = c->blocks_changed;
			carry_counts(&f->resident_base, &f->added, &f->removed);
		}
		e->prev_id[i] = old ? (int64_t)old->id : -1;
		e->layout[i] = (struct file_layout){ key, f->npages, f->run_first, f->run_count, id };
		if (!fits_pages ||
		    bpf_map_update_elem(bpf_map__fd(skel->maps.tracked), &key, &id, BPF_NOEXIST)) {
			e->untracked++; /* full, or the same inode seen twice */
			continue;
		}
		e->keys[e->nkeys++] = key;
	}
	e->nbits = bit;
	for (size_t i = 0; i < m->nsegs || i < nruns; i++)
		ids[i] = i;
	if (!err && (update_batch(skel->maps.segments, ids, m->segs, m->nsegs) ||
		     update_batch(skel->maps.runs, ids, e->runs, nruns)))
		err = -errno;
	free(ids);
	return err;
}

static unsigned page_bits(const struct engine *e, uint64_t page)
{
	uint64_t word = __atomic_load_n(&e->pages[page / DC_PAGES_PER_WORD], __ATOMIC_RELAXED);

	return (word >> (page % DC_PAGES_PER_WORD * DC_PAGE_BITS)) & 0xffff;
}

/* The cgroup slot a page's state says its add was counted in. */
static uint16_t page_cgroup(uint64_t state)
{
	return state >> DC_PAGE_CGROUP_SHIFT & DC_PAGE_CGROUP_MASK;
}

static int cmp_layout(const void *a, const void *b)
{
	return dc_file_key_cmp(&((const struct file_layout *)a)->key,
				&((const struct file_layout *)b)->key);
}

static int cmp_hole(const void *a, const void *b)
{
	const struct dc_hole_key *x = a, *y = b;

	if (x->file_id != y->file_id)
		return x->file_id < y->file_id ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* The cgroup slots of the pages cached in holes (at most DC_MAX_HOLE_PAGES). */
static void take_hole_memo(struct engine *e, struct sync_memo *memo)
{
	int fd = bpf_map__fd(e->skel->maps.hole_pages);
	struct dc_hole_key key, next;
	size_t cap = 0;
	bool first = true;

	while (memo->nholes < DC_MAX_HOLE_PAGES &&
	       !bpf_map_get_next_key(fd, first ? NULL : &key, &next)) {
		uint64_t word;

		first = false;
		key = next;
		if (bpf_map_lookup_elem(fd, &key, &word))
			continue;
		if (memo->nholes == cap) {
			cap = cap ? cap * 2 : 64;
			memo->holes = xrealloc(memo->holes, cap, sizeof(*memo->holes));
		}
		memo->holes[memo->nholes++] = (struct hole_memo){ key, word };
	}
	if (memo->nholes)
		qsort(memo->holes, memo->nholes, sizeof(*memo->holes), cmp_hole);
}

/* Before the maps are rewritten (the programs paused): what the next sync carries over. */
static void take_memo(struct engine *e, struct sync_memo *memo)
{
	memset(memo, 0, sizeof(*memo));
	if (!e->skel)
		return;
	memo->nslots = e->skel->data_totals->totals.ncgroups;
	memcpy(memo->cgroups, e->cgroup_stats, sizeof(memo->cgroups));
	if (!e->nfiles)
		return;
	memo->nfiles = e->nfiles;
	memo->files = xcalloc(e->nfiles, sizeof(*memo->files));
	memcpy(memo->files, e->layout, e->nfiles * sizeof(*memo->files));
	qsort(memo->files, memo->nfiles, sizeof(*memo->files), cmp_layout);
	memo->counts = xcalloc(e->nfiles, sizeof(*memo->counts));
	memcpy(memo->counts, e->files, e->nfiles * sizeof(*memo->counts));
	memo->slots = xcalloc(e->nbits ? e->nbits : 1, sizeof(uint16_t));
	for (uint64_t i = 0; i < e->nbits; i++)
		memo->slots[i] = page_cgroup(page_bits(e, i));
	memo->runs = e->runs;
	e->runs = NULL;
	take_hole_memo(e, memo);
}

static void free_memo(struct sync_memo *memo)
{
	free(memo->files);
	free(memo->counts);
	free(memo->slots);
	free(memo->runs);
	free(memo->holes);
}

/* After a reload the new maps know no cgroups: hand the old slots back. */
static void restore_cgroup_slots(struct engine *e, const struct sync_memo *memo)
{
	int fd = bpf_map__fd(e->skel->maps.cgroup_slots);

	for (uint32_t slot = 1; slot <= memo->nslots && slot < DC_MAX_CGROUPS; slot++)
		if (memo->cgroups[slot].id)
			bpf_map_update_elem(fd, &memo->cgroups[slot].id, &slot, BPF_ANY);
	e->skel->data_totals->totals.ncgroups = memo->nslots;
}

static const struct file_layout *memo_layout(const struct sync_memo *memo,
					     const struct dc_file_key *key)
{
	struct file_layout probe = { .key = *key };

	return memo->nfiles ? bsearch(&probe, memo->files, memo->nfiles, sizeof(probe), cmp_layout)
			    : NULL;
}

/* The cgroup slot page p of a file was counted in at the last sync (l: its layout then). */
static uint16_t memo_cgroup(const struct sync_memo *memo, const struct file_layout *l, uint64_t p)
{
	struct hole_memo probe = { .key = { .index = p } }, *h;
	uint64_t bit;

	if (!l || p >= l->npages)
		return DC_CGROUP_UNKNOWN;
	if (run_bit(memo->runs + l->run_first, l->run_count, p, &bit))
		return memo->slots[bit];
	probe.key.file_id = l->id;
	h = memo->nholes ? bsearch(&probe, memo->holes, memo->nholes, sizeof(probe), cmp_hole) : NULL;
	return h ? page_cgroup(h->word) : DC_CGROUP_UNKNOWN;
}

/*
 * Replay what is resident now through the programs' own accounting, one
 * run of pages per call; a run also keeps to one remembered cgroup.
 */
static int seed(struct engine *e, const struct scan *s, const struct sync_memo *memo)
{
	int fd = bpf_program__fd(e->skel->progs.seed_range);

	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];
		const struct file_layout *old = memo_layout(memo, &e->layout[i].key);

#define CGROUP_OF(p) memo_cgroup(memo, old, p)
		/* e->files[i].npages: 0 for a file left out of the page tables */
		for (uint64_t p = 0; f->resident_pages && p < e->files[i].npages;) {
			struct dc_seed_ctx ctx = { .file_id = i, .index = p };
			LIBBPF_OPTS(bpf_test_run_opts, run, .ctx_in = &ctx, .ctx_size_in = sizeof(ctx));

			/* a sparse image's holes: no bitmap for the chunk */
			if (!resident_chunk(f, p)) {
				p += RESIDENT_CHUNK_PAGES - p % RESIDENT_CHUNK_PAGES;
				continue;
			}
			if (!file_page_resident(f, p)) {
				p++;
				continue;
			}
			ctx.index = p;
			ctx.cgroup = CGROUP_OF(p);
			while (p < e->files[i].npages && file_page_resident(f, p) && CGROUP_OF(p) == ctx.cgroup &&
			       ctx.npages < DC_SEED_MAX_PAGES) {
				ctx.npages++;
				p++;
			}
			if (bpf_prog_test_run_opts(fd, &run) || run.retval)
				return -(errno ? errno : EINVAL);
		}
#undef CGROUP_OF
	}
	return 0;
}

/*
 * Wait until every program that may have read `paused` before it was set
 * has returned: an update of an ARRAY_OF_MAPS returns after an RCU grace
 * period, and the programs run inside RCU read-side sections.
 */
static int grace_period(struct engine *e)
{
	int inner = bpf_map__fd(e->skel->maps.grace_inner);
	uint32_t zero = 0;

	if (bpf_map_update_elem(bpf_map__fd(e->skel->maps.grace), &zero, &inner, BPF_ANY))
		return bpf_load_error(-errno, "waiting for the engine's programs");
	return 0;
}

/* The live engine's count of hole pages its full map turned away. */
static uint64_t holes_turned_away(const struct engine *e)
{
	return e->skel ? __atomic_load_n(&e->skel->data_totals->totals.holes_full, __ATOMIC_RELAXED) : 0;
}

/*
 * Make the engine's maps fit the scan and seed them with what is resident;
 * *seed_overflow: the pages the seeding found cached in holes, no room for.
 */
static int sync_once(struct engine *e, struct scan *s, const struct extmap *m, uint64_t *seed_overflow)
{
	struct capacity want = need(s, m);
	struct sync_memo memo;
	uint64_t before;
	int err = 0;

	if (e->skel) {
		e->skel->bss->cfg.paused = 1;
		/* Programs already past the paused check finish first. */
		err = grace_period(e);
	}
	if (err)
		return err;
	take_memo(e, &memo);
	/* Room for the holes' pages cached now, and for those a full map turned away. */
	want.holes = memo.nholes + holes_turned_away(e);
	if (!e->skel || !fits(&e->cap, &want)) {
		/*
		 * Bigger maps: the new engine is attached before the old one goes,
		 * so no change falls between them.  The old one's counters (with
		 * the changes it saw meanwhile) live on in `carried`.
		 */
		struct engine old = *e;

		err = load(e, &want);
		if (old.skel && e->skel != old.skel) {
			struct dc_totals last = skel_totals(old.skel);

			add_counters(&e->carried, &last);
			unload(&old);
			e->nkeys = 0; /* they were keys of the old maps */
		}
		if (!err)
			restore_cgroup_slots(e, &memo);
	}
	if (!err) {
		err = fill_maps(e, s, m, &memo);
		e->skel->bss->cfg.paused = 0;
		if (err)
			err = bpf_load_error(err, "filling the engine's maps");
	}
	if (!err) {
		/* After attaching: a page added from now on is an event or resident. */
		scan_residency(s);
		before = holes_turned_away(e);
		err = seed(e, s, &memo);
		*seed_overflow = holes_turned_away(e) - before;
		if (err)
			err = bpf_load_error(err, "seeding the engine");
	}
	free_memo(&memo);
	return err;
}

int engine_sync(struct engine *e, struct scan *s, const struct extmap *m)
{
	uint64_t overflow = 0;
	int err = sync_once(e, s, m, &overflow);

	/*
	 * Only the seeding knows how many pages are cached in holes.  Past the
	 * map's room, once more with room for them: the pages turned away are
	 * resident, so the second seeding counts them (they are no loss).
	 */
	if (!err && overflow && e->cap.holes < DC_MAX_HOLE_PAGES) {
		uint64_t again = 0;

		err = sync_once(e, s, m, &again);
		if (!err && e->carried.holes_full >= overflow)
			e->carried.holes_full -= overflow;
	}
	if (err)
		return err;
	e->nfiles = s->nfiles;
	e->ngroups = m->ngroups;
	e->file_resident = xrealloc(e->file_resident, e->nfiles ? e->nfiles : 1, sizeof(uint64_t));
	e->group_dup = xrealloc(e->group_dup, e->ngroups ? e->ngroups : 1, sizeof(uint64_t));
	if (e->started)
		e->refreshes++;
	e->started = true;
	return EXIT_OK;
}

static int engine_start(struct engine **out, struct scan *s, const struct extmap *m)
{
	struct engine *e = xcalloc(1, sizeof(*e));
	int err = engine_sync(e, s, m);

	if (err) {
		engine_stop(e);
		return err;
	}
	*out = e;
	return EXIT_OK;
}

int engine_attach(struct engine **out)
{
	struct scan none = { 0 };
	struct extmap nothing = { 0 };
	int err = engine_start(out, &none, &nothing);

	if (!err)
		(*out)->started = false; /* the first sync with files is no refresh */
	return err;
}

bool engine_sees_every_change(const struct engine *e)
{
	return !e->change_blind;
}

int64_t engine_previous_id(const struct engine *e, size_t id)
{
	return id < e->nfiles ? e->prev_id[id] : -1;
}

uint64_t engine_changes(const struct engine *e)
{
	return e->carried.changes + __atomic_load_n(&e->skel->data_totals->totals.changes, __ATOMIC_RELAXED);
}

uint64_t engine_tree_changes(const struct engine *e)
{
	return e->carried.tree_changes +
	       __atomic_load_n(&e->skel->data_totals->totals.tree_changes, __ATOMIC_RELAXED);
}

bool engine_take_file_changed(struct engine *e, size_t id)
{
	return id < e->nfiles && __atomic_exchange_n(&e->files[id].blocks_changed, 0, __ATOMIC_ACQ_REL);
}

void engine_counts(struct engine *e, struct dup_counts *out)
{
	for (size_t i = 0; i < e->nfiles; i++)
		e->file_resident[i] = engine_file_resident(&e->files[i]);
	for (size_t g = 0; g < e->ngroups; g++)
		e->group_dup[g] = __atomic_load_n(&e->group_stats[g].dup, __ATOMIC_RELAXED);
	/* the fair shares are the caller's to add (engine_dup_shares()) */
	*out = (struct dup_counts){ .file_resident = e->file_resident, .group_dup = e->group_dup };
}

/* The live totals plus what earlier loads of the engine counted. */
static struct dc_totals totals_now(const struct engine *e)
{
	struct dc_totals t = skel_totals(e->skel);

	add_counters(&t, &e->carried);
	return t;
}

void engine_window(const struct engine *e, struct engine_window *w)
{
	struct dc_totals t = totals_now(e);

	*w = (struct engine_window){
		.pages_added = t.added,
		.pages_removed = t.removed,
		.peak_dup_pages = t.peak_dup,
		.refreshes = e->refreshes,
		.untracked_files = e->untracked,
		.oversize_folios = t.oversize_folio,
		.missing_entry = t.missing_entry,
		.hole_pages_uncounted = t.holes_full,
	};
}

void engine_sample(const struct engine *e, struct engine_sample *out)
{
	*out = (struct engine_sample){
		.totals = totals_now(e),
		.files = e->files,
		.nfiles = e->nfiles,
		.groups = e->group_stats,
		.ngroups = e->ngroups,
		.cgroups = e->cgroup_stats,
	};
	out->ncgroups = out->totals.ncgroups + 1 < DC_MAX_CGROUPS ? out->totals.ncgroups + 1
								  : DC_MAX_CGROUPS;
}

void engine_residency(const struct engine *e, struct scan *s)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		struct scanned_file *f = &s->files[i];
		const struct dc_file *df = i < e->nfiles ? &e->files[i] : NULL;
		const struct dc_run *runs = df ? e->runs + df->run_first : NULL;
		uint64_t data = 0;

		for (uint32_t k = 0; df && df->npages == f->npages && k < df->run_count; k++)
			data += runs[k].npages;
		resident_free(f);
		if (!f->npages)
			continue;
		if (data != f->npages) {
			scan_file_residency(s, i);
			continue;
		}
		for (uint32_t k = 0; k < df->run_count; k++)
			for (uint64_t p = 0; p < runs[k].npages; p++)
				if (page_bits(e, runs[k].bit + p) & DC_PAGE_RESIDENT)
					file_set_resident(f, runs[k].lpage + p);
	}
}

void engine_dup_shares(const struct engine *e, const struct extmap *m, uint64_t *file_share,
		       uint64_t *cgroup_share)
{
	const uint32_t *copies = (const uint32_t *)e->slot_words;
	const uint64_t P = sysconf(_SC_PAGESIZE);

	memset(cgroup_share, 0, DC_MAX_CGROUPS * sizeof(*cgroup_share));
	for (size_t f = 0; f < e->nfiles; f++) {
		file_share[f] = 0;
		/* a file left out of the page tables has no page state to read */
		for (uint32_t k = 0; e->files[f].npages && k < m->seg_count[f]; k++) {
			const struct dc_segment *seg = &m->segs[m->seg_first[f] + k];

			for (uint64_t p = 0; p < seg->npages; p++) {
				uint32_t c = __atomic_load_n(&copies[seg->slot + p], __ATOMIC_RELAXED);
				unsigned bits;
				uint32_t slot;
				uint64_t bit;

				/* shared pages are data: always in a run */
				if (c < 2 || !run_bit(e->runs + e->files[f].run_first, e->files[f].run_count,
						      seg->lpage + p, &bit))
					continue;
				bits = page_bits(e, bit);
				slot = page_cgroup(bits);
				if (!(bits & DC_PAGE_RESIDENT))
					continue;
				file_share[f] += dup_share(P, c);
				cgroup_share[slot % DC_MAX_CGROUPS] += dup_share(P, c);
			}
		}
	}
}

bool engine_attached(const struct engine *e, const char *prog)
{
	const struct bpf_object_skeleton *s = e->skel->skeleton;

	for (int i = 0; i < s->prog_cnt; i++)
		if (!strcmp(s->progs[i].name, prog))
			return *s->progs[i].link != NULL;
	return false;
}

void engine_stop(struct engine *e)
{
	if (!e)
		return;
	unload(e);
	free(e->keys);
	free(e->layout);
	free(e->runs);
	free(e->file_resident);
	free(e->group_dup);
	free(e->prev_id);
	free(e);
}
