// SPDX-License-Identifier: GPL-2.0
/* Whole-file clone sets and their saving, on hand-made scans. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>
#include <cmocka.h>
#include "clones.h"

#define P 4096u

static struct page_run run_a[] = { { 0, 100, 4 } };
static struct page_run run_b[] = { { 0, 100, 2 }, { 2, 300, 2 } }; /* partly its own blocks */
static struct page_run run_hole[] = { { 0, 100, 3 } };             /* page 3: a hole */
static uint64_t res_all = 0xf, res_first = 0x1, res_two = 0x3;

static struct scanned_file file(const char *path, uint32_t dev, struct page_run *runs,
				size_t nruns, uint64_t *resident)
{
	/* these files have 4 pages: their resident bitmap is inline */
	struct scanned_file f = { .path = (char *)path, .sb_dev = dev, .size = 4 * P, .npages = 4,
				  .runs = runs, .nruns = nruns };

	if (resident)
		f.resident.bits = *resident;
	f.resident_pages = resident ? __builtin_popcountll(*resident) : 0;
	return f;
}

static void one_set_with_saving(void **state)
{
	struct scanned_file files[] = {
		file("/c1", 1, run_a, 1, &res_first),
		file("/c2", 1, run_a, 1, &res_all),    /* the donor: most cached */
		file("/c3", 1, run_a, 1, &res_two),
		file("/other-fs", 2, run_a, 1, &res_all),
		file("/partial", 1, run_b, 2, &res_all),
		file("/hole", 1, run_hole, 1, &res_all),
	};
	struct scan s = { .files = files, .nfiles = 6, .page_size = P };
	struct clone_sets cs;

	(void)state;
	clone_sets_find(&s, 1, NULL, NULL, &cs);
	assert_int_equal(cs.nsets, 1);
	assert_int_equal(cs.files, 3);
	assert_int_equal(cs.sets[0].nmembers, 3);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/c2");
	assert_int_equal(cs.sets[0].cached_bytes, (1 + 4 + 2) * P);
	/* page 0: 3 copies, page 1: 2, pages 2-3: 1 -> 2 + 1 pages saved */
	assert_int_equal(cs.sets[0].saving_bytes, 3 * P);
	assert_int_equal(cs.saving_bytes, 3 * P);
	clone_sets_free(&cs);
}

static void min_size_and_singletons(void **state)
{
	struct scanned_file files[] = {
		file("/c1", 1, run_a, 1, &res_all),
		file("/c2", 1, run_a, 1, &res_all),
		file("/alone", 1, run_b, 2, &res_all),
	};
	struct scan s = { .files = files, .nfiles = 3, .page_size = P };
	struct clone_sets cs;

	(void)state;
	clone_sets_find(&s, 4 * P + 1, NULL, NULL, &cs);
	assert_int_equal(cs.nsets, 0);
	clone_sets_free(&cs);
	clone_sets_find(&s, 4 * P, NULL, NULL, &cs);
	assert_int_equal(cs.nsets, 1);
	assert_int_equal(cs.sets[0].saving_bytes, 4 * P);
	clone_sets_free(&cs);
}

static bool is_c3(const struct scanned_file *f, void *ctx)
{
	(void)ctx;
	return !strcmp(f->path, "/c3");
}

/* A donor that is one already stays; otherwise most cached, then lowest inode. */
static void donor_choice(void **state)
{
	struct scanned_file files[] = {
		file("/c1", 1, run_a, 1, NULL),
		file("/c2", 1, run_a, 1, &res_all),
		file("/c3", 1, run_a, 1, NULL),
		file("/c4", 1, run_a, 1, NULL),
	};
	struct scan s = { .files = files, .nfiles = 4, .page_size = P };
	struct clone_sets cs;

	(void)state;
	files[0].ino = 40, files[1].ino = 30, files[2].ino = 20, files[3].ino = 10;
	clone_sets_find(&s, 1, is_c3, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/c3");
	clone_sets_free(&cs);
	clone_sets_find(&s, 1, NULL, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/c2");
	clone_sets_free(&cs);
	files[1].resident.bits = 0;
	files[1].resident_pages = 0;
	clone_sets_find(&s, 1, NULL, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/c4");
	assert_int_equal(cs.sets[0].nmembers, 4);
	clone_sets_free(&cs);
}

/* Sparse clones (holes at the same offsets) make a set; a hole is not an unwritten extent. */
static void holes_and_unwritten(void **state)
{
	struct scanned_file files[] = {
		file("/sparse1", 1, run_hole, 1, &res_all),
		file("/sparse2", 1, run_hole, 1, &res_two),
		file("/unwritten1", 1, run_hole, 1, &res_all),
		file("/unwritten2", 1, run_hole, 1, &res_all),
		file("/empty1", 1, NULL, 0, &res_all),
		file("/empty2", 1, NULL, 0, &res_all),
	};
	struct scan s = { .files = files, .nfiles = 6, .page_size = P };
	struct clone_sets cs;

	(void)state;
	files[2].unmapped_extent = files[3].unmapped_extent = true; /* page 3: unwritten */
	clone_sets_find(&s, 1, NULL, NULL, &cs);
	assert_int_equal(cs.nsets, 1);
	assert_int_equal(cs.sets[0].nmembers, 2);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/sparse1");
	assert_string_equal(files[cs.sets[0].members[1]].path, "/sparse2");
	/* pages 0 and 1 are cached twice (a hole's cached page too would be) */
	assert_int_equal(cs.sets[0].saving_bytes, 2 * P);
	clone_sets_free(&cs);
}

/*
 * One layout, measured again after the residency changed: the order of the
 * sets follows (the last order is kept only while it still holds), ties by
 * donor path, and the figures are the new ones.
 */
static void reports_from_one_layout(void **state)
{
	static struct page_run run_x[] = { { 0, 500, 4 } }, run_y[] = { { 0, 900, 4 } };
	struct scanned_file files[] = {
		file("/y1", 1, run_y, 1, &res_first),
		file("/x1", 1, run_x, 1, &res_all),
		file("/y2", 1, run_y, 1, &res_first),
		file("/x2", 1, run_x, 1, &res_all),
	};
	struct scan s = { .files = files, .nfiles = 4, .page_size = P };
	struct clone_layouts l;
	struct clone_sets cs;

	(void)state;
	clone_layouts_find(&s, 1, &l);
	assert_int_equal(l.nsets, 2);
	clone_sets_measure(&s, &l, NULL, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/x1"); /* saves 4 pages */
	assert_int_equal(cs.sets[0].saving_bytes, 4 * P);
	assert_int_equal(cs.sets[1].saving_bytes, 1 * P);
	clone_sets_free(&cs);
	/* the y set gets all four pages twice, the x set none: the order turns */
	files[0].resident.bits = files[2].resident.bits = 0xf;
	files[0].resident_pages = files[2].resident_pages = 4;
	files[1].resident.bits = files[3].resident.bits = 0;
	files[1].resident_pages = files[3].resident_pages = 0;
	clone_sets_measure(&s, &l, NULL, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/y1");
	assert_int_equal(cs.sets[0].saving_bytes, 4 * P);
	assert_int_equal(cs.sets[1].saving_bytes, 0);
	assert_int_equal(cs.saving_bytes, 4 * P);
	clone_sets_free(&cs);
	/* a tie: the donor whose path sorts first comes first */
	files[1].resident.bits = files[3].resident.bits = 0xf;
	files[1].resident_pages = files[3].resident_pages = 4;
	clone_sets_measure(&s, &l, NULL, NULL, &cs);
	assert_string_equal(files[cs.sets[0].members[0]].path, "/x1");
	assert_string_equal(files[cs.sets[1].members[0]].path, "/y1");
	clone_sets_free(&cs);
	clone_layouts_free(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(one_set_with_saving),
		cmocka_unit_test(min_size_and_singletons),
		cmocka_unit_test(donor_choice),
		cmocka_unit_test(holes_and_unwritten),
		cmocka_unit_test(reports_from_one_layout),
	};

	return cmocka_run_group_tests_name("clones", tests, NULL, NULL);
}
