// SPDX-License-Identifier: GPL-2.0
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include "tracker.h"
#include "util.h"

/*
 * A change is acted on after this much quiet, so a burst costs one rescan,
 * but never later than REFRESH_MAX_DELAY_NS after the first change it
 * holds back: a file written every 100 ms must not starve the rebuild.
 */
#define REFRESH_SETTLE_NS 200000000LL
#define REFRESH_MAX_DELAY_NS 1000000000LL
/* How often to look whether btrfs's cleaner has dropped a deleted subvolume. */
#define DROPPING_POLL_NS 500000000LL

/* A change to act on: the rebuild waits for quiet, or for REFRESH_MAX_DELAY_NS. */
static void mark_changed(struct tracker *t, long long clock, bool reread_all)
{
	if (!t->changed_at)
		t->pending_since = clock;
	t->changed_at = clock;
	t->reread_all |= reread_all;
}

/*
 * btrfs drops a deleted subvolume's blocks in the background, with no
 * event: the extents it shared stop being shared then.  When the set of
 * pending drops differs from what it was when the extents were read, every
 * file's extents are read again (any of them may have shared with one).
 */
static void survey(struct tracker *t, const struct scan_opts *opts)
{
	/* before the extents are read: a drop that ends while they are is seen */
	struct btrfs_drops before = t->scan.nfiles ? scan_btrfs_drops(&t->scan) :
				    btrfs_drops_at((const char *const *)t->paths, t->npaths);
	struct extmap_input *in;

	scan_paths(t->paths, t->npaths, opts, &t->scan);
	in = scan_extmap_input(&t->scan);
	if (extmap_build(in, t->scan.nfiles, &t->map)) {
		msg("out of memory building the extent map");
		exit(EXIT_FAIL);
	}
	free(in);
	t->drops = scan_btrfs_drops(&t->scan);
	t->drops_seen_at = monotonic_ns();
	if (t->drops.which != before.which)
		mark_changed(t, t->drops_seen_at, true);
}

/* While a drop is pending, look every DROPPING_POLL_NS whether it has ended. */
static void note_dropped(struct tracker *t, long long clock)
{
	struct btrfs_drops now;

	if (!t->drops.n || clock - t->drops_seen_at < DROPPING_POLL_NS)
		return;
	now = scan_btrfs_drops(&t->scan);
	t->drops_seen_at = clock;
	if (now.which != t->drops.which)
		mark_changed(t, clock, true);
	t->drops = now;
}

/* Did any file change between the scan and the moment the engine was attached? */
static bool changed_since_scan(const struct scan *s)
{
	for (size_t i = 0; i < s->nfiles; i++) {
		const struct scanned_file *f = &s->files[i];
		struct stat st;

		if (stat(f->path, &st) || st.st_ino != f->ino || (uint64_t)st.st_size != f->size ||
		    !file_same_ctime(f, &st.st_ctim))
			return true;
	}
	return false;
}

int tracker_start(struct tracker *t, char **paths, int npaths, const struct scan_opts *opts)
{
	int ret;

	*t = (struct tracker){ .paths = paths, .npaths = npaths, .opts = *opts };
	/* Fail before scanning when the engine cannot run at all. */
	ret = engine_probe();
	if (ret)
		return ret;
	/*
	 * Attached before the scan: a clone or dedupe made while it reads
	 * (a dedupe leaves ctime alone) counts as a tree change.
	 */
	ret = engine_attach(&t->engine);
	if (ret)
		return ret;
	survey(t, opts);
	/* What the engine saw during the scan; anything later is a change to act on. */
	t->seen_changes = engine_changes(t->engine);
	t->seen_tree_changes = engine_tree_changes(t->engine);
	ret = engine_sync(t->engine, &t->scan, &t->map);
	if (ret)
		return ret;
	/*
	 * A clone or dedupe during the scan, or a write (it shows in the files'
	 * ctime): no event says which files changed, so the next rebuild reads
	 * them all.
	 */
	if (t->seen_tree_changes || changed_since_scan(&t->scan))
		mark_changed(t, monotonic_ns(), true);
	return EXIT_OK;
}

/*
 * The files of the last scan whose extents must be read again: the ones the
 * engine saw change, and every file sharing a group with one (a copy-on-write
 * in one file unshares its partners' blocks too).
 */
static bool *changed_files(struct tracker *t)
{
	size_t n = t->scan.nfiles;
	bool *changed = xcalloc(n ? n : 1, sizeof(bool));
	bool *group = xcalloc(t->map.ngroups ? t->map.ngroups : 1, sizeof(bool));

	for (size_t i = 0; i < n; i++) {
		if (!engine_take_file_changed(t->engine, i))
			continue;
		changed[i] = true;
		if (t->map.file_group[i] != DC_NO_GROUP)
			group[t->map.file_group[i]] = true;
	}
	for (size_t i = 0; i < n; i++)
		if (t->map.file_group[i] != DC_NO_GROUP && group[t->map.file_group[i]])
			changed[i] = true;
	free(group);
	return changed;
}

int tracker_poll(struct tracker *t, bool now)
{
	long long clock = monotonic_ns();
	uint64_t changes = engine_changes(t->engine);
	struct scan_opts quiet = t->opts;
	struct scan old = t->scan;
	struct scan_reuse reuse;
	bool *changed = NULL;
	uint64_t tree;

	note_dropped(t, clock);
	if (changes != t->seen_changes) {
		mark_changed(t, clock, false);
		t->seen_changes = changes;
	}
	if (!t->changed_at || (!now && clock - t->changed_at < REFRESH_SETTLE_NS &&
			       clock - t->pending_since < REFRESH_MAX_DELAY_NS))
		return EXIT_OK;
	t->changed_at = 0;
	t->seen_changes = engine_changes(t->engine);
	/* What the first scan said about bad input stays said; rescans are quiet. */
	quiet.quiet = true;
	tree = engine_tree_changes(t->engine);
	if (tree == t->seen_tree_changes && !t->reread_all) {
		/* Only known files changed: the others keep their extents. */
		changed = changed_files(t);
		reuse = (struct scan_reuse){ .prev = &old, .changed = changed,
					     .events_complete = engine_sees_every_change(t->engine) };
		quiet.reuse = &reuse;
	}
	t->seen_tree_changes = tree;
	t->reread_all = false;
	extmap_free(&t->map);
	survey(t, &quiet);
	t->scan.input_lost |= old.input_lost;
	scan_free(&old);
	free(changed);
	t->generation++;
	return engine_sync(t->engine, &t->scan, &t->map);
}

void tracker_stop(struct tracker *t)
{
	engine_stop(t->engine);
	scan_free(&t->scan);
	extmap_free(&t->map);
	t->engine = NULL;
}
