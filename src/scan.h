/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The tree walk: every regular file below the given paths, once per inode,
 * with its mapped page runs (FIEMAP) and which of its pages are resident
 * (cachestat + mincore).  Special files are never opened.
 */
#ifndef DUPCACHE_SCAN_H
#define DUPCACHE_SCAN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>
#include "extmap.h"
#include "util.h"

/* Files of up to this many pages keep their resident bitmap inline. */
#define RESIDENT_INLINE_PAGES 64
/* Pages per chunk of a larger file's resident bitmap: 1 GiB of 4 KiB pages. */
#define RESIDENT_CHUNK_PAGES (256u * 1024)

/*
 * One per file of the scan, so kept small (report's memory is mostly these):
 * the 64-bit fields first, no padding between the 32-bit ones.
 */
struct scanned_file {
	char *path;             /* in the scan's store */
	uint64_t ino;
	uint64_t subvol;        /* btrfs: the subvolume's root id; 0 elsewhere */
	uint64_t size;
	uint64_t npages;        /* ceil(size / page size) */
	struct page_run *runs;  /* file pages that map to physical pages; in the scan's store */
	uint64_t shared_bytes;  /* bytes in extents flagged FIEMAP_EXTENT_SHARED */
	/*
	 * Resident pages.  A file of RESIDENT_INLINE_PAGES pages or fewer (most
	 * files) keeps its bitmap in bits, with no allocation; a larger one a
	 * bitmap per RESIDENT_CHUNK_PAGES pages in chunks, NULL for a chunk with
	 * none (a sparse image's holes cost a pointer per GiB), chunks NULL when
	 * none at all.  Read with file_page_resident().
	 */
	union {
		uint64_t **chunks;
		uint64_t bits;
	} resident;
	uint64_t resident_pages;
	int64_t ctime_sec;      /* ctime when it was read: a later one means it changed */
	uint32_t ctime_nsec;
	uint32_t nruns;         /* at most SCAN_MAX_RUNS */
	uint32_t st_dev;        /* stat(2)'s st_dev, kernel encoding (dev_kernel()): file_st_dev() */
	uint32_t sb_dev;        /* the superblock's s_dev, kernel encoding */
	uint32_t gen;           /* the inode's generation (FS_IOC_GETVERSION), if has_gen */
	bool has_gen : 1;
	bool sealed : 1;        /* immutable (FS_IMMUTABLE_FL): the sharing kernel shares only these */
	bool no_fiemap : 1;     /* its filesystem cannot tell its extents */
	bool unmapped_extent : 1; /* an extent maps to no page (unwritten, delayed, inline...): not a hole */
};

/* A file with more page runs than this is skipped (EFBIG): 96 GiB of runs. */
#define SCAN_MAX_RUNS UINT32_MAX

static inline dev_t file_st_dev(const struct scanned_file *f)
{
	return dev_user(f->st_dev);
}

static inline bool file_same_ctime(const struct scanned_file *f, const struct timespec *t)
{
	return f->ctime_sec == t->tv_sec && f->ctime_nsec == (uint32_t)t->tv_nsec;
}

struct scan_skips {
	uint64_t missing;    /* path given does not exist */
	uint64_t unreadable; /* no permission, I/O error */
	uint64_t vanished;   /* removed while scanning */
	uint64_t changed;    /* kept changing while read */
	uint64_t special;    /* FIFOs, sockets, devices: never opened */
	uint64_t no_fiemap;  /* regular files on filesystems without FIEMAP */
};

/*
 * A rescan may take a file's extents from an earlier scan of the same trees
 * (no FIEMAP, so no forced writeback) when it is the same inode, of the
 * same size, not marked changed and, unless the caller's events see every
 * change of a block map, of the same ctime (a plain write changes ctime
 * but moves no shared block).  Such a file's residency is left empty: read
 * it with scan_residency().
 */
struct scan_reuse {
	const struct scan *prev;
	const bool *changed;  /* by prev's file index */
	bool events_complete; /* ctime need not match */
};

/*
 * Which files a walk takes (report --include/--exclude/--min-size), applied
 * in the walk so that a snapshot and every rescan of a watch see one set.
 * A pattern with a '/' matches the path relative to the PATH it was found
 * under (fnmatch FNM_PATHNAME: '*' stops at '/'), one without matches the
 * name alone.  Excluded directories are not descended; includes select
 * files only (directories are always descended unless excluded).  A PATH
 * given itself is walked whatever the patterns say when it is a directory,
 * and filtered by its name when it is a file.
 */
struct scan_filter {
	char *const *include; /* when any: a file must match one */
	size_t ninclude;
	char *const *exclude; /* a file or directory matching one is left out */
	size_t nexclude;
	uint64_t min_size;    /* files smaller than this are left out */
};

/* NULL, or why the pattern cannot be used (for a message). */
const char *scan_pattern_error(const char *pattern);

struct scan_opts {
	bool one_fs;          /* -x: do not cross filesystems below a path */
	struct scan_filter filter;
	bool quiet;           /* no per-file messages */
	bool no_sync;         /* leave dirty data alone: its extents may be pending */
	bool no_gen;          /* no inode generations: no engine will key files by them */
	bool serial;          /* no workers: every file on the walk's thread (tests compare) */
	const struct scan_reuse *reuse;
};

struct scan {
	struct scanned_file *files;
	size_t nfiles;
	struct scan_skips skipped;
	bool input_lost;      /* something given could not be read: exit 3 */
	unsigned page_size;
	/* private */
	size_t cap;
	struct arena store;   /* the files' paths and runs */
	struct inode_set *seen;
	struct mount_table *mounts;
	size_t *reuse_order;  /* during scan_paths(): opts->reuse's files by inode */
};

/* Returns 0, or a negative errno for failures that stop the whole scan. */
int scan_paths(char *const *paths, int npaths, const struct scan_opts *opts, struct scan *out);
/* Re-read which pages of every scanned file are resident (mincore), or of file i. */
void scan_residency(struct scan *s);
void scan_file_residency(struct scan *s, size_t i);
/* Page (< f->npages) is resident: its bit set, counted in resident_pages. */
void file_set_resident(struct scanned_file *f, uint64_t page);
void scan_free(struct scan *s);

static inline bool resident_inline(const struct scanned_file *f)
{
	return f->npages <= RESIDENT_INLINE_PAGES;
}

/* The bitmap of the chunk holding page, NULL if none of its pages is resident. */
static inline const uint64_t *resident_chunk(const struct scanned_file *f, uint64_t page)
{
	if (resident_inline(f))
		return f->resident.bits ? &f->resident.bits : NULL;
	return f->resident.chunks ? f->resident.chunks[page / RESIDENT_CHUNK_PAGES] : NULL;
}

static inline bool file_page_resident(const struct scanned_file *f, uint64_t page)
{
	const uint64_t *c = page < f->npages ? resident_chunk(f, page) : NULL;

	return c && bit_test(c, page % RESIDENT_CHUNK_PAGES);
}

/* Frees a file's resident bitmap; none resident. */
void resident_free(struct scanned_file *f);
/*
 * btrfs subvolumes deleted and not yet dropped, on the filesystems of some
 * paths or of the scanned files: how many, and which (a fingerprint of their
 * filesystems and root ids).  None without privilege.
 */
struct btrfs_drops {
	uint64_t n;
	uint64_t which;
};
struct btrfs_drops btrfs_drops_at(const char *const *paths, size_t n);
struct btrfs_drops scan_btrfs_drops(const struct scan *s);

/* One FIEMAP extent: its pages that map to physical pages (false: none). */
struct fiemap_extent;
bool extent_pages(const struct fiemap_extent *e, uint64_t size, unsigned page_size,
		  struct page_run *run);
/* Bytes of [0, size) in the extent when it is flagged shared. */
uint64_t extent_shared_bytes(const struct fiemap_extent *e, uint64_t size);

/*
 * A filesystem's type and where it is mounted (its first mount in
 * /proc/self/mountinfo), by superblock device; "?" when none is known.
 * Valid until scan_free().
 */
bool scan_fs_of(const struct scan *s, uint32_t sb_dev, const char **fstype, const char **mount);

/* Inputs for extmap_build() (the array is owned by the caller: free()). */
struct extmap_input *scan_extmap_input(const struct scan *s);

#endif
