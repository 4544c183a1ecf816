// SPDX-License-Identifier: GPL-2.0
/*
 * The scan's workers change nothing but its speed: on a tree that wraps the
 * job ring many times, with skips (FIFOs, a dangling link, an unreadable
 * name) and hard links among the files, a scan with workers gives the same
 * files, in the same order, with the same counts, as one on the walk's
 * thread alone, also when the process is short of file descriptors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>
#include "scan.h"

#define NDIRS 7
#define NFILES 300 /* per directory: 2,100 files, the ring (256) wraps 8 times */

static char root[64];

static void mkfile(const char *path, size_t size)
{
	int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
	char buf[8192];

	assert_true(fd >= 0);
	memset(buf, 'x', sizeof(buf));
	for (size_t done = 0; done < size; done += sizeof(buf))
		assert_true(write(fd, buf, size - done < sizeof(buf) ? size - done : sizeof(buf)) > 0);
	close(fd);
}

static int make_tree(void **state)
{
	char path[256];

	(void)state;
	snprintf(root, sizeof(root), "/tmp/dupcache-test-scan.XXXXXX");
	assert_non_null(mkdtemp(root));
	for (int d = 0; d < NDIRS; d++) {
		snprintf(path, sizeof(path), "%s/d%d", root, d);
		assert_int_equal(mkdir(path, 0755), 0);
		for (int i = 0; i < NFILES; i++) {
			snprintf(path, sizeof(path), "%s/d%d/f%d", root, d, i);
			mkfile(path, (size_t)(i % 5) * 4096 + (size_t)(i % 3));
			if (i % 50 == 0) {
				snprintf(path, sizeof(path), "%s/d%d/fifo%d", root, d, i);
				assert_int_equal(mkfifo(path, 0644), 0);
			}
			if (i % 70 == 0) {
				char target[256];

				snprintf(target, sizeof(target), "%s/d%d/f%d", root, d, i);
				snprintf(path, sizeof(path), "%s/d%d/link%d", root, d, i);
				assert_int_equal(link(target, path), 0);
			}
		}
	}
	return 0;
}

static int remove_tree(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	return system(cmd);
}

/* Scan with its messages (stderr) in @msgs. */
static void scan_to(char **paths, int n, const struct scan_opts *o, struct scan *s, char *msgs,
		    size_t len)
{
	FILE *f = tmpfile();
	int saved = dup(2);
	size_t got;

	assert_non_null(f);
	fflush(stderr);
	assert_true(dup2(fileno(f), 2) == 2);
	assert_int_equal(scan_paths(paths, n, o, s), 0);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	rewind(f);
	got = fread(msgs, 1, len - 1, f);
	msgs[got] = 0;
	fclose(f);
}

static void workers_change_nothing(void **state)
{
	struct scan_opts serial = { .serial = true }, parallel = { 0 };
	static char msgs_a[1 << 16], msgs_b[1 << 16];
	char missing[128], fifo[128];
	char *paths[] = { root, missing, fifo };
	struct scan a, b;

	(void)state;
	snprintf(missing, sizeof(missing), "%s/no-such-file", root);
	snprintf(fifo, sizeof(fifo), "%s/d3/fifo50", root);
	scan_to(paths, 3, &serial, &a, msgs_a, sizeof(msgs_a));
	scan_to(paths, 3, &parallel, &b, msgs_b, sizeof(msgs_b));
	/* the messages, in order: the named FIFO and the missing path */
	assert_non_null(strstr(msgs_a, "no-such-file: no such file or directory, skipped"));
	assert_non_null(strstr(msgs_a, "fifo50: not a regular file, skipped"));
	assert_string_equal(msgs_b, msgs_a);

	/* every regular inode once: hard links are one file */
	assert_int_equal(a.nfiles, NDIRS * NFILES);
	assert_int_equal(a.skipped.special, NDIRS * (NFILES / 50) + 1);
	assert_int_equal(a.skipped.missing, 1);
	assert_true(a.input_lost);
	assert_int_equal(b.nfiles, a.nfiles);
	assert_memory_equal(&b.skipped, &a.skipped, sizeof(a.skipped));
	assert_int_equal(b.input_lost, a.input_lost);
	for (size_t i = 0; i < a.nfiles; i++) {
		const struct scanned_file *x = &a.files[i], *y = &b.files[i];

		assert_string_equal(y->path, x->path);
		assert_int_equal(y->ino, x->ino);
		assert_int_equal(y->size, x->size);
		assert_int_equal(y->npages, x->npages);
		assert_int_equal(y->nruns, x->nruns);
		assert_int_equal(y->resident_pages, x->resident_pages);
		assert_int_equal(y->sb_dev, x->sb_dev);
		assert_int_equal(y->gen, x->gen);
		/* written just now and not dropped: every page is cached */
		assert_int_equal(x->resident_pages, x->npages);
	}
	scan_free(&b);

	/* Short of fds (the queue holds up to 256 open files): the same files still. */
	struct rlimit was, low;

	assert_int_equal(getrlimit(RLIMIT_NOFILE, &was), 0);
	low = was;
	low.rlim_cur = 48;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	scan_to(paths, 3, &parallel, &b, msgs_b, sizeof(msgs_b));
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &was), 0);
	assert_string_equal(msgs_b, msgs_a);
	assert_int_equal(b.nfiles, a.nfiles);
	assert_memory_equal(&b.skipped, &a.skipped, sizeof(a.skipped));
	for (size_t i = 0; i < a.nfiles; i++)
		assert_string_equal(b.files[i].path, a.files[i].path);
	scan_free(&a);
	scan_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(workers_change_nothing, make_tree, remove_tree),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
