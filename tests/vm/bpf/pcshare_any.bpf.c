// SPDX-License-Identifier: GPL-2.0
/*
 * An adversarial pcshare_ops policy for tests/vm/cases/pcshare.py: it
 * proposes whatever donor the test wrote into `propose` (opened inode
 * number -> donor inode number), valid or not, to anyone.  The kernel must
 * refuse every donor it cannot serve safely, whatever a policy says.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

struct pcshare_ops {
	__u64 (*choose_donor)(__u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id);
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u64);
} propose SEC(".maps");

SEC("struct_ops/choose_donor")
__u64 BPF_PROG(choose_donor, __u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id)
{
	__u64 *donor = bpf_map_lookup_elem(&propose, &ino);

	return donor ? *donor : 0;
}

SEC(".struct_ops")
struct pcshare_ops pcs_any = {
	.choose_donor = (void *)choose_donor,
	.name = "pcs_any",
};
