/* SPDX-License-Identifier: GPL-2.0 */
/* Cgroup ids (the kernfs inode numbers the kernel reports) and paths. */
#ifndef DUPCACHE_CGROUPS_H
#define DUPCACHE_CGROUPS_H

#include <stdint.h>

/*
 * The cgroup's path below its hierarchy's mount ("/" for the root), or NULL
 * when no memory cgroup has that id (any more).  The hierarchies are walked
 * again when an id is not known, at most once a second.
 */
const char *cgroup_path(uint64_t id);

/*
 * A cgroup v2 directory's id (what bpf_get_current_ancestor_cgroup_id()
 * returns for it) and its depth below the root cgroup.  0, or -EXDEV when
 * it is not in a mounted cgroup2 hierarchy, or another negative errno.
 */
int cgroup2_subtree(const char *path, uint64_t *id, uint32_t *level);

/*
 * A live process's memory cgroup path (its v1 memory line of
 * /proc/PID/cgroup, else its cgroup2 path) in buf, or NULL when it is gone.
 */
#include <stddef.h>
const char *cgroup_of_pid(uint32_t pid, char *buf, size_t len);

#endif
