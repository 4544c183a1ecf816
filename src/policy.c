// SPDX-License-Identifier: GPL-2.0
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include "policy.h"
#include "policy.skel.h"
#include "util.h"

/* One enforcing daemon per machine: the kernel takes one policy at a time. */
#define LOCK_DIR "/run/dupcache"
#define LOCK_PATH LOCK_DIR "/daemon.lock"

struct donor_entry {
	struct dc_inode_key member;
	uint64_t donor_ino;
};

struct policy {
	struct policy_bpf *skel;
	struct bpf_link *link;
	int lock_fd;
	uint32_t capacity;
	/* What the donor map holds, sorted by member; and the donors, sorted. */
	struct donor_entry *entries;
	size_t nentries;
	struct dc_inode_key *donor_keys;
	size_t ndonors;
};

static int cmp_entry(const void *a, const void *b)
{
	return dc_inode_key_cmp(&((const struct donor_entry *)a)->member,
		       &((const struct donor_entry *)b)->member);
}

static int cmp_key_void(const void *a, const void *b)
{
	return dc_inode_key_cmp(a, b);
}

bool policy_kernel_support(void)
{
	struct btf *btf = btf__load_vmlinux_btf();
	bool has = btf && btf__find_by_name_kind(btf, "pcshare_ops", BTF_KIND_STRUCT) >= 0;

	btf__free(btf);
	return has;
}

int policy_probe(void)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		msg("the kernel has no BTF (/sys/kernel/btf/vmlinux): it cannot take a struct_ops policy");
		return EXIT_NOKERNEL;
	}
	if (!policy_kernel_support()) {
		msg("the kernel has no pcshare_ops struct_ops type (kernel/patches): it cannot share page cache");
		return EXIT_NOKERNEL;
	}
	if (geteuid() != 0) {
		msg("registering a struct_ops policy needs root (CAP_SYS_ADMIN and CAP_BPF)");
		return EXIT_NOPERM;
	}
	return EXIT_OK;
}

/* The lock that says an enforcing daemon is alive; released by the kernel on any exit. */
static int take_lock(void)
{
	char pid[32] = "";
	int fd;

	if (mkdir(LOCK_DIR, 0755) && errno != EEXIST) {
		msg("cannot create %s: %s", LOCK_DIR, strerror(errno));
		return -1;
	}
	fd = open(LOCK_PATH, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		msg("cannot open %s: %s", LOCK_PATH, strerror(errno));
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB)) {
		ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);

		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		msg("another dupcache daemon --enforce is running (pid %s, %s)", *pid ? pid : "?", LOCK_PATH);
		close(fd);
		return -1;
	}
	snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) || pwrite(fd, pid, strlen(pid), 0) < 0)
		msg("warning: cannot write %s: %s", LOCK_PATH, strerror(errno));
	return fd;
}

/*
 * With the lock held, a registration of ours belongs to a daemon that is
 * gone (killed: on 6.1 nothing unregisters it).  Unregister it; its programs
 * and maps go with it.  Returns how many were removed, or -1.
 */
static int remove_stale(void)
{
	uint32_t id = 0, zero = 0;
	int removed = 0;

	while (!bpf_map_get_next_id(id, &id)) {
		struct bpf_map_info info = { 0 };
		uint32_t len = sizeof(info);
		int fd = bpf_map_get_fd_by_id(id);

		if (fd < 0)
			continue; /* freed meanwhile */
		if (!bpf_obj_get_info_by_fd(fd, &info, &len) && info.type == BPF_MAP_TYPE_STRUCT_OPS &&
		    !strcmp(info.name, PCS_MAP_NAME)) {
			if (!bpf_map_delete_elem(fd, &zero))
				removed++;
			else if (errno != ENOENT && errno != EINPROGRESS) /* not registered */
				msg("cannot unregister the stale policy (struct_ops map id %u): %s", id,
				    strerror(errno));
		}
		close(fd);
	}
	return removed;
}

int policy_start(struct policy **out, const struct policy_settings *set, bool *replaced_stale)
{
	struct policy *p = xcalloc(1, sizeof(*p));
	struct pcs_config *cfg;
	int err, ret = EXIT_FAIL;

	*out = NULL;
	p->lock_fd = take_lock();
	if (p->lock_fd < 0)
		goto fail;
	*replaced_stale = remove_stale() > 0;

	p->skel = policy_bpf__open();
	if (!p->skel) {
		ret = bpf_load_error(-errno, "opening the policy");
		goto fail;
	}
	p->capacity = set->max_files;
	bpf_map__set_max_entries(p->skel->maps.donors, p->capacity);
	err = policy_bpf__load(p->skel);
	if (err) {
		ret = bpf_load_error(err, "loading the policy");
		goto fail;
	}
	cfg = &p->skel->bss->policy_config;
	cfg->enabled = !set->start_off;
	cfg->daemon_tgid = (uint32_t)getpid();
	cfg->stale_after_ns = (uint64_t)(set->stale_after * 1e9);
	cfg->nuids = set->nuids;
	memcpy(cfg->uids, set->uids, sizeof(cfg->uids));
	cfg->ncgroups = set->ncgroups;
	memcpy(cfg->cgroups, set->cgroups, sizeof(cfg->cgroups));
	policy_beat(p);

	p->link = bpf_map__attach_struct_ops(p->skel->maps.dupcache_share);
	if (!p->link) {
		err = -errno;
		if (err == -EEXIST)
			msg("another pcshare_ops policy is registered (`bpftool struct_ops list` shows it): "
			    "unregister it first");
		else
			ret = bpf_load_error(err, "registering the policy");
		goto fail;
	}
	*out = p;
	return EXIT_OK;

fail:
	policy_stop(p);
	return ret;
}

void policy_beat(struct policy *p)
{
	__atomic_store_n(&p->skel->bss->policy_config.heartbeat_ns, (uint64_t)monotonic_ns(),
			 __ATOMIC_RELEASE);
}

void policy_switch(struct policy *p, bool on)
{
	__atomic_store_n(&p->skel->bss->policy_config.enabled, on, __ATOMIC_RELEASE);
}

bool policy_is_on(const struct policy *p)
{
	return __atomic_load_n(&p->skel->bss->policy_config.enabled, __ATOMIC_ACQUIRE);
}

bool policy_was_donor(const struct scanned_file *f, void *policy)
{
	const struct policy *p = policy;
	struct dc_inode_key key = { .ino = f->ino, .dev = f->sb_dev };

	return p->ndonors && bsearch(&key, p->donor_keys, p->ndonors, sizeof(key), cmp_key_void);
}

/*
 * The entries the map should hold: the sealed members of whole sets, each
 * mapped to the set's first sealed member (itself included: every member
 * reads through the one cache), most saving first, while they fit.  The
 * kernel shares only immutable files, so proposing others would only be
 * refused; a set with fewer than two sealed members saves nothing.
 */
static size_t wanted_entries(const struct policy *p, const struct scan *s, const struct clone_sets *cs,
			     struct donor_entry **out, struct policy_map_state *st)
{
	struct donor_entry *e = xcalloc(cs->files ? cs->files : 1, sizeof(*e));
	size_t n = 0;

	*st = (struct policy_map_state){ 0 };
	for (size_t i = 0; i < cs->nsets; i++) {
		const struct clone_set *set = &cs->sets[i];
		const struct scanned_file *donor = NULL;
		size_t nsealed = 0;

		for (size_t m = 0; m < set->nmembers; m++) {
			const struct scanned_file *f = &s->files[set->members[m]];

			if (f->sealed && !nsealed++)
				donor = f;
		}
		st->unsealed += set->nmembers - nsealed;
		if (nsealed < 2)
			continue;
		if (n + nsealed > p->capacity) {
			st->left_out += nsealed;
			continue;
		}
		for (size_t m = 0; m < set->nmembers; m++) {
			const struct scanned_file *f = &s->files[set->members[m]];

			if (f->sealed)
				e[n++] = (struct donor_entry){ .member = { .ino = f->ino, .dev = f->sb_dev },
							       .donor_ino = donor->ino };
		}
		st->sets++;
	}
	st->files = n;
	qsort(e, n, sizeof(*e), cmp_entry);
	*out = e;
	return n;
}

int policy_update(struct policy *p, const struct scan *s, const struct clone_sets *cs,
		  struct policy_map_state *st)
{
	int fd = bpf_map__fd(p->skel->maps.donors);
	struct donor_entry *want;
	size_t nwant = wanted_entries(p, s, cs, &want, st), i = 0, j = 0;
	int err = 0;

	/* Deletes first, so that the updates below always fit. */
	while (i < p->nentries) {
		int c = j < nwant ? dc_inode_key_cmp(&p->entries[i].member, &want[j].member) : -1;

		if (c < 0 && bpf_map_delete_elem(fd, &p->entries[i].member) && errno != ENOENT)
			err = -errno;
		if (c <= 0)
			i++;
		if (c >= 0)
			j++;
	}
	for (i = 0, j = 0; j < nwant; j++) {
		while (i < p->nentries && dc_inode_key_cmp(&p->entries[i].member, &want[j].member) < 0)
			i++;
		if (i < p->nentries && !dc_inode_key_cmp(&p->entries[i].member, &want[j].member) &&
		    p->entries[i].donor_ino == want[j].donor_ino)
			continue;
		if (bpf_map_update_elem(fd, &want[j].member, &want[j].donor_ino, BPF_ANY)) {
			err = -errno;
			want[j].donor_ino = 0; /* not in the map: tried again next time */
		}
	}
	/* Remember what the map holds. */
	for (i = 0, j = 0; j < nwant; j++)
		if (want[j].donor_ino)
			want[i++] = want[j];
	nwant = i;
	st->files = nwant;
	free(p->entries);
	p->entries = want;
	p->nentries = nwant;

	free(p->donor_keys);
	p->donor_keys = xcalloc(nwant ? nwant : 1, sizeof(*p->donor_keys));
	p->ndonors = 0;
	for (j = 0; j < nwant; j++)
		p->donor_keys[p->ndonors++] = (struct dc_inode_key){ .ino = want[j].donor_ino,
								     .dev = want[j].member.dev };
	qsort(p->donor_keys, p->ndonors, sizeof(*p->donor_keys), cmp_key_void);
	return err;
}

const char *const pcs_answer_names[PCS_NR_ANSWERS] = {
	[PCS_PROPOSED] = "proposed",
	[PCS_NOT_A_CLONE] = "not_a_clone",
	[PCS_OUTSIDE_DOMAIN] = "outside_domain",
	[PCS_STALE] = "stale",
	[PCS_OFF] = "off",
	[PCS_OWN_OPEN] = "own_open",
};

void policy_counts(const struct policy *p, struct pcs_counts *out)
{
	int ncpus = libbpf_num_possible_cpus();
	struct pcs_counts *percpu;
	uint32_t zero = 0;

	memset(out, 0, sizeof(*out));
	if (ncpus <= 0)
		return;
	percpu = xcalloc((size_t)ncpus, sizeof(*percpu));
	if (!bpf_map_lookup_elem(bpf_map__fd(p->skel->maps.counts), &zero, percpu))
		for (int c = 0; c < ncpus; c++)
			for (int a = 0; a < PCS_NR_ANSWERS; a++)
				out->answers[a] += percpu[c].answers[a];
	free(percpu);
}

void policy_stop(struct policy *p)
{
	if (!p)
		return;
	/* Unregisters (BPF_MAP_DELETE_ELEM on the struct_ops map), then frees. */
	bpf_link__destroy(p->link);
	policy_bpf__destroy(p->skel);
	/* The lock file stays: unlinking it would let two daemons lock two files. */
	if (p->lock_fd >= 0)
		close(p->lock_fd);
	free(p->entries);
	free(p->donor_keys);
	free(p);
}

const char *const pcshare_event_names[PCSHARE_NR_EVENTS] = {
	[PCSHARE_EV_GRANTED] = "granted",
	[PCSHARE_EV_POLICY_REFUSED] = "policy_refused",
	[PCSHARE_EV_KERNEL_REFUSED] = "kernel_refused",
	[PCSHARE_EV_RELEASED] = "released",
	[PCSHARE_EV_VERIFIED] = "verified",
};

bool pcshare_vmstat_read(struct pcshare_vmstat *out)
{
	FILE *f = fopen("/proc/vmstat", "re");
	char name[64];
	unsigned long long v;
	bool found = false;

	memset(out, 0, sizeof(*out));
	if (!f)
		return false;
	while (fscanf(f, "%63s %llu", name, &v) == 2) {
		if (strncmp(name, "pcshare_", 8))
			continue;
		for (int i = 0; i < PCSHARE_NR_EVENTS; i++)
			if (!strcmp(name + 8, pcshare_event_names[i])) {
				out->events[i] = v;
				found = true;
			}
	}
	fclose(f);
	return found;
}
