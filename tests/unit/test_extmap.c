// SPDX-License-Identifier: GPL-2.0
/* Extent grouping and the physical page index, with exact expectations. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <cmocka.h>
#include "extmap.h"

#define RUNS(...) ((struct page_run[]){ __VA_ARGS__ })
#define FILE_IN(dev, runs) { dev, runs, sizeof(runs) / sizeof(struct page_run) }

/* The slot a file page uses, or UINT64_MAX when it maps to none. */
static uint64_t slot_of(const struct extmap *m, uint32_t file, uint64_t lpage)
{
	for (uint32_t k = 0; k < m->seg_count[file]; k++) {
		const struct dc_segment *s = &m->segs[m->seg_first[file] + k];

		if (lpage >= s->lpage && lpage < s->lpage + s->npages)
			return s->slot + (lpage - s->lpage);
	}
	return UINT64_MAX;
}

static void no_sharing(void **state)
{
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 10 })),
		FILE_IN(1, RUNS({ 0, 110, 10 })), /* adjacent, not overlapping */
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, 0);
	assert_int_equal(m.nsegs, 0);
	assert_int_equal(m.ngroups, 0);
	assert_int_equal(m.file_group[0], DC_NO_GROUP);
	assert_int_equal(m.file_group[1], DC_NO_GROUP);
	extmap_free(&m);
}

static void clones_share_every_page(void **state)
{
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 1000, 256 })),
		FILE_IN(1, RUNS({ 0, 1000, 256 })),
		FILE_IN(1, RUNS({ 0, 1000, 256 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 3, &m), 0);
	assert_int_equal(m.nslots, 256);
	assert_int_equal(m.nranges, 1);
	assert_int_equal(m.ngroups, 1);
	for (int f = 0; f < 3; f++) {
		assert_int_equal(m.file_group[f], 0);
		assert_int_equal(m.seg_count[f], 1);
		assert_int_equal(slot_of(&m, f, 0), 0);
		assert_int_equal(slot_of(&m, f, 255), 255);
	}
	extmap_free(&m);
}

static void partial_overlap_at_other_offset(void **state)
{
	/* B's pages 50..59 hold A's physical pages 105..114. */
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 20 })),
		FILE_IN(1, RUNS({ 0, 500, 50 }, { 50, 105, 10 }, { 60, 600, 5 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, 10);
	assert_int_equal(m.ngroups, 1);
	assert_int_equal(m.ranges[0].ppage, 105);
	assert_int_equal(m.ranges[0].npages, 10);
	assert_int_equal(slot_of(&m, 0, 4), UINT64_MAX);
	assert_int_equal(slot_of(&m, 0, 5), 0);
	assert_int_equal(slot_of(&m, 0, 14), 9);
	assert_int_equal(slot_of(&m, 0, 15), UINT64_MAX);
	assert_int_equal(slot_of(&m, 1, 50), 0);
	assert_int_equal(slot_of(&m, 1, 59), 9);
	assert_int_equal(slot_of(&m, 1, 60), UINT64_MAX);
	extmap_free(&m);
}

static void self_overlap_is_a_group_of_one(void **state)
{
	/* A file reflinked into itself: pages 8..15 repeat pages 0..7. */
	struct extmap_input in[] = {
		FILE_IN(7, RUNS({ 0, 40, 8 }, { 8, 40, 8 })),
		FILE_IN(7, RUNS({ 0, 900, 8 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, 8);
	assert_int_equal(m.ngroups, 1);
	assert_int_equal(m.file_group[0], 0);
	assert_int_equal(m.file_group[1], DC_NO_GROUP);
	assert_int_equal(m.seg_count[0], 2);
	assert_int_equal(slot_of(&m, 0, 3), slot_of(&m, 0, 11));
	extmap_free(&m);
}

static void adjacent_shared_ranges_merge(void **state)
{
	/* A = [100,110) + [110,120) in two runs, B covers both halves. */
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 10 }, { 30, 110, 10 })),
		FILE_IN(1, RUNS({ 0, 100, 20 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nranges, 1);
	assert_int_equal(m.nslots, 20);
	assert_int_equal(slot_of(&m, 0, 30), 10);
	assert_int_equal(slot_of(&m, 1, 10), 10);
	extmap_free(&m);
}

static void touching_groups_stay_apart(void **state)
{
	/* {A, B} share 100..109 and {C, D} share 110..119: two groups. */
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 10 })),
		FILE_IN(1, RUNS({ 0, 110, 10 })),
		FILE_IN(1, RUNS({ 5, 100, 10 })),
		FILE_IN(1, RUNS({ 3, 110, 10 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 4, &m), 0);
	assert_int_equal(m.ngroups, 2);
	assert_int_equal(m.file_group[0], m.file_group[2]);
	assert_int_equal(m.file_group[1], m.file_group[3]);
	assert_int_not_equal(m.file_group[0], m.file_group[1]);
	assert_int_equal(m.nslots, 20);
	assert_int_equal(extmap_slot_group(&m, slot_of(&m, 0, 9)), m.file_group[0]);
	assert_int_equal(extmap_slot_group(&m, slot_of(&m, 1, 0)), m.file_group[1]);
	extmap_free(&m);
}

static void devices_are_separate_address_spaces(void **state)
{
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 10 })),
		FILE_IN(2, RUNS({ 0, 100, 10 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, 0);
	assert_int_equal(m.ngroups, 0);
	extmap_free(&m);
}

static void chains_join_into_one_group(void **state)
{
	/* A~B share 100..109, B~C share 300..309, D~E apart. */
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 0, 100, 10 })),
		FILE_IN(1, RUNS({ 0, 100, 10 }, { 10, 300, 10 })),
		FILE_IN(1, RUNS({ 5, 300, 10 })),
		FILE_IN(1, RUNS({ 0, 700, 3 })),
		FILE_IN(1, RUNS({ 0, 701, 1 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 5, &m), 0);
	assert_int_equal(m.ngroups, 2);
	assert_int_equal(m.file_group[0], m.file_group[1]);
	assert_int_equal(m.file_group[1], m.file_group[2]);
	assert_int_not_equal(m.file_group[3], m.file_group[0]);
	assert_int_equal(m.file_group[3], m.file_group[4]);
	assert_int_equal(m.nslots, 21);
	assert_int_equal(extmap_slot_group(&m, slot_of(&m, 2, 5)), m.file_group[0]);
	assert_int_equal(extmap_slot_group(&m, slot_of(&m, 4, 0)), m.file_group[3]);
	extmap_free(&m);
}

static void many_extents(void **state)
{
	/* 10,000 one-page extents in reverse physical order, cloned once. */
	enum { N = 10000 };
	struct page_run *runs = calloc(N, sizeof(*runs));
	struct extmap m;

	(void)state;
	for (int i = 0; i < N; i++)
		runs[i] = (struct page_run){ i, 2 * (N - i), 1 };
	struct extmap_input in[] = { { 3, runs, N }, { 3, runs, N } };

	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, N);
	assert_int_equal(m.nranges, N); /* gaps between the physical pages */
	assert_int_equal(m.seg_count[0], N);
	for (int i = 1; i < N; i++) /* sorted by file page, for the BPF search */
		assert_true(m.segs[m.seg_first[0] + i].lpage > m.segs[m.seg_first[0] + i - 1].lpage);
	assert_int_equal(slot_of(&m, 0, 1234), slot_of(&m, 1, 1234));
	assert_int_not_equal(slot_of(&m, 0, 1234), slot_of(&m, 0, 1235));
	extmap_free(&m);
	free(runs);
}

static void empty_input(void **state)
{
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(NULL, 0, &m), 0);
	assert_int_equal(m.nslots, 0);
	assert_int_equal(extmap_slot_group(&m, 0), DC_NO_GROUP);
	extmap_free(&m);
}

/* A file's runs out of file order (nothing the scan makes, but allowed): its segments still sorted by file page. */
static void unsorted_runs_give_sorted_segments(void **state)
{
	struct extmap_input in[] = {
		FILE_IN(1, RUNS({ 8, 500, 4 }, { 0, 100, 4 })),
		FILE_IN(1, RUNS({ 0, 100, 4 }, { 4, 500, 4 })),
	};
	struct extmap m;

	(void)state;
	assert_int_equal(extmap_build(in, 2, &m), 0);
	assert_int_equal(m.nslots, 8);
	assert_int_equal(m.ngroups, 1);
	assert_int_equal(m.seg_count[0], 2);
	assert_true(m.segs[m.seg_first[0]].lpage == 0 && m.segs[m.seg_first[0] + 1].lpage == 8);
	for (uint64_t p = 0; p < 4; p++) {
		assert_int_equal(slot_of(&m, 0, p), slot_of(&m, 1, p));
		assert_int_equal(slot_of(&m, 0, 8 + p), slot_of(&m, 1, 4 + p));
	}
	assert_int_equal(slot_of(&m, 0, 4), UINT64_MAX);
	extmap_free(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_sharing),
		cmocka_unit_test(clones_share_every_page),
		cmocka_unit_test(partial_overlap_at_other_offset),
		cmocka_unit_test(self_overlap_is_a_group_of_one),
		cmocka_unit_test(adjacent_shared_ranges_merge),
		cmocka_unit_test(touching_groups_stay_apart),
		cmocka_unit_test(devices_are_separate_address_spaces),
		cmocka_unit_test(chains_join_into_one_group),
		cmocka_unit_test(many_extents),
		cmocka_unit_test(empty_input),
		cmocka_unit_test(unsorted_runs_give_sorted_segments),
	};

	return cmocka_run_group_tests_name("extmap", tests, NULL, NULL);
}
