/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The page cache sharing policy's loader (bpf/policy.bpf.c): registers the
 * pcshare_ops struct_ops, replacing one a killed daemon left behind, keeps
 * its donor map equal to the clone sets of the latest scan, beats the
 * heartbeat that keeps it granting, and unregisters it.
 */
#ifndef DUPCACHE_POLICY_LOADER_H
#define DUPCACHE_POLICY_LOADER_H

#include <stdbool.h>
#include <stdint.h>
#include "clones.h"
#include "pcshare.h"
#include "scan.h"

struct policy;

struct policy_settings {
	uint32_t uids[PCS_MAX_UIDS];           /* trust domain (see struct pcs_config) */
	uint32_t nuids;
	struct pcs_cgroup cgroups[PCS_MAX_CGROUPS];
	uint32_t ncgroups;
	double stale_after;                    /* seconds without a beat: no new shares */
	uint32_t max_files;                    /* donor map capacity */
	bool start_off;
};

/* Does the running kernel's BTF have the pcshare_ops struct_ops type? */
bool policy_kernel_support(void);
/* After one line saying what is missing: EXIT_NOKERNEL, EXIT_NOPERM or EXIT_OK. */
int policy_probe(void);
/*
 * Register the policy (switch and heartbeat on, empty map).  Returns
 * EXIT_OK, or an exit code after a one-line message.  *replaced_stale is
 * set when a registration of a daemon that is gone had to be removed.
 */
int policy_start(struct policy **out, const struct policy_settings *set, bool *replaced_stale);
/* Tell the policy the daemon is alive. */
void policy_beat(struct policy *p);
void policy_switch(struct policy *p, bool on);
bool policy_is_on(const struct policy *p);

/* For clone_sets_find(): keep the donor a set already has. */
bool policy_was_donor(const struct scanned_file *f, void *policy);

struct policy_map_state {
	uint64_t files;        /* members in the donor map */
	uint64_t sets;         /* sets with members in it */
	uint64_t left_out;     /* members not in it because it is full */
	uint64_t unsealed;     /* members not in it because they are not immutable */
};
/* Make the donor map say what the clone sets say.  0 or a negative errno. */
int policy_update(struct policy *p, const struct scan *s, const struct clone_sets *cs,
		  struct policy_map_state *out);
/* Unregister and free everything; nothing of ours stays in the kernel. */
void policy_stop(struct policy *p);

/* The policy's answers so far, summed over the CPUs. */
void policy_counts(const struct policy *p, struct pcs_counts *out);
/* Their names (JSON keys, metric labels), by enum pcs_answer. */
extern const char *const pcs_answer_names[PCS_NR_ANSWERS];

/* The kernel's own page cache sharing counters, /proc/vmstat pcshare_<name>. */
enum pcshare_event { PCSHARE_EV_GRANTED, PCSHARE_EV_POLICY_REFUSED, PCSHARE_EV_KERNEL_REFUSED,
		     PCSHARE_EV_RELEASED, PCSHARE_EV_VERIFIED, PCSHARE_NR_EVENTS };
extern const char *const pcshare_event_names[PCSHARE_NR_EVENTS];
struct pcshare_vmstat {
	uint64_t events[PCSHARE_NR_EVENTS];
};
/* false if the kernel has none of them */
bool pcshare_vmstat_read(struct pcshare_vmstat *out);

#endif
