// SPDX-License-Identifier: GPL-2.0
/* Which pages of one FIEMAP extent map to physical pages. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <linux/fiemap.h>
#include "scan.h"

#define P 4096u
#define EXT(l, p, len, fl) (&(struct fiemap_extent){ .fe_logical = (l), .fe_physical = (p), \
						      .fe_length = (len), .fe_flags = (fl) })

static void aligned_extent(void **state)
{
	struct page_run r;

	(void)state;
	assert_true(extent_pages(EXT(8 * P, 100 * P, 4 * P, 0), 64 * P, P, &r));
	assert_int_equal(r.lpage, 8);
	assert_int_equal(r.ppage, 100);
	assert_int_equal(r.npages, 4);
}

static void unplain_extents_map_nothing(void **state)
{
	const uint32_t flags[] = { FIEMAP_EXTENT_UNWRITTEN, FIEMAP_EXTENT_DELALLOC,
				   FIEMAP_EXTENT_ENCODED, FIEMAP_EXTENT_DATA_INLINE,
				   FIEMAP_EXTENT_NOT_ALIGNED, FIEMAP_EXTENT_UNKNOWN,
				   FIEMAP_EXTENT_DATA_TAIL, FIEMAP_EXTENT_DATA_ENCRYPTED };
	struct page_run r;

	(void)state;
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		assert_false(extent_pages(EXT(0, 100 * P, 4 * P, flags[i]), 64 * P, P, &r));
	/* Shared and last are plain. */
	assert_true(extent_pages(EXT(0, 100 * P, 4 * P, FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_LAST),
				 64 * P, P, &r));
}

static void off_grid_maps_nothing(void **state)
{
	struct page_run r;

	(void)state;
	/* Physical offset not congruent with the logical one modulo the page. */
	assert_false(extent_pages(EXT(0, 100 * P + 1024, 4 * P, 0), 64 * P, P, &r));
}

static void partial_pages_need_the_page_start(void **state)
{
	struct page_run r;

	(void)state;
	/* 1 KiB blocks: [1K, 9K) holds byte 4K and 8K? only page 1 ([4K,8K)) whole. */
	assert_true(extent_pages(EXT(1024, 100 * P + 1024, 8192, 0), 64 * P, P, &r));
	assert_int_equal(r.lpage, 1);
	assert_int_equal(r.npages, 1);
	assert_int_equal(r.ppage, 101);
}

static void tail_page_at_eof(void **state)
{
	struct page_run r;

	(void)state;
	/* File of 2.5 pages, extent of 2.5 pages: the last page is up to EOF. */
	assert_true(extent_pages(EXT(0, 10 * P, 2 * P + 2048, 0), 2 * P + 2048, P, &r));
	assert_int_equal(r.npages, 3);
	/* Same extent in a longer file: the tail page is not covered. */
	assert_true(extent_pages(EXT(0, 10 * P, 2 * P + 2048, 0), 8 * P, P, &r));
	assert_int_equal(r.npages, 2);
	/* Extent past EOF (preallocated blocks): clipped to the file's pages. */
	assert_true(extent_pages(EXT(0, 10 * P, 16 * P, 0), 3 * P, P, &r));
	assert_int_equal(r.npages, 3);
	assert_false(extent_pages(EXT(4 * P, 10 * P, 16 * P, 0), 3 * P, P, &r));
}

static void shared_bytes_clip_at_eof(void **state)
{
	(void)state;
	assert_int_equal(extent_shared_bytes(EXT(0, 0, 3 * P, FIEMAP_EXTENT_SHARED), 20000), 3 * P);
	assert_int_equal(extent_shared_bytes(EXT(0, 0, 3 * P, FIEMAP_EXTENT_SHARED), 5000), 5000);
	assert_int_equal(extent_shared_bytes(EXT(0, 0, 3 * P, 0), 10000), 0);
	assert_int_equal(extent_shared_bytes(EXT(3 * P, 0, P, FIEMAP_EXTENT_SHARED), 3 * P), 0);
	/* Shared but unwritten still counts: it is a shared extent of the file. */
	assert_int_equal(extent_shared_bytes(EXT(0, 0, P, FIEMAP_EXTENT_SHARED |
						  FIEMAP_EXTENT_UNWRITTEN), P), P);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(aligned_extent),
		cmocka_unit_test(unplain_extents_map_nothing),
		cmocka_unit_test(off_grid_maps_nothing),
		cmocka_unit_test(partial_pages_need_the_page_start),
		cmocka_unit_test(tail_page_at_eof),
		cmocka_unit_test(shared_bytes_clip_at_eof),
	};

	return cmocka_run_group_tests_name("extent", tests, NULL, NULL);
}
