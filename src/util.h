/* SPDX-License-Identifier: GPL-2.0 */
#ifndef DUPCACHE_UTIL_H
#define DUPCACHE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes (documented in README.md). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,       /* unexpected failure (out of memory, BPF load error) */
	EXIT_USAGE = 2,      /* bad command line */
	EXIT_PARTIAL = 3,    /* report printed, but some input was skipped */
	EXIT_NOPERM = 4,     /* not allowed to load BPF (needs root / CAP_BPF+CAP_PERFMON) */
	EXIT_NOKERNEL = 5,   /* the kernel lacks BTF or a tracepoint the engine needs */
};

/* One-line messages on stderr, prefixed "dupcache: ". */
void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "12.0 MiB": binary units, one decimal below 100 of a unit. */
const char *human_bytes(uint64_t bytes, char *buf, size_t len);

/*
 * Command lines: getopt_long's answers for a bad option (':' or '?', with
 * opterr = 0 and a leading ':' in the option string) and a missing PATH,
 * as one-line messages.  Both return EXIT_USAGE.
 */
int usage_bad_option(const char *cmd, int c, char *const argv[]);
int usage_no_path(const char *cmd);
/* Option values; false after a one-line message when arg is not one. */
bool opt_seconds(const char *cmd, const char *opt, const char *arg, double lo, double hi,
		 double *out);
bool opt_count(const char *cmd, const char *opt, const char *arg, uint64_t *out);

/*
 * A failed BPF open/load/attach (a negative errno) as one line; returns the
 * exit code: EXIT_NOPERM without privilege, EXIT_NOKERNEL when even root is
 * refused (lockdown), else EXIT_FAIL.
 */
int bpf_load_error(int err, const char *what);

/* CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns() reads. */
long long monotonic_ns(void);

void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n, size_t size);
char *xstrdup(const char *s);

static inline bool bit_test(const uint64_t *map, uint64_t bit)
{
	return map[bit / 64] & (1ULL << (bit % 64));
}

static inline void bit_set(uint64_t *map, uint64_t bit)
{
	map[bit / 64] |= 1ULL << (bit % 64);
}

#endif
