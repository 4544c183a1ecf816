// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "budget.h"
#include "util.h"

const struct metric_def metric_defs[M_COUNT] = {
	[M_PEAK_DUP] = { "peak_dup_bytes", U_BYTES, true },
	[M_END_DUP] = { "end_dup_bytes", U_BYTES, false },
	[M_PEAK_DUP_RATIO] = { "peak_dup_ratio", U_PERCENT, true },
	[M_END_DUP_RATIO] = { "end_dup_ratio", U_PERCENT, false },
	[M_END_CACHED] = { "end_cached_bytes", U_BYTES, false },
	[M_CACHED_GROWTH] = { "cached_growth_bytes", U_BYTES, true },
	[M_PAGE_CACHE_GROWTH] = { "page_cache_growth_bytes", U_BYTES, true },
	[M_PAGES_ADDED] = { "pages_added", U_COUNT, true },
	[M_REFAULTS] = { "refaults", U_COUNT, true },
	[M_RECLAIMED] = { "reclaimed", U_COUNT, true },
	[M_RECLAIM_STALLS] = { "reclaim_stalls", U_COUNT, true },
	[M_RECLAIM_STALL_MS] = { "reclaim_stall_ms", U_MS, true },
	[M_WORKLOAD_SECONDS] = { "workload_seconds", U_SECONDS, true },
	[M_WORKLOAD_EXIT] = { "workload_exit", U_COUNT, true },
};

const char *const level_name[] = { "error", "warn" };
const char *const status_name[] = { "pass", "warn", "fail", "unmeasured" };

static int metric_by_name(const char *name)
{
	for (int m = 0; m < M_COUNT; m++)
		if (!strcmp(metric_defs[m].name, name))
			return m;
	return -1;
}

void budget_add(struct budget *b, const struct check *c)
{
	b->checks = xrealloc(b->checks, b->n + 1, sizeof(*b->checks));
	b->checks[b->n++] = *c;
}

bool budget_has_relative(const struct budget *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->checks[i].relative)
			return true;
	return false;
}

void budget_free(struct budget *b)
{
	free(b->checks);
	*b = (struct budget){ 0 };
}

void baseline_free(struct baseline *base)
{
	free(base->filesystems);
	base->filesystems = NULL;
}

/* A JSON value in a metric's unit: numbers as such, or strings with units. */
static bool value_of(enum unit u, json_object *j, double *out)
{
	enum json_type t = json_object_get_type(j);
	const char *s = t == json_type_string ? json_object_get_string(j) : NULL;
	uint64_t n;
	char *end;

	if (t == json_type_int || t == json_type_double) {
		*out = json_object_get_double(j);
		/* Bytes and counts are whole; everything here is >= 0. */
		return *out >= 0 && (u == U_PERCENT || u == U_SECONDS || u == U_MS ||
				     *out == floor(*out));
	}
	if (!s)
		return false;
	switch (u) {
	case U_BYTES:
		if (!parse_size(s, &n))
			return false;
		*out = n;
		return true;
	case U_PERCENT:
		return parse_percent(s, out);
	case U_COUNT:
		n = strtoull(s, &end, 10);
		*out = n;
		return *s >= '0' && *s <= '9' && !*end;
	case U_SECONDS:
	case U_MS:
		*out = strtod(s, &end);
		return end != s && !*end && *out >= 0;
	}
	return false;
}

static const char *unit_expected(enum unit u)
{
	static const char *const what[] = {
		[U_BYTES] = "a size (bytes, or a string with a unit: \"64 MiB\")",
		[U_PERCENT] = "a percentage (50, \"50%\" or \"12.5%\")",
		[U_COUNT] = "a whole number >= 0",
		[U_SECONDS] = "seconds >= 0",
		[U_MS] = "milliseconds >= 0",
	};
	return what[u];
}

/* One budget object of a metric: {"max", "max_increase", "min_increase", "level"}. */
static bool budget_entry(const char *path, enum metric m, json_object *o, struct budget *b)
{
	const char *name = metric_defs[m].name;
	struct check c = { .metric = m };
	bool has_max = false, has_inc = false, has_floor = false;
	json_object_iter it;

	if (!json_object_is_type(o, json_type_object)) {
		msg("gate: %s: budget of %s: an object {\"max\", \"max_increase\", \"min_increase\", "
		    "\"level\"} (or a list of them) is needed", path, name);
		return false;
	}
	json_object_object_foreachC(o, it) {
		const char *key = it.key;
		double *dst = NULL;
		enum unit u = metric_defs[m].unit;

		if (!strcmp(key, "level")) {
			const char *l = json_object_get_string(it.val);

			if (!json_object_is_type(it.val, json_type_string) ||
			    (strcmp(l, "error") && strcmp(l, "warn"))) {
				msg("gate: %s: %s.level: \"error\" or \"warn\", not %s", path, name,
				    json_object_to_json_string(it.val));
				return false;
			}
			c.level = strcmp(l, "error") ? LEVEL_WARN : LEVEL_ERROR;
			continue;
		}
		if (!strcmp(key, "max")) {
			dst = &c.max, has_max = true;
		} else if (!strcmp(key, "max_increase")) {
			dst = &c.max_increase, has_inc = true, u = U_PERCENT;
		} else if (!strcmp(key, "min_increase")) {
			dst = &c.min_increase, has_floor = true;
		} else {
			msg("gate: %s: %s: unknown key '%s' (max, max_increase, min_increase, level)",
			    path, name, key);
			return false;
		}
		if (!value_of(u, it.val, dst)) {
			msg("gate: %s: %s.%s: %s, not %s", path, name, key, unit_expected(u),
			    json_object_to_json_string(it.val));
			return false;
		}
	}
	if (!has_max && !has_inc) {
		msg("gate: %s: %s: a budget needs \"max\" or \"max_increase\"", path, name);
		return false;
	}
	if (has_floor && !has_inc) {
		msg("gate: %s: %s: \"min_increase\" is the floor of \"max_increase\", which is missing",
		    path, name);
		return false;
	}
	if (has_max)
		budget_add(b, &c);
	if (has_inc) {
		c.relative = true;
		budget_add(b, &c);
	}
	return true;
}

static json_object *read_json(const char *path, const char *what)
{
	json_object *root = json_object_from_file(path);

	if (!root)
		msg("gate: %s %s: %s", what, path,
		    errno && access(path, R_OK) ? strerror(errno) : "not a JSON document");
	else if (!json_object_is_type(root, json_type_object)) {
		msg("gate: %s %s: not a JSON object", what, path);
		json_object_put(root);
		root = NULL;
	}
	return root;
}

/*
 * {"schema": 1, "budgets": {METRIC: BUDGET or [BUDGET...]}}; unknown
 * metrics and keys are refused, so a typo never turns a budget off.
 */
bool budget_read(const char *path, struct budget *b)
{
	json_object *root = read_json(path, "--budget"), *budgets, *schema;
	json_object_iter it;
	bool ok = false;

	if (!root)
		return false;
	if (json_object_object_get_ex(root, "schema", &schema) && json_object_get_int(schema) != 1) {
		msg("gate: --budget %s: schema %s; this dupcache reads schema 1", path,
		    json_object_to_json_string(schema));
		goto out;
	}
	if (!json_object_object_get_ex(root, "budgets", &budgets) ||
	    !json_object_is_type(budgets, json_type_object)) {
		msg("gate: --budget %s: no \"budgets\" object ({\"budgets\": {\"peak_dup_bytes\": "
		    "{\"max\": \"64 MiB\"}}})", path);
		goto out;
	}
	json_object_object_foreachC(root, it) {
		if (strcmp(it.key, "schema") && strcmp(it.key, "budgets")) {
			msg("gate: --budget %s: unknown key '%s' (schema, budgets)", path, it.key);
			goto out;
		}
	}
	json_object_object_foreachC(budgets, it) {
		int m = metric_by_name(it.key);

		if (m < 0) {
			msg("gate: --budget %s: unknown metric '%s' (README.md lists them)", path, it.key);
			goto out;
		}
		if (json_object_is_type(it.val, json_type_array)) {
			for (size_t i = 0; i < json_object_array_length(it.val); i++)
				if (!budget_entry(path, m, json_object_array_get_idx(it.val, i), b))
					goto out;
		} else if (!budget_entry(path, m, it.val, b)) {
			goto out;
		}
	}
	ok = true;
out:
	json_object_put(root);
	return ok;
}

/* A gate JSON (--json or --save-baseline): its page size, filesystems, metrics. */
bool baseline_read(const char *path, struct baseline *out)
{
	json_object *root = read_json(path, "--baseline"), *v, *fs, *metrics;
	bool ok = false;
	size_t len = 0;

	*out = (struct baseline){ .path = path };
	if (!root)
		return false;
	if (!json_object_object_get_ex(root, "schema", &v) || json_object_get_int(v) != 1 ||
	    !json_object_object_get_ex(root, "verdict", &v)) {
		msg("gate: --baseline %s: not a dupcache gate JSON of schema 1 (written by --json or "
		    "--save-baseline)", path);
		goto out;
	}
	if (!json_object_object_get_ex(root, "page_size", &v) || !json_object_is_type(v, json_type_int) ||
	    !json_object_object_get_ex(root, "filesystems", &fs) ||
	    !json_object_is_type(fs, json_type_array) ||
	    !json_object_object_get_ex(root, "metrics", &metrics) ||
	    !json_object_is_type(metrics, json_type_object)) {
		msg("gate: --baseline %s: \"page_size\", \"filesystems\" or \"metrics\" missing", path);
		goto out;
	}
	out->page_size = json_object_get_int(v);
	out->filesystems = xstrdup("");
	for (size_t i = 0; i < json_object_array_length(fs); i++) {
		const char *name = json_object_get_string(json_object_array_get_idx(fs, i));

		out->filesystems = xrealloc(out->filesystems, len + strlen(name) + 2, 1);
		len += sprintf(out->filesystems + len, "%s%s", i ? "," : "", name);
	}
	for (int m = 0; m < M_COUNT; m++) {
		if (!json_object_object_get_ex(metrics, metric_defs[m].name, &v) ||
		    json_object_is_type(v, json_type_null))
			continue;
		if (!json_object_is_type(v, json_type_int) && !json_object_is_type(v, json_type_double)) {
			msg("gate: --baseline %s: metrics.%s is not a number", path, metric_defs[m].name);
			goto out;
		}
		out->m.have[m] = true;
		out->m.v[m] = json_object_get_double(v);
	}
	ok = true;
out:
	json_object_put(root);
	if (!ok)
		baseline_free(out);
	return ok;
}

static bool whole_unit(enum unit u)
{
	return u == U_BYTES || u == U_COUNT;
}

void checks_evaluate(struct budget *b, const struct metrics *m, const struct baseline *base,
		     bool workload)
{
	for (size_t i = 0; i < b->n; i++) {
		struct check *c = &b->checks[i];
		enum metric id = c->metric;

		c->reason = NULL;
		if (!m->have[id]) {
			c->status = ST_UNMEASURED;
			c->reason = !workload && metric_defs[id].needs_workload
					    ? "cannot be measured without a workload (-- COMMAND)"
					    : "the kernel lacks the tracepoints the engine counts it with (said above)";
			continue;
		}
		c->value = m->v[id];
		if (c->relative) {
			if (!base || !base->m.have[id]) {
				c->status = ST_UNMEASURED;
				c->reason = "the baseline has no value for it";
				continue;
			}
			c->baseline = base->m.v[id];
			/* The floor: a few pages over a baseline of 0 are not +inf%. */
			c->limit = c->baseline + fmax(fabs(c->baseline) * c->max_increase / 100,
						      c->min_increase);
		} else {
			c->limit = c->max;
		}
		/* Whole units compare as whole: the limit is the largest value that passes. */
		if (whole_unit(metric_defs[id].unit))
			c->limit = floor(c->limit);
		if (c->value <= c->limit)
			c->status = ST_PASS;
		else
			c->status = c->level == LEVEL_ERROR ? ST_FAIL : ST_WARN;
	}
}

const char *checks_verdict(const struct budget *b)
{
	bool warn = false;

	for (size_t i = 0; i < b->n; i++) {
		if (b->checks[i].status == ST_FAIL || b->checks[i].status == ST_UNMEASURED)
			return "fail";
		warn |= b->checks[i].status == ST_WARN;
	}
	return warn ? "warn" : "pass";
}

const char *metric_format(enum metric m, double v, char *buf, size_t len)
{
	static const char *const fmt[] = { [U_PERCENT] = "%.1f%%", [U_COUNT] = "%.0f",
					   [U_SECONDS] = "%.2f s", [U_MS] = "%.1f ms" };
	enum unit u = metric_defs[m].unit;
	char pos[32];

	if (u != U_BYTES)
		snprintf(buf, len, fmt[u], v);
	else if (v < 0)
		snprintf(buf, len, "-%s", human_bytes((uint64_t)-v, pos, sizeof(pos)));
	else
		human_bytes((uint64_t)v, buf, len);
	return buf;
}
