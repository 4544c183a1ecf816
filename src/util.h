/* SPDX-License-Identifier: GPL-2.0 */
#ifndef DUPCACHE_UTIL_H
#define DUPCACHE_UTIL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/sysmacros.h>
#include <sys/types.h>

/* Exit codes (documented in README.md). */
enum {
	EXIT_OK = 0,
	EXIT_FAIL = 1,       /* unexpected failure (out of memory, BPF load error) */
	EXIT_USAGE = 2,      /* bad command line */
	EXIT_PARTIAL = 3,    /* report printed, but some input was skipped */
	EXIT_NOPERM = 4,     /* not allowed to load BPF (needs root / CAP_BPF+CAP_PERFMON) */
	EXIT_NOKERNEL = 5,   /* the kernel lacks BTF or a tracepoint the engine needs */
	EXIT_GATE_FAILED = 6,     /* gate: an error-level check failed or could not be measured */
	EXIT_WORKLOAD_FAILED = 7, /* gate: the workload exited non-zero (or was interrupted) */
};

/* One-line messages on stderr, prefixed "dupcache: ". */
void msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "12.0 MiB": binary units, one decimal below 100 of a unit. */
const char *human_bytes(uint64_t bytes, char *buf, size_t len);
/* human_bytes() into a temporary, for one printf argument. */
#define HB(x) human_bytes((x), (char[32]){ 0 }, 32)

/*
 * SIGINT and SIGTERM set stop_signal (to the signal's number) instead of
 * ending the process, so a command can stop cleanly: unload BPF, print what
 * it has, pass the signal on to a child.  restart: SA_RESTART (util.c says
 * which front ends want it); without it a blocking call returns EINTR and
 * the loop sees the flag at once.
 */
extern volatile sig_atomic_t stop_signal;
void stop_on_signals(bool restart);

/*
 * Command lines: getopt_long's answers for a bad option (':' or '?', with
 * opterr = 0 and a leading ':' in the option string) and a missing PATH,
 * as one-line messages.  Both return EXIT_USAGE.
 */
int usage_bad_option(const char *cmd, int c, char *const argv[]);
int usage_no_path(const char *cmd);
/*
 * What every command's option loop ends with: -x sets *one_fs (returns
 * EXIT_OK), -h/--help prints the usage and exits 0, anything else is a bad
 * option (usage_bad_option()).
 */
int opt_common(const char *cmd, int c, const char *usage, bool *one_fs, char *const argv[]);
/* Option values; false after a one-line message when arg is not one. */
bool opt_seconds(const char *cmd, const char *opt, const char *arg, double lo, double hi,
		 double *out);
bool opt_count(const char *cmd, const char *opt, const char *arg, uint64_t *out);
/*
 * Sizes: a number of bytes, optionally with a fraction and a unit, binary
 * K KiB M MiB G GiB T TiB (powers of 1024) or decimal KB MB GB TB (powers of
 * 1000), with or without one space before it ("64MiB", "64 MiB", "1.5G");
 * a fraction is rounded down to a whole byte.  parse_size() says nothing.
 */
bool parse_size(const char *arg, uint64_t *out);
bool opt_size(const char *cmd, const char *opt, const char *arg, uint64_t *out);
/* Percentages: "50", "50%", "12.5%" (>= 0).  parse_percent() says nothing. */
bool parse_percent(const char *arg, double *out);
bool opt_percent(const char *cmd, const char *opt, const char *arg, double hi, double *out);

/*
 * An output file named on the command line: its directory must take it (and
 * a temporary renamed over it).  False after a one-line message.
 */
bool opt_writable(const char *cmd, const char *opt, const char *path);

/* The page cache of the whole machine: Cached: of /proc/meminfo, in bytes (0 if unreadable). */
uint64_t meminfo_cached_bytes(void);

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

/*
 * Many small records that live and die together (a scan's paths and runs):
 * appended to big blocks, so each costs its bytes and no allocator header,
 * never moved (pointers into it stay valid), all freed at once.
 */
struct arena {
	struct arena_block *head;
};
void *arena_memdup(struct arena *a, const void *p, size_t n); /* 8-byte aligned */
char *arena_strdup(struct arena *a, const char *s);
void arena_free(struct arena *a);

/*
 * A device number in the kernel's 32-bit encoding, as its tracepoints and
 * mountinfo give it ((major << 20) | minor), and back to dev_t.
 */
static inline uint32_t dev_kernel(dev_t d)
{
	return (uint32_t)major(d) << 20 | minor(d);
}

static inline dev_t dev_user(uint32_t d)
{
	return makedev(d >> 20, d & 0xfffff);
}

static inline bool bit_test(const uint64_t *map, uint64_t bit)
{
	return map[bit / 64] & (1ULL << (bit % 64));
}

static inline void bit_set(uint64_t *map, uint64_t bit)
{
	map[bit / 64] |= 1ULL << (bit % 64);
}

#endif
