// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "metrics.h"
#include "util.h"

void metrics_begin(struct metrics *m)
{
	*m = (struct metrics){ 0 };
	m->f = open_memstream(&m->text, &m->len);
	if (!m->f) {
		msg("out of memory rendering the metrics");
		exit(EXIT_FAIL);
	}
}

static void family(struct metrics *m, const char *name, const char *type, const char *help)
{
	if (!m->family || strcmp(m->family, name)) {
		fprintf(m->f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
		m->family = name;
	}
}

void metrics_add(struct metrics *m, const char *name, const char *type, const char *help,
		 const char *labels, uint64_t value)
{
	family(m, name, type, help);
	/* As an integer: a double would round byte counts past 2^53. */
	fprintf(m->f, labels ? "%s{%s} %llu\n" : "%s%s %llu\n", name, labels ? labels : "",
		(unsigned long long)value);
}

void metrics_add_double(struct metrics *m, const char *name, const char *type, const char *help,
			const char *labels, double value)
{
	family(m, name, type, help);
	fprintf(m->f, labels ? "%s{%s} %.15g\n" : "%s%s %.15g\n", name, labels ? labels : "", value);
}

char *metrics_end(struct metrics *m, size_t *len)
{
	char *text;

	if (fclose(m->f)) {
		msg("out of memory rendering the metrics");
		exit(EXIT_FAIL);
	}
	text = m->text;
	*len = m->len;
	*m = (struct metrics){ 0 };
	return text;
}

const char *metrics_label(char *buf, size_t size, const char *name, const char *value)
{
	size_t n = (size_t)snprintf(buf, size, "%s=\"", name);

	/* Room for an escape pair, the closing quote and the NUL. */
	for (; n < size && *value && n + 4 <= size; value++) {
		char c = *value;

		if (c == '\\' || c == '"' || c == '\n') {
			buf[n++] = '\\';
			c = c == '\n' ? 'n' : c;
		}
		buf[n++] = c;
	}
	if (n + 2 > size)
		n = size - 2;
	buf[n++] = '"';
	buf[n] = '\0';
	return buf;
}

bool metrics_write_file(const char *path, const char *text, size_t len)
{
	char *tmp = NULL;
	FILE *f = NULL;
	bool ok;

	if (asprintf(&tmp, "%s.tmp.%d", path, (int)getpid()) < 0) {
		msg("out of memory");
		exit(EXIT_FAIL);
	}
	f = fopen(tmp, "we");
	ok = f && fwrite(text, 1, len, f) == len;
	if (f)
		ok &= fclose(f) == 0;
	if (ok && rename(tmp, path))
		ok = false;
	if (!ok) {
		msg("metrics: cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	return ok;
}
