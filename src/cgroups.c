// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Path components in p ("/" has none). */
static uint32_t depth(const char *p)
{
	uint32_t n = 0;

	for (; *p; p++)
		if (*p != '/' && (p[1] == '/' || !p[1]))
			n++;
	return n;
}

int cgroup2_subtree(const char *path, uint64_t *id, uint32_t *level)
{
	struct {
		struct file_handle fh;
		uint64_t id;
	} h = { .fh.handle_bytes = sizeof(uint64_t) };
	char *real = realpath(path, NULL), *line = NULL;
	size_t len = 0, best = 0;
	struct stat st;
	FILE *f;
	int mount_id, err = -EXDEV;

	if (!real)
		return -errno;
	if (stat(real, &st) || !S_ISDIR(st.st_mode)) {
		free(real);
		return -ENOTDIR;
	}
	f = fopen("/proc/self/mountinfo", "re");
	while (f && getline(&line, &len, f) > 0) {
		char root[4096], mnt[4096], fstype[64];
		char *sep = strstr(line, " - ");
		size_t n;

		if (!sep || sscanf(line, "%*s %*s %*s %4095s %4095s", root, mnt) != 2 ||
		    sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2"))
			continue;
		n = strlen(mnt);
		if (!strcmp(mnt, "/"))
			n = 0;
		/* The innermost cgroup2 mount that holds the path. */
		if (strncmp(real, mnt, n) || (real[n] && real[n] != '/') || (best && n < best))
			continue;
		best = n;
		*level = depth(root) + depth(real + n);
		err = 0;
	}
	free(line);
	if (f)
		fclose(f);
	if (!err && name_to_handle_at(AT_FDCWD, real, &h.fh, &mount_id, 0))
		err = -errno;
	if (!err)
		*id = h.id;
	free(real);
	return err;
}

const char *cgroup_of_pid(uint32_t pid, char *buf, size_t len)
{
	char path[64], *line = NULL, *v2 = NULL;
	size_t cap = 0;
	FILE *f;
	const char *found = NULL;

	snprintf(path, sizeof(path), "/proc/%u/cgroup", pid);
	f = fopen(path, "re");
	if (!f)
		return NULL;
	/* "ID:CONTROLLERS:PATH": the memory controller's line (v1), else the v2 one "0::PATH" */
	while (!found && getline(&line, &cap, f) > 0) {
		char *ctl = strchr(line, ':'), *where = ctl ? strchr(ctl + 1, ':') : NULL;

		if (!where)
			continue;
		line[strcspn(line, "\n")] = 0;
		*where++ = 0;
		*ctl = 0;
		if (!strcmp(line, "0") && !ctl[1]) {
			free(v2);
			v2 = xstrdup(where);
			continue;
		}
		for (char *c = strtok(ctl + 1, ","); c; c = strtok(NULL, ","))
			if (!strcmp(c, "memory")) {
				snprintf(buf, len, "%s", where);
				found = buf;
			}
	}
	if (!found && v2) {
		snprintf(buf, len, "%s", v2);
		found = buf;
	}
	free(v2);
	free(line);
	fclose(f);
	return found;
}
