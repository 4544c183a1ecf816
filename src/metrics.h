/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Metrics in the Prometheus text format, written to a file that is replaced
 * whole (write a temporary, rename), as node_exporter's textfile collector
 * reads them: a reader never sees half a file.
 */
#ifndef DUPCACHE_METRICS_H
#define DUPCACHE_METRICS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct metrics {
	FILE *f;
	char *path, *tmp;
	const char *family; /* the last one HELP and TYPE were written for */
};

/* false after a one-line message */
bool metrics_begin(struct metrics *m, const char *path);
/*
 * One sample; samples of one family must follow each other.  labels is
 * NULL or the inside of the braces: `event="granted"`.
 */
void metrics_add(struct metrics *m, const char *family, const char *type, const char *help,
		 const char *labels, uint64_t value);
/* Replace the file.  false after a one-line message (the old file stays). */
bool metrics_commit(struct metrics *m);

#endif
