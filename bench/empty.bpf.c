// SPDX-License-Identifier: GPL-2.0
/*
 * The bench's reference: an empty program on the engine's hot tracepoint.
 * Its bpf_stats run time is the floor of the measurement on this machine
 * (the tracepoint's dispatch and bpf_stats' own two clock reads), measured
 * side by side with the engine's folio_added.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/mm_filemap_add_to_page_cache")
int BPF_PROG(empty_added, struct folio *folio)
{
	return 0;
}
