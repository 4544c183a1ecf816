// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <libgen.h>
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

int opt_common(const char *cmd, int c, const char *usage, bool *one_fs, char *const argv[])
{
	if (c == 'x') {
		*one_fs = true;
		return EXIT_OK;
	}
	if (c == 'h') {
		fputs(usage, stdout);
		exit(EXIT_OK);
	}
	return usage_bad_option(cmd, c, argv);
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

bool parse_size(const char *arg, uint64_t *out)
{
	static const struct { const char *name; uint64_t mult; } units[] = {
		{ "", 1 }, { "B", 1 },
		{ "K", 1ULL << 10 }, { "KiB", 1ULL << 10 }, { "M", 1ULL << 20 }, { "MiB", 1ULL << 20 },
		{ "G", 1ULL << 30 }, { "GiB", 1ULL << 30 }, { "T", 1ULL << 40 }, { "TiB", 1ULL << 40 },
		{ "KB", 1000ULL }, { "MB", 1000000ULL }, { "GB", 1000000000ULL },
		{ "TB", 1000000000000ULL },
	};
	const char *p = arg;
	uint64_t whole = 0, frac = 0, frac_scale = 1;

	if (*p < '0' || *p > '9')
		return false;
	for (; *p >= '0' && *p <= '9'; p++) {
		uint64_t digit = *p - '0';

		if (whole > UINT64_MAX / 10 || whole * 10 > UINT64_MAX - digit)
			return false;
		whole = whole * 10 + digit;
	}
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		/* Nine digits of a fraction are more than any unit here makes whole bytes of. */
		for (; *p >= '0' && *p <= '9'; p++)
			if (frac_scale < 1000000000ULL) {
				frac = frac * 10 + (*p - '0');
				frac_scale *= 10;
			}
	}
	if (*p == ' ' && p[1])
		p++;
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		uint64_t m = units[i].mult;

		if (strcmp(p, units[i].name))
			continue;
		/* frac < frac_scale: its part is below m, in 128 bits on the way. */
		uint64_t part = (unsigned __int128)frac * m / frac_scale;

		if (whole > UINT64_MAX / m || whole * m > UINT64_MAX - part)
			return false;
		*out = whole * m + part;
		return true;
	}
	return false;
}

bool opt_size(const char *cmd, const char *opt, const char *arg, uint64_t *out)
{
	if (parse_size(arg, out))
		return true;
	msg("%s: %s takes a size (bytes, or with a unit: K, KiB, M, MiB, G, GiB, T, TiB, KB, MB, "
	    "GB, TB), not '%s'", cmd, opt, arg);
	return false;
}

bool parse_percent(const char *arg, double *out)
{
	char *end;

	if ((*arg < '0' || *arg > '9') && *arg != '.')
		return false;
	*out = strtod(arg, &end);
	if (end == arg)
		return false;
	if (*end == '%')
		end++;
	return !*end && *out >= 0 && *out < 1e15;
}

bool opt_percent(const char *cmd, const char *opt, const char *arg, double hi, double *out)
{
	if (parse_percent(arg, out) && *out <= hi)
		return true;
	msg("%s: %s takes a percentage from 0 to %.10g (50, 50%% or 12.5%%), not '%s'", cmd, opt,
	    hi, arg);
	return false;
}

bool opt_writable(const char *cmd, const char *opt, const char *path)
{
	char *copy = xstrdup(path);
	const char *dir = dirname(copy);
	bool ok = access(dir, W_OK) == 0;

	if (!ok)
		msg("%s: %s %s: cannot write in %s: %s", cmd, opt, path, dir, strerror(errno));
	free(copy);
	return ok;
}

volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig)
{
	stop_signal = sig;
}

/*
 * restart (SA_RESTART): for a front end whose scan still counts after the
 * signal (report --watch and gate report what they saw): that scan must
 * not lose a file to an EINTR of a slow open or ioctl (FUSE, NFS), and
 * their waits end on the signal anyway (nanosleep returns EINTR whatever
 * the flag says).  Not for one with a blocking read that must end on it
 * (top's prompts: ncurses reads the terminal without a timeout there).
 */
void stop_on_signals(bool restart)
{
	struct sigaction sa = { .sa_handler = on_stop_signal, .sa_flags = restart ? SA_RESTART : 0 };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
}

uint64_t meminfo_cached_bytes(void)
{
	FILE *f = fopen("/proc/meminfo", "re");
	unsigned long long kb = 0;
	char line[256];

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Cached: %llu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024;
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

#define ARENA_BLOCK (1u << 20)

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	_Alignas(8) char data[];
};

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
	size_t need = (n + 7) & ~(size_t)7;
	struct arena_block *b = a->head;
	void *q;

	if (!b || b->cap - b->used < need) {
		/* a record larger than a block gets a block of its own, behind the current one */
		size_t cap = need > ARENA_BLOCK / 4 ? need : ARENA_BLOCK;
		struct arena_block *nb = xcalloc(1, sizeof(*nb) + cap);

		nb->cap = cap;
		if (b && cap != ARENA_BLOCK) {
			nb->next = b->next;
			b->next = nb;
		} else {
			nb->next = b;
			a->head = nb;
		}
		b = nb;
	}
	q = b->data + b->used;
	b->used += need;
	memcpy(q, p, n);
	return q;
}

char *arena_strdup(struct arena *a, const char *s)
{
	return arena_memdup(a, s, strlen(s) + 1);
}

void arena_free(struct arena *a)
{
	for (struct arena_block *b = a->head, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	a->head = NULL;
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
