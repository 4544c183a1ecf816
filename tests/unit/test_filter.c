// SPDX-License-Identifier: GPL-2.0
/* Which --include/--exclude patterns report refuses, and why. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>
#include "scan.h"

static void good_patterns(void **state)
{
	const char *const ok[] = { "*.img", "vm/*/snap", ".git", "[ab]*", "[!x]y", "[]]z",
				   "a\\*b", "dir/", "**" };

	(void)state;
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		assert_null(scan_pattern_error(ok[i]));
}

static void bad_patterns(void **state)
{
	(void)state;
	assert_string_equal(scan_pattern_error(""), "an empty pattern matches nothing");
	assert_non_null(strstr(scan_pattern_error("/abs/*.img"), "leading '/'"));
	assert_string_equal(scan_pattern_error("[ab"), "a '[' without its ']'");
	assert_string_equal(scan_pattern_error("x[!]"), "a '[' without its ']'");
	assert_string_equal(scan_pattern_error("ab\\"), "a trailing '\\' escapes nothing");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(good_patterns),
		cmocka_unit_test(bad_patterns),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
