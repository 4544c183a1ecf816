// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "util.h"

void msg(const char *fmt, ...)
{
	va_list ap;

	fputs("dupcache: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

const char *human_bytes(uint64_t bytes, char *buf, size_t len)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
	double v = bytes;
	int u = 0;

	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, len, v < 100 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

int usage_bad_option(const char *cmd, int c, char *const argv[])
{
	if (c == ':')
		msg("%s: %s needs a value", cmd, argv[optind - 1]);
	else
		msg("%s: unknown option '%s' (see dupcache %s --help)", cmd, argv[optind - 1], cmd);
	return EXIT_USAGE;
}

int usage_no_path(const char *cmd)
{
	msg("%s: at least one PATH is needed (see dupcache %s --help)", cmd, cmd);
	return EXIT_USAGE;
}

bool opt_seconds(const char *cmd, const char *opt, const char *arg, double lo, double hi,
		 double *out)
{
	char *end;

	*out = strtod(arg, &end);
	if (*arg && !*end && *out >= lo && *out <= hi)
		return true;
	msg("%s: %s takes seconds from %.10g to %.10g, not '%s'", cmd, opt, lo, hi, arg);
	return false;
}

bool opt_count(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
	char *end;

	*out = strtoull(arg, &end, 10);
	if (*arg >= '0' && *arg <= '9' && !*end)
		return true;
	msg("%s: %s takes a whole number >= 0, not '%s'", cmd, opt, arg);
	return false;
}

static void *oom(void)
{
	msg("out of memory");
	exit(1);
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	return p ? p : oom();
}

void *xrealloc(void *p, size_t n, size_t size)
{
	void *q;

	if (size && n > SIZE_MAX / size)
		return oom();
	q = realloc(p, n && size ? n * size : 1);
	return q ? q : oom();
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	return p ? p : oom();
}

int bpf_load_error(int err, const char *what)
{
	if ((err == -EPERM || err == -EACCES) && geteuid() != 0) {
		msg("%s: permission denied: loading BPF needs root (or CAP_BPF and CAP_PERFMON)", what);
		return EXIT_NOPERM;
	}
	if (err == -EACCES || err == -EINVAL) {
		/* As root: the verifier's no (EINVAL: e.g. a helper this kernel does not offer). */
		msg("%s: the kernel rejected it: %s (DUPCACHE_DEBUG=1 shows libbpf's and the verifier's log)",
		    what, strerror(-err));
		return EXIT_FAIL;
	}
	if (err == -EPERM) {
		msg("%s: the kernel refused it even to root (lockdown?)", what);
		return EXIT_NOKERNEL;
	}
	msg("%s: %s", what, strerror(-err));
	return EXIT_FAIL;
}

long long monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
