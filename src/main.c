// SPDX-License-Identifier: GPL-2.0
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <bpf/libbpf.h>
#include "commands.h"
#include "util.h"

static const char usage[] =
	"usage: dupcache COMMAND [OPTIONS] PATH...\n"
	"commands:\n"
	"  report   page cache duplicated across reflinked files, now or over a window\n"
	"  top      live view: duplication by group, file or cgroup, and reclaim\n"
	"  daemon   page cache sharing policy daemon (advisory mode: what sharing would save)\n"
	"  gate     CI gate: fail when a workload caches the same blocks too many times\n"
	"run 'dupcache COMMAND --help' for its options\n";

static int quiet_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
	/* libbpf speaks only with DUPCACHE_DEBUG set; our own messages say what failed. */
	(void)level;
	if (!getenv("DUPCACHE_DEBUG"))
		return 0;
	return vfprintf(stderr, fmt, args);
}

int main(int argc, char **argv)
{
	libbpf_set_print(quiet_libbpf);
	if (argc < 2) {
		msg("a command is needed: dupcache report ... (see dupcache --help)");
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "report"))
		return cmd_report(argc - 1, argv + 1);
	if (!strcmp(argv[1], "top"))
		return cmd_top(argc - 1, argv + 1);
	if (!strcmp(argv[1], "daemon"))
		return cmd_daemon(argc - 1, argv + 1);
	if (!strcmp(argv[1], "gate"))
		return cmd_gate(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		fputs(usage, stdout);
		return EXIT_OK;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("dupcache %s\n", DUPCACHE_VERSION);
		return EXIT_OK;
	}
	msg("unknown command '%s' (see dupcache --help)", argv[1]);
	return EXIT_USAGE;
}
