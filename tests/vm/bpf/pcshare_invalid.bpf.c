// SPDX-License-Identifier: GPL-2.0
/*
 * A pcshare_ops without choose_donor() (tests/vm/cases/pcshare.py): the
 * kernel must refuse to register it, not call a NULL pointer on the next
 * open.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

struct pcshare_ops {
	__u64 (*choose_donor)(__u64 dev, __u64 ino, __u64 uid, __u64 cgroup_id);
	char name[16];
};

SEC(".struct_ops")
struct pcshare_ops pcs_invalid = {
	.name = "pcs_invalid",
};
