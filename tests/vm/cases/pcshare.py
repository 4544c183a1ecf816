#!/usr/bin/python3
"""vmtest case: page cache sharing between sealed clones (kernel/patches),
as an attacker without root sees it and as `dupcache daemon --enforce`
(bpf/policy.bpf.c) drives it.  Runs inside the VM as root; the attacker is
uid 1000.  Each check is reported on $VMTEST_RESULTS as PASS/FAIL
pcshare.NAME.  Oracles: md5 of each file's bytes as written, /proc/meminfo
(Cached:), /proc/vmstat (the kernel's pcshare_* counters), mincore, the
uprobe hit counts, the BPF objects bpftool lists.

On a loop XFS (reflink=1): a (64 MiB) with clones b c d e; w and
w2; f and f2 with 128 extents and 128 holes each (a B-tree on disk); the ticker x and
x2; s (0600) and s2; u and u2 never sealed.  Everything but u, u2 is made
immutable (sealed): the kernel shares nothing else.

Without a policy:
  without_policy      reading a b c d caches 4 copies; report: dup = 3 copies
  gate_without_policy `dupcache gate --max-dup <one copy>` around it fails (exit 6)
With build/vm_pcshare_any.bpf.o, a policy that proposes any donor to anyone:
  invalid_ops         a pcshare_ops without choose_donor is refused at registration
  frozen_no_wait      on a frozen filesystem, an open needing a new cache is
                      refused at once (no wait for inodegc), bytes right
  refused_unsealed    donor u is not immutable: refused
  refused_internal    the realtime bitmap inode, a directory, a missing inode: refused
  trust_unreadable    uid 1000 may not share through s (0600): refused; root may
  pipe_own_bytes      uid 1000 splices w2 into a pipe, closes it; root unseals and
                      rewrites the donor w; the pipe holds w2's bytes
  unseal_donor        after the donor a is unsealed, an open b reads what was
                      cached and gets EIO for the rest, never a's blocks again
  no_denial           while uid 1000 holds w2 open shared: chattr -i, open for
                      writing, write, truncate, O_RDONLY|O_TRUNC, fsync all work
  mincore_hidden      uid 1000 owns e: mincore through its shared open shows
                      nothing of the cache; root sees exactly what was read
  cache_hints         fadvise WILLNEED through a shared open fills the cache
  fragmented          f2 (extents and holes in a B-tree, inodes dropped) shares with f
  eofblocks_trimmed   XFS frees the donor t's blocks past EOF (speculative
                      preallocation) while t2 is read shared: every byte right
  ro_snapshot_untouched  a frozen copy of a live XFS mounted ro,norecovery whose
                      donor r has blocks past EOF: r2 not shared, the image unchanged
  wb_error_refused    v's writeback failed (dm error target), v2 cloned from it:
                      neither shares with the other; v reads its cache, v2 its blocks
  dax_refused         on pmem with dax=always, d2 proposed d as donor: refused
  uprobe_own_text     a uprobe on x2 hits the running x2 shared with x, and once
                      removed leaves no breakpoint (both runs exit 0)
With the daemon:
  policy_map          the sealed members of every set, each -> the set's donor
  switch_off          SIGUSR1: no shares
  one_copy, granted, checksums  after drop_caches, the 4 files read in: growth
                      <= 1.05 x one copy, 4 shares, every checksum right
  report_dup_zero     report: dup 0, no file caches anything of its own
  gate_one_copy       the same gate passes while the daemon enforces
  kernel_refused      a clone unsealed, changed and sealed again: the policy
                      still proposes, the kernel compares again and refuses
  mmap_read           mmap of a shared clone reads its bytes
  kill9_*, restart    kill -9 stops new shares; a new daemon replaces it
  trust_domain        --trust-uid 0 --trust-cgroup DIR: in DIR shares; another
                      cgroup, uid 1000, uid 1000 through overlayfs (whose
                      lower opens carry the mounter's credentials) do not
  map_follows_rescan  the kernel's donor map (bpftool) follows the rescans
  clean_stop, metrics, map_full
"""
import ctypes
import fcntl
import hashlib
import json
import mmap
import os
import re
import signal
import subprocess
import sys
import threading
import time

REPO = os.environ.get('VMTEST_REPO', '/work/main')
RESULTS = os.environ.get('VMTEST_RESULTS', '/dev/stdout')
BIN = os.environ.get('VMTEST_BIN') or os.path.join(REPO, 'dupcache')
ANY_POLICY = os.path.join(REPO, 'build/vm_pcshare_any.bpf.o')
INVALID_POLICY = os.path.join(REPO, 'build/vm_pcshare_invalid.bpf.o')
MiB = 1 << 20
SIZE = 64 * MiB
ONE_COPY_KIB = SIZE // 1024
WORK = '/tmp/pcshare'
MNT = WORK + '/m'
WB = WORK + '/wb'         # wb_error_refused's filesystem, on a device-mapper device
WB_DM = 'dcwb'
DAX = WORK + '/dax'       # dax_refused's filesystem, on the VM's emulated pmem
PMEM = '/dev/pmem0'
OVL = WORK + '/ovl'
CG = '/sys/fs/cgroup/trusted'
TRACING = '/sys/kernel/tracing'
STALE = 2.0
USER = 1000
DATA = os.urandom(SIZE)   # a's bytes
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10
F_SETPIPE_SZ = 1031
EIO = 5

failed = []
daemons = []
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long)
libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)


def log(*a):
    print('[pcshare]', *a, flush=True)


def check(name, ok, why=''):
    line = '%s pcshare.%s' % ('PASS' if ok else 'FAIL', name)
    log(line + ('' if ok else ': ' + why))
    with open(RESULTS, 'a') as f:
        f.write(line + '\n')
    if not ok:
        failed.append(name)
    return ok


def sh(*cmd, **kw):
    log('$', ' '.join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def path(name):
    return os.path.join(MNT, name)


def ino(name):
    return os.stat(path(name)).st_ino


def seal(name, on=True):
    """chattr +i / -i of a file in MNT."""
    set_immutable(path(name), on)


def set_immutable(file_path, on=True):
    """chattr +i / -i, by ioctl."""
    fd = os.open(file_path, os.O_RDONLY)
    try:
        buf = bytearray(4)
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
        flags = int.from_bytes(buf, 'little')
        flags = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags.to_bytes(4, 'little'))
    finally:
        os.close(fd)


def as_user(fn, uid=USER):
    """fn() run in a child as uid: its return value (repr-able), or the exception text."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.setgid(uid)
            os.setuid(uid)
            out = repr(('ok', fn()))
        except BaseException as e:  # reported to the parent, never raised in the child
            out = repr(('error', '%s: %s' % (type(e).__name__, e)))
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got = f.read()
    os.waitpid(pid, 0)
    kind, value = eval(got)   # our own child's repr
    if kind == 'error':
        raise RuntimeError('as uid %d: %s' % (uid, value))
    return value


def resident_pages(fd, length):
    """mincore over a shared mapping of fd: how many pages it says are resident."""
    addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), 'mmap')
    try:
        vec = ctypes.create_string_buffer(length // 4096)
        if libc.mincore(addr, length, vec):
            raise OSError(ctypes.get_errno(), 'mincore')
        return sum(b & 1 for b in vec.raw)
    finally:
        libc.munmap(addr, length)


def deltas(fn, *keys):
    """fn()'s result and how much each pcshare_KEY counter grew meanwhile."""
    before = [vmstat('pcshare_' + k) for k in keys]
    out = fn()
    return out, tuple(vmstat('pcshare_' + k) - b for k, b in zip(keys, before))


def vmstat(key):
    with open('/proc/vmstat') as f:
        for line in f:
            k, v = line.split()
            if k == key:
                return int(v)
    raise KeyError(key)


def cached_kib():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('Cached:'):
                return int(line.split()[1])
    raise KeyError('Cached')


def drop_caches():
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')


def md5(name):
    with open(os.path.join(MNT, name), 'rb') as f:
        return hashlib.md5(f.read()).hexdigest()


def report():
    out = subprocess.run([BIN, 'report', '--json', '-n', '0', MNT], check=True, stdout=subprocess.PIPE)
    return json.loads(out.stdout)


def cached_by_file(rep):
    return {os.path.basename(m['path']): m['cached_bytes'] for g in rep['groups'] for m in g['members']}


def donors(daemon_report):
    """member name -> its set's donor name"""
    base = os.path.basename
    return {base(m): base(cs['donor']) for cs in daemon_report['clone_sets'] for m in cs['members']}


def donor_map():
    """The policy's donor map as the kernel holds it: {member ino: donor ino}."""
    out = subprocess.run(['bpftool', '-j', 'map', 'dump', 'name', 'donors'], check=True,
                         stdout=subprocess.PIPE)
    got = {}
    for e in json.loads(out.stdout):
        key = bytes(int(x, 16) for x in e['key'])     # struct dc_inode_key: u64 ino, u32 dev, pad
        value = bytes(int(x, 16) for x in e['value'])
        got[int.from_bytes(key[:8], 'little')] = int.from_bytes(value[:8], 'little')
    return got


def bpf_ids(kind):
    out = subprocess.run(['bpftool', '-j', kind, 'list'], check=True, stdout=subprocess.PIPE)
    return {o['id'] for o in json.loads(out.stdout or b'[]')}


def registered():
    out = subprocess.run(['bpftool', '-j', 'struct_ops', 'list'], stdout=subprocess.PIPE)
    try:
        return [o['name'] for o in json.loads(out.stdout or b'[]')]
    except ValueError:
        return []


class Daemon:
    def __init__(self, *args):
        cmd = [BIN, 'daemon', '--enforce', '--json', '--stale-after', str(STALE)] + list(args) + [MNT]
        log('$', ' '.join(cmd))
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines, self.err = [], []
        self.readers = [threading.Thread(target=self._read, args=(f, into), daemon=True)
                        for f, into in ((self.p.stdout, self.lines), (self.p.stderr, self.err))]
        for t in self.readers:
            t.start()
        daemons.append(self)

    @staticmethod
    def _read(stream, into):
        for line in stream:
            into.append(line)
            print('[daemon]', line.rstrip(), flush=True)

    def wait_report(self, after=0, timeout=60):
        """The first report after `after` reports, parsed."""
        end = time.time() + timeout
        while time.time() < end and len(self.lines) <= after and self.p.poll() is None:
            time.sleep(0.1)
        if len(self.lines) <= after:
            raise RuntimeError('no report from the daemon; stderr: %s' % ''.join(self.err))
        return json.loads(self.lines[after])

    def send(self, sig):
        self.p.send_signal(sig)

    def wait_stderr(self, text, timeout=10):
        end = time.time() + timeout
        while time.time() < end and not any(text in e for e in self.err):
            time.sleep(0.1)
        return any(text in e for e in self.err)

    def stop_when_done(self, timeout=60):
        return self.stop(None, timeout)

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signal it (sig None: wait for it to exit), wait, read all it said."""
        if sig is not None and self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            rc = self.p.wait()
        for t in self.readers:
            t.join(10)
        return rc


def shares_during(fn):
    g = vmstat('pcshare_granted')
    fn()
    return vmstat('pcshare_granted') - g


def cleanup():
    for d in daemons:
        d.stop(signal.SIGKILL, 10)
    subprocess.run(['xfs_freeze', '-u', MNT], stderr=subprocess.DEVNULL)
    if os.path.isdir(TRACING + '/events/pcs'):
        write_tracing('events/pcs/tick/enable', '0', quiet=True)
        write_tracing('uprobe_events', '-:pcs/tick', quiet=True)
    subprocess.run(['umount', OVL + '/merged'], stderr=subprocess.DEVNULL)
    # Immutable files cannot be deleted; the whole filesystem goes instead.
    subprocess.run(['umount', MNT], stderr=subprocess.DEVNULL)
    for m in ('/ro2', '/ro', '/wb/m'):
        subprocess.run(['umount', WORK + m], stderr=subprocess.DEVNULL)
    subprocess.run(['umount', DAX], stderr=subprocess.DEVNULL)
    subprocess.run(['dmsetup', 'remove', WB_DM], stderr=subprocess.DEVNULL)
    subprocess.run(['losetup', '-D'])
    subprocess.run(['rm', '-rf', WORK])
    for sub in (CG + '/sub', CG):
        try:
            os.rmdir(sub)
        except OSError:
            pass
    # Registrations outlive their loaders on 6.1: ours only, by name.
    for name in ('dupcache_share', 'pcs_any', 'pcs_invalid'):
        subprocess.run(['bpftool', 'struct_ops', 'unregister', 'name', name],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_tracing(rel, text, quiet=False):
    """O_APPEND: uprobe_events takes definitions appended, not a rewritten file.
    An error is the test's unless quiet (cleanup removes what may not exist)."""
    fd = os.open(os.path.join(TRACING, rel), os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, text.encode())
    except OSError:
        if not quiet:
            raise
    finally:
        os.close(fd)


def write_file(name, data, mode=0o644):
    with open(path(name), 'wb') as f:
        f.write(data)
    os.chmod(path(name), mode)


def clone(src, dst):
    sh('cp', '--reflink=always', path(src), path(dst))


TICKER = r'''
#include <stdlib.h>
#include <unistd.h>
__attribute__((noinline)) void tick(void) { __asm__ volatile(""); }
int main(int argc, char **argv)
{
	for (int i = 0; i < atoi(argv[1]); i++) {
		tick();
		usleep(100000);
	}
	return 0;
}
'''


def file_offset(binary, symbol):
    """The file offset of symbol's code (what a uprobe names)."""
    nm = subprocess.run(['nm', binary], check=True, stdout=subprocess.PIPE, text=True).stdout
    vaddr = int(next(l.split()[0] for l in nm.splitlines() if l.split()[-1] == symbol), 16)
    phdrs = subprocess.run(['readelf', '-lW', binary], check=True, stdout=subprocess.PIPE,
                           text=True).stdout
    for l in phdrs.splitlines():
        f = l.split()
        if f and f[0] == 'LOAD':
            off, va, memsz = int(f[1], 16), int(f[2], 16), int(f[5], 16)
            if va <= vaddr < va + memsz:
                return vaddr - va + off
    raise RuntimeError('%s not in a LOAD segment of %s' % (symbol, binary))


def new_xfs(img, size, mnt):
    """A sparse image of size with a reflink XFS on it, mounted (loop) at mnt."""
    sh('truncate', '-s', size, img)
    sh('mkfs.xfs', '-q', '-m', 'reflink=1', img)
    sh('mount', '-o', 'loop', img, mnt)


def setup():
    """The files, all sealed but u, u2; returns {name: md5 as written}."""
    os.makedirs(MNT, exist_ok=True)
    new_xfs(WORK + '/img', '1G', MNT)
    write_file('a', DATA)
    for c in 'bcde':
        clone('a', c)
    os.chown(path('e'), USER, USER)      # e's owner may see its own residency (mincore)
    write_file('w', os.urandom(MiB))
    clone('w', 'w2')
    write_file('u', os.urandom(MiB))
    clone('u', 'u2')
    write_file('s', os.urandom(MiB), 0o600)
    clone('s', 's2')
    os.chmod(path('s2'), 0o644)
    # f: 128 extents, one 4 KiB block each with a hole after it, so that its
    # block map is a B-tree on disk and is read in on demand.  Sized first:
    # writes inside EOF get no speculative preallocation to fill the holes.
    with open(path('f'), 'wb') as f:
        f.truncate(256 * 4096)
        for i in range(128):
            os.pwrite(f.fileno(), os.urandom(4096), 2 * i * 4096)
        os.fsync(f.fileno())
    clone('f', 'f2')
    src = WORK + '/ticker.c'
    with open(src, 'w') as f:
        f.write(TICKER)
    sh('cc', '-O1', '-o', WORK + '/ticker', src)
    with open(WORK + '/ticker', 'rb') as f:
        write_file('x', f.read(), 0o755)
    clone('x', 'x2')
    os.sync()
    sums = {}
    for n in 'a b c d e w w2 u u2 s s2 f f2 x x2'.split():
        with open(path(n), 'rb') as f:
            sums[n] = hashlib.md5(f.read()).hexdigest()
        if n not in ('u', 'u2'):
            seal(n)
    return sums


def extents(name):
    out = subprocess.run(['xfs_io', '-r', '-c', 'stat', path(name)], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return int(re.search(r'fsxattr.nextents = (\d+)', out).group(1))


def rt_bitmap_inode():
    """An internal inode every XFS has, a regular file nobody may open."""
    out = subprocess.run(['xfs_db', '-r', '-c', 'sb 0', '-c', 'p rbmino', WORK + '/img'], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return int(re.search(r'rbmino = (\d+)', out).group(1))


def propose(opened, donor_ino):
    """What the adversarial policy answers for an open of `opened`."""
    propose_ino(ino(opened), donor_ino)


def propose_ino(opened_ino, donor_ino):
    key = ['%02x' % b for b in opened_ino.to_bytes(8, 'little')]
    value = ['%02x' % b for b in donor_ino.to_bytes(8, 'little')]
    sh('bpftool', 'map', 'update', 'name', 'propose', 'key', 'hex', *key, 'value', 'hex', *value,
       stdout=subprocess.DEVNULL)


def read_proposed(opened, donor):
    """opened's bytes (paths, any filesystem), read while the policy proposes
    donor for it, and how much pcshare_granted and _kernel_refused grew."""
    propose_ino(os.stat(opened).st_ino, os.stat(donor).st_ino)

    def read():
        with open(opened, 'rb') as f:
            return f.read()
    return deltas(read, 'granted', 'kernel_refused')


def md5_as(name, uid):
    return as_user(lambda: md5(name), uid) if uid else md5(name)


def adversary(sums):
    """The kernel's checks, against a policy that proposes anything to anyone."""
    p = subprocess.run(['bpftool', 'struct_ops', 'register', INVALID_POLICY],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check('invalid_ops', p.returncode != 0 and 'pcs_invalid' not in registered() and
          md5('a') == sums['a'], 'bpftool exit %d: %s; registered %s' % (
              p.returncode, p.stdout.strip(), registered()))
    sh('bpftool', 'struct_ops', 'register', ANY_POLICY)

    # An open that needs a new cache looks its donor up, which may wait for
    # inodegc; a frozen filesystem has stopped it: refused at once instead.
    propose('x2', ino('x'))
    sh('xfs_freeze', '-f', MNT)
    try:
        t0 = time.time()
        out, (g, k) = deltas(lambda: subprocess.run(['md5sum', path('x2')], stdout=subprocess.PIPE,
                                                    text=True, timeout=60), 'granted', 'kernel_refused')
        took = time.time() - t0
    finally:
        sh('xfs_freeze', '-u', MNT)
    check('frozen_no_wait', out.returncode == 0 and out.stdout.split()[0] == sums['x2'] and
          (g, k) == (0, 1), 'exit %d in %.1fs, granted +%d, refused +%d' % (out.returncode, took, g, k))

    propose('u2', ino('u'))
    got, (g, k) = deltas(lambda: md5('u2'), 'granted', 'kernel_refused')
    check('refused_unsealed', got == sums['u2'] and (g, k) == (0, 1), 'granted +%d, refused +%d' % (g, k))

    def internal():
        got = []
        for donor in (rt_bitmap_inode(), os.stat(MNT).st_ino, 1 << 40):
            propose('b', donor)
            got.append(md5('b'))
        return got
    got, (g, k) = deltas(internal, 'granted', 'kernel_refused')
    check('refused_internal', got == [sums['b']] * 3 and (g, k) == (0, 3),
          'granted +%d, refused +%d' % (g, k))

    # s is 0600: uid 1000 may read its clone s2, not s, so it may not share s's cache.
    propose('s2', ino('s'))
    user, (gu, ku) = deltas(lambda: md5_as('s2', USER), 'granted', 'kernel_refused')
    root, (gr, kr) = deltas(lambda: md5('s2'), 'granted', 'kernel_refused')
    check('trust_unreadable', user == root == sums['s2'] and (gu, ku, gr, kr) == (0, 1, 1, 0),
          'uid %d: granted +%d refused +%d; root: granted +%d refused +%d' % (USER, gu, ku, gr, kr))

    pipe_own_bytes(sums)
    unseal_donor()
    no_denial()
    residency(sums)

    propose('f', ino('f'))
    propose('f2', ino('f'))
    drop_caches()         # f2's inode too: its extents are read in from the B-tree
    got, (g, k, v) = deltas(lambda: md5('f2'), 'granted', 'kernel_refused', 'verified')
    check('fragmented', got == sums['f2'] and (g, k, v) == (1, 0, 1) and EXTENTS['f2'] >= 100,
          '%d extents; granted +%d, refused +%d, verified +%d' % (EXTENTS['f2'], g, k, v))

    eofblocks_trimmed()
    ro_snapshot_untouched()
    wb_error_refused()
    dax_refused()
    uprobe_own_text()
    sh('bpftool', 'struct_ops', 'unregister', 'name', 'pcs_any')


def pipe_own_bytes(sums):
    """uid 1000 splices its shared w2 into a pipe and closes it; root unseals
    and rewrites the donor w in place; the pipe still holds w2's bytes."""
    propose('w2', ino('w'))
    spliced_r, spliced_w = os.pipe()
    rewritten_r, rewritten_w = os.pipe()

    def attacker():
        pr, pw = os.pipe()
        fcntl.fcntl(pw, F_SETPIPE_SZ, MiB)
        fd = os.open(path('w2'), os.O_RDONLY)
        n = 0
        while n < MiB:
            n += os.splice(fd, pw, MiB - n, offset_src=n)
        os.close(fd)
        os.write(spliced_w, b'.')
        os.read(rewritten_r, 1)
        got = b''
        while len(got) < MiB:
            got += os.read(pr, MiB - len(got))
        return hashlib.md5(got).hexdigest()

    g0 = vmstat('pcshare_granted')
    result = {}
    t = threading.Thread(target=lambda: result.update(md5=as_user(attacker)))
    t.start()
    os.read(spliced_r, 1)
    granted = vmstat('pcshare_granted') - g0
    seal('w', False)
    with open(path('w'), 'r+b') as f:
        f.write(os.urandom(MiB))
        f.flush()
        os.fsync(f.fileno())
    os.write(rewritten_w, b'.')
    t.join(60)
    check('pipe_own_bytes', result.get('md5') == sums['w2'] and granted == 1,
          'pipe held %s, w2 is %s; granted +%d' % (result.get('md5'), sums['w2'], granted))


def unseal_donor():
    """Once the donor a is unsealed, its cache never reads a's blocks again:
    an open b reads what is cached, and gets EIO for the rest."""
    propose('b', ino('a'))
    fd, (g,) = deltas(lambda: os.open(path('b'), os.O_RDONLY), 'granted')
    err = None
    try:
        first = os.pread(fd, MiB, 0)
        seal('a', False)
        again = os.pread(fd, MiB, 0)
        try:
            os.pread(fd, 4096, 32 * MiB)
        except OSError as e:
            err = e.errno
    finally:
        seal('a', True)
        os.close(fd)
    check('unseal_donor', g == 1 and first == DATA[:MiB] and again == first and err == EIO,
          'granted +%d, cached bytes right %s, beyond: errno %s' % (g, again == first, err))


def no_denial():
    """A shared open held by uid 1000 makes nothing fail: root unseals w2, opens
    it for writing, writes, truncates, opens it O_RDONLY|O_TRUNC; the attacker's
    fsync through its shared open works."""
    propose('w2', ino('w2'))
    opened_r, opened_w = os.pipe()
    done_r, done_w = os.pipe()

    def holder():
        fd = os.open(path('w2'), os.O_RDONLY)
        os.pread(fd, 4096, 0)
        os.write(opened_w, b'.')
        os.read(done_r, 1)
        os.fsync(fd)
        os.close(fd)
        return 'fsync ok'

    g0 = vmstat('pcshare_granted')
    result = {}
    t = threading.Thread(target=lambda: result.update(r=as_user(holder)))
    t.start()
    os.read(opened_r, 1)
    granted = vmstat('pcshare_granted') - g0
    errs = []
    for what, op in (('chattr -i', lambda: seal('w2', False)),
                     ('open O_WRONLY', lambda: os.close(os.open(path('w2'), os.O_WRONLY))),
                     ('write', lambda: open(path('w2'), 'r+b').write(b'x')),
                     ('truncate', lambda: os.truncate(path('w2'), MiB // 2)),
                     ('O_RDONLY|O_TRUNC', lambda: os.close(os.open(path('w2'), os.O_RDONLY | os.O_TRUNC)))):
        try:
            op()
        except OSError as e:
            errs.append('%s: %s' % (what, e))
    size = os.stat(path('w2')).st_size
    os.write(done_w, b'.')
    t.join(60)
    check('no_denial', granted == 1 and not errs and size == 0 and result.get('r') == 'fsync ok',
          'granted +%d, %s, size %d, holder: %s' % (granted, errs, size, result.get('r')))


def residency(sums):
    """mincore through a shared open shows the cache only to CAP_FOWNER, not to
    e's owner (the cache holds what every sharer read); fadvise fills it."""
    propose('e', ino('a'))
    drop_caches()

    def user_view():
        fd = os.open(path('e'), os.O_RDONLY)
        try:
            return resident_pages(fd, SIZE)
        finally:
            os.close(fd)
    user = as_user(user_view)
    fd = os.open(path('e'), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)     # no readahead: exact counts
        cold = resident_pages(fd, SIZE)
        os.pread(fd, MiB, 0)
        read1 = resident_pages(fd, SIZE)
        os.posix_fadvise(fd, MiB, MiB, os.POSIX_FADV_WILLNEED)
        time.sleep(0.5)
        hinted = resident_pages(fd, SIZE)
    finally:
        os.close(fd)
    pages = SIZE // 4096
    check('mincore_hidden', user == pages and cold == 0 and read1 == 256,
          'uid %d sees %d of %d pages; root: %d cold, %d after reading 1 MiB' % (
              USER, user, pages, cold, read1))
    check('cache_hints', hinted == 512, 'after WILLNEED of 1 MiB more: %d pages' % hinted)


XFS_IOC_FREE_EOFBLOCKS = (2 << 30) | (128 << 16) | (ord('X') << 8) | 58   # _IOR('X', 58, 128 B)
XFS_EOF_FLAGS_SYNC = 1


def write_with_eofblocks(name):
    """name gets 4 MiB written by two opens: the second close keeps XFS's
    speculative preallocation past EOF (a dirty release), which writeback
    allocates.  Returns (bytes written, bytes allocated past EOF)."""
    data = os.urandom(4 * MiB)
    for flags, part in ((os.O_TRUNC, data[:2 * MiB]), (os.O_APPEND, data[2 * MiB:])):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | flags, 0o644)
        os.write(fd, part)
        os.close(fd)
    os.sync()
    return data, os.stat(name).st_blocks * 512 - len(data)


def eofblocks_trimmed():
    """t was written by two opens (the second close keeps XFS's speculative
    preallocation past EOF, and writeback allocates it), then sealed and cloned
    to t2.  XFS frees those blocks when it likes (blockgc, every 300 s; here at
    once by XFS_IOC_FREE_EOFBLOCKS): an open t2 shared with t reads on, every
    byte right."""
    data, past_eof = write_with_eofblocks(path('t'))
    seal('t')
    clone('t', 't2')
    seal('t2')
    propose('t2', ino('t'))
    fd, (g,) = deltas(lambda: os.open(path('t2'), os.O_RDONLY), 'granted')
    err = None
    got = b''
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)     # the rest is read after the trim
        got = os.pread(fd, 4096, 0)
        mnt = os.open(MNT, os.O_RDONLY)
        try:
            args = (1).to_bytes(4, 'little') + XFS_EOF_FLAGS_SYNC.to_bytes(4, 'little')
            fcntl.ioctl(mnt, XFS_IOC_FREE_EOFBLOCKS, args + bytes(120))
        finally:
            os.close(mnt)
        while len(got) < len(data):
            got += os.pread(fd, MiB, len(got))
    except OSError as e:
        err = e.errno
    finally:
        os.close(fd)
    left = os.stat(path('t')).st_blocks * 512 - len(data)
    check('eofblocks_trimmed', past_eof > 0 and g == 1 and err is None and got == data and left == 0,
          '%d bytes past EOF before, %d after; granted +%d; errno %s after %d bytes, right %s' % (
              past_eof, left, g, err, len(got), got == data[:len(got)]))


def ro_snapshot_untouched():
    """A copy of a live filesystem (frozen for it) whose donor r has blocks past
    EOF, mounted ro,norecovery: XFS frees nothing there, nor may sharing (it
    would write a log that was never replayed).  An open of r2 with r as its
    donor is refused, r2 reads its bytes, the image is unchanged."""
    img, snap, live, ro = WORK + '/ro.img', WORK + '/ro.snap', WORK + '/ro', WORK + '/ro2'
    for d in (live, ro):
        os.makedirs(d, exist_ok=True)
    new_xfs(img, '512M', live)
    data, past_eof = write_with_eofblocks(live + '/r')
    sh('cp', '--reflink=always', live + '/r', live + '/r2')
    for n in ('r', 'r2'):
        set_immutable(live + '/' + n)
    sh('xfs_freeze', '-f', live)
    try:
        sh('cp', '--sparse=always', img, snap)
    finally:
        sh('xfs_freeze', '-u', live)
    sh('mount', '-o', 'loop,ro,norecovery,nouuid', snap, ro)

    def image_md5():
        with open(snap, 'rb') as f:
            return hashlib.file_digest(f, 'md5').hexdigest()
    before = image_md5()
    got, (g, r) = read_proposed(ro + '/r2', ro + '/r')
    left = os.stat(ro + '/r').st_blocks * 512 - len(data)
    sh('umount', ro)
    after = image_md5()
    check('ro_snapshot_untouched', past_eof > 0 and left == past_eof and (g, r) == (0, 1) and
          got == data and before == after,
          '%d bytes past EOF, %d left; granted +%d, refused +%d; bytes right %s; image unchanged %s' % (
              past_eof, left, g, r, got == data, before == after))


def dm_table(*segments):
    """Load and switch to a device-mapper table for WB_DM: (start, length, target args)."""
    table = ''.join('%d %d %s\n' % seg for seg in segments)
    log('dm table:', table.replace('\n', '; '))
    sh('dmsetup', 'suspend', WB_DM)
    subprocess.run(['dmsetup', 'load', WB_DM], input=table, text=True, check=True)
    sh('dmsetup', 'resume', WB_DM)


def wb_error_refused():
    """v's writeback fails (a device-mapper error target over its blocks while
    it is rewritten in place), so its page cache holds bytes no block has;
    then v is cloned to v2 and both are sealed.  Neither opens shared, with
    either as the donor: v reads its page cache (as on a stock kernel), v2 its
    own blocks, which are v's old bytes."""
    os.environ['DM_DISABLE_UDEV'] = '1'       # no udev in the VM: dmsetup makes /dev/mapper itself
    os.makedirs(WB + '/m', exist_ok=True)
    sh('truncate', '-s', '512M', WB + '/img')
    loop = subprocess.run(['losetup', '-f', '--show', WB + '/img'], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()
    sectors = int(subprocess.run(['blockdev', '--getsz', loop], check=True,
                                 stdout=subprocess.PIPE, text=True).stdout)
    sh('dmsetup', 'create', WB_DM, '--table', '0 %d linear %s 0' % (sectors, loop))
    sh('mkfs.xfs', '-q', '-m', 'reflink=1', '/dev/mapper/' + WB_DM)
    sh('mount', '/dev/mapper/' + WB_DM, WB + '/m')
    v, v2 = WB + '/m/v', WB + '/m/v2'
    old, new = os.urandom(MiB), os.urandom(MiB)
    with open(v, 'wb') as f:
        f.write(old)
        f.flush()
        os.fsync(f.fileno())
    out = subprocess.run(['xfs_io', '-r', '-c', 'fiemap', v], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    ext = [tuple(map(int, m)) for m in re.findall(r'\d+: \[(\d+)\.\.(\d+)\]: (\d+)\.\.(\d+)', out)]
    start, end = ext[0][2], ext[0][3] + 1          # 512-byte sectors of the device
    dm_table((0, start, 'linear %s 0' % loop), (start, end - start, 'error'),
             (end, sectors - end, 'linear %s %d' % (loop, end)))
    fsync_err = None
    fd = os.open(v, os.O_WRONLY)
    try:
        os.pwrite(fd, new, 0)
        os.fsync(fd)
    except OSError as e:
        fsync_err = e.errno
    finally:
        os.close(fd)
    dm_table((0, sectors, 'linear %s 0' % loop))
    fd = os.open(v, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, MiB)                      # aligned, as O_DIRECT needs
        os.preadv(fd, [buf], 0)
        on_disk = bytes(buf)
    finally:
        os.close(fd)
    sh('cp', '--reflink=always', v, v2)
    for name in (v, v2):
        set_immutable(name)
    got2, (g2, r2) = read_proposed(v2, v)
    got1, (g1, r1) = read_proposed(v, v2)
    check('wb_error_refused', (fsync_err, on_disk == old, g1, r1, g2, r2) == (EIO, True, 0, 1, 0, 1) and
          got1 == new and got2 == old,
          'fsync errno %s, disk has the old bytes %s; v: granted +%d refused +%d, reads its cache %s; '
          'v2: granted +%d refused +%d, reads its blocks %s' % (
              fsync_err, on_disk == old, g1, r1, got1 == new, g2, r2, got2 == old))


STATX_ATTR_DAX = 0x00200000
SYS_statx = 332         # x86_64


def statx_attributes(name):
    """statx(2)'s stx_attributes (Python 3.11 has no os.statx)."""
    buf = ctypes.create_string_buffer(256)
    if libc.syscall(SYS_statx, -100, name.encode(), 0, 0xfff, buf):   # AT_FDCWD, STATX_BASIC_STATS
        raise OSError(ctypes.get_errno(), 'statx ' + name)
    return int.from_bytes(buf.raw[8:16], 'little')


def dax_refused():
    """On pmem (the VM's memmap= region, /dev/pmem0), XFS mounted dax=always:
    d and its clone d2, sealed, read through no page cache at all.  An open
    of d2 with d as its donor is refused; d2 reads its own bytes."""
    if not os.path.exists(PMEM):
        check('dax_refused', False, '%s missing: the VM boots with memmap=, the kernel needs '
              'CONFIG_X86_PMEM_LEGACY, CONFIG_BLK_DEV_PMEM, CONFIG_FS_DAX' % PMEM)
        return
    os.makedirs(DAX, exist_ok=True)
    sh('mkfs.xfs', '-q', '-f', '-m', 'reflink=1', PMEM)
    sh('mount', '-o', 'dax=always', PMEM, DAX)
    d, d2 = DAX + '/d', DAX + '/d2'
    data = os.urandom(MiB)
    with open(d, 'wb') as f:
        f.write(data)
    sh('cp', '--reflink=always', d, d2)
    for name in (d, d2):
        set_immutable(name)
    dax = all(statx_attributes(n) & STATX_ATTR_DAX for n in (d, d2))
    got, (g, r) = read_proposed(d2, d)
    check('dax_refused', dax and (g, r) == (0, 1) and got == data,
          'both DAX %s; granted +%d, refused +%d; bytes right %s' % (dax, g, r, got == data))


def uprobe_own_text():
    """x2 runs shared with x.  A uprobe on x2 hits a run that started before it
    and one that started after, and once removed leaves no breakpoint: both
    runs exit 0 (a breakpoint left behind is a SIGTRAP)."""
    propose('x', ino('x'))
    propose('x2', ino('x'))
    if not os.path.isdir(TRACING + '/events'):
        sh('mount', '-t', 'tracefs', 'nodev', TRACING)
    off = file_offset(path('x2'), 'tick')
    g0 = vmstat('pcshare_granted')
    first = subprocess.Popen([path('x2'), '40'])
    time.sleep(0.5)
    write_tracing('uprobe_events', 'p:pcs/tick %s:0x%x\n' % (path('x2'), off))
    write_tracing('events/pcs/tick/enable', '1')
    time.sleep(1.0)

    def hits():
        # uprobe_profile: "<file> <event name> <hits>" (the name without its group)
        with open(TRACING + '/uprobe_profile') as f:
            return sum(int(l.split()[2]) for l in f if l.split()[:2] == [path('x2'), 'tick'])
    hits_first = hits()
    second = subprocess.Popen([path('x2'), '20'])
    time.sleep(1.0)
    hits_both = hits()
    write_tracing('events/pcs/tick/enable', '0')
    write_tracing('uprobe_events', '-:pcs/tick')
    rcs = (first.wait(60), second.wait(60))
    granted = vmstat('pcshare_granted') - g0
    check('uprobe_own_text', hits_first > 0 and hits_both > hits_first + 5 and rcs == (0, 0) and
          granted == 2, 'hits %d then %d, exits %s, granted +%d' % (hits_first, hits_both, rcs, granted))


def gate(names):
    """dupcache gate --max-dup <one copy> around reading names: (exit code, its JSON)."""
    out = WORK + '/gate.json'
    cmd = [BIN, 'gate', '--max-dup', str(SIZE), '--json', out, MNT, '--',
           'sh', '-c', 'cat "$@" >/dev/null', 'sh'] + [os.path.join(MNT, n) for n in names]
    log('$', ' '.join(cmd))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in p.stdout.splitlines():
        print('[gate]', line, flush=True)
    try:
        with open(out) as f:
            return p.returncode, json.load(f)
    except (OSError, ValueError):
        return p.returncode, {'metrics': {}}


def read_files(names):
    return {n: md5(n) for n in names}



EXTENTS = {}


def main():
    if subprocess.run(['bpftool', 'btf', 'dump', 'file', '/sys/kernel/btf/vmlinux'],
                      stdout=subprocess.PIPE, text=True).stdout.find("STRUCT 'pcshare_ops'") < 0:
        check('btf_type', False, 'the kernel has no struct pcshare_ops (CONFIG_PCSHARE)')
        return
    check('btf_type', True)
    sums = setup()
    EXTENTS['f2'] = extents('f2')
    want = sums['a']
    prog_ids0, map_ids0 = bpf_ids('prog'), bpf_ids('map')

    # Without a policy: four copies, and the report says three are duplicates.
    drop_caches()
    c0 = cached_kib()
    got = read_files('abcd')
    growth = cached_kib() - c0
    log('Cached: grew %d KiB reading a b c d without a policy (one copy: %d KiB)' % (growth, ONE_COPY_KIB))
    rep = report()
    check('without_policy', growth >= 4 * ONE_COPY_KIB * 0.95 and
          rep['totals']['dup_bytes'] == 3 * SIZE and set(got.values()) == {want},
          'Cached: +%d KiB, dup_bytes %d' % (growth, rep['totals']['dup_bytes']))
    rc, g = gate('abcd')
    check('gate_without_policy', rc == 6 and g['metrics'].get('peak_dup_bytes') == 3 * SIZE,
          'exit %d, peak_dup_bytes %s, want exit 6 and %d' % (rc, g['metrics'].get('peak_dup_bytes'),
                                                              3 * SIZE))
    adversary(sums)
    with_daemon(sums, prog_ids0, map_ids0)


def with_daemon(sums, prog_ids0, map_ids0):
    want = sums['a']
    d = Daemon('-d', '600')
    first = d.wait_report()
    m = first['enforcement']['policy_map']
    donor_of = donors(first)
    # Sets: a..e, f f2, x x2, s s2, t t2 sealed; u u2 not (w, w2 were rewritten: no set).
    check('policy_map', (m['files'], m['sets'], m['left_out'], m['unsealed']) == (13, 5, 0, 2) and
          donor_of['b'] in 'abcde' and donor_of['f'] in ('f', 'f2') and donor_of['t2'] in ('t', 't2'),
          '%s %s' % (m, donor_of))
    donor = donor_of['a']
    members = [n for n in 'abcd' if n != donor]
    d.send(signal.SIGUSR1)          # the off switch first, on a cold cache
    time.sleep(0.5)
    drop_caches()
    check('switch_off', shares_during(lambda: md5(members[0])) == 0, 'shared while off')
    d.send(signal.SIGUSR2)
    time.sleep(0.5)
    drop_caches()
    c0 = cached_kib()
    # Clones first: the donor's inode was dropped too, the kernel reads it in.
    got = {}
    granted = shares_during(lambda: got.update(read_files(members + [donor])))
    growth = cached_kib() - c0
    log('Cached: grew %d KiB reading a b c d with the policy (one copy: %d KiB)' % (growth, ONE_COPY_KIB))
    check('one_copy', growth <= ONE_COPY_KIB * 1.05, 'Cached: +%d KiB' % growth)
    check('granted', granted == 4, 'pcshare_granted +%d, want +4 (the donor reads through the cache too)'
          % granted)
    check('checksums', all(got[n] == want for n in members + [donor]), str(got))
    rep = report()
    cached = cached_by_file(rep)
    check('report_dup_zero', rep['totals']['dup_bytes'] == 0 and
          all(cached[n] == 0 for n in members + [donor]),
          'dup_bytes %d, cached %s' % (rep['totals']['dup_bytes'], cached))
    g0 = vmstat('pcshare_granted')
    rc, g = gate('abcd')
    granted = vmstat('pcshare_granted') - g0
    check('gate_one_copy', rc == 0 and g['metrics'].get('peak_dup_bytes', SIZE + 1) <= SIZE and
          granted == 4, 'exit %d, peak_dup_bytes %s, pcshare_granted +%d' % (
              rc, g['metrics'].get('peak_dup_bytes'), granted))

    # The kernel checks for itself: a clone unsealed, changed and sealed again
    # after the daemon's scan; the policy still proposes, the kernel compares
    # the block maps again (its remembered comparison is stale) and refuses.
    victim = 'e' if donor != 'e' else members[0]
    block = os.urandom(4096)
    seal(victim, False)
    with open(path(victim), 'r+b') as f:
        f.seek(10 * 4096)
        f.write(block)
        f.flush()
        os.fsync(f.fileno())
    seal(victim)
    v_sum = hashlib.md5(DATA[:10 * 4096] + block + DATA[11 * 4096:]).hexdigest()
    got, (g, k, v) = deltas(lambda: md5(victim), 'granted', 'kernel_refused', 'verified')
    check('kernel_refused', (g, k, v) == (0, 1, 1) and got == v_sum,
          'granted +%d, refused +%d, verified +%d' % (g, k, v))

    clone_path = path([n for n in members if n != victim][0])
    fd = os.open(clone_path, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            check('mmap_read', hashlib.md5(mm).hexdigest() == want, 'wrong bytes through mmap')
    finally:
        os.close(fd)

    # kill -9: the registration stays, but it stops proposing.
    d.stop(signal.SIGKILL)
    time.sleep(STALE + 1)
    check('kill9_still_registered', registered() == ['dupcache_share'], str(registered()))
    drop_caches()
    n = shares_during(lambda: read_files(members[:2]))
    check('kill9_no_new_shares', n == 0, 'granted +%d' % n)

    # Restart: the stale registration is replaced; the trust domain on the way.
    os.makedirs(CG + '/sub', exist_ok=True)
    for sub in ('upper', 'work', 'merged'):
        os.makedirs(os.path.join(OVL, sub), exist_ok=True)
    sh('mount', '-t', 'overlay', 'overlay', '-o', 'lowerdir=%s,upperdir=%s/upper,workdir=%s/work' % (
        MNT, OVL, OVL), OVL + '/merged')
    prom = WORK + '/dupcache.prom'
    d = Daemon('-d', '1', '--trust-uid', '0', '--trust-cgroup', CG, '--metrics', prom)
    r0 = d.wait_report()
    end = time.time() + 10   # the replaced registration is freed asynchronously
    while time.time() < end and registered() != ['dupcache_share']:
        time.sleep(0.2)
    check('restart', d.wait_stderr('did not stop cleanly') and registered() == ['dupcache_share'],
          'stderr %r, registered %s' % (d.err, registered()))
    outside0 = r0['enforcement']['policy']['outside_domain']

    def opener(cgroup, uid, file):
        def pre():
            with open(cgroup + '/cgroup.procs', 'w') as f:
                f.write(str(os.getpid()))
            if uid:
                os.setgid(uid)
                os.setuid(uid)
        subprocess.run(['md5sum', file], preexec_fn=pre, check=True, stdout=subprocess.DEVNULL)

    d2 = donors(r0)['a']
    others = [n for n in 'abcd' if n not in (d2, victim)]   # two or three clones
    m1, m2, m3 = others[0], others[1], others[-1]
    drop_caches()
    ins = shares_during(lambda: opener(CG + '/sub', 0, path(m1)))
    out_cg = shares_during(lambda: opener('/sys/fs/cgroup', 0, path(m2)))
    out_uid = shares_during(lambda: opener(CG + '/sub', USER, path(m3)))
    # Through overlayfs, the lower file is opened with the mounter's (root's)
    # credentials: the policy is told the opener's own.
    ovl_root = shares_during(lambda: opener(CG + '/sub', 0, os.path.join(OVL, 'merged', m2)))
    ovl_user = shares_during(lambda: opener(CG + '/sub', USER, os.path.join(OVL, 'merged', m3)))
    n = len(d.lines)
    last = d.wait_report(after=n)
    outside = last['enforcement']['policy']['outside_domain'] - outside0
    check('trust_domain', (ins, out_cg, out_uid, ovl_root, ovl_user, outside) == (1, 0, 0, 1, 0, 3),
          'shares in/other cgroup/other uid/overlay root/overlay uid %d %d/%d/%d/%d/%d, '
          'outside_domain +%d' % (USER, ins, out_cg, out_uid, ovl_root, ovl_user, outside))
    sh('umount', OVL + '/merged')

    # The donor map follows the rescans: what the kernel's map holds, read back
    # with bpftool, is every sealed member of a's set -> the donor.
    def a_set(mapping, names):
        inos = {ino(n) for n in names}
        return {k: v for k, v in mapping.items() if k in inos}

    members_now = [n for n in 'abcde' if n != victim]   # the set as the daemon sees it
    before = donor_map()
    seal(m1, False)
    with open(path(m1), 'ab') as f:   # m1 grows: no clone any more
        f.write(b'!')
    n = len(d.lines)
    after_rep = d.wait_report(after=n + 1)            # a whole rescan after the write
    after = donor_map()
    members_now.remove(m1)
    want_before = {ino(n): ino(d2) for n in members_now + [m1]}
    want_after = {ino(n): ino(d2) for n in members_now}
    check('map_follows_rescan',
          a_set(before, 'abcde') == want_before and a_set(after, 'abcde') == want_after and
          after_rep['enforcement']['policy_map']['files'] == len(after),
          'map before %s, after %s' % (a_set(before, 'abcde'), a_set(after, 'abcde')))

    # Clean stop: nothing of ours stays in the kernel.
    rc = d.stop(signal.SIGTERM)
    end = time.time() + 10
    while time.time() < end and (bpf_ids('prog') - prog_ids0 or bpf_ids('map') - map_ids0):
        time.sleep(0.2)
    left = (bpf_ids('prog') - prog_ids0, bpf_ids('map') - map_ids0, registered())
    check('clean_stop', rc == 0 and left == (set(), set(), []) and
          any('policy unregistered' in e for e in d.err),
          'exit %s, left progs/maps/struct_ops %s' % (rc, left))

    # The metrics file holds the last report's figures.
    last = json.loads(d.lines[-1])
    e = last['enforcement']
    want_m = {'dupcache_clone_sets': last['totals']['sets'],
              'dupcache_clone_set_files': last['totals']['files'],
              'dupcache_saving_bytes': last['totals']['saving_bytes'],
              'dupcache_sharing_on': 1,
              'dupcache_policy_map_files': e['policy_map']['files'],
              'dupcache_policy_map_left_out_files': e['policy_map']['left_out'],
              'dupcache_policy_map_unsealed_files': e['policy_map']['unsealed']}
    for k in ('proposed', 'not_a_clone', 'outside_domain', 'stale', 'off', 'own_open'):
        want_m['dupcache_policy_answers_total{answer="%s"}' % k] = e['policy'][k]
    for k in ('granted', 'policy_refused', 'kernel_refused', 'released', 'verified'):
        want_m['dupcache_kernel_shares_total{event="%s"}' % k] = e['kernel'][k]
    with open(prom) as f:
        got = {}
        for line in f:
            if not line.startswith('#'):
                key, value = line.rsplit(' ', 1)
                got[key] = float(value)
    check('metrics', all(got.get(k) == v for k, v in want_m.items()) and
          e['kernel']['granted'] == vmstat('pcshare_granted'),
          'metrics %s, want %s' % ({k: got.get(k) for k in want_m}, want_m))

    # A full map: whole sets that do not fit are left out, and said so.
    d = Daemon('-n', '1', '--max-files', '1')
    rc = d.stop_when_done()
    full = json.loads(d.lines[0])['enforcement']['policy_map'] if d.lines else {}
    check('map_full', rc == 0 and full.get('files') == 0 and
          full.get('left_out') == e['policy_map']['files'] and registered() == [],
          'exit %s, policy_map %s, registered %s' % (rc, full, registered()))


try:
    main()
except Exception as e:  # a broken step is a failure, never a skip
    check('run', False, '%s: %s' % (type(e).__name__, e))
finally:
    cleanup()
sys.exit(1 if failed else 0)
