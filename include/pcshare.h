/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Types shared by the page cache sharing policy (bpf/policy.bpf.c, a
 * pcshare_ops struct_ops program for the kernel of kernel/patches) and its
 * loader (src/policy.c, run by `dupcache daemon --enforce`).
 *
 * The kernel asks the policy, on every read-only open of a regular file on
 * a filesystem that can compare block maps, for a donor whose page cache
 * the open should use.  The policy only proposes; the kernel checks that
 * both files map every byte to the same blocks before it shares.
 */
#ifndef DUPCACHE_PCSHARE_H
#define DUPCACHE_PCSHARE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif
#include "dupcache.h"

/* The struct_ops map's name: how a later daemon finds a stale registration. */
#define PCS_MAP_NAME "dupcache_share"
/* Trust domain bounds (see struct pcs_config). */
#define PCS_MAX_UIDS 16
#define PCS_MAX_CGROUPS 16

struct pcs_cgroup {
	__u64 id;    /* cgroup v2 id (the directory's file handle) */
	__u32 level; /* depth below the root: 0 is the root cgroup */
	__u32 pad;
};

/*
 * The policy's settings, in the program's .bss: the loader writes them
 * through the mmapped section while the policy runs.
 */
struct pcs_config {
	__u32 enabled;           /* the on/off switch */
	__u32 daemon_tgid;       /* the daemon's own opens are never shared */
	__u64 heartbeat_ns;      /* bpf_ktime_get_ns() of the daemon's last beat */
	__u64 stale_after_ns;    /* no new shares once the beat is this old */
	/* Trust domain: who may be served from a shared page cache.  An empty
	 * list does not restrict; both lists set: both must match. */
	__u32 nuids;
	__u32 ncgroups;
	__u32 uids[PCS_MAX_UIDS];
	struct pcs_cgroup cgroups[PCS_MAX_CGROUPS];
};

/* What the policy answered an open (each open gets exactly one answer). */
enum pcs_answer {
	PCS_PROPOSED,       /* a donor was proposed (the kernel may still refuse) */
	PCS_NOT_A_CLONE,    /* the file is in no clone set */
	PCS_OUTSIDE_DOMAIN, /* the opener is outside the trust domain */
	PCS_STALE,          /* the daemon's heartbeat stopped */
	PCS_OFF,            /* the switch was off */
	PCS_OWN_OPEN,       /* an open by dupcache itself */
	PCS_NR_ANSWERS,
};

/* Per CPU in the policy, summed by the loader. */
struct pcs_counts {
	__u64 answers[PCS_NR_ANSWERS];
};

#endif
