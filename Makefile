# dupcache: page cache duplicated across reflinked files.
#
#   make            build ./dupcache
#   make deps       install the Debian 12 packages everything here needs
#   make test       unit + integration tests (as root, for real)
#   make asan       the same tests against an ASan/UBSan build
#   make demo       loop-mounted XFS/btrfs demo
#   make bench      benchmarks (prints a table)
#   make soak       the churn test for SOAK_SECONDS (default 600) per filesystem
#   make vmlinux    regenerate vmlinux.h from the running kernel's BTF
#   make install    PREFIX=/usr/local DESTDIR= (binary, man pages, bash completion,
#                   systemd unit, sample /etc/dupcache/daemon.conf)

CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
MANDIR   ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
UNITDIR  ?= $(PREFIX)/lib/systemd/system
PYTHON   ?= /usr/bin/python3

OUT      ?= build
BIN      ?= dupcache
ARCH     := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
PKGS     := libbpf json-c ncursesw libmicrohttpd libsystemd
WARN     := -Wall -Wextra -Werror
CFLAGS   ?= -O2 -g
# Kept apart from CFLAGS so `make CFLAGS=...` changes optimisation, not these.
ALL_CFLAGS = $(CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE -Iinclude -I$(OUT) \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) $(WARN) \
              -Wno-unused-parameter -Wno-missing-declarations -I. -Iinclude

BPF_SRCS := $(wildcard bpf/*.bpf.c)
SKELS    := $(patsubst bpf/%.bpf.c,$(OUT)/%.skel.h,$(BPF_SRCS))
LIB_SRCS := src/extmap.c src/scan.c src/stats.c src/util.c src/engine.c src/output.c src/tracker.c src/cgroups.c src/clones.c src/policy.c src/metrics.c src/httpd.c src/budget.c
LIB_OBJS := $(patsubst src/%.c,$(OUT)/%.o,$(LIB_SRCS))
APP_OBJS := $(OUT)/main.o $(OUT)/report.o $(OUT)/top.o $(OUT)/daemon.o $(OUT)/gate.o $(OUT)/gate_output.o

# Debian 12 packages: build, run, test, demo, bench.
DEB_PKGS := make gcc clang llvm libbpf-dev bpftool pkg-config libelf-dev zlib1g-dev \
            libjson-c-dev libncurses-dev libcmocka-dev xfsprogs btrfs-progs \
            util-linux python3 tmux fio man-db groff-base bash-completion python3-junitparser python3-yaml \
            libmicrohttpd-dev libsystemd-dev prometheus

# Intermediates of the chain .bpf.c -> .bpf.o -> .skel.h: keep them (tests read the BTF).
.SECONDARY: $(patsubst bpf/%.bpf.c,$(OUT)/%.bpf.o,$(BPF_SRCS)) $(SKELS)

.PHONY: all deps test unit-test integration-test asan demo bench soak vmlinux install clean

all: $(BIN)

$(BIN): $(APP_OBJS) $(LIB_OBJS)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(OUT):
	mkdir -p $@

$(OUT)/%.bpf.o: bpf/%.bpf.c $(wildcard include/*.h) vmlinux.h | $(OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@

$(OUT)/%.o: src/%.c $(wildcard src/*.h include/*.h) $(SKELS) | $(OUT)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Unit tests link the pure modules only.
$(OUT)/test_%: tests/unit/test_%.c $(LIB_OBJS)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -Isrc -o $@ $^ $(LDLIBS) -lcmocka

UNIT_TESTS := $(patsubst tests/unit/%.c,$(OUT)/%,$(wildcard tests/unit/test_*.c))

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

unit-test: $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do $$t; done

integration-test: $(BIN)
	$(PYTHON) tests/test_integration.py --bin ./dupcache

test: deps
	$(MAKE) all $(UNIT_TESTS)
	bash tests/run_all.sh ./dupcache $(UNIT_TESTS)

# A separate build tree, so the sanitized binary never replaces ./dupcache.
ASAN_OUT := build/asan
asan: deps
	$(MAKE) OUT=$(ASAN_OUT) BIN=$(ASAN_OUT)/dupcache all $(UNIT_TESTS:$(OUT)/%=$(ASAN_OUT)/%) \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
		LDFLAGS="-fsanitize=address,undefined"
	ASAN_OPTIONS=detect_leaks=1 bash tests/run_all.sh $(ASAN_OUT)/dupcache $(UNIT_TESTS:$(OUT)/%=$(ASAN_OUT)/%)

demo: deps
	$(MAKE) all
	bash tests/demo.sh ./dupcache

# The bench's reference program: an empty tp_btf on the engine's tracepoint.
BENCH_TOOLS := $(OUT)/empty.bpf.o $(OUT)/bench_empty

$(OUT)/empty.bpf.o: bench/empty.bpf.c vmlinux.h | $(OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(OUT)/bench_empty: bench/empty.c | $(OUT)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS)

bench: deps
	$(MAKE) all $(BENCH_TOOLS)
	bash bench/run.sh ./dupcache

# `make test` runs the churn test for 40 s per filesystem; this runs it long.
SOAK_SECONDS ?= 600
soak: deps
	$(MAKE) all
	DUPCACHE_CHURN_SECONDS=$(SOAK_SECONDS) $(PYTHON) tests/test_top.py --bin ./dupcache -k churn

vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

# Every man page in docs/man (whoever wrote it), the bash completion, the
# systemd unit with its paths filled in, and a sample daemon config that
# never replaces one already there.
install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR) \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/dupcache
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/dupcache
	install -m 0644 docs/man/*.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 0644 contrib/bash-completion/dupcache $(DESTDIR)$(BASHCOMPDIR)/dupcache
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
		contrib/dupcache-daemon.service > $(DESTDIR)$(UNITDIR)/dupcache-daemon.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/dupcache-daemon.service
	[ -e $(DESTDIR)$(SYSCONFDIR)/dupcache/daemon.conf ] || \
		install -m 0644 contrib/daemon.conf $(DESTDIR)$(SYSCONFDIR)/dupcache/daemon.conf

clean:
	rm -rf build dupcache

# vmtest: a Debian linux-source-6.1 kernel (kernel/build.sh: built once, cached in
# /var/cache/dupcache/kernel) boots under QEMU/TCG with / as a read-only 9p root and runs
# tests/vm/cases/* (see kernel/README.md). `make kernel` only builds it and prints its path.
# What the kernel build and the VM need besides DEB_PKGS.
VM_PKGS := linux-source-6.1 qemu-system-x86 flex bison bc libssl-dev dwarves rsync cpio \
           kmod xz-utils dmsetup
# Adversarial policies the pcshare case registers (tests/vm/bpf).
VM_BPF_OBJS := $(patsubst tests/vm/bpf/%.bpf.c,$(OUT)/vm_%.bpf.o,$(wildcard tests/vm/bpf/*.bpf.c))

$(OUT)/vm_%.bpf.o: tests/vm/bpf/%.bpf.c vmlinux.h | $(OUT)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

.PHONY: kernel vmtest deps-vm
deps-vm: deps
	@missing=$$(for p in $(VM_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

kernel: deps-vm
	bash kernel/build.sh

vmtest: deps-vm $(BIN) $(VM_BPF_OBJS)
	bash tests/vm/run.sh

# The sharing kernel's benchmarks (bench/vm), in the same VM.
$(OUT)/bench_open_cost: bench/open_cost.c | $(OUT)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $<

.PHONY: vmbench
vmbench: deps-vm $(BIN) $(OUT)/bench_open_cost
	bash tests/vm/run.sh pcshare_open
