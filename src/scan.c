// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <dirent.h>
#include <fts.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <linux/btrfs.h>
#include <linux/capability.h>
#include <linux/btrfs_tree.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include "scan.h"
#include "util.h"

/* Extents whose pages are not (yet) plain blocks on disk map to nothing. */
#define FIEMAP_UNMAPPABLE (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | \
			   FIEMAP_EXTENT_ENCODED | FIEMAP_EXTENT_DATA_ENCRYPTED | \
			   FIEMAP_EXTENT_NOT_ALIGNED | FIEMAP_EXTENT_DATA_INLINE | \
			   FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_UNWRITTEN)
#define FIEMAP_BATCH 512
/* mincore() window: bounds the vector to 256 KiB whatever the file size. */
#define CHANGE_RETRIES 3

#ifndef __NR_cachestat
#define __NR_cachestat 451
#endif
struct cachestat_range_arg { uint64_t off, len; };
struct cachestat_result {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/*
 * ---- one entry per inode ----
 *
 * An inode met twice is scanned and counted once, under the first path
 * seen.  Hard links are the usual way: a file with more than one link goes
 * into a (dev, ino) set as the walk meets it, so it is read once.  Any
 * other way (PATHs that overlap, a bind mount inside a tree, a rename
 * during the walk) leaves a repeat in the scan, which drop_repeats()
 * takes out after the walk, with a set of file indexes (4 bytes a slot,
 * for a moment) instead of a (dev, ino) set of every file for the whole
 * walk (24 bytes a slot: most of a large scan's memory then).
 */

struct inode_set {
	size_t cap, n;
	struct { uint64_t dev, ino; bool used; } *slot;
};

static uint64_t mix(uint64_t dev, uint64_t ino)
{
	uint64_t h = ino * 0x9e3779b97f4a7c15ULL ^ (dev + 0x632be59bd9b4e019ULL);

	return h ^ (h >> 31);
}

/* Adds (dev, ino); false when it was there already. */
static bool inode_set_add(struct inode_set *s, uint64_t dev, uint64_t ino)
{
	if (2 * (s->n + 1) > s->cap) {
		struct inode_set bigger = { .cap = s->cap ? 2 * s->cap : 1024 };

		bigger.slot = xcalloc(bigger.cap, sizeof(*bigger.slot));
		for (size_t i = 0; i < s->cap; i++)
			if (s->slot[i].used)
				inode_set_add(&bigger, s->slot[i].dev, s->slot[i].ino);
		free(s->slot);
		*s = bigger;
	}
	for (size_t i = mix(dev, ino) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
		if (!s->slot[i].used) {
			s->slot[i].used = true;
			s->slot[i].dev = dev;
			s->slot[i].ino = ino;
			s->n++;
			return true;
		}
		if (s->slot[i].dev == dev && s->slot[i].ino == ino)
			return false;
	}
}

static uint64_t file_mix(const struct scanned_file *f)
{
	return mix(f->st_dev, f->ino);
}

/* Every file whose inode an earlier file of the scan has is dropped; the order stays. */
static void drop_repeats(struct scan *s)
{
	size_t cap = 1, kept = 0;
	uint32_t *slot;

	while (cap < 2 * s->nfiles)
		cap *= 2;
	slot = xcalloc(cap, sizeof(*slot)); /* file index + 1; 0: empty */
	for (size_t i = 0; i < s->nfiles; i++) {
		struct scanned_file *f = &s->files[i];
		bool repeat = false;
		size_t h;

		for (h = file_mix(f) & (cap - 1); slot[h]; h = (h + 1) & (cap - 1)) {
			const struct scanned_file *g = &s->files[slot[h] - 1];

			if (g->ino == f->ino && g->st_dev == f->st_dev) {
				repeat = true;
				break;
			}
		}
		if (repeat) {
			resident_free(f); /* its path and runs stay in the store until scan_free() */
			s->skipped.no_fiemap -= f->no_fiemap; /* counted once, with the file kept */
			continue;
		}
		s->files[kept] = *f;
		slot[h] = kept + 1;
		kept++;
	}
	free(slot);
	s->nfiles = kept;
}

/* ---- mount id -> superblock device, from /proc/self/mountinfo ---- */

struct mount_table {
	size_t n;
	struct { uint64_t id; uint32_t sb_dev; char *fstype, *mount; } *m;
	/* st_dev answers so far: one statx (and ioctl) per filesystem or subvolume, not per file */
	size_t ndevs;
	struct dev_info { uint64_t st_dev; uint32_t sb_dev; uint64_t subvol; } *devs;
};

static void mount_table_clear(struct mount_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->m[i].fstype);
		free(t->m[i].mount);
	}
	free(t->m);
	t->m = NULL;
	t->n = 0;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape_octal(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = 0;
}

static void mount_table_load(struct mount_table *t)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t len = 0;

	mount_table_clear(t);
	if (!f)
		return;
	while (getline(&line, &len, f) > 0) {
		unsigned long long id, parent;
		unsigned maj, min;
		char mnt[4096], fstype[64] = "?";
		const char *sep = strstr(line, " - ");

		/* id parent maj:min root mountpoint options [optional...] - fstype source super */
		if (sscanf(line, "%llu %llu %u:%u %*s %4095s", &id, &parent, &maj, &min, mnt) != 5)
			continue;
		if (sep)
			sscanf(sep + 3, "%63s", fstype);
		unescape_octal(mnt);
		t->m = xrealloc(t->m, t->n + 1, sizeof(*t->m));
		t->m[t->n].id = id;
		t->m[t->n].sb_dev = (maj << 20) | min;
		t->m[t->n].fstype = xstrdup(fstype);
		t->m[t->n].mount = xstrdup(mnt);
		t->n++;
	}
	free(line);
	fclose(f);
}

/*
 * The kernel's tracepoints name a file by its superblock's s_dev, which is
 * not always st_dev (btrfs subvolumes report their own device): ask which
 * mount the file is on and read that mount's device from mountinfo.
 */
static uint32_t sb_dev_lookup(struct scan *s, int fd, const struct stat *st)
{
	struct statx stx;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) == 0 && (stx.stx_mask & STATX_MNT_ID)) {
		for (int pass = 0; pass < 2; pass++) {
			for (size_t i = 0; i < s->mounts->n; i++)
				if (s->mounts->m[i].id == stx.stx_mnt_id)
					return s->mounts->m[i].sb_dev;
			mount_table_load(s->mounts); /* mounted since we read it */
		}
	}
	return dev_kernel(st->st_dev);
}

/*
 * A btrfs subvolume's root id: snapshots keep their files' inode numbers,
 * so the kernel tells them apart by subvolume.  Every file of one st_dev is
 * in one subvolume (btrfs reports the subvolume's own device).  The lookup
 * of the fd's own subvolume (tree 0, the first free objectid) needs no
 * privilege.  0 on other filesystems.
 */
static uint64_t subvol_of(int fd)
{
	struct btrfs_ioctl_ino_lookup_args args = { .treeid = 0, .objectid = BTRFS_FIRST_FREE_OBJECTID };
	struct statfs sfs;

	if (fstatfs(fd, &sfs) || sfs.f_type != BTRFS_SUPER_MAGIC)
		return 0;
	return ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) ? 0 : args.treeid;
}

/*
 * Deleted btrfs subvolumes whose blocks the cleaner has not yet dropped:
 * each has an orphan item in the root tree, keyed by its root id, until
 * then (what `btrfs subvolume sync` waits for).  Until it goes, the extents
 * it shared still say FIEMAP_EXTENT_SHARED.  Searching the root tree needs
 * CAP_SYS_ADMIN: without, none are seen.
 */
static void add_btrfs_drops(int fd, const uint8_t fsid[BTRFS_FSID_SIZE], struct btrfs_drops *d)
{
	struct btrfs_ioctl_search_args args = { .key = {
		.tree_id = BTRFS_ROOT_TREE_OBJECTID,
		.min_objectid = BTRFS_ORPHAN_OBJECTID, .max_objectid = BTRFS_ORPHAN_OBJECTID,
		.min_type = BTRFS_ORPHAN_ITEM_KEY, .max_type = BTRFS_ORPHAN_ITEM_KEY,
		.max_offset = UINT64_MAX, .max_transid = UINT64_MAX,
	} };
	uint64_t fs = 0;

	memcpy(&fs, fsid, sizeof(fs));
	/* a buffer holds about 120 orphan items: bounded, 64 of them */
	for (int round = 0; round < 64; round++) {
		size_t off = 0;
		uint64_t last = 0;

		args.key.nr_items = UINT32_MAX;
		if (ioctl(fd, BTRFS_IOC_TREE_SEARCH, &args) || !args.key.nr_items)
			return;
		for (uint32_t i = 0; i < args.key.nr_items; i++) {
			struct btrfs_ioctl_search_header h;

			if (off + sizeof(h) > sizeof(args.buf))
				return;
			memcpy(&h, args.buf + off, sizeof(h));
			off += sizeof(h) + h.len;
			last = h.offset;
			d->n++;
			d->which ^= mix(fs, h.offset);
		}
		if (last == UINT64_MAX)
			return;
		args.key.min_offset = last + 1;
	}
}

struct btrfs_drops btrfs_drops_at(const char *const *paths, size_t n)
{
	struct btrfs_drops d = { 0 };
	uint8_t (*seen)[BTRFS_FSID_SIZE] = xcalloc(n ? n : 1, sizeof(*seen));
	size_t nseen = 0;

	for (size_t i = 0; i < n; i++) {
		struct btrfs_ioctl_fs_info_args info = { 0 };
		int fd = open(paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
		bool again = false;

		if (fd < 0)
			continue;
		/* one search per filesystem, whichever of its subvolumes the path is in */
		if (!ioctl(fd, BTRFS_IOC_FS_INFO, &info)) {
			for (size_t j = 0; j < nseen && !again; j++)
				again = !memcmp(seen[j], info.fsid, BTRFS_FSID_SIZE);
			if (!again) {
				memcpy(seen[nseen++], info.fsid, BTRFS_FSID_SIZE);
				add_btrfs_drops(fd, info.fsid, &d);
			}
		}
		close(fd);
	}
	free(seen);
	return d;
}

struct btrfs_drops scan_btrfs_drops(const struct scan *s)
{
	const char **paths = xcalloc(s->nfiles ? s->nfiles : 1, sizeof(*paths));
	struct btrfs_drops d;
	size_t n = 0;

	/* one file per btrfs mount; btrfs_drops_at() sees which are one filesystem */
	for (size_t i = 0; i < s->nfiles; i++) {
		bool first = s->files[i].subvol != 0;

		for (size_t j = 0; j < i && first; j++)
			first = s->files[j].sb_dev != s->files[i].sb_dev || !s->files[j].subvol;
		if (first)
			paths[n++] = s->files[i].path;
	}
	d = btrfs_drops_at(paths, n);
	free(paths);
	return d;
}

static const struct dev_info *dev_info_of(struct scan *s, int fd, const struct stat *st)
{
	struct mount_table *t = s->mounts;

	for (size_t i = 0; i < t->ndevs; i++)
		if (t->devs[i].st_dev == st->st_dev)
			return &t->devs[i];
	t->devs = xrealloc(t->devs, t->ndevs + 1, sizeof(*t->devs));
	t->devs[t->ndevs] = (struct dev_info){ .st_dev = st->st_dev, .sb_dev = sb_dev_lookup(s, fd, st),
					       .subvol = subvol_of(fd) };
	return &t->devs[t->ndevs++];
}

/* ---- extents ---- */

/* false when the file has SCAN_MAX_RUNS already */
static bool add_run(struct scanned_file *f, uint64_t lpage, uint64_t ppage, uint64_t n)
{
	struct page_run *last = f->nruns ? &f->runs[f->nruns - 1] : NULL;

	if (last && last->lpage + last->npages == lpage && last->ppage + last->npages == ppage) {
		last->npages += n;
		return true;
	}
	if (f->nruns == SCAN_MAX_RUNS)
		return false;
	f->runs = xrealloc(f->runs, f->nruns + 1, sizeof(*f->runs));
	f->runs[f->nruns++] = (struct page_run){ lpage, ppage, n };
	return true;
}

uint64_t extent_shared_bytes(const struct fiemap_extent *e, uint64_t size)
{
	uint64_t end = e->fe_logical + e->fe_length;

	if (!(e->fe_flags & FIEMAP_EXTENT_SHARED) || e->fe_logical >= size)
		return 0;
	return (end < size ? end : size) - e->fe_logical;
}

/*
 * File page i maps to a physical page when the extent holding byte i*P is a
 * plain one, is congruent with the page grid, and covers the page up to its
 * end or to end of file.
 */
bool extent_pages(const struct fiemap_extent *e, uint64_t size, unsigned P, struct page_run *run)
{
	uint64_t end = e->fe_logical + e->fe_length, first, last, npages = (size + P - 1) / P;

	if (e->fe_flags & FIEMAP_UNMAPPABLE || e->fe_physical % P != e->fe_logical % P)
		return false;
	first = (e->fe_logical + P - 1) / P;
	last = end / P;
	if (last * P < end && size <= end && last * P < size)
		last++; /* the page holding end of file */
	if (last > npages)
		last = npages;
	if (first >= last)
		return false;
	*run = (struct page_run){ first, (e->fe_physical + first * P - e->fe_logical) / P, last - first };
	return true;
}

/* false when the file has too many runs */
static bool add_extent(struct scanned_file *f, const struct fiemap_extent *e, unsigned P)
{
	struct page_run run;

	f->shared_bytes += extent_shared_bytes(e, f->size);
	if (extent_pages(e, f->size, P, &run))
		return add_run(f, run.lpage, run.ppage, run.npages);
	if (e->fe_logical < f->size)
		f->unmapped_extent = true;
	return true;
}

/* 0, -EOPNOTSUPP when the filesystem has no FIEMAP, or another -errno. */
static int read_extents(struct scanned_file *f, int fd, unsigned P, bool sync)
{
	struct {
		struct fiemap fm;
		struct fiemap_extent ext[FIEMAP_BATCH];
	} *buf = xcalloc(1, sizeof(*buf));
	uint64_t start = 0;
	int ret = 0;

	for (bool first = true;; first = false) {
		memset(&buf->fm, 0, sizeof(buf->fm));
		buf->fm.fm_start = start;
		buf->fm.fm_length = FIEMAP_MAX_OFFSET - start;
		/* Flush dirty data once, so delayed allocations have blocks. */
		buf->fm.fm_flags = first && sync ? FIEMAP_FLAG_SYNC : 0;
		buf->fm.fm_extent_count = FIEMAP_BATCH;
		if (ioctl(fd, FS_IOC_FIEMAP, &buf->fm) < 0) {
			ret = (errno == EOPNOTSUPP || errno == ENOTTY) ? -EOPNOTSUPP : -errno;
			break;
		}
		if (buf->fm.fm_mapped_extents == 0)
			break;
		const struct fiemap_extent *e = NULL;

		for (unsigned i = 0; i < buf->fm.fm_mapped_extents && !ret; i++) {
			e = &buf->ext[i];
			if (!add_extent(f, e, P))
				ret = -EFBIG;
		}
		if (ret || e->fe_flags & FIEMAP_EXTENT_LAST || e->fe_logical + e->fe_length <= start)
			break;
		start = e->fe_logical + e->fe_length;
	}
	free(buf);
	return ret;
}

/* ---- residency ---- */

static bool have_cachestat = true; /* workers may clear it concurrently */

/*
 * Pages of [off, off + len) in the page cache, from cachestat; -1 when
 * the kernel has no cachestat (or it failed): then anything may be.
 */
static int64_t cached_pages(int fd, uint64_t off, uint64_t len)
{
	struct cachestat_range_arg range = { off, len };
	struct cachestat_result cs;

	if (!__atomic_load_n(&have_cachestat, __ATOMIC_RELAXED))
		return -1;
	if (syscall(__NR_cachestat, fd, &range, &cs, 0) == 0)
		return cs.nr_cache;
	if (errno == ENOSYS)
		__atomic_store_n(&have_cachestat, false, __ATOMIC_RELAXED);
	return -1;
}

/* CAP_FOWNER in the effective set: a service given it (and not root) sees every file's page cache. */
static bool has_cap_fowner(void)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = { 0 };

	return syscall(SYS_capget, &h, d) == 0 && (d[0].effective & (1u << CAP_FOWNER));
}

/*
 * The kernel shows a file's page cache only to its owner (or CAP_FOWNER)
 * or to whoever may write it (mincore then claims every page resident,
 * cachestat fails): the same test as its can_do_mincore().
 */
static bool residency_visible(const char *path, int fd)
{
	static uid_t euid = (uid_t)-1;
	static bool fowner;
	struct stat st;

	if (euid == (uid_t)-1) {
		euid = geteuid();
		fowner = has_cap_fowner();
	}
	if (euid == 0 || fowner)
		return true;
	if (fstat(fd, &st) == 0 && st.st_uid == euid)
		return true;
	return faccessat(AT_FDCWD, path, W_OK, AT_EACCESS) == 0;
}

void resident_free(struct scanned_file *f)
{
	if (!resident_inline(f)) {
		for (uint64_t c = 0; f->resident.chunks && c * RESIDENT_CHUNK_PAGES < f->npages; c++)
			free(f->resident.chunks[c]);
		free(f->resident.chunks);
	}
	memset(&f->resident, 0, sizeof(f->resident));
	f->resident_pages = 0;
}

/* The resident bitmap's chunk c, made on first use. */
static uint64_t *resident_chunk_of(struct scanned_file *f, uint64_t c)
{
	uint64_t ***chunks = &f->resident.chunks;

	if (resident_inline(f))
		return &f->resident.bits;
	if (!*chunks)
		*chunks = xcalloc((f->npages + RESIDENT_CHUNK_PAGES - 1) / RESIDENT_CHUNK_PAGES,
				  sizeof(**chunks));
	/* The last chunk holds only the file's pages: a small file's bitmap is small. */
	if (!(*chunks)[c]) {
		uint64_t pages = f->npages - c * RESIDENT_CHUNK_PAGES;

		(*chunks)[c] = xcalloc((pages < RESIDENT_CHUNK_PAGES ? pages : RESIDENT_CHUNK_PAGES) / 64 + 1,
				       sizeof(uint64_t));
	}
	return (*chunks)[c];
}

void file_set_resident(struct scanned_file *f, uint64_t page)
{
	uint64_t *c = resident_chunk_of(f, page / RESIDENT_CHUNK_PAGES);

	if (!bit_test(c, page % RESIDENT_CHUNK_PAGES)) {
		bit_set(c, page % RESIDENT_CHUNK_PAGES);
		f->resident_pages++;
	}
}

/* The caller checked residency_visible(). */
static int read_residency(struct scanned_file *f, int fd, unsigned P)
{
	unsigned char *vec = NULL;
	int64_t cached;

	resident_free(f);
	if (!f->npages || !(cached = cached_pages(fd, 0, f->npages * P)))
		return 0;
	/* Every page cached (most small files that are cached at all): no mincore needed. */
	if (cached == (int64_t)f->npages) {
		for (uint64_t p = 0; p < f->npages; p += RESIDENT_CHUNK_PAGES) {
			uint64_t *c = resident_chunk_of(f, p / RESIDENT_CHUNK_PAGES);
			uint64_t n = f->npages - p < RESIDENT_CHUNK_PAGES ? f->npages - p
									  : RESIDENT_CHUNK_PAGES;

			memset(c, 0xff, n / 64 * sizeof(uint64_t));
			if (n % 64)
				c[n / 64] = (1ULL << (n % 64)) - 1;
		}
		f->resident_pages = f->npages;
		return 0;
	}
	for (uint64_t base = 0; base < f->npages; base += RESIDENT_CHUNK_PAGES) {
		uint64_t n = f->npages - base < RESIDENT_CHUNK_PAGES ? f->npages - base
								       : RESIDENT_CHUNK_PAGES;
		void *map;

		/* A chunk with nothing cached (a sparse image's holes) costs one cachestat. */
		if (n < f->npages && !cached_pages(fd, base * P, n * P))
			continue;
		map = mmap(NULL, n * P, PROT_READ, MAP_SHARED, fd, base * P);

		if (map == MAP_FAILED) {
			free(vec);
			return -errno;
		}
		if (!vec) /* small files: a small vector, from the heap not mmap */
			vec = xcalloc(n, 1);
		if (mincore(map, n * P, vec) < 0) {
			int err = -errno;

			munmap(map, n * P);
			free(vec);
			return err;
		}
		munmap(map, n * P);
		for (uint64_t i = 0; i < n; i++) {
			if (!(vec[i] & 1))
				continue;
			bit_set(resident_chunk_of(f, base / RESIDENT_CHUNK_PAGES), i);
			f->resident_pages++;
		}
	}
	free(vec);
	return 0;
}

/* ---- one file ---- */

static int open_file(const char *path)
{
	int flags = O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;
	int fd = open(path, flags | O_NOATIME);

	if (fd < 0 && errno == EPERM) /* O_NOATIME needs ownership */
		fd = open(path, flags);
	return fd;
}

static bool same_version(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static void skip(struct scan *s, const struct scan_opts *o, uint64_t *counter, bool lost,
		 const char *path, const char *why)
{
	(*counter)++;
	if (lost)
		s->input_lost = true;
	if (!o->quiet)
		msg("%s: %s, skipped", path, why);
}

static void skip_errno(struct scan *s, const struct scan_opts *o, const char *path, int err)
{
	if (err == ENOENT)
		skip(s, o, &s->skipped.vanished, true, path, "vanished during the scan");
	else if (err == EACCES)
		skip(s, o, &s->skipped.unreadable, true, path,
		     "permission denied (its page cache shows only to its owner, a writer, root or CAP_FOWNER)");
	else
		skip(s, o, &s->skipped.unreadable, true, path, strerror(err));
}

static void add_file(struct scan *s, const struct scanned_file *f)
{
	if (f->no_fiemap)
		s->skipped.no_fiemap++;
	if (s->nfiles == s->cap) {
		/* a quarter more: realloc moves a large array's pages, not its bytes */
		s->cap = s->cap ? s->cap + s->cap / 4 : 256;
		s->files = xrealloc(s->files, s->cap, sizeof(*s->files));
	}
	s->files[s->nfiles] = *f;
	/* the scan keeps its files' paths and runs in its store: no allocation each */
	s->files[s->nfiles].path = arena_strdup(&s->store, f->path);
	s->files[s->nfiles].runs = f->nruns ? arena_memdup(&s->store, f->runs, f->nruns * sizeof(*f->runs))
					    : NULL;
	free(f->path);
	free(f->runs);
	s->nfiles++;
}

/* ---- reuse of an earlier scan's extents ---- */

static int inode_order(const struct scanned_file *x, uint64_t st_dev, uint64_t ino)
{
	if (file_st_dev(x) != st_dev)
		return file_st_dev(x) < st_dev ? -1 : 1;
	return x->ino < ino ? -1 : x->ino > ino;
}

static int cmp_by_inode(const void *a, const void *b, void *prev)
{
	const struct scanned_file *files = ((const struct scan *)prev)->files,
				  *y = &files[*(const size_t *)b];

	return inode_order(&files[*(const size_t *)a], y->st_dev, y->ino);
}

/* The earlier scan's files by inode, for reusable(). */
static void reuse_index(struct scan *s, const struct scan_reuse *r)
{
	size_t n = r ? r->prev->nfiles : 0;

	s->reuse_order = NULL;
	if (!n)
		return;
	s->reuse_order = xcalloc(n, sizeof(size_t));
	for (size_t i = 0; i < n; i++)
		s->reuse_order[i] = i;
	qsort_r(s->reuse_order, n, sizeof(size_t), cmp_by_inode, (void *)r->prev);
}

/* The earlier scan's record of this file, if its extents still hold. */
static const struct scanned_file *reusable(const struct scan *s, const struct scan_opts *o,
					   const struct stat *st)
{
	const struct scan_reuse *r = o->reuse;

	if (!s->reuse_order)
		return NULL;
	for (size_t lo = 0, hi = r->prev->nfiles; lo < hi;) {
		size_t mid = lo + (hi - lo) / 2, id = s->reuse_order[mid];
		const struct scanned_file *f = &r->prev->files[id];
		int d = inode_order(f, st->st_dev, st->st_ino);

		if (!d)
			return r->changed[id] || f->size != (uint64_t)st->st_size ||
					       (!r->events_complete &&
						!file_same_ctime(f, &st->st_ctim))
				       ? NULL : f;
		if (d < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/*
 * ---- one file, in two halves ----
 *
 * The walk (one thread: fts moves the process into each directory) opens
 * each file by its name and queues it; workers, one per further CPU, do the
 * rest from the fd: FIEMAP, cachestat/mincore, the ioctls.  The walk takes
 * the results back in the order it queued them, so a scan's files, counts
 * and messages are those of a scan with no workers.
 */
struct file_job {
	char *path;
	int fd;               /* -1: nothing for a worker to do (reused, or skipped) */
	struct stat walk_st;
	struct scanned_file f;
	int err;              /* skipped: skip_errno(err) */
	uint64_t *counter;    /* or skipped: skip(counter, why) */
	const char *why;
	bool done;
};

#define JOB_RING 256

struct scan_pool {
	struct scan *s;
	const struct scan_opts *o;
	pthread_mutex_t lock;
	pthread_cond_t work, finished;
	struct file_job ring[JOB_RING];
	size_t head, next, tail; /* oldest not taken back, next for a worker, next free */
	size_t room;             /* jobs (open files) queued at most: <= JOB_RING */
	bool stop;
	int nworkers;
	pthread_t workers[8];
};

/*
 * fstat(), and from the same call whether the file is immutable (statx
 * tells on XFS, btrfs, ext4...): *immutable is -1 where it cannot.
 */
static int stat_fd(int fd, struct stat *st, int *immutable)
{
	struct statx x;

	*immutable = -1;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &x) < 0)
		return fstat(fd, st);
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(x.stx_dev_major, x.stx_dev_minor);
	st->st_ino = x.stx_ino;
	st->st_mode = x.stx_mode;
	st->st_size = x.stx_size;
	st->st_mtim = (struct timespec){ x.stx_mtime.tv_sec, x.stx_mtime.tv_nsec };
	st->st_ctim = (struct timespec){ x.stx_ctime.tv_sec, x.stx_ctime.tv_nsec };
	if (x.stx_attributes_mask & STATX_ATTR_IMMUTABLE)
		*immutable = !!(x.stx_attributes & STATX_ATTR_IMMUTABLE);
	return 0;
}

/* The worker's half: everything from the open fd. */
static void file_job_run(struct file_job *j, const struct scan_opts *o, unsigned P)
{
	struct scanned_file f = { 0 };
	struct stat before = j->walk_st, after;
	int fd = j->fd, ret = 0, immutable = -1;
	long gen = 0; /* the ioctl is declared with a long; kernels write an int */

	for (int attempt = 0;; attempt++) {
		if (!S_ISREG(before.st_mode) || before.st_ino != j->walk_st.st_ino ||
		    before.st_dev != j->walk_st.st_dev) {
			j->why = "replaced during the scan";
			goto fail;
		}
		free(f.runs);
		resident_free(&f);
		f = (struct scanned_file){ .st_dev = dev_kernel(before.st_dev), .ino = before.st_ino,
					   .size = before.st_size, .ctime_sec = before.st_ctim.tv_sec,
					   .ctime_nsec = before.st_ctim.tv_nsec,
					   .npages = (before.st_size + P - 1) / P };
		ret = read_extents(&f, fd, P, !o->no_sync);
		if (ret == -EOPNOTSUPP) {
			f.no_fiemap = true;
			ret = 0;
		}
		if (!ret)
			ret = read_residency(&f, fd, P);
		if (ret || stat_fd(fd, &after, &immutable) < 0)
			break;
		if (same_version(&before, &after))
			break;
		if (attempt + 1 == CHANGE_RETRIES) {
			j->why = "kept changing during the scan";
			goto fail;
		}
		before = after;
	}
	if (ret) {
		j->err = -ret;
		goto fail;
	}
	f.sb_dev = j->f.sb_dev;
	f.subvol = j->f.subvol;
	/* i_generation: a reused inode number is another file (XFS, btrfs, ext4 have it). */
	f.has_gen = !o->no_gen && ioctl(fd, FS_IOC_GETVERSION, &gen) == 0;
	f.gen = f.has_gen ? (uint32_t)gen : 0;
	if (immutable < 0) {
		int attr = 0;

		immutable = ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0 && (attr & FS_IMMUTABLE_FL);
	}
	f.sealed = immutable;
	close(fd);
	f.path = j->path;
	j->f = f;
	return;
fail:
	close(fd);
	free(f.runs);
	resident_free(&f);
}

/* The walk takes a finished job back: the file joins the scan, or is skipped. */
static void file_job_take(struct scan *s, const struct scan_opts *o, struct file_job *j)
{
	if (j->why) {
		skip(s, o, j->counter ? j->counter : &s->skipped.changed, true, j->path, j->why);
		free(j->path);
	} else if (j->err) {
		skip_errno(s, o, j->path, j->err);
		free(j->path);
	} else {
		add_file(s, &j->f);
	}
}

/* With p->lock held: the next queued job for a worker to run, or NULL. */
static struct file_job *pool_claim(struct scan_pool *p)
{
	/* queued-done jobs may be taken back before any worker passed them */
	if (p->next < p->head)
		p->next = p->head;
	while (p->next < p->tail) {
		struct file_job *j = &p->ring[p->next++ % JOB_RING];

		if (!j->done) /* skips and reused files are queued done */
			return j;
	}
	return NULL;
}

static void *scan_worker(void *arg)
{
	struct scan_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		struct file_job *j;

		while (!(j = pool_claim(p)) && !p->stop)
			pthread_cond_wait(&p->work, &p->lock);
		if (!j)
			break;
		pthread_mutex_unlock(&p->lock);
		file_job_run(j, p->o, p->s->page_size);
		pthread_mutex_lock(&p->lock);
		j->done = true;
		pthread_cond_signal(&p->finished);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/*
 * With p->lock held: take back the finished jobs at the head, in order; if
 * there were none and @wait, run the next queued job here or wait for one
 * to finish.  Returns whether anything was done.
 */
static bool pool_progress(struct scan_pool *p, bool wait)
{
	bool progressed = false;

	while (p->head < p->tail && p->ring[p->head % JOB_RING].done) {
		struct file_job j = p->ring[p->head++ % JOB_RING];

		pthread_mutex_unlock(&p->lock);
		file_job_take(p->s, p->o, &j);
		pthread_mutex_lock(&p->lock);
		progressed = true;
	}
	if (progressed || !wait || p->head == p->tail)
		return progressed;
	struct file_job *j = pool_claim(p);

	if (j) {
		pthread_mutex_unlock(&p->lock);
		file_job_run(j, p->o, p->s->page_size);
		pthread_mutex_lock(&p->lock);
		j->done = true;
	} else {
		pthread_cond_wait(&p->finished, &p->lock);
	}
	return true;
}

/*
 * Each queued job holds an open file: half of the descriptors still free
 * may be queued, so that the walk (fts opens directories) and the caller
 * keep theirs.
 */
static size_t queue_room(void)
{
	struct rlimit lim;
	size_t used = 0, room;
	DIR *d;

	if (getrlimit(RLIMIT_NOFILE, &lim) || lim.rlim_cur == RLIM_INFINITY)
		return JOB_RING;
	d = opendir("/proc/self/fd");
	if (d) {
		while (readdir(d))
			used++;
		closedir(d);
	}
	room = lim.rlim_cur > used + 2 ? (lim.rlim_cur - used) / 2 : 1;
	return room < JOB_RING ? room : JOB_RING;
}

static void pool_start(struct scan_pool *p, struct scan *s, const struct scan_opts *o)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int want = o->serial || cpus <= 1 ? 0 : (int)(cpus - 1 < 8 ? cpus - 1 : 8);
	sigset_t all, old;

	memset(p, 0, sizeof(*p));
	p->s = s;
	p->o = o;
	p->room = queue_room();
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->finished, NULL);
	/* Signals stay the caller's: a worker never runs a handler or eats an EINTR. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (p->nworkers < want &&
	       pthread_create(&p->workers[p->nworkers], NULL, scan_worker, p) == 0)
		p->nworkers++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Queue a job (done already, or with an fd for a worker). */
static void pool_queue(struct scan_pool *p, const struct file_job *job)
{
	pthread_mutex_lock(&p->lock);
	while (p->tail - p->head == p->room || (!p->nworkers && p->head < p->tail))
		pool_progress(p, true);
	pool_progress(p, false);
	p->ring[p->tail++ % JOB_RING] = *job;
	if (!job->done)
		pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->lock);
}

/* A path the walk skips, in its place among the files queued. */
static void pool_skip(struct scan_pool *p, uint64_t *counter, const char *path, const char *why)
{
	struct file_job j = { .fd = -1, .path = xstrdup(path), .counter = counter, .why = why,
			      .done = true };

	pool_queue(p, &j);
}

static void pool_skip_errno(struct scan_pool *p, const char *path, int err)
{
	struct file_job j = { .fd = -1, .path = xstrdup(path), .err = err, .done = true };

	pool_queue(p, &j);
}

/* Every queued job taken back (their fds closed). */
static void pool_drain(struct scan_pool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->head < p->tail)
		pool_progress(p, true);
	pthread_mutex_unlock(&p->lock);
}

/* Every queued job taken back, the workers gone. */
static void pool_finish(struct scan_pool *p)
{
	pool_drain(p);
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (int i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i], NULL);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->work);
	pthread_cond_destroy(&p->finished);
}

/* The walk's half.  path: what the file is called; acc: how to reach it from the walk's directory. */
static void scan_file(struct scan_pool *p, const char *path, const char *acc, const struct stat *walk_st)
{
	struct scan *s = p->s;
	struct file_job j = { .fd = -1, .walk_st = *walk_st };

	/* Hard links: the first path seen names the inode. */
	if (walk_st->st_nlink > 1 && !inode_set_add(s->seen, walk_st->st_dev, walk_st->st_ino))
		return;
	const struct scanned_file *old = reusable(s, p->o, walk_st);

	if (old) {
		j.f = *old;
		j.f.path = xstrdup(path);
		j.f.runs = j.f.nruns ? xcalloc(j.f.nruns, sizeof(*j.f.runs)) : NULL;
		if (j.f.nruns)
			memcpy(j.f.runs, old->runs, j.f.nruns * sizeof(*j.f.runs));
		memset(&j.f.resident, 0, sizeof(j.f.resident));
		j.f.resident_pages = 0;
		j.done = true;
		pool_queue(p, &j);
		return;
	}
	j.path = xstrdup(path);
	j.fd = open_file(acc);
	if (j.fd < 0 && errno == EMFILE) {
		/* the queue's open files are in the way: a caller short of fds loses no file */
		pool_drain(p);
		j.fd = open_file(acc);
	}
	if (j.fd < 0) {
		j.err = errno;
	} else if (!residency_visible(acc, j.fd)) { /* faccessat needs the walk's directory */
		close(j.fd);
		j.err = EACCES;
	} else {
		/* The walk's stat is the version before: one stat less per file. */
		const struct dev_info *dev = dev_info_of(s, j.fd, walk_st);

		j.f.sb_dev = dev->sb_dev;
		j.f.subvol = dev->subvol;
	}
	j.done = j.err != 0;
	pool_queue(p, &j);
}

/* ---- the filter ---- */

const char *scan_pattern_error(const char *pattern)
{
	const char *p;

	if (!*pattern)
		return "an empty pattern matches nothing";
	if (pattern[0] == '/')
		return "patterns match paths relative to each PATH (or names): drop the leading '/'";
	for (p = pattern; *p; p++) {
		if (*p == '\\' && !*++p)
			return "a trailing '\\' escapes nothing";
		if (*p == '[') {
			const char *q = p + 1;

			if (*q == '!' || *q == '^')
				q++;
			if (*q == ']')
				q++;
			while (*q && *q != ']')
				q++;
			if (!*q)
				return "a '[' without its ']'";
			p = q;
		}
	}
	return NULL;
}

static bool matches_any(char *const *pats, size_t n, const char *rel, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (fnmatch(pats[i], strchr(pats[i], '/') ? rel : name, strchr(pats[i], '/') ? FNM_PATHNAME : 0) == 0)
			return true;
	return false;
}

/* "b" of "a/b", "a/b/" and "b" */
static const char *last_component(const char *path, char *buf, size_t len)
{
	size_t n = strlen(path);

	while (n > 1 && path[n - 1] == '/')
		n--;
	snprintf(buf, len, "%.*s", (int)n, path);
	return strrchr(buf, '/') && buf[1] ? strrchr(buf, '/') + 1 : buf;
}

/* Whether the walk takes this entry; `rel` is its path below the PATH given. */
static bool filter_takes(const struct scan_filter *f, const FTSENT *e, const char *rel, bool file)
{
	/* a PATH given itself: fts names it as given, its name is the last component */
	const char *name = e->fts_level ? e->fts_name : rel;

	if (matches_any(f->exclude, f->nexclude, rel, name))
		return false;
	if (!file)
		return true;
	if (f->ninclude && !matches_any(f->include, f->ninclude, rel, name))
		return false;
	return (uint64_t)e->fts_statp->st_size >= f->min_size;
}

/* ---- the walk ---- */

/*
 * A PATH that is a symlink to a file (not a directory) is named by its
 * target, an absolute path: a file is reopened by its name without
 * following a symlink (the residency pass, the gate), which would fail on
 * the link.  A symlink to a directory stays as named: O_NOFOLLOW concerns
 * only the last component.  Returns the target (malloc'd), or NULL to walk
 * PATH as it is, with *err set when the target could not be found.
 */
static char *file_link_target(const char *path, int *err)
{
	struct stat lst, st;
	char *target;

	*err = 0;
	if (lstat(path, &lst) || !S_ISLNK(lst.st_mode) || stat(path, &st) || S_ISDIR(st.st_mode))
		return NULL;
	target = realpath(path, NULL);
	if (!target)
		*err = errno;
	return target;
}

static void walk(struct scan_pool *p, char *named)
{
	struct scan *s = p->s;
	const struct scan_opts *o = p->o;
	char name_buf[4096];
	/* the filter sees the name given, not the link's target's */
	const char *top_name = last_component(named, name_buf, sizeof(name_buf));
	int target_err;
	char *target = file_link_target(named, &target_err);
	char *path = target ? target : named;
	/* fts names a child PATH/name, PATH's trailing '/' dropped */
	size_t root_len = strlen(path) - (*path && path[strlen(path) - 1] == '/');
	char *argv[] = { path, NULL };
	/*
	 * Physical walk: symlinks below the top are not followed, so no loops.
	 * fts moves into each directory (the caller's directory is back at
	 * fts_close), so that each file is opened by its name, not its path:
	 * path lookups were most of a snapshot's time.
	 */
	int flags = FTS_PHYSICAL | FTS_COMFOLLOW | (o->one_fs ? FTS_XDEV : 0);
	FTS *fts;
	FTSENT *e;

	if (target_err) {
		pool_skip_errno(p, named, target_err);
		return;
	}
	fts = fts_open(argv, flags, NULL);
	if (!fts) {
		pool_skip_errno(p, path, errno);
		free(target);
		return;
	}
	while ((errno = 0, e = fts_read(fts))) {
		const char *rel = e->fts_level ? e->fts_path + root_len + 1 : top_name;

		switch (e->fts_info) {
		case FTS_F:
			if (filter_takes(&o->filter, e, rel, true))
				scan_file(p, e->fts_path, e->fts_accpath, e->fts_statp);
			break;
		case FTS_D:
			if (e->fts_level && !filter_takes(&o->filter, e, rel, false))
				fts_set(fts, e, FTS_SKIP);
			break;
		case FTS_DEFAULT: /* FIFO, socket, device: named ones are bad input */
			if (e->fts_level == 0)
				pool_skip(p, &s->skipped.special, e->fts_path, "not a regular file");
			else
				s->skipped.special++;
			break;
		case FTS_NS:
			if (e->fts_level == 0 && e->fts_errno == ENOENT)
				pool_skip(p, &s->skipped.missing, e->fts_path, "no such file or directory");
			else
				pool_skip_errno(p, e->fts_path, e->fts_errno);
			break;
		case FTS_SLNONE:
			if (e->fts_level == 0)
				pool_skip(p, &s->skipped.missing, e->fts_path, "dangling symbolic link");
			break;
		case FTS_DNR:
			if (e->fts_level && !filter_takes(&o->filter, e, rel, false))
				break; /* excluded: never read */
			/* fall through */
		case FTS_ERR:
			pool_skip_errno(p, e->fts_path, e->fts_errno);
			break;
		default: /* directories, symlinks below the top */
			break;
		}
	}
	/* The walk stopped short (no fds or memory left for fts): the rest is lost, and said. */
	if (errno)
		pool_skip_errno(p, path, errno);
	fts_close(fts);
	free(target);
}

int scan_paths(char *const *paths, int npaths, const struct scan_opts *opts, struct scan *s)
{
	memset(s, 0, sizeof(*s));
	s->page_size = sysconf(_SC_PAGESIZE);
	s->seen = xcalloc(1, sizeof(*s->seen));
	s->mounts = xcalloc(1, sizeof(*s->mounts));
	mount_table_load(s->mounts);
	reuse_index(s, opts->reuse);
	struct scan_pool *pool = xcalloc(1, sizeof(*pool));

	pool_start(pool, s, opts);
	for (int i = 0; i < npaths; i++)
		walk(pool, paths[i]);
	pool_finish(pool);
	free(pool);
	free(s->reuse_order);
	s->reuse_order = NULL;
	/* The hard-link set is the walk's: gone before the caller builds on the scan (peak RSS). */
	free(s->seen->slot);
	free(s->seen);
	s->seen = NULL;
	drop_repeats(s);
	/* no room to grow left: the files are most of what the caller keeps */
	s->cap = s->nfiles;
	s->files = xrealloc(s->files, s->cap ? s->cap : 1, sizeof(*s->files));
	return 0;
}

void scan_file_residency(struct scan *s, size_t i)
{
	struct scanned_file *f = &s->files[i];
	int fd = open_file(f->path);
	struct stat st;

	/* Gone or replaced since the scan: that inode holds no cache now. */
	if (fd < 0 || fstat(fd, &st) < 0 || st.st_ino != f->ino || dev_kernel(st.st_dev) != f->st_dev ||
	    !residency_visible(f->path, fd) || read_residency(f, fd, s->page_size) < 0)
		resident_free(f);
	if (fd >= 0)
		close(fd);
}

void scan_residency(struct scan *s)
{
	for (size_t i = 0; i < s->nfiles; i++)
		scan_file_residency(s, i);
}

bool scan_fs_of(const struct scan *s, uint32_t sb_dev, const char **fstype, const char **mount)
{
	for (size_t i = 0; s->mounts && i < s->mounts->n; i++)
		if (s->mounts->m[i].sb_dev == sb_dev) {
			*fstype = s->mounts->m[i].fstype;
			*mount = s->mounts->m[i].mount;
			return true;
		}
	*fstype = *mount = "?";
	return false;
}

struct extmap_input *scan_extmap_input(const struct scan *s)
{
	struct extmap_input *in = xcalloc(s->nfiles, sizeof(*in));

	for (size_t i = 0; i < s->nfiles; i++)
		in[i] = (struct extmap_input){ s->files[i].sb_dev, s->files[i].runs, s->files[i].nruns };
	return in;
}

void scan_free(struct scan *s)
{
	for (size_t i = 0; i < s->nfiles; i++)
		resident_free(&s->files[i]);
	arena_free(&s->store);
	free(s->files);
	if (s->seen)
		free(s->seen->slot);
	free(s->seen);
	if (s->mounts) {
		mount_table_clear(s->mounts);
		free(s->mounts->devs);
	}
	free(s->mounts);
	memset(s, 0, sizeof(*s));
}
