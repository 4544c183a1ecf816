#!/bin/bash
# Build the dupcache test kernel (Debian linux-source-6.1 + kernel/patches + kernel/config.fragment).
#
#   kernel/build.sh               build if needed; print the bzImage path on stdout
#   kernel/build.sh --print-path  print the cached bzImage path for the current inputs
#                                 without building (exit 1 if it is not built yet)
#
# Cache: $DUPCACHE_KCACHE (default /var/cache/dupcache/kernel)
#   src-<debver>/            pristine extraction of /usr/src/linux-source-6.1.tar.xz
#   work/src, work/obj       patched tree + O= build dir, reused incrementally across keys
#   <key>/bzImage            result; key = sha256(source version, patches, fragment)
# Logs go to stderr; only the path goes to stdout.
set -euo pipefail

# The series was last tested on this Debian revision (dpkg-query -W linux-source-6.1) and upstream
# version (VERSION.PATCHLEVEL.SUBLEVEL of the tree's Makefile). Any other revision is built: what
# decides is whether the patches apply (a failing hunk stops the build and is named).
TESTED_DEB="6.1.192-3"
TESTED_KVER="6.1.192"
PKG=linux-source-6.1
TARBALL=/usr/src/linux-source-6.1.tar.xz

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${DUPCACHE_KCACHE:-/var/cache/dupcache/kernel}
FRAG=$here/config.fragment
PATCHDIR=$here/patches
JOBS=${JOBS:-2}

log() { echo "kernel/build.sh: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

print_only=0
case "${1:-}" in
	--print-path) print_only=1 ;;
	"") ;;
	*) die "usage: $0 [--print-path]" ;;
esac

# --- inputs and the cache key -------------------------------------------------
debver=$(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null) || die "$PKG is not installed (apt-get install $PKG)"
if [ "$debver" = "$TESTED_DEB" ]; then
	log "$PKG $debver (the revision the series was last tested on)"
else
	log "$PKG $debver (the series was last tested on $TESTED_DEB; building it, the patches decide)"
fi
[ -r "$TARBALL" ] || die "$TARBALL missing"
[ -r "$FRAG" ] || die "$FRAG missing"

shopt -s nullglob
patches=("$PATCHDIR"/*.patch)       # glob order = C-locale order: name them 0001-..., 0002-...
shopt -u nullglob

key=$(
	{
		echo "source $PKG $debver"
		for p in "${patches[@]}"; do echo "patch $(basename "$p") $(sha256sum < "$p" | cut -d' ' -f1)"; done
		echo "fragment $(sha256sum < "$FRAG" | cut -d' ' -f1)"
	} | sha256sum | cut -d' ' -f1
)
out=$CACHE/$key/bzImage

if [ "$print_only" = 1 ]; then
	echo "$out"
	[ -f "$out" ]
	exit
fi
if [ -f "$out" ]; then
	log "cached: $out"
	echo "$out"
	exit 0
fi

command -v pahole >/dev/null || die "pahole missing (apt-get install dwarves): needed for CONFIG_DEBUG_INFO_BTF"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9                             # one build at a time in this cache

# --- 1. pristine source, extracted once ---------------------------------------
pristine=$CACHE/src-$debver
if [ ! -f "$pristine/.dupcache-extracted" ]; then
	log "extracting $TARBALL -> $pristine"
	rm -rf "$pristine" "$pristine.tmp"
	mkdir -p "$pristine.tmp"
	tar -xJf "$TARBALL" -C "$pristine.tmp" --strip-components=1
	mv "$pristine.tmp" "$pristine"
	touch "$pristine/.dupcache-extracted"
fi
kver=$(awk -F' *= *' '$1=="VERSION"{v=$2} $1=="PATCHLEVEL"{p=$2} $1=="SUBLEVEL"{s=$2} END{print v"."p"."s}' "$pristine/Makefile")
[ "$kver" = "$TESTED_KVER" ] || log "note: the tree is upstream $kver, the series was last tested on $TESTED_KVER"

# --- 2. work tree = pristine + patches ----------------------------------------
# The patches are applied to copies of the files they touch (stage), and a file of the work
# tree is rewritten only when its content differs, so that make in work/obj rebuilds exactly
# what changed: a patch series that changes one .c file recompiles that file, not everything
# that includes a header some patch touches.  The other files are synced from pristine the
# same way (rsync -c without -t).
work=$CACHE/work
src=$work/src
obj=$work/obj
stage=$work/stage
mkdir -p "$src" "$obj"
# The files the series touches: new and changed ones (+++ b/), and deleted ones (--- a/ only).
touched=
((${#patches[@]})) && touched=$(sed -n 's|^+++ b/||p; s|^--- a/||p' "${patches[@]}" | cut -f1 | sort -u)
log "syncing work tree from pristine"
sed -n 's|^\(.\)|/\1|p' <<<"$touched" > "$work/touched.exclude"
rsync -rlpc --delete --exclude=/.dupcache-extracted --exclude-from="$work/touched.exclude" \
	"$pristine/" "$src/"
rm -rf "$stage"
mkdir -p "$stage"
while IFS= read -r f; do
	[ -n "$f" ] || continue
	if [ -e "$pristine/$f" ]; then
		mkdir -p "$stage/$(dirname "$f")" && cp -p "$pristine/$f" "$stage/$f"
	fi
done <<<"$touched"
for p in "${patches[@]}"; do
	log "applying $(basename "$p")"
	# --dry-run first: a patch that does not apply leaves the tree untouched, and its failing
	# hunks are named (patch prints "Hunk #N FAILED at LINE" per file).
	if ! out_p=$(patch -p1 -d "$stage" --forward --batch --dry-run < "$p" 2>&1); then
		echo "$out_p" | grep -E '^(checking file|patching file|Hunk #[0-9]+ FAILED|Reversed|can.t find file)' >&2 || echo "$out_p" >&2
		die "patch $(basename "$p") does not apply to $PKG $debver ($kver): failing hunks above"
	fi
	patch -p1 -d "$stage" --forward --batch --no-backup-if-mismatch --quiet < "$p" >&2
done
while IFS= read -r f; do
	[ -n "$f" ] || continue
	if [ ! -e "$stage/$f" ]; then
		rm -f "$src/$f"                   # deleted by the series
	elif ! cmp -s "$stage/$f" "$src/$f"; then
		mkdir -p "$src/$(dirname "$f")" && cp "$stage/$f" "$src/$f"
	fi
	[ ! -e "$stage/$f" ] || chmod --reference="$stage/$f" "$src/$f"     # a mode the series sets
done <<<"$touched"

# --- 3. config -------------------------------------------------------------------
log "merging x86_64_defconfig + kvm_guest.config + $(basename "$FRAG")"
(cd "$src" && ARCH=x86_64 scripts/kconfig/merge_config.sh -O "$obj" \
	arch/x86/configs/x86_64_defconfig kernel/configs/kvm_guest.config "$FRAG") >"$work/merge_config.log" 2>&1 \
	|| { cat "$work/merge_config.log" >&2; die "merge_config.sh failed"; }
make -s -C "$src" O="$obj" ARCH=x86_64 olddefconfig >&2

bad=0
while IFS= read -r line; do
	if [[ $line =~ ^(CONFIG_[A-Za-z0-9_]+)=(.*)$ ]]; then
		sym=${BASH_REMATCH[1]} want=${BASH_REMATCH[2]}
		got=$(grep -E "^$sym=" "$obj/.config" | cut -d= -f2- || true)
		if [ "$got" != "$want" ]; then log "REQUIRED $sym=$want but .config has '${got:-not set}'"; bad=1; fi
	elif [[ $line =~ ^#\ (CONFIG_[A-Za-z0-9_]+)\ is\ not\ set$ ]]; then
		sym=${BASH_REMATCH[1]}
		if grep -qE "^$sym=" "$obj/.config"; then log "note: trim $sym ignored (forced on by a dependency)"; fi
	fi
done < "$FRAG"
[ "$bad" = 0 ] || die "config fragment not satisfied (a dependency is missing from kernel/config.fragment?)"

# --- 4. build ------------------------------------------------------------------
log "building bzImage -j$JOBS in $obj (cold build ~25 min on 2 cores)"
start=$(date +%s)
make -C "$src" O="$obj" ARCH=x86_64 -j"$JOBS" bzImage >"$work/build.log" 2>&1 \
	|| { tail -40 "$work/build.log" >&2; die "kernel build failed, full log: $work/build.log"; }
log "built in $(( $(date +%s) - start ))s"

mkdir -p "$CACHE/$key"
cp "$obj/arch/x86/boot/bzImage" "$out.tmp"
cp "$obj/.config" "$CACHE/$key/config"
objcopy -O binary --only-section=.BTF "$obj/vmlinux" "$CACHE/$key/vmlinux.btf" || true   # raw BTF, for bpftool btf dump
{
	echo "source=$PKG $debver ($kver)"
	for p in "${patches[@]}"; do echo "patch=$(basename "$p")"; done
	echo "fragment_sha256=$(sha256sum < "$FRAG" | cut -d' ' -f1)"
	echo "built=$(date -u +%FT%TZ) seconds=$(( $(date +%s) - start ))"
} > "$CACHE/$key/inputs"
mv "$out.tmp" "$out"
log "cached: $out"
echo "$out"
