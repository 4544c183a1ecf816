// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "metrics.h"
#include "util.h"

bool metrics_begin(struct metrics *m, const char *path)
{
	*m = (struct metrics){ .path = xstrdup(path) };
	if (asprintf(&m->tmp, "%s.tmp.%d", path, (int)getpid()) < 0)
		m->tmp = NULL;
	m->f = m->tmp ? fopen(m->tmp, "we") : NULL;
	if (!m->f) {
		msg("metrics: cannot write %s: %s", m->tmp ? m->tmp : path, strerror(errno));
		free(m->tmp);
		free(m->path);
		return false;
	}
	return true;
}

void metrics_add(struct metrics *m, const char *family, const char *type, const char *help,
		 const char *labels, uint64_t value)
{
	if (!m->family || strcmp(m->family, family)) {
		fprintf(m->f, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
		m->family = family;
	}
	fprintf(m->f, labels ? "%s{%s} %llu\n" : "%s%s %llu\n", family, labels ? labels : "",
		(unsigned long long)value);
}

bool metrics_commit(struct metrics *m)
{
	bool ok = !ferror(m->f);

	ok &= fclose(m->f) == 0;
	if (ok && rename(m->tmp, m->path))
		ok = false;
	if (!ok) {
		msg("metrics: cannot write %s: %s", m->path, strerror(errno));
		unlink(m->tmp);
	}
	free(m->tmp);
	free(m->path);
	return ok;
}
