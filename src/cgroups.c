// SPDX-License-Identifier: GPL-2.0
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cgroups.h"
#include "util.h"

struct known {
	uint64_t id;
	char *path;
};

static struct known *known;
static size_t nknown;
static time_t walked_at;
static size_t root_len; /* of the hierarchy being walked */

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	if (type != FTW_D)
		return 0;
	known = xrealloc(known, nknown + 1, sizeof(*known));
	known[nknown].id = st->st_ino;
	known[nknown].path = xstrdup(path[root_len] ? path + root_len : "/");
	nknown++;
	return 0;
}

/* Is the memory controller on a v1 hierarchy (/proc/cgroups: non-zero)? */
static bool memory_on_v1(void)
{
	FILE *f = fopen("/proc/cgroups", "re");
	char name[64];
	int hierarchy, on_v1 = 0;

	if (!f)
		return false;
	fscanf(f, "%*[^\n]\n");
	while (fscanf(f, "%63s %d %*d %*d", name, &hierarchy) == 2)
		if (!strcmp(name, "memory"))
			on_v1 = hierarchy != 0;
	fclose(f);
	return on_v1;
}

/*
 * The hierarchy with the memory controller: a v1 one mounted with "memory",
 * or cgroup2.  Only that one: inode numbers of different hierarchies clash.
 */
static void walk_hierarchies(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	bool v1 = memory_on_v1();
	char *line = NULL;
	size_t len = 0;

	for (size_t i = 0; i < nknown; i++)
		free(known[i].path);
	nknown = 0;
	if (!f)
		return;
	while (getline(&line, &len, f) > 0) {
		char root[4096], fstype[64], super[1024];
		char *sep = strstr(line, " - ");

		if (!sep || sscanf(line, "%*s %*s %*s %*s %4095s", root) != 1 ||
		    sscanf(sep + 3, "%63s %*s %1023s", fstype, super) != 2)
			continue;
		if (v1 ? strcmp(fstype, "cgroup") || !strstr(super, "memory") : strcmp(fstype, "cgroup2"))
			continue;
		root_len = strlen(root);
		nftw(root, visit, 16, FTW_PHYS | FTW_MOUNT);
	}
	free(line);
	fclose(f);
}

const char *cgroup_path(uint64_t id)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < nknown; i++)
			if (known[i].id == id)
				return known[i].path;
		if (pass || time(NULL) == walked_at)
			break;
		walked_at = time(NULL);
		walk_hierarchies();
	}
	return NULL;
}
