/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Metrics in the Prometheus text format (exposition format 0.0.4), rendered
 * once into a buffer that the daemon both serves over HTTP (src/httpd.c)
 * and writes to a file replaced whole (write a temporary, rename), as
 * node_exporter's textfile collector reads them: a reader never sees half
 * a file.
 */
#ifndef DUPCACHE_METRICS_H
#define DUPCACHE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct metrics {
	FILE *f;
	char *text;
	size_t len;
	const char *family; /* the last one HELP and TYPE were written for */
};

void metrics_begin(struct metrics *m);
/*
 * One sample; samples of one family must follow each other.  labels is
 * NULL or the inside of the braces: `event="granted"` (metrics_label()).
 */
void metrics_add(struct metrics *m, const char *family, const char *type, const char *help,
		 const char *labels, uint64_t value);
void metrics_add_double(struct metrics *m, const char *family, const char *type, const char *help,
			const char *labels, double value);
/* The text (malloc'd, NUL-terminated, *len without the NUL); the caller frees it. */
char *metrics_end(struct metrics *m, size_t *len);

/*
 * `name="value"` into buf, the value escaped as the format wants (\\, \",
 * \n); cut short (still well formed) when buf is too small.  Returns buf.
 */
const char *metrics_label(char *buf, size_t size, const char *name, const char *value);

/* Replace the file with text.  false after a one-line message (the old file stays). */
bool metrics_write_file(const char *path, const char *text, size_t len);

#endif
