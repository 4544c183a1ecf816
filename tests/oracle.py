#!/usr/bin/python3
"""Reference implementation of dupcache's numbers, for the tests.

    /usr/bin/python3 tests/oracle.py PATH...     prints the JSON report
    import oracle; oracle.compute([PATH, ...])   returns the same dict

Deliberately simple and independent of the C code: FIEMAP (ioctl) for the
extent map, mincore() on a shared read-only mmap for residency, and plain
per-page dicts.  Only meant for small test trees.  Standard library only.

Definitions (P = page size):
  * a file page i maps to physical page (fs, (phys + i*P - logical)//P),
    fs being the filesystem's identity: a btrfs filesystem's fsid (all its
    subvolumes and snapshots are one physical address space, though each
    has its own st_dev), elsewhere st_dev
    when the extent holding byte i*P has none of the "unmappable" flags,
    (phys - logical) % P == 0 and the extent reaches min((i+1)*P, size);
  * a copy is a resident page that maps to a physical page;
  * dup_bytes = P * sum over physical pages of max(0, copies - 1);
  * cached_bytes = P * resident pages (mapped or not);
  * shared_bytes = bytes of [0, size) inside extents flagged SHARED;
  * a file's dup share = sum over its resident mapped pages whose physical
    page has c >= 2 copies of floor(P * (c - 1) / c);
  * a physical page is shared when >= 2 (file, page) pairs map to it; files
    mapping a common shared physical page are connected; groups are the
    connected components of the files with at least one such page.
"""
import ctypes
import errno
import fcntl
import json
import os
import stat
import struct
import sys

P = os.sysconf('SC_PAGE_SIZE')

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_MAX_OFFSET = (1 << 64) - 1

FE_LAST = 0x1
FE_UNKNOWN = 0x2
FE_DELALLOC = 0x4
FE_ENCODED = 0x8
FE_DATA_ENCRYPTED = 0x80
FE_NOT_ALIGNED = 0x100
FE_DATA_INLINE = 0x200
FE_DATA_TAIL = 0x400
FE_UNWRITTEN = 0x800
FE_MERGED = 0x1000
FE_SHARED = 0x2000
UNMAPPABLE = (FE_UNKNOWN | FE_DELALLOC | FE_ENCODED | FE_DATA_ENCRYPTED |
              FE_NOT_ALIGNED | FE_DATA_INLINE | FE_DATA_TAIL | FE_UNWRITTEN)

HDR = struct.Struct('=QQIIII')          # struct fiemap (32 bytes)
EXT = struct.Struct('=QQQQQIIII')       # struct fiemap_extent (56 bytes)
assert HDR.size == 32 and EXT.size == 56
BATCH = 256

OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW


# ---------------------------------------------------------------- FIEMAP

def fiemap(fd):
    """All extents of fd as (logical, physical, length, flags) tuples.

    Raises OSError (EOPNOTSUPP / ENOTTY) when the fs has no FIEMAP.
    """
    out = []
    start = 0
    while True:
        buf = bytearray(HDR.size + BATCH * EXT.size)
        HDR.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET - start,
                      FIEMAP_FLAG_SYNC, 0, BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = HDR.unpack_from(buf, 0)[3]
        if mapped == 0:
            break
        for k in range(mapped):
            lo, ph, ln, _, _, fl, _, _, _ = EXT.unpack_from(
                buf, HDR.size + k * EXT.size)
            out.append((lo, ph, ln, fl))
        lo, ph, ln, fl = out[-1]
        if fl & FE_LAST or lo + ln <= start:
            break
        start = lo + ln
        if start >= FIEMAP_MAX_OFFSET:
            break
    return out


# ---------------------------------------------------------------- mincore

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.restype = ctypes.c_int
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                          ctypes.POINTER(ctypes.c_ubyte)]
PROT_READ = 1
MAP_SHARED = 1
MAP_FAILED = ctypes.c_void_p(-1).value


class Resident:
    """Which pages of a file are resident, kept sparsely so that a sparse
    image's holes cost nothing: res[i] is 0 or 1, len(res) the file's
    pages, res.count() the resident ones, iteration yields 0/1 per page."""

    def __init__(self, npages, pages):
        self.npages = npages
        self.pages = pages              # set of resident page indices

    def __getitem__(self, i):
        if not 0 <= i < self.npages:
            raise IndexError(i)
        return 1 if i in self.pages else 0

    def __len__(self):
        return self.npages

    def __iter__(self):
        return (1 if i in self.pages else 0 for i in range(self.npages))

    def count(self):
        return len(self.pages)


_libc.syscall.restype = ctypes.c_long
NR_CACHESTAT = 451
MINCORE_SPAN = 16384                    # pages: at most 64 MiB mapped at once


def _cached_pages(fd, first, n):
    """cachestat(2)'s count of cached pages in [first, first + n), or None
    where the kernel has no cachestat.  Only to skip ranges that hold
    nothing: mincore() says which pages are resident."""
    rng = (ctypes.c_uint64 * 2)(first * P, n * P)
    cs = (ctypes.c_uint64 * 5)()
    if _libc.syscall(NR_CACHESTAT, fd, rng, cs, 0) != 0:
        return None
    return cs[0]


def _mincore_range(fd, first, n, out):
    addr = _libc.mmap(None, n * P, PROT_READ, MAP_SHARED, fd, first * P)
    if addr is None or addr == MAP_FAILED:
        e = ctypes.get_errno()
        raise OSError(e, 'mmap: ' + os.strerror(e))
    try:
        vec = (ctypes.c_ubyte * n)()
        if _libc.mincore(addr, n * P, vec) != 0:
            e = ctypes.get_errno()
            raise OSError(e, 'mincore: ' + os.strerror(e))
        out.update(first + i for i, v in enumerate(vec) if v & 1)
    finally:
        _libc.munmap(addr, n * P)


def resident_vector(fd, size):
    """The file's resident pages (mincore), as a Resident.  Ranges are
    halved until they are small enough to map, and a half that cachestat
    says holds no cached page is skipped."""
    npages = (size + P - 1) // P
    pages = set()
    todo = [(0, npages)] if npages else []
    while todo:
        first, n = todo.pop()
        cached = _cached_pages(fd, first, n)
        if cached == 0:
            continue
        if n <= MINCORE_SPAN:
            _mincore_range(fd, first, n, pages)
        else:
            half = n // 2
            todo += [(first + half, n - half), (first, half)]
    return Resident(npages, pages)


# ---------------------------------------------------------------- walking

def _skipped():
    return {'missing': 0, 'unreadable': 0, 'vanished': 0, 'changed': 0,
            'special': 0, 'no_fiemap': 0}


def walk(paths, one_fs=False):
    """Regular files under paths: ([(path, lstat, top_level)], skipped).

    Symlinks below the top are never followed; a top-level symlink is.
    Each (st_dev, st_ino) appears once, first path found wins.
    """
    skipped = _skipped()
    seen = set()
    files = []

    def add(path, st, top):
        key = (st.st_dev, st.st_ino)
        if key not in seen:
            seen.add(key)
            files.append((path, st, top))

    def recurse(d, dev):
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except FileNotFoundError:
            skipped['vanished'] += 1
            return
        except PermissionError:
            skipped['unreadable'] += 1
            return
        for e in entries:
            try:
                st = os.lstat(e.path)
            except FileNotFoundError:
                skipped['vanished'] += 1
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                if not one_fs or st.st_dev == dev:
                    recurse(e.path, dev)
            elif stat.S_ISREG(st.st_mode):
                add(e.path, st, False)
            else:
                skipped['special'] += 1

    for p in paths:
        try:
            st = os.stat(p)             # a top-level symlink is followed
        except FileNotFoundError:
            skipped['missing'] += 1
            continue
        except PermissionError:
            skipped['unreadable'] += 1
            continue
        if stat.S_ISDIR(st.st_mode):
            recurse(p, st.st_dev)
        elif stat.S_ISREG(st.st_mode):
            add(p, st, True)
        else:
            skipped['special'] += 1
    return files, skipped


# ---------------------------------------------------------------- scan

def scan_file(path, st, top):
    """(extents, resident vector, fstat) of one file; None if it failed."""
    flags = OPEN_FLAGS
    if top and os.path.islink(path):
        flags &= ~os.O_NOFOLLOW          # follow the top-level symlink
    fd = os.open(path, flags)
    try:
        fst = os.fstat(fd)
        if (not stat.S_ISREG(fst.st_mode) or
                (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino)):
            raise OSError(errno.ESTALE, 'changed')
        try:
            ext = fiemap(fd)
            has_fiemap = True
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOTTY):
                raise
            ext, has_fiemap = [], False
        res = resident_vector(fd, fst.st_size)
        return ext, has_fiemap, res, fst, fs_identity(fd, fst)
    finally:
        os.close(fd)


BTRFS_IOC_FS_INFO = 0x8400941F         # _IOR(0x94, 31, 1024 bytes)


def fs_identity(fd, st):
    """Which physical address space the file's extents are in, found
    without /proc/self/mountinfo: btrfs answers its fsid, else st_dev."""
    buf = bytearray(1024)
    try:
        fcntl.ioctl(fd, BTRFS_IOC_FS_INFO, buf, True)
    except OSError:
        return ('dev', st.st_dev)
    return ('btrfs', bytes(buf[16:32]))


def page_map(ext, size, dev):
    """{file page index: (dev, physical page)} for the mappable pages."""
    npages = (size + P - 1) // P
    m = {}
    for lo, ph, ln, fl in ext:
        if fl & UNMAPPABLE or (ph - lo) % P != 0 or ln == 0:
            continue
        end = lo + ln
        first = (lo + P - 1) // P            # first page starting in extent
        last = min(npages, (end - 1) // P + 1)
        for i in range(first, last):
            if i in m:
                continue
            if end >= min((i + 1) * P, size):
                m[i] = (dev, (ph + i * P - lo) // P)
    return m


def shared_bytes(ext, size):
    n = 0
    for lo, ph, ln, fl in ext:
        if fl & FE_SHARED:
            n += max(0, min(lo + ln, size) - max(lo, 0))
    return n


def compute(paths, one_fs=False):
    files, skipped = walk(paths, one_fs)
    recs = []
    for path, st, top in files:
        try:
            ext, has_fiemap, res, fst, fs = scan_file(path, st, top)
        except FileNotFoundError:
            skipped['vanished'] += 1
            continue
        except PermissionError:
            skipped['unreadable'] += 1
            continue
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ESTALE):
                skipped['changed'] += 1
                continue
            raise
        if not has_fiemap:
            skipped['no_fiemap'] += 1
        recs.append({
            'dev': fst.st_dev, 'ino': fst.st_ino, 'path': path,
            'size': fst.st_size,
            'cached_bytes': P * res.count(),
            'shared_bytes': shared_bytes(ext, fst.st_size),
            'map': page_map(ext, fst.st_size, fs),
            'res': res,
        })

    # physical page -> number of (file, page) pairs mapping it, resident copies
    refs, copies = {}, {}
    for r in recs:
        for i, pp in r['map'].items():
            refs[pp] = refs.get(pp, 0) + 1
            if r['res'][i]:
                copies[pp] = copies.get(pp, 0) + 1
    shared = {pp for pp, n in refs.items() if n >= 2}

    # union-find over files through shared physical pages
    parent = list(range(len(recs)))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    owner = {}
    in_group = set()
    for k, r in enumerate(recs):
        for pp in r['map'].values():
            if pp in shared:
                in_group.add(k)
                if pp in owner:
                    a, b = find(owner[pp]), find(k)
                    if a != b:
                        parent[a] = b
                else:
                    owner[pp] = k

    comps = {}
    for k in sorted(in_group):
        comps.setdefault(find(k), []).append(k)
    groups = []
    for members in comps.values():
        gpages = {pp for k in members for pp in recs[k]['map'].values()
                  if pp in shared}
        mem = sorted(({'dev': recs[k]['dev'], 'ino': recs[k]['ino'],
                       'path': recs[k]['path'],
                       'cached_bytes': recs[k]['cached_bytes'],
                       'shared_bytes': recs[k]['shared_bytes']}
                      for k in members), key=lambda m: m['path'])
        groups.append({
            'files': len(members),
            'shared_bytes': sum(m['shared_bytes'] for m in mem),
            'cached_bytes': sum(m['cached_bytes'] for m in mem),
            'dup_bytes': P * sum(max(0, copies.get(pp, 0) - 1)
                                 for pp in gpages),
            'members': mem,
        })
    groups.sort(key=lambda g: (-g['dup_bytes'], -g['cached_bytes'],
                               g['members'][0]['path']))
    # a file's fair share: each resident copy of a physical page with c
    # copies carries floor(P * (c - 1) / c) bytes
    files = [{'path': r['path'], 'dev': r['dev'], 'ino': r['ino'],
              'size': r['size'], 'cached_bytes': r['cached_bytes'],
              'shared_bytes': r['shared_bytes'],
              'dup_share_bytes': sum(P * (copies[pp] - 1) // copies[pp]
                                     for i, pp in r['map'].items()
                                     if r['res'][i] and copies[pp] >= 2)}
             for r in recs]
    return {
        'page_size': P,
        'totals': {
            'files': len(recs),
            'shared_bytes': sum(r['shared_bytes'] for r in recs),
            'cached_bytes': sum(r['cached_bytes'] for r in recs),
            'dup_bytes': P * sum(max(0, c - 1) for c in copies.values()),
        },
        'groups': groups,
        'files': files,
        'skipped': skipped,
    }


def main(argv):
    one_fs = False
    args = []
    for a in argv:
        if a in ('-x', '--one-file-system'):
            one_fs = True
        else:
            args.append(a)
    if not args:
        print('usage: oracle.py [-x] PATH...', file=sys.stderr)
        return 2
    json.dump(compute(args, one_fs), sys.stdout, indent=1)
    print()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
