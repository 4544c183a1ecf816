// SPDX-License-Identifier: GPL-2.0
/*
 * A test policy for the pcshare_ops struct_ops type of kernel/patches: the
 * donor of an inode is whatever the test wrote into `donor_of`.  The kernel
 * decides whether sharing is safe; this only proposes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Not in the checked-in vmlinux.h (an unpatched kernel's): ours, by name. */
struct pcshare_ops {
	__u64 (*choose_donor)(__u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id);
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);   /* inode number */
	__type(value, __u64); /* its donor's inode number */
} donor_of SEC(".maps");

SEC("struct_ops/choose_donor")
__u64 BPF_PROG(choose_donor, __u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id)
{
	__u64 *donor = bpf_map_lookup_elem(&donor_of, &ino);

	return donor ? *donor : 0;
}

SEC(".struct_ops")
struct pcshare_ops vmtest_pcs = {
	.choose_donor = (void *)choose_donor,
	.name = "vmtest",
};
