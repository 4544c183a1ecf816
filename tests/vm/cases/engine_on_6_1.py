#!/usr/bin/python3
"""vmtest case (runs inside the VM, as root, from tests/vm/guest.sh).

On a loop XFS (reflink=1) on tmpfs: one 8 MiB file + 3 reflink clones, all
read. Checks, each reported on $VMTEST_RESULTS as PASS/FAIL NAME:
  engine_on_6_1.snapshot  `dupcache report --json -n 0 MNT` == oracle (totals)
  bpf_loads               `dupcache report --watch` loads + attaches its BPF
                          programs (on failure: rerun with DUPCACHE_DEBUG=1,
                          the libbpf/verifier log goes to the console between
                          BEGIN/END DUPCACHE_DEBUG markers)
  engine_on_6_1.watch     clones dropped (POSIX_FADV_DONTNEED) then read again
                          inside a `--watch` window: end state == oracle,
                          the engine saw the pages come in
Exit code: 0 only if all of them passed (guest.sh turns it into
PASS/FAIL engine_on_6_1).
"""
import json
import os
import subprocess
import sys
import threading
import time

REPO = os.environ.get('VMTEST_REPO', '/work/main')
RESULTS = os.environ.get('VMTEST_RESULTS', '/dev/stdout')
BIN = os.environ.get('VMTEST_BIN') or os.path.join(REPO, 'dupcache')
ORACLE = os.path.join(REPO, 'tests', 'oracle.py')
PY = '/usr/bin/python3'
MiB = 1 << 20
SIZE = 8 * MiB
WATCH_SECONDS = int(os.environ.get('VMTEST_WATCH_SECONDS', '2'))
TOTALS = ('files', 'shared_bytes', 'cached_bytes', 'dup_bytes')
WORK = '/tmp/engine_on_6_1'
IMG = WORK + '/xfs.img'
MNT = WORK + '/mnt'

failed = []


def log(*a):
    print('[engine_on_6_1]', *a, flush=True)


def report(name, ok, why=''):
    line = '%s %s' % ('PASS' if ok else 'FAIL', name)
    log(line + ('' if ok or not why else ': ' + why))
    with open(RESULTS, 'a') as f:
        f.write(line + '\n')
    if not ok:
        failed.append(name)


def run(cmd, **kw):
    log('$', ' '.join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def read_all(path):
    with open(path, 'rb') as f:
        while f.read(1 << 20):
            pass


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def oracle():
    out = subprocess.run([PY, ORACLE, MNT], check=True, stdout=subprocess.PIPE)
    return json.loads(out.stdout)


def totals(j):
    return {k: j.get('totals', {}).get(k) for k in TOTALS}


def compare(name, got, want, extra_ok=True, why=''):
    g, w = totals(got), totals(want)
    log('%s: dupcache %s' % (name, g))
    log('%s: oracle   %s' % (name, w))
    diffs = ['%s: dupcache %s, oracle %s' % (k, g[k], w[k])
             for k in TOTALS if g[k] != w[k]]
    if not extra_ok:
        diffs.append(why)
    report(name, not diffs, '; '.join(diffs))


def setup():
    os.makedirs(MNT, exist_ok=True)
    with open(IMG, 'wb') as f:
        f.truncate(512 * MiB)           # mkfs.xfs wants >= 300 MB; sparse on tmpfs
    run(['mkfs.xfs', '-q', '-f', '-m', 'reflink=1', IMG])
    run(['mount', '-o', 'loop', '-t', 'xfs', IMG, MNT])
    a = os.path.join(MNT, 'a')
    with open(a, 'wb') as f:
        f.write(os.urandom(SIZE))
        f.flush()
        os.fsync(f.fileno())
    paths = [a]
    for n in 'bcd':
        p = os.path.join(MNT, n)
        run(['cp', '--reflink=always', a, p])
        paths.append(p)
    run(['sync'])
    with open('/proc/sys/vm/drop_caches', 'w') as f:
        f.write('3\n')
    for p in paths:
        read_all(p)
    return paths


def watch(paths, debug=False, seconds=None, reread=()):
    """Run report --watch; returns (rc, json or None, stderr, ready, t_read)."""
    cmd = [BIN, 'report', '--json', '--watch', str(seconds or WATCH_SECONDS),
           '-n', '0', MNT]
    env = dict(os.environ)
    if debug:
        env['DUPCACHE_DEBUG'] = '1'
    log('$', ('DUPCACHE_DEBUG=1 ' if debug else '') + ' '.join(cmd))
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err, ready = [], threading.Event()

    def reader():
        for line in iter(p.stderr.readline, b''):
            line = line.decode(errors='replace')
            err.append(line)
            if 'dupcache: watching' in line:
                ready.set()
        ready.set()
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    t0 = time.monotonic()
    ready.wait(300)                     # TCG: loading + verifying is slow
    t_ready = time.monotonic() - t0
    up = any('dupcache: watching' in ln for ln in err)
    t_read = None
    if up:
        log('watching after %.1fs' % t_ready)
        t1 = time.monotonic()
        for q in reread:
            read_all(q)
        t_read = time.monotonic() - t1
        if reread:
            log('re-read %d clones in %.2fs (window %ds)'
                % (len(reread), t_read, seconds or WATCH_SECONDS))
    try:
        out, _ = p.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    th.join(10)
    j = None
    try:
        j = json.loads(out) if out.strip() else None
    except ValueError:
        log('unparsable stdout: %r' % out[:2000])
    return p.returncode, j, ''.join(err), up, t_read


def main():
    log('kernel', os.uname().release, '| BTF:',
        os.path.exists('/sys/kernel/btf/vmlinux'), '| binary:', BIN)
    paths = setup()

    # 1. snapshot (no BPF)
    want = oracle()
    hand = {'files': 4, 'shared_bytes': 4 * SIZE, 'cached_bytes': 4 * SIZE,
            'dup_bytes': 3 * SIZE}
    if totals(want) != hand:
        log('note: oracle %s != hand-computed %s' % (totals(want), hand))
    r = subprocess.run([BIN, 'report', '--json', '-n', '0', MNT],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sys.stdout.write(r.stderr.decode(errors='replace'))
    if r.returncode != 0:
        report('engine_on_6_1.snapshot', False, 'exit %d' % r.returncode)
    else:
        compare('engine_on_6_1.snapshot', json.loads(r.stdout), want,
                totals(want) == hand, 'oracle != hand-computed %s' % hand)

    # 2. watch: drop the clones, read them again inside the window
    for q in paths[1:]:
        drop(q)
    rc, j, err, up, t_read = watch(paths, reread=paths[1:])
    sys.stdout.write(err)
    report('bpf_loads', up, 'exit %s, no "dupcache: watching"' % rc)
    # 6.1 has every tracepoint the engine uses, and this VM mounts no
    # tracefs or debugfs: the engine must not say it lacks one.
    lacking = [ln for ln in err.splitlines()
               if 'tracepoint' in ln or 'tracefs' in ln or 'debugfs' in ln]
    report('engine_on_6_1.no_missing_tracepoint', not lacking and
           not os.path.exists('/sys/kernel/tracing/events'),
           'said %r' % lacking)
    if not up:
        log('rerunning with DUPCACHE_DEBUG=1 for the libbpf/verifier log')
        rc2, _, err2, _, _ = watch(paths, debug=True, seconds=1)
        print('----- BEGIN DUPCACHE_DEBUG (exit %s) -----' % rc2)
        sys.stdout.write(err2)
        print('----- END DUPCACHE_DEBUG -----', flush=True)
        report('engine_on_6_1.watch', False, 'BPF engine did not load')
        return 1
    if rc != 0 or j is None:
        report('engine_on_6_1.watch', False, 'exit %s, json %s' % (rc, j is not None))
        return 1
    want = oracle()
    w = j.get('window', {})
    log('window:', json.dumps(w), 'peak_dup_bytes:', j.get('peak_dup_bytes'))
    why = []
    if t_read is not None and t_read >= WATCH_SECONDS:
        why.append('re-read took %.1fs >= window' % t_read)
    if w.get('pages_added', 0) < 3 * SIZE // os.sysconf('SC_PAGE_SIZE'):
        why.append('pages_added %s < %d' % (w.get('pages_added'),
                                             3 * SIZE // os.sysconf('SC_PAGE_SIZE')))
    if (j.get('peak_dup_bytes') or 0) < j['totals']['dup_bytes']:
        why.append('peak_dup_bytes < dup_bytes')
    compare('engine_on_6_1.watch', j, want, not why, '; '.join(why))
    return 1 if failed else 0


if __name__ == '__main__':
    try:
        rc = main()
    except Exception as e:              # report, never hang the VM
        import traceback
        traceback.print_exc()
        report('engine_on_6_1.setup', False, repr(e))
        rc = 1
    finally:
        subprocess.run(['umount', MNT], stderr=subprocess.DEVNULL)
    sys.exit(rc)
