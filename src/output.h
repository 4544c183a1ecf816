/* SPDX-License-Identifier: GPL-2.0 */
/* Rendering of a report: human text or one JSON object (json-c). */
#ifndef DUPCACHE_OUTPUT_H
#define DUPCACHE_OUTPUT_H

#include <stdio.h>
#include "engine.h"
#include "scan.h"
#include "stats.h"

struct report_view {
	const struct scan *scan;
	const struct dup_stats *stats;
	size_t top;                          /* groups to show; 0 = all */
	const struct engine_window *window;  /* NULL in snapshot mode */
	double window_seconds;
	bool files;                          /* list files (fair dup shares), not groups */
	bool bytes;                          /* text: raw byte counts, not human units */
};

/*
 * Text: totals, per-filesystem totals, then the groups (or files).  CSV: a
 * header line and the listed rows only, sizes in bytes (RFC 4180 quoting).
 */
void output_text(FILE *out, const struct report_view *v);
void output_csv(FILE *out, const struct report_view *v);

/* json-c, briefer. */
struct json_object;
void json_add_u64(struct json_object *o, const char *key, uint64_t v);
void json_add_double(struct json_object *o, const char *key, double v);
void output_json(FILE *out, const struct report_view *v);

#endif
