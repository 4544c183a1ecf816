// SPDX-License-Identifier: GPL-2.0
/* Sizes and percentages on the command line, and how a check decides. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "budget.h"
#include "util.h"

static uint64_t size_of(const char *s)
{
	uint64_t v = 0;

	assert_true(parse_size(s, &v));
	return v;
}

static void sizes(void **state)
{
	(void)state;
	assert_int_equal(size_of("0"), 0);
	assert_int_equal(size_of("4096"), 4096);
	assert_int_equal(size_of("4096B"), 4096);
	assert_int_equal(size_of("1K"), 1024);
	assert_int_equal(size_of("1KiB"), 1024);
	assert_int_equal(size_of("64M"), 64ULL << 20);
	assert_int_equal(size_of("64 MiB"), 64ULL << 20);
	assert_int_equal(size_of("1.5G"), 3ULL << 29);
	assert_int_equal(size_of("2TiB"), 2ULL << 40);
	assert_int_equal(size_of("1KB"), 1000);
	assert_int_equal(size_of("1.5MB"), 1500000);
	assert_int_equal(size_of("3GB"), 3000000000ULL);
	assert_int_equal(size_of("0.1K"), 102);               /* rounded down */
	assert_int_equal(size_of("1.999999999T"), 2199023254452ULL);
	assert_int_equal(size_of("18446744073709551615"), UINT64_MAX);
}

static void bad_sizes(void **state)
{
	static const char *const bad[] = { "", "M", "-1", "1X", "1 ", "1  M", "1.M", ".5M", "1.5.3M",
					   "1m", "1Mi", "1 MiBs", "18446744073709551616",
					   "99999999999T", "16777216T" };
	uint64_t v;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(parse_size(bad[i], &v));
}

static void percentages(void **state)
{
	static const char *const bad[] = { "", "%", "-5", "5%%", "x", "50 %", "1e3x" };
	double v;

	(void)state;
	assert_true(parse_percent("50", &v));
	assert_true(v == 50);
	assert_true(parse_percent("50%", &v));
	assert_true(v == 50);
	assert_true(parse_percent("12.5%", &v));
	assert_true(v == 12.5);
	assert_true(parse_percent("0", &v));
	assert_true(v == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_false(parse_percent(bad[i], &v));
}

static struct check *evaluate(struct check c, double value, bool have_base, double base)
{
	static struct check out;
	struct budget b = { 0 };
	struct metrics m = { 0 };
	struct baseline bl = { 0 };

	m.have[c.metric] = true;
	m.v[c.metric] = value;
	bl.m.have[c.metric] = have_base;
	bl.m.v[c.metric] = base;
	budget_add(&b, &c);
	checks_evaluate(&b, &m, &bl, true);
	out = b.checks[0];
	budget_free(&b);
	return &out;
}

static void checks(void **state)
{
	struct check *c;

	(void)state;
	/* at the limit passes, one byte over fails; warn-level only warns */
	assert_int_equal(evaluate((struct check){ .metric = M_PEAK_DUP, .max = 100 }, 100, false, 0)->status, ST_PASS);
	assert_int_equal(evaluate((struct check){ .metric = M_PEAK_DUP, .max = 100 }, 101, false, 0)->status, ST_FAIL);
	assert_int_equal(evaluate((struct check){ .metric = M_PEAK_DUP, .max = 100, .level = LEVEL_WARN },
				  101, false, 0)->status, ST_WARN);
	/* relative: +10% of 1000 is 1100; bytes compare whole (1000 * 1.0005 -> 1000) */
	c = evaluate((struct check){ .metric = M_PEAK_DUP, .relative = true, .max_increase = 10 }, 1100, true, 1000);
	assert_int_equal(c->status, ST_PASS);
	assert_true(c->limit == 1100);
	c = evaluate((struct check){ .metric = M_PEAK_DUP, .relative = true, .max_increase = 0.05 }, 1001, true, 1000);
	assert_true(c->limit == 1000);
	assert_int_equal(c->status, ST_FAIL);
	/* the floor: over a baseline of 0, +inf% is not needed for 4096 bytes */
	c = evaluate((struct check){ .metric = M_PEAK_DUP, .relative = true, .max_increase = 10 }, 4096, true, 0);
	assert_int_equal(c->status, ST_FAIL);
	c = evaluate((struct check){ .metric = M_PEAK_DUP, .relative = true, .max_increase = 10,
				     .min_increase = 4096 }, 4096, true, 0);
	assert_int_equal(c->status, ST_PASS);
	/* ratios are not rounded */
	c = evaluate((struct check){ .metric = M_PEAK_DUP_RATIO, .max = 66.6 }, 66.65, false, 0);
	assert_int_equal(c->status, ST_FAIL);
	/* nothing to compare with: unmeasured, which fails whatever the level */
	c = evaluate((struct check){ .metric = M_REFAULTS, .relative = true, .max_increase = 10,
				     .level = LEVEL_WARN }, 3, false, 0);
	assert_int_equal(c->status, ST_UNMEASURED);
	assert_non_null(c->reason);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sizes),
		cmocka_unit_test(bad_sizes),
		cmocka_unit_test(percentages),
		cmocka_unit_test(checks),
	};

	return cmocka_run_group_tests_name("budget", tests, NULL, NULL);
}
