#!/usr/bin/python3
"""Loop-mounted scratch filesystems and file helpers for the dupcache tests.

    with LoopFs('xfs') as mnt:      # or LoopFs('btrfs')
        make_file(mnt + '/a', 8 << 20, seed=1)
        reflink(mnt + '/a', mnt + '/b')
        cold(mnt)                   # sync + drop every file: nothing cached
        read_range(mnt + '/a')

Page cache pinning: this VM runs a DAMON scheme that pages out idle
*unmapped* page cache every few seconds, so a page the test read may vanish
at any moment.  The helpers here therefore keep every page a scenario reads
mapped (a read-only MAP_SHARED mapping per file, MADV_RANDOM so touching a
page never triggers readahead, each resident page touched once): mapped page
cache is left alone, and the state a scenario built stays put while the
oracle and dupcache look at it.  read_range() pins what it read, drop()
unmaps before POSIX_FADV_DONTNEED and re-pins the rest, cold() unpins all.
A page found evicted in the short gap between a read and its pinning is
read again (through the mapping, one page) and counted in
fsimg.interference, so watch-mode tests can account for the extra
add/remove events.

Cleanup (kill the children started with spawn(), unpin, umount, losetup -d, remove
the image and the directories) runs when the body returns or raises, on
SIGINT/SIGTERM (turned into exceptions while a LoopFs is active) and, as a
last resort, at interpreter exit.  Standard library only; needs root.
"""
import atexit
import ctypes
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

PAGE = os.sysconf('SC_PAGE_SIZE')
MiB = 1 << 20

# ---------------------------------------------------------------- children

_children = []  # subprocess.Popen objects started through spawn()


def spawn(args, **kw):
    """subprocess.Popen that is killed by the cleanup if still running."""
    p = subprocess.Popen(args, **kw)
    _children.append(p)
    return p


def kill_children():
    """Kill (by pid) every process started with spawn() that still runs."""
    while _children:
        p = _children.pop()
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass


def run(args, check=True, timeout=120, **kw):
    """Run a command quietly; raise with its output if it fails."""
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError('%s failed (%d): %s%s' % (
            ' '.join(args), r.returncode, r.stdout.decode(errors='replace'),
            r.stderr.decode(errors='replace')))
    return r


# ---------------------------------------------------------------- signals

class Interrupted(BaseException):
    """Raised in the main thread by SIGTERM while a LoopFs is active."""


_active = []          # LoopFs objects not yet cleaned up
_saved_handlers = None


def _on_signal(signum, frame):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Interrupted('signal %d' % signum)


def _install_handlers():
    global _saved_handlers
    if _saved_handlers is None:
        _saved_handlers = {s: signal.signal(s, _on_signal)
                           for s in (signal.SIGINT, signal.SIGTERM,
                                     signal.SIGHUP)}


def _restore_handlers():
    global _saved_handlers
    if _saved_handlers is not None and not _active:
        for s, h in _saved_handlers.items():
            signal.signal(s, h)
        _saved_handlers = None


@atexit.register
def _cleanup_all():
    kill_children()
    for fs in list(_active):
        fs.cleanup()


# ---------------------------------------------------------------- pinning

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                       ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                          ctypes.POINTER(ctypes.c_ubyte)]
_MADV_RANDOM = 1
_MAP_FAILED = ctypes.c_void_p(-1).value

_pins = {}          # realpath -> (addr, length)
interference = 0    # pages found evicted before they could be pinned


def _map(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        length = (size + PAGE - 1) // PAGE * PAGE
        if length == 0:
            return None, 0
        addr = _libc.mmap(None, length, 1, 1, fd, 0)    # PROT_READ, SHARED
        if addr is None or addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), 'mmap ' + path)
        _libc.madvise(addr, length, _MADV_RANDOM)
        return addr, length
    finally:
        os.close(fd)


def _mincore(addr, length):
    n = length // PAGE
    vec = (ctypes.c_ubyte * n)()
    if _libc.mincore(addr, length, vec) != 0:
        raise OSError(ctypes.get_errno(), 'mincore')
    return [v & 1 for v in vec]


def _touch(addr, pages):
    for i in pages:
        ctypes.string_at(addr + i * PAGE, 1)


def pin(path, want=()):
    """Map path and touch its resident pages, plus the pages in want.

    A page of want that is not resident (evicted since it was read) is
    read again by the touch and counted in interference.  Replaces any
    earlier pin of the file without a gap.
    """
    global interference
    key = os.path.realpath(path)
    addr, length = _map(path)
    if addr is not None:
        res = _mincore(addr, length)
        want = [i for i in want if i < len(res)]
        interference += sum(1 for i in want if not res[i])
        _touch(addr, sorted(set(want) | {i for i, r in enumerate(res) if r}))
    old = _pins.pop(key, None)
    if addr is not None:
        _pins[key] = (addr, length)
    if old:
        _libc.munmap(*old)


def unpin(path):
    old = _pins.pop(os.path.realpath(path), None)
    if old:
        _libc.munmap(*old)


def unpin_all(under=None):
    for key in list(_pins):
        if under is None or key.startswith(os.path.realpath(under) + '/'):
            _libc.munmap(*_pins.pop(key))


def _resident_set(path):
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        length = (size + PAGE - 1) // PAGE * PAGE
        if not length:
            return set()
        addr = _libc.mmap(None, length, 1, 1, fd, 0)
        if addr is None or addr == _MAP_FAILED:
            raise OSError(ctypes.get_errno(), 'mmap ' + path)
        try:
            return {i for i, r in enumerate(_mincore(addr, length)) if r}
        finally:
            _libc.munmap(addr, length)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- LoopFs

class LoopFs:
    """A fresh filesystem on a sparse image, loop-mounted in a temp dir."""

    SIZES = {'xfs': 512 * MiB, 'btrfs': 1024 * MiB}

    def __init__(self, fstype, size=None, mount_opts=None):
        if fstype not in self.SIZES:
            raise ValueError('unsupported fs type %r' % fstype)
        self.fstype = fstype
        self.size = size or self.SIZES[fstype]
        self.mount_opts = mount_opts
        self.tmp = self.image = self.loop = self.mnt = None
        self.mounted = False

    # -- setup
    def __enter__(self):
        _install_handlers()
        _active.append(self)
        try:
            self._setup()
        except BaseException:
            self.cleanup()
            raise
        return self.mnt

    def _setup(self):
        self.tmp = tempfile.mkdtemp(prefix='dupcache-test-', dir='/tmp')
        # let an unprivileged user (setpriv tests) reach the mount point
        os.chmod(self.tmp, 0o755)
        self.image = os.path.join(self.tmp, 'fs.img')
        self.mnt = os.path.join(self.tmp, 'mnt')
        os.mkdir(self.mnt, 0o755)
        with open(self.image, 'wb') as f:
            f.truncate(self.size)
        if self.fstype == 'xfs':
            run(['mkfs.xfs', '-q', '-m', 'reflink=1', '-f', self.image])
        else:
            run(['mkfs.btrfs', '-q', '-f', self.image])
        self.loop = run(['losetup', '--find', '--show', self.image]
                        ).stdout.decode().strip()
        self.mount()

    def mount(self):
        args = ['mount', '-t', self.fstype]
        if self.mount_opts:
            args += ['-o', self.mount_opts]
        run(args + [self.loop, self.mnt])
        self.mounted = True
        os.chmod(self.mnt, 0o755)

    def umount(self, lazy_ok=True):
        """umount, retrying while busy; lazy umount as the last resort."""
        if not self.mounted:
            return
        for i in range(8):
            if run(['umount', self.mnt], check=False).returncode == 0:
                self.mounted = False
                return
            time.sleep(0.1 * (i + 1))           # about 3.6 s in all
        if lazy_ok:
            run(['umount', '-l', self.mnt], check=False)
            self.mounted = False
        else:
            raise RuntimeError('cannot umount %s' % self.mnt)

    def remount(self):
        """umount + mount: every page of the fs leaves the page cache."""
        unpin_all(self.mnt)
        self.umount(lazy_ok=False)
        self.mount()

    # -- teardown
    def __exit__(self, *exc):
        self.cleanup()
        return False

    def cleanup(self):
        # no signal may interrupt the teardown half way
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                old[s] = signal.signal(s, signal.SIG_IGN)
            except ValueError:      # not the main thread
                pass
        try:
            kill_children()
            if self.mnt:
                unpin_all(self.mnt)
            try:
                self.umount()
            except Exception:
                pass
            if self.loop:
                for i in range(10):
                    if run(['losetup', '-d', self.loop],
                           check=False).returncode == 0:
                        break
                    time.sleep(0.2)
                self.loop = None
            if self.tmp and not self.mounted:
                shutil.rmtree(self.tmp, ignore_errors=True)
                self.tmp = None
        finally:
            if self in _active:
                _active.remove(self)
            for s, h in old.items():
                signal.signal(s, h)
            _restore_handlers()


class TmpFs:
    """A private tmpfs mounted in a temp dir (a filesystem without FIEMAP)."""

    def __init__(self, size='64m'):
        self.size = size
        self.tmp = None
        self.mounted = False

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix='dupcache-tmpfs-', dir='/tmp')
        os.chmod(self.tmp, 0o755)
        try:
            run(['mount', '-t', 'tmpfs', '-o', 'size=' + self.size,
                 'dupcache-test', self.tmp])
            self.mounted = True
        except BaseException:
            os.rmdir(self.tmp)
            raise
        return self.tmp

    def __exit__(self, *exc):
        kill_children()
        unpin_all(self.tmp)
        if self.mounted:
            if run(['umount', self.tmp], check=False).returncode != 0:
                run(['umount', '-l', self.tmp], check=False)
            self.mounted = False
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


# ---------------------------------------------------------------- files

def data(n, seed):
    """n bytes of deterministic pseudo-random (never all-zero) content."""
    return random.Random(seed).randbytes(n)


def make_file(path, size, seed=0, fsync=True):
    """Create path holding size bytes of pseudo-random content."""
    chunk = 4 * MiB
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(rnd.randbytes(n))
            left -= n
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    return path


def write_at(path, off, buf, fsync=True, keep=True):
    """pwrite buf at off into an existing file (a CoW write on a clone).

    keep: pin the written pages (they stay in the page cache).
    """
    fd = os.open(path, os.O_WRONLY)
    try:
        done = 0
        while done < len(buf):
            done += os.pwrite(fd, buf[done:], off + done)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if keep and buf:
        pin(path, range(off // PAGE, (off + len(buf) + PAGE - 1) // PAGE))


def reflink(src, dst):
    """Whole-file clone: cp --reflink=always."""
    run(['cp', '--reflink=always', src, dst])


def clone_range(src, src_off, dst, dst_off, length):
    """FICLONERANGE through xfs_io (XFS and btrfs); dst may be src."""
    if not os.path.exists(dst):
        open(dst, 'wb').close()
    run(['xfs_io', '-c', 'reflink %s %d %d %d' % (src, src_off, dst_off,
                                                  length), dst])


def read_range(path, off=0, length=0, exact=False, keep=True):
    """Plain read() of [off, off+length) (length 0: to EOF), then pin().

    exact=True sets POSIX_FADV_RANDOM on the descriptor first, which turns
    readahead off, so only the pages of the range enter the page cache.
    keep=False: do not pin (the pages may be paged out by the VM later).
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if exact:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        size = os.fstat(fd).st_size
        if length == 0:
            length = max(0, size - off)
        pos, end = off, min(off + length, size)
        while pos < end:
            b = os.pread(fd, min(MiB, end - pos), pos)
            if not b:
                break
            pos += len(b)
    finally:
        os.close(fd)
    if keep and end > off:
        pin(path, range(off // PAGE, (end + PAGE - 1) // PAGE))


def drop(path, off=0, length=0):
    """POSIX_FADV_DONTNEED on [off, off+length) (length 0: to EOF).

    A pinned file is unmapped first (mapped pages cannot be dropped) and
    what stays resident outside the range is pinned again.
    """
    pinned = os.path.realpath(path) in _pins
    before = _resident_set(path) if pinned else set()
    unpin(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        os.posix_fadvise(fd, off, length, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if pinned:
        first = off // PAGE
        last = (off + length + PAGE - 1) // PAGE if length else 1 << 62
        pin(path, [i for i in before if not first <= i < last])


def sync_fs(mnt):
    """syncfs() of the filesystem holding mnt (sync -f)."""
    run(['sync', '-f', mnt])


def regular_files(top):
    """Every regular file below top (symlinks not followed)."""
    out = []
    for dirpath, dirs, files in os.walk(top):
        for n in files:
            p = os.path.join(dirpath, n)
            if os.path.isfile(p) and not os.path.islink(p):
                out.append(p)
    return sorted(out)


def resident_pages(path):
    """Resident pages of one file (mincore)."""
    return len(_resident_set(path))


def cold(mnt, fs=None):
    """Start from a cold cache: sync, then drop every file under mnt.

    Falls back to umount/mount (fs: the LoopFs) if some page stays.
    """
    sync_fs(mnt)
    unpin_all(mnt)
    files = regular_files(mnt)
    for p in files:
        drop(p)
    left = [p for p in files if resident_pages(p)]
    if left and fs is not None:
        fs.remount()
        left = [p for p in files if resident_pages(p)]
    if left:
        raise RuntimeError('pages still cached after drop: %s' % left)


def _hold(dirs):
    """Pin the resident pages of every file under dirs until SIGTERM."""
    n = 0
    for d in dirs:
        for p in regular_files(d) if os.path.isdir(d) else [d]:
            pin(p)
            n += resident_pages(p)
    print('fsimg: holding %d resident pages' % n, flush=True)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        signal.pause()


if __name__ == '__main__':
    # python3 tests/fsimg.py [xfs|btrfs]...   smoke test
    # python3 tests/fsimg.py hold PATH...     keep the cached pages of the
    #                                         files under PATH mapped (so the
    #                                         VM does not page them out)
    #                                         until SIGTERM
    if sys.argv[1:2] == ['hold']:
        try:
            _hold(sys.argv[2:])
        except KeyboardInterrupt:
            pass
        sys.exit(0)
    for t in sys.argv[1:] or ['xfs', 'btrfs']:
        with LoopFs(t) as m:
            make_file(m + '/a', 4 * MiB, seed=1)
            reflink(m + '/a', m + '/b')
            cold(m)
            read_range(m + '/a')
            print(t, m, resident_pages(m + '/a'), resident_pages(m + '/b'))
