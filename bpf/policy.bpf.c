// SPDX-License-Identifier: GPL-2.0
/*
 * The page cache sharing policy: a pcshare_ops struct_ops program for the
 * kernel of kernel/patches, loaded by `dupcache daemon --enforce`.
 *
 * For an open of a file in a whole-file clone set it proposes the set's
 * donor, unless the opener is outside the trust domain, the switch is off,
 * the open is dupcache's own (its measurements must see each file's own
 * page cache) or the daemon stopped beating: a registered struct_ops
 * outlives a killed daemon on 6.1, and its map would go stale.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "pcshare.h"

char LICENSE[] SEC("license") = "GPL";

/* Not in the checked-in vmlinux.h (an unpatched kernel's): matched by name. */
struct pcshare_ops {
	__u64 (*choose_donor)(__u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id);
	char name[16];
};

struct pcs_config policy_config;

/* Clone set members -> their donor's inode number (the loader sizes it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1);
	__type(key, struct dc_inode_key);
	__type(value, __u64);
} donors SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pcs_counts);
} counts SEC(".maps");

static bool own_open(void)
{
	static const char self[16] = "dupcache";
	char comm[16];

	if (bpf_get_current_pid_tgid() >> 32 == policy_config.daemon_tgid)
		return true;
	if (bpf_get_current_comm(comm, sizeof(comm)))
		return false;
	for (int i = 0; i < (int)sizeof(self); i++) {
		if (comm[i] != self[i])
			return false;
		if (!self[i])
			break;
	}
	return true;
}

static bool in_domain(__u32 uid)
{
	__u32 nuids = policy_config.nuids, ncgroups = policy_config.ncgroups;
	bool uid_ok = !nuids, cgroup_ok = !ncgroups;

	for (__u32 i = 0; i < PCS_MAX_UIDS && i < nuids && !uid_ok; i++)
		uid_ok = policy_config.uids[i] == uid;
	for (__u32 i = 0; i < PCS_MAX_CGROUPS && i < ncgroups && !cgroup_ok; i++)
		cgroup_ok = bpf_get_current_ancestor_cgroup_id(policy_config.cgroups[i].level) ==
			    policy_config.cgroups[i].id;
	return uid_ok && cgroup_ok;
}

SEC("struct_ops/choose_donor")
__u64 BPF_PROG(choose_donor, __u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id)
{
	struct dc_inode_key key = { .ino = ino, .dev = dev };
	struct pcs_counts *c;
	__u32 zero = 0;
	__u64 *donor;

	c = bpf_map_lookup_elem(&counts, &zero);
	if (!c)
		return 0;
	if (!policy_config.enabled) {
		c->answers[PCS_OFF]++;
		return 0;
	}
	/* Signed: a beat written on another CPU may look a little ahead. */
	if ((__s64)(bpf_ktime_get_ns() - policy_config.heartbeat_ns) >
	    (__s64)policy_config.stale_after_ns) {
		c->answers[PCS_STALE]++;
		return 0;
	}
	donor = bpf_map_lookup_elem(&donors, &key);
	if (!donor) {
		c->answers[PCS_NOT_A_CLONE]++;
		return 0;
	}
	if (own_open()) {
		c->answers[PCS_OWN_OPEN]++;
		return 0;
	}
	if (!in_domain(uid)) {
		c->answers[PCS_OUTSIDE_DOMAIN]++;
		return 0;
	}
	c->answers[PCS_PROPOSED]++;
	return *donor;
}

SEC(".struct_ops")
struct pcshare_ops dupcache_share = {
	.choose_donor = (void *)choose_donor,
	.name = "dupcache",
};
