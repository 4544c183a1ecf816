/* SPDX-License-Identifier: GPL-2.0 */
/* Memory cgroup id (the kernfs inode number the kernel reports) -> path. */
#ifndef DUPCACHE_CGROUPS_H
#define DUPCACHE_CGROUPS_H

#include <stdint.h>

/*
 * The cgroup's path below its hierarchy's mount ("/" for the root), or NULL
 * when no memory cgroup has that id (any more).  The hierarchies are walked
 * again when an id is not known, at most once a second.
 */
const char *cgroup_path(uint64_t id);

#endif
