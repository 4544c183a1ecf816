#!/usr/bin/python3
"""Tests of `dupcache top` against an independent FIEMAP + mincore oracle.

    /usr/bin/python3 tests/test_top.py --bin ./dupcache [-k NAME]...

Run as root from the repo root.  Prints PASS/FAIL/SKIP per test and a last
line "top: N passed, N failed, N skipped"; exits 1 if any failed.
-k NAME keeps the tests whose name contains NAME (repeatable).

What is checked (P = page size):
  * tty_*: the ncurses view in a tmux pane (private tmux server): header
    and rows against the oracle, keys g s r p h q, resize.
  * batch_*: -b frames and plain frames on a pipe (no -b): layout and the
    human-unit numbers against the oracle; --by file, -s, -r.
  * json_*: JSON Lines, exact bytes against the oracle at quiescence:
    totals, group rows, file rows (fair shares from our own per-page
    oracle below), the cgroup row of pages cached before start.
  * reclaim_*: a memory cgroup with a 24 MiB limit reading 64 MiB of
    clones: reclaimed / refaults of its row, bounded by the kernel's own
    counters (/proc/vmstat pgsteal_file, memory.stat
    workingset_refault_file).  memory.stat pgpgin/pgpgout count charge
    events (one per folio), not pages, so they bound nothing here.
  * cgroup_*: two cgroups each reading one clone: per-cgroup rows.

Determinism: DAMON (proactive reclaim of idle unmapped page cache) is
paused for the run and always restored (finally, atexit, SIGTERM/SIGHUP/
SIGINT); the pages the harness reads stay mapped (fsimg pinning); every
comparison uses an oracle taken twice around the frames it checks, which
must agree.  The binary is copied once at start, so a rebuild by someone
else during the run cannot hand us a half-written file.
"""
import argparse
import atexit
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import oracle                                           # noqa: E402
import fsimg                                            # noqa: E402
from fsimg import (LoopFs, MiB, PAGE, spawn, make_file,  # noqa: E402
                   reflink, clone_range, read_range, cold, pin, drop)
from harness import Fail, Skip, Suite, check            # noqa: E402

P = PAGE
BIN = None




_soft = []


def expect(cond, msg):
    """A failure that is recorded; the test goes on and fails at its end."""
    if not cond:
        _soft.append(msg)
    return cond


SUITE = Suite('top')
test = SUITE.test


def human(n):
    """Same as the C human_bytes()."""
    units = ('B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB')
    v, u = float(n), 0
    while v >= 1024 and u < 6:
        v /= 1024
        u += 1
    if u == 0:
        return '%d B' % n
    return ('%.1f %s' if v < 100 else '%.0f %s') % (v, units[u])


def mib(n):
    return '%d (%s)' % (n, human(n))


# ---------------------------------------------------------------- DAMON

DAMON = '/sys/kernel/mm/damon/admin/kdamonds'
_damon_paused = []


def damon_pause():
    for d in sorted(glob.glob(DAMON + '/[0-9]*')):
        try:
            with open(d + '/state') as f:
                state = f.read().strip()
            if state == 'on':
                with open(d + '/state', 'w') as f:
                    f.write('off')
                _damon_paused.append(d)
        except OSError as e:
            print('warning: cannot pause DAMON %s: %s' % (d, e),
                  file=sys.stderr)


def damon_restore():
    while _damon_paused:
        d = _damon_paused.pop()
        try:
            with open(d + '/state') as f:
                state = f.read().strip()
            if state == 'off':
                with open(d + '/state', 'w') as f:
                    f.write('on')
        except OSError as e:
            print('warning: cannot restore DAMON %s: %s' % (d, e),
                  file=sys.stderr)


# ---------------------------------------------------------------- memcg v1

CG_ROOT = '/sys/fs/cgroup/memory'
_cgroups = []


def memcg_v1():
    return (os.path.isfile(CG_ROOT + '/cgroup.procs') and
            os.path.isfile(CG_ROOT + '/memory.limit_in_bytes'))


def own_memcg():
    """Path of our memory cgroup below the hierarchy ('/' if unknown)."""
    try:
        with open('/proc/self/cgroup') as f:
            for line in f:
                _, ctrl, path = line.rstrip('\n').split(':', 2)
                if 'memory' in ctrl.split(','):
                    return path
    except OSError:
        pass
    return '/'


class Memcg:
    """A child of the v1 memory hierarchy, removed at the end."""

    def __init__(self, tag, limit=None):
        self.name = '/dctest-top-%s-%d' % (tag, os.getpid())
        self.path = CG_ROOT + self.name
        if os.path.isdir(self.path):
            self.remove()
        os.mkdir(self.path)
        _cgroups.append(self)
        if limit is not None:
            with open(self.path + '/memory.limit_in_bytes', 'w') as f:
                f.write(str(limit))

    def join(self):
        """preexec_fn: the child moves itself in before it execs."""
        with open(self.path + '/cgroup.procs', 'w') as f:
            f.write(str(os.getpid()))

    def stat(self):
        out = {}
        with open(self.path + '/memory.stat') as f:
            for line in f:
                k, v = line.split()
                out[k] = int(v)
        return out

    def procs(self):
        try:
            with open(self.path + '/cgroup.procs') as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def remove(self):
        if not os.path.isdir(self.path):
            if self in _cgroups:
                _cgroups.remove(self)
            return
        # Our own readers are killed (by pid); anything else still in it
        # goes back to the cgroup we run in.
        fsimg.kill_children()
        home = CG_ROOT + own_memcg().rstrip('/') + '/cgroup.procs'
        for pid in self.procs():
            try:
                with open(home, 'w') as f:
                    f.write(str(pid))
            except OSError:
                pass
        for i in range(20):
            try:
                os.rmdir(self.path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1 * (i + 1))
        if self in _cgroups:
            _cgroups.remove(self)


def cleanup_cgroups():
    for c in list(reversed(_cgroups)):
        try:
            c.remove()
        except Exception as e:          # noqa: BLE001
            print('warning: cannot remove %s: %s' % (c.path, e),
                  file=sys.stderr)


def read_in(cg, paths, timeout=120):
    """cat paths > /dev/null as a process inside memory cgroup cg."""
    p = spawn(['cat'] + list(paths), stdin=subprocess.DEVNULL,
              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
              preexec_fn=cg.join)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Fail('reader in %s did not finish' % cg.name)
    check(p.returncode == 0, 'reader in %s failed (%d): %s' % (
        cg.name, p.returncode, err.decode(errors='replace')))


def vmstat():
    out = {}
    with open('/proc/vmstat') as f:
        for line in f:
            k, v = line.split()
            out[k] = int(v)
    return out


# ---------------------------------------------------------------- oracle

def fair(paths):
    """Per file: cached, shared, resident pages and the fair dup share.

    Each resident copy of a physical page that has c >= 2 resident copies
    carries floor(P * (c - 1) / c) bytes.  Built from oracle.py's FIEMAP and
    mincore primitives, independently of dupcache.
    """
    files, _ = oracle.walk(paths)
    recs = []
    for path, st, top in files:
        ext, _, res, fst, fs = oracle.scan_file(path, st, top)
        recs.append((path, oracle.page_map(ext, fst.st_size, fs), res,
                     oracle.shared_bytes(ext, fst.st_size)))
    copies = {}
    for _, m, res, _ in recs:
        for i, pp in m.items():
            if res[i]:
                copies[pp] = copies.get(pp, 0) + 1
    out = {}
    for path, m, res, shared in recs:
        share = 0
        for i, pp in m.items():
            c = copies.get(pp, 0)
            if res[i] and c >= 2:
                share += P * (c - 1) // c
        out[path] = {'dup': share, 'cached': P * res.count(), 'shared': shared,
                     'pages': res.count()}
    return out


def snapshot(mnt):
    return oracle.compute([mnt]), fair([mnt])


def group_name(g):
    n = g['files'] - 1
    return g['members'][0]['path'] + (' (+%d more)' % n if n else '')


# ---------------------------------------------------------------- the tool

def run_top(args, timeout=60):
    """Run `dupcache top ARGS` to its end, stdout a pipe; (rc, out, err)."""
    cmd = [BIN, 'top'] + list(args)
    p = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Fail('%s did not finish within %d s' % (' '.join(cmd), timeout))
    return p.returncode, out.decode(errors='replace'), err.decode(
        errors='replace')


class Top:
    """`dupcache top --json ...` running in the background; frames parsed."""

    def __init__(self, args):
        self.cmd = [BIN, 'top'] + list(args)
        self.frames = []
        self.bad = []
        self.cv = threading.Condition()
        self.p = spawn(self.cmd, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()
        self.err = b''
        self.et = threading.Thread(target=self._read_err, daemon=True)
        self.et.start()

    def _read(self):
        for line in self.p.stdout:
            try:
                fr = json.loads(line)
            except ValueError:
                fr = None
            with self.cv:
                if fr is None:
                    self.bad.append(line)
                else:
                    self.frames.append(fr)
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def _read_err(self):
        self.err = self.p.stderr.read()

    def wait(self, n, timeout=20):
        """Wait until n frames have arrived; the last one."""
        end = time.monotonic() + timeout
        with self.cv:
            while len(self.frames) < n:
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and
                                 not self.t.is_alive()):
                    break
                self.cv.wait(min(left, 0.2))
            got = len(self.frames)
        if got < n:
            self.p.poll()
            raise Fail('%s: %d frame(s) after %d s, wanted %d (rc %s, '
                       'stderr %r, bad lines %r)' % (
                           ' '.join(self.cmd), got, timeout, n,
                           self.p.returncode, self.err[-500:], self.bad[:3]))
        return self.frames[n - 1]

    def wait_new(self, k=2, timeout=20):
        with self.cv:
            n = len(self.frames)
        return self.wait(n + k, timeout)

    def stop(self):
        """SIGTERM, like ^C: (rc, stderr)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise Fail('%s ignored SIGTERM' % ' '.join(self.cmd))
        self.t.join(5)
        self.et.join(5)
        return self.p.returncode, self.err.decode(errors='replace')


def settle(mnt, next_frames, tries=3):
    """Oracle, frames, oracle again: (oracle, fair, frame) once both agree.

    next_frames() waits for new frames (or runs the tool) and returns what
    the check needs.  The two oracles must be equal: the page cache of the
    test files did not move while the tool looked at it.
    """
    last = None
    for _ in range(tries):
        a = snapshot(mnt)
        got = next_frames()
        b = snapshot(mnt)
        if a == b:
            return b[0], b[1], got
        last = (a[0]['totals'], b[0]['totals'])
    raise Fail('page cache of the test files kept changing while the tool '
               'ran (oracle before/after: %s / %s)' % last)


# ---------------------------------------------------------------- text

TITLES = '%10s %10s %10s %9s %9s %9s %9s  %s' % (
    'DUP', 'CACHED', 'SHARED', 'ADDED/s', 'REMOVED/s', 'RECLAIM/s',
    'REFAULT/s', 'NAME')
H0 = re.compile(r'^dupcache top - (\d+) s, (\d+) files, (\d+) sharing groups$')
H1 = re.compile(r'^Page cache (\S+ \S+), tracked: shared (\S+ \S+), '
                r'cached (\S+ \S+), dup (\S+ \S+) \((\d+\.\d)% of page cache\)$')
H2 = re.compile(r'^Reclaim: kswapd wakes [\d.]+/s, direct stalls [\d.]+/s '
                r'\([\d.]+ ms\), cgroup stalls [\d.]+/s \([\d.]+ ms\), '
                r'pages reclaimed \d+/s$')
HELP = ['q quit   s or > next sort column   < previous sort column   r reverse',
        'g rows by group / file / cgroup   p pause   h this help',
        'Up/Down PgUp/PgDn Home/End select   Enter files of a group   '
        'Esc/Left/Backspace back',
        '/ search   n next match   f or \\ filter names   d delay']


def parse_row(line):
    """A row: dup, cached, shared (human strings), rates, name."""
    check(len(line) > 74 and line[72:74] == '  ',
          'row does not have the column layout: %r' % line)
    return {'dup': line[0:10].strip(), 'cached': line[11:21].strip(),
            'shared': line[22:32].strip(),
            'rates': [line[33:42].strip(), line[43:52].strip(),
                      line[53:62].strip(), line[63:72].strip()],
            'name': line[74:]}


def parse_header(lines):
    m0, m1 = H0.match(lines[0]), H1.match(lines[1])
    check(m0 and m1 and H2.match(lines[2]),
          'header lines do not parse: %r' % lines[:3])
    return {'seconds': int(m0.group(1)), 'files': int(m0.group(2)),
            'groups': int(m0.group(3)), 'shared': m1.group(2),
            'cached': m1.group(3), 'dup': m1.group(4)}


def parse_text(out):
    """Plain frames: 3 header lines, blank, titles, rows, blank."""
    lines = out.split('\n')
    check(lines[-1] == '', 'output does not end with a newline: %r' % out[-200:])
    lines.pop()
    frames = []
    i = 0
    while i < len(lines):
        check(i + 5 <= len(lines), 'truncated frame at line %d: %r' % (
            i, lines[i:]))
        hdr = parse_header(lines[i:i + 3])
        check(lines[i + 3] == '', 'line 4 of a frame is not blank: %r' %
              lines[i + 3])
        check(lines[i + 4] == TITLES, 'titles line is %r, not %r' % (
            lines[i + 4], TITLES))
        j = i + 5
        rows = []
        while j < len(lines) and lines[j] != '':
            rows.append(parse_row(lines[j]))
            j += 1
        check(j < len(lines), 'frame not ended by a blank line')
        frames.append((hdr, rows))
        i = j + 1
    return frames


def check_text_frame(where, hdr, rows, ora):
    t = ora['totals']
    expect(hdr['files'] == t['files'] and hdr['groups'] == len(ora['groups']),
           '%s: header says %d files, %d groups; oracle %d, %d' % (
               where, hdr['files'], hdr['groups'], t['files'],
               len(ora['groups'])))
    for k in ('shared', 'cached', 'dup'):
        expect(hdr[k] == human(t[k + '_bytes']),
               '%s: header %s is %r, oracle %s' % (
                   where, k, hdr[k], mib(t[k + '_bytes'])))


def check_text_groups(where, rows, ora):
    want = {group_name(g): g for g in ora['groups']}
    got = {r['name']: r for r in rows}
    expect(sorted(got) == sorted(want),
           '%s: group rows %s, oracle groups %s' % (where, sorted(got),
                                                   sorted(want)))
    for name in set(got) & set(want):
        r, g = got[name], want[name]
        for k in ('dup', 'cached', 'shared'):
            expect(r[k] == human(g[k + '_bytes']),
                   '%s: group %s %s is %r, oracle %s' % (
                       where, name, k, r[k], mib(g[k + '_bytes'])))


def check_text_files(where, rows, fr):
    got = {r['name']: r for r in rows}
    expect(sorted(got) == sorted(fr), '%s: file rows %s, oracle files %s' % (
        where, sorted(got), sorted(fr)))
    for name in set(got) & set(fr):
        for k in ('dup', 'cached', 'shared'):
            expect(got[name][k] == human(fr[name][k]),
                   '%s: file %s %s is %r, oracle %s' % (
                       where, name, k, got[name][k], mib(fr[name][k])))


# ---------------------------------------------------------------- JSON

TOP_KEYS = {'time', 'unix_time', 'seconds', 'by', 'page_size', 'totals',
            'reclaim', 'rows'}
TOTAL_KEYS = {'page_cache_bytes', 'files', 'groups', 'shared_bytes',
              'cached_bytes', 'dup_bytes', 'untracked_files', 'cgroups_full_pages'}
RECLAIM_KEYS = {'kswapd_wakes_per_s', 'direct_stalls_per_s',
                'direct_stall_ms', 'memcg_stalls_per_s', 'memcg_stall_ms',
                'pages_reclaimed_per_s'}
ROW_KEYS = {'name', 'dup_bytes', 'cached_bytes', 'shared_bytes',
            'added_per_s', 'removed_per_s', 'reclaimed_per_s',
            'refaults_per_s', 'added', 'removed', 'reclaimed', 'refaults'}
# the ids that name a row across frames
ID_KEYS = {'group': {'group_id', 'path', 'dev', 'ino', 'files'},
           'file': {'group_id', 'path', 'dev', 'ino'},
           'cgroup': {'cgroup_id'},
           'process': {'pid', 'comm', 'cgroup_id', 'dup_added',
                       'dup_added_per_s'}}


def check_json_shape(where, fr, by):
    check(set(fr) == TOP_KEYS, '%s: keys %s' % (where, sorted(fr)))
    check(fr['by'] == by and fr['page_size'] == P,
          '%s: by %r page_size %r' % (where, fr['by'], fr['page_size']))
    check(set(fr['totals']) == TOTAL_KEYS,
          '%s: totals keys %s' % (where, sorted(fr['totals'])))
    check(fr['totals']['untracked_files'] == 0 and
          fr['totals']['cgroups_full_pages'] == 0,
          '%s: maps full? %s' % (where, fr['totals']))
    check(set(fr['reclaim']) == RECLAIM_KEYS,
          '%s: reclaim keys %s' % (where, sorted(fr['reclaim'])))
    want = (ROW_KEYS - ({'shared_bytes'} if by in ('cgroup', 'process')
                        else set())) | \
        ID_KEYS[by]
    for r in fr['rows']:
        check(set(r) == want, '%s: row keys %s, want %s' % (
            where, sorted(r), sorted(want)))
    check_json_time(where, fr)
    check_json_ids(where, fr, by)


def check_json_time(where, fr):
    """time: RFC 3339 UTC, and unix_time the same instant, both within a
    few seconds of our own clock."""
    import datetime
    m = re.match(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z$', fr['time'])
    check(m, '%s: time %r is not RFC 3339 UTC with ms' % (where, fr['time']))
    t = datetime.datetime.strptime(m.group(1), '%Y-%m-%dT%H:%M:%S').replace(
        tzinfo=datetime.timezone.utc).timestamp() + int(m.group(2)) / 1000
    check(abs(t - fr['unix_time']) < 0.002,
          '%s: time %s and unix_time %s differ' % (where, fr['time'],
                                                   fr['unix_time']))
    check(abs(time.time() - fr['unix_time']) < 30,
          '%s: unix_time %s, now %s' % (where, fr['unix_time'], time.time()))


def check_json_ids(where, fr, by):
    """dev/ino name the row's path (the group's first member); a group's
    group_id is unique, a file's is its group's."""
    for r in fr['rows']:
        if by == 'process':
            continue
        if by == 'cgroup':
            check(r['cgroup_id'] is None if r['name'] == '(cached before start)'
                  else isinstance(r['cgroup_id'], int) and r['cgroup_id'] > 0,
                  '%s: cgroup row %s cgroup_id %r' % (where, r['name'],
                                                     r['cgroup_id']))
            continue
        st = os.stat(r['path'])
        check((st.st_dev, st.st_ino) == (r['dev'], r['ino']),
              '%s: row %s: dev/ino %s/%s are not %s\'s' % (
                  where, r['name'], r['dev'], r['ino'], r['path']))
        check(r['name'].startswith(r['path']), '%s: name %r, path %r' % (
            where, r['name'], r['path']))
        if by == 'group':
            check(isinstance(r['group_id'], int) and r['files'] ==
                  1 + int((re.findall(r' \(\+(\d+) more\)$', r['name'])
                           or ['0'])[0]),
                  '%s: group row %s: group_id %r files %r' % (
                      where, r['name'], r['group_id'], r['files']))
    if by == 'group':
        ids = [r['group_id'] for r in fr['rows']]
        check(len(set(ids)) == len(ids), '%s: group ids repeat: %s'
              % (where, ids))


def check_json_totals(where, fr, ora):
    t, g = fr['totals'], ora['totals']
    for k in ('files', 'shared_bytes', 'cached_bytes', 'dup_bytes'):
        expect(t[k] == g[k], '%s: totals.%s = %s, oracle %s' % (
            where, k, mib(t[k]) if k != 'files' else t[k],
            mib(g[k]) if k != 'files' else g[k]))
    expect(t['groups'] == len(ora['groups']), '%s: totals.groups = %d, '
           'oracle %d' % (where, t['groups'], len(ora['groups'])))


def check_json_groups(where, fr, ora):
    want = {group_name(g): g for g in ora['groups']}
    got = {r['name']: r for r in fr['rows']}
    expect(len(fr['rows']) == len(got) and sorted(got) == sorted(want),
           '%s: group rows %s, oracle groups %s' % (
               where, [r['name'] for r in fr['rows']], sorted(want)))
    for name in set(got) & set(want):
        for k in ('dup_bytes', 'cached_bytes', 'shared_bytes'):
            expect(got[name][k] == want[name][k],
                   '%s: group %s %s = %s, oracle %s' % (
                       where, name, k, mib(got[name][k]),
                       mib(want[name][k])))
    order = [r['name'] for r in fr['rows']]
    bydup = sorted(order, key=lambda n: (-got[n]['dup_bytes'], n))
    expect(order == bydup, '%s: rows not sorted by dup, biggest first: %s' % (
        where, order))


def check_json_files(where, fr, fa):
    got = {r['name']: r for r in fr['rows']}
    expect(len(fr['rows']) == len(got) and sorted(got) == sorted(fa),
           '%s: file rows %s, oracle files %s' % (
               where, [r['name'] for r in fr['rows']], sorted(fa)))
    for name in set(got) & set(fa):
        for k, o in (('dup_bytes', 'dup'), ('cached_bytes', 'cached'),
                     ('shared_bytes', 'shared')):
            expect(got[name][k] == fa[name][o],
                   '%s: file %s %s = %s, oracle %s' % (
                       where, name, k, mib(got[name][k]), mib(fa[name][o])))
    total = sum(r['dup_bytes'] for r in fr['rows'])
    expect(total <= fr['totals']['dup_bytes'],
           '%s: file shares add up to %s > total dup %s' % (
               where, mib(total), mib(fr['totals']['dup_bytes'])))


# ---------------------------------------------------------------- workloads

def build_rich(mnt):
    """Two sharing groups of varied copy counts, a lone file, a subdir.

    group 1: a (8 MiB), b, c, d whole clones, sub/i a whole clone
    group 2: e (4 MiB), f (own data with e[0, 2 MiB) cloned at 1 MiB),
             h a whole clone of e (never read)
    lone:    g (1 MiB)
    """
    make_file(mnt + '/a', 8 * MiB, seed=1)
    for n in ('b', 'c', 'd'):
        reflink(mnt + '/a', mnt + '/' + n)
    os.mkdir(mnt + '/sub')
    reflink(mnt + '/a', mnt + '/sub/i')
    make_file(mnt + '/e', 4 * MiB, seed=2)
    make_file(mnt + '/f', 4 * MiB, seed=3)
    clone_range(mnt + '/e', 0, mnt + '/f', 1 * MiB, 2 * MiB)
    reflink(mnt + '/e', mnt + '/h')
    make_file(mnt + '/g', 1 * MiB, seed=4)


def read_rich(mnt):
    """Copies per page of a: 4 on [0,1M), 3 on [1,4M), 2 on [4,7.5M),
    3 on [7.5M,8M): shares 3072, 2730 and 2048 bytes per copy."""
    read_range(mnt + '/a')
    read_range(mnt + '/b')
    read_range(mnt + '/c', 0, 4 * MiB, exact=True)
    read_range(mnt + '/d', 0, 1 * MiB, exact=True)
    read_range(mnt + '/sub/i', 7 * MiB + 512 * 1024, 512 * 1024, exact=True)
    read_range(mnt + '/e')
    read_range(mnt + '/f')
    read_range(mnt + '/g')


def prepared(fstype):
    if fstype == 'btrfs' and not shutil.which('mkfs.btrfs'):
        raise Skip('mkfs.btrfs missing')
    return LoopFs(fstype)


# ---------------------------------------------------------------- 1. tty

class Tmux:
    def __init__(self):
        self.sock = 'dctest-top-%d' % os.getpid()
        self.started = False

    def tm(self, *args, check_rc=True):
        r = subprocess.run(['tmux', '-L', self.sock] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=20)
        if check_rc and r.returncode:
            raise Fail('tmux %s failed: %s' % (' '.join(args),
                                               r.stderr.decode()))
        return r.stdout.decode(errors='replace')

    def new(self, cmd, x, y):
        self.started = True
        self.tm('-f', '/dev/null', 'new-session', '-d', '-s', 'top',
                '-x', str(x), '-y', str(y), cmd)

    def alive(self):
        return subprocess.run(['tmux', '-L', self.sock, 'has-session', '-t',
                               'top'], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0

    def keys(self, k):
        self.tm('send-keys', '-t', 'top', k)

    def screen(self, keep_spaces=False):
        return self.tm('capture-pane', '-p', *(['-N'] if keep_spaces else []),
                       '-t', 'top').split('\n')

    def wait_for(self, cond, what, timeout=5, keep_spaces=False):
        end = time.monotonic() + timeout
        while True:
            s = self.screen(keep_spaces)
            try:
                ok = cond(s)
            except (Fail, IndexError, ValueError):
                ok = False
            if ok:
                return s
            if time.monotonic() > end:
                raise Fail('screen never showed %s; it shows:\n%s' % (
                    what, '\n'.join(x.rstrip() for x in s).rstrip()))
            time.sleep(0.1)

    def kill(self):
        if self.started:
            subprocess.run(['tmux', '-L', self.sock, 'kill-server'],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.started = False


def screen_rows(s):
    """(header, mode line, help lines, rows) of a captured screen."""
    s = [x.rstrip() for x in s]
    hdr = parse_header(s[0:3])
    check(s[4] == '' and s[5].rstrip() == TITLES.rstrip(),
          'screen lines 5-6 are %r, %r' % (s[4], s[5]))
    i = 6
    helps = []
    while i < len(s) and s[i] in HELP:
        helps.append(s[i])
        i += 1
    rows = []
    while i < len(s) and s[i]:
        rows.append(parse_row(s[i]))
        i += 1
    return hdr, s[3], helps, rows


def mode(by, sort, reverse=False, paused=False):
    return 'by %s, sort %s%s, every 0.5 s%s   (h for help)' % (
        by, sort, ' reversed' if reverse else '', ', PAUSED' if paused else '')


@test('tty_tmux_xfs')
def t_tty():
    if not shutil.which('tmux'):
        raise Skip('tmux missing')
    tmux = Tmux()
    try:
        with prepared('xfs') as mnt:
            make_file(mnt + '/a', 8 * MiB, seed=1)
            for n in ('b', 'c', 'd'):
                reflink(mnt + '/a', mnt + '/' + n)
            make_file(mnt + '/solo', 1 * MiB, seed=2)
            cold(mnt)
            rcfile = os.path.join(os.path.dirname(mnt), 'top.rc')
            tmux.new("'%s' top -d 0.5 '%s'; echo $? > '%s'" % (
                BIN, mnt, rcfile), 200, 50)
            tmux.wait_for(lambda s: s[3].rstrip() == mode('group', 'dup'),
                          'the first frame', timeout=15)
            for n in ('a', 'b', 'c', 'd', 'solo'):
                read_range(mnt + '/' + n)

            def look():
                time.sleep(1.3)             # >= 2 frames at -d 0.5
                return tmux.screen()
            ora, fa, scr = settle(mnt, look)
            hdr, line, helps, rows = screen_rows(scr)
            check_text_frame('screen', hdr, rows, ora)
            expect(line == mode('group', 'dup'), 'mode line %r' % line)
            check_text_groups('screen by group', rows, ora)

            # g: by file, sorted by dup then name
            tmux.keys('g')
            scr = tmux.wait_for(lambda s: s[3].startswith('by file'),
                                '"by file" after g')
            hdr, line, helps, rows = screen_rows(scr)
            expect(line == mode('file', 'dup'), 'after g: mode line %r' % line)
            check_text_files('screen by file', rows, fa)
            want = sorted(fa, key=lambda n: (-fa[n]['dup'], n))
            expect([r['name'] for r in rows] == want,
                   'by file, sort dup: rows %s, want %s' % (
                       [r['name'] for r in rows], want))

            # s: next sort column (cached)
            tmux.keys('s')
            scr = tmux.wait_for(lambda s: s[3].rstrip() == mode('file',
                                                                'cached'),
                                'sort cached after s')
            rows = screen_rows(scr)[3]
            want = sorted(fa, key=lambda n: (-fa[n]['cached'], n))
            expect([r['name'] for r in rows] == want,
                   'sort cached: rows %s, want %s' % (
                       [r['name'] for r in rows], want))

            # r: reversed
            tmux.keys('r')
            scr = tmux.wait_for(
                lambda s: s[3].rstrip() == mode('file', 'cached', True),
                'sort cached reversed after r')
            rows = screen_rows(scr)[3]
            expect([r['name'] for r in rows] == want[::-1],
                   'sort cached reversed: rows %s, want %s' % (
                       [r['name'] for r in rows], want[::-1]))

            # p: paused, the header stops moving
            tmux.keys('p')
            scr = tmux.wait_for(
                lambda s: s[3].rstrip() == mode('file', 'cached', True, True),
                'PAUSED after p')
            time.sleep(1.6)
            scr2 = tmux.screen()
            expect(scr2[0] == scr[0] and scr2[1:3] == scr[1:3],
                   'header moved while paused: %r -> %r' % (scr[0], scr2[0]))

            # h: help lines
            tmux.keys('h')
            scr = tmux.wait_for(lambda s: HELP[0] in [x.rstrip() for x in s],
                                'the help lines after h')
            helps = screen_rows(scr)[2]
            expect(helps == HELP, 'help lines %r' % helps)

            # resize: the title bar is padded to the new width
            def title_width(s):
                t = s[5].rstrip('\n')
                return len(t) if t.startswith(TITLES.rstrip()) else -1
            for x, y in ((120, 30), (160, 40)):
                tmux.tm('resize-window', '-t', 'top', '-x', str(x), '-y',
                        str(y))
                tmux.wait_for(lambda s: title_width(s) == x,
                              'the title bar %d columns wide after '
                              'resize-window -x %d -y %d' % (x, x, y),
                              keep_spaces=True)
                size = tmux.tm('display-message', '-p', '-t', 'top',
                               '#{pane_width}x#{pane_height}').strip()
                expect(size == '%dx%d' % (x, y), 'pane size %s' % size)
            scr = tmux.screen()
            hdr, line, helps, rows = screen_rows(scr)
            expect(line == mode('file', 'cached', True, True) and
                   helps == HELP and len(rows) == len(fa),
                   'after resize: mode %r, help %r, %d rows' % (
                       line, helps, len(rows)))

            # p again: frames flow after the resize
            tmux.keys('p')
            scr = tmux.wait_for(
                lambda s: s[3].rstrip() == mode('file', 'cached', True),
                'unpaused after p')
            t0 = parse_header(scr[0:3])['seconds']
            scr = tmux.wait_for(
                lambda s: parse_header(s[0:3])['seconds'] >= t0 + 2,
                'the clock moving after the resize', timeout=6)
            check_text_files('screen after resize', screen_rows(scr)[3], fa)

            # h hides the help; g goes on to cgroup, then back to group
            tmux.keys('h')
            tmux.wait_for(lambda s: HELP[0] not in [x.rstrip() for x in s],
                          'no help lines after the second h')
            tmux.keys('g')
            scr = tmux.wait_for(lambda s: s[3].startswith('by cgroup'),
                                '"by cgroup" after g')
            rows = screen_rows(scr)[3]
            if memcg_v1():
                me = own_memcg()
                expect([(r['name'], r['cached'], r['shared']) for r in rows] ==
                       [(me, human(ora['totals']['cached_bytes']), '-')],
                       'by cgroup: rows %s, want one row %s cached %s' % (
                           [(r['name'], r['cached'], r['shared'])
                            for r in rows], me,
                           human(ora['totals']['cached_bytes'])))
            tmux.keys('g')
            scr = tmux.wait_for(lambda s: s[3].startswith('by group'),
                                '"by group" after the third g')
            check_text_groups('screen by group again', screen_rows(scr)[3],
                              ora)

            # q: quits, exit status 0, the session ends
            tmux.keys('q')
            end = time.monotonic() + 5
            while tmux.alive() and time.monotonic() < end:
                time.sleep(0.1)
            check(not tmux.alive(), 'session still there 5 s after q')
            with open(rcfile) as f:
                rc = f.read().strip()
            expect(rc == '0', 'exit status after q: %s' % rc)
    finally:
        tmux.kill()


# ---------------------------------------------------------------- 1b. tty keys

SGR = re.compile(r'\x1b\[([0-9;]*)m')


def reverse_lines(text):
    """Per line of `capture-pane -e` output: (drawn in reverse video at its
    first character, the text).  tmux writes attribute changes only, so
    the state carries from line to line."""
    rev, out = False, []
    for line in text.split('\n'):
        at_first, pos = None, 0
        for m in SGR.finditer(line):
            if at_first is None and m.start() > pos:
                at_first = rev
            for code in (m.group(1) or '0').split(';'):
                if code in ('0', ''):
                    rev = False
                elif code == '7':
                    rev = True
                elif code == '27':
                    rev = False
            pos = m.end()
        if at_first is None:
            at_first = rev
        out.append((at_first, SGR.sub('', line).rstrip()))
    return out


def selected_name(tmux):
    """The name of the row drawn in reverse video below the titles."""
    lines = reverse_lines(tmux.tm('capture-pane', '-p', '-e', '-t', 'top'))
    sel = [t for r, t in lines[6:] if r and t]
    check(len(sel) == 1, 'want one selected row, got %r' % sel)
    return parse_row(sel[0])['name']


def wait_selected(tmux, name, what, timeout=5):
    end = time.monotonic() + timeout
    while True:
        try:
            got = selected_name(tmux)
        except Fail as e:
            got = str(e)
        if got == name:
            return
        if time.monotonic() > end:
            raise Fail('%s: selected %r, want %r' % (what, got, name))
        time.sleep(0.1)


def check_visible(where, rows, want, ora):
    """The rows shown are want (names, in order), with the oracle's figures."""
    names = [r['name'] for r in rows]
    check(names == want, '%s: rows %s, want %s' % (where, names, want))
    groups = {group_name(g): g for g in ora['groups']}
    for r in rows:
        g = groups[r['name']]
        for k in ('dup', 'cached', 'shared'):
            check(r[k] == human(g[k + '_bytes']),
                  '%s: group %s %s is %r, oracle %s' % (
                      where, r['name'], k, r[k], mib(g[k + '_bytes'])))


@test('tty_keys_xfs')
def t_tty_keys():
    """More groups than rows: scrolling, search, filter, drill-down, delay."""
    if not shutil.which('tmux'):
        raise Skip('tmux missing')
    tmux = Tmux()
    try:
        with prepared('xfs') as mnt:
            make_file(mnt + '/big1', 4 * MiB, seed=7)
            for n in ('big2', 'big3', 'big4'):
                reflink(mnt + '/big1', mnt + '/' + n)
            for k in range(30):
                a = '%s/g%02da' % (mnt, k)
                make_file(a, (k + 1) * 64 * 1024, seed=100 + k)
                reflink(a, '%s/g%02db' % (mnt, k))
            cold(mnt)
            read_range(mnt + '/big1')
            read_range(mnt + '/big2')
            read_range(mnt + '/big3', 0, 2 * MiB, exact=True)
            for k in range(30):
                read_range('%s/g%02da' % (mnt, k))
                read_range('%s/g%02db' % (mnt, k))
            rcfile = os.path.join(os.path.dirname(mnt), 'top.rc')
            # 24 lines: 6 above the rows, the status line below: 17 rows
            tmux.new("'%s' top -d 0.5 '%s'; echo $? > '%s'" % (
                BIN, mnt, rcfile), 160, 24)
            page = 17
            tmux.wait_for(lambda s: s[3].startswith('by group'),
                          'the first frame', timeout=15)

            def look():
                time.sleep(1.3)
                return tmux.screen()
            ora, fa, scr = settle(mnt, look)
            order = [group_name(g) for g in ora['groups']]   # by dup, name
            n = len(order)
            check(n == 31, 'oracle: %d groups' % n)
            hdr, line, _, rows = screen_rows(scr)
            check_text_frame('keys: first screen', hdr, rows, ora)
            check(line.rstrip() == mode('group', 'dup')[:-len(
                '   (h for help)')] + ', rows 1-%d of %d   (h for help)'
                % (page, n), 'mode line %r' % line)
            check_visible('first screen', rows, order[:page], ora)
            check(selected_name(tmux) == order[0], 'selection starts on '
                  'the first row: %r' % selected_name(tmux))

            def at(sel, first, what):
                want_line = 'rows %d-%d of %d' % (first + 1,
                                                  min(first + page, n), n)
                scr = tmux.wait_for(lambda s: want_line in s[3],
                                    '%r after %s' % (want_line, what))
                check_visible(what, screen_rows(scr)[3],
                              order[first:first + page], ora)
                got = selected_name(tmux)
                check(got == order[sel], '%s: selected %r, want %r (row %d)'
                      % (what, got, order[sel], sel))

            for _ in range(3):
                tmux.keys('Down')
            at(3, 0, '3 x Down')
            tmux.keys('End')
            at(n - 1, n - page, 'End')
            tmux.keys('Up')
            at(n - 2, n - page, 'End Up')
            tmux.keys('Home')
            at(0, 0, 'Home')
            tmux.keys('NPage')
            at(page, 1, 'PgDn')
            tmux.keys('NPage')
            at(n - 1, n - page, 'PgDn PgDn')
            tmux.keys('PPage')
            at(n - 1 - page, n - 1 - page, 'PgUp')

            # / search: the next row after the selection whose name holds it
            def next_match(sel, text):
                for k in range(1, n + 1):
                    i = (sel + k) % n
                    if text.lower() in order[i].lower():
                        return i
            sel = n - 1 - page
            tmux.keys('/')
            tmux.wait_for(lambda s: any(x.startswith('search:')
                                        for x in s[-2:]), 'the search prompt')
            tmux.tm('send-keys', '-t', 'top', '-l', '/G1')
            tmux.keys('Enter')
            sel = next_match(sel, '/g1')
            wait_selected(tmux, order[sel], 'search /G1')
            for _ in range(3):
                tmux.keys('n')
                sel = next_match(sel, '/g1')
                wait_selected(tmux, order[sel], 'n')

            # filter: rows whose name holds /g2, the selection kept if shown
            tmux.keys('f')
            time.sleep(0.2)
            tmux.tm('send-keys', '-t', 'top', '-l', '/g2')
            tmux.keys('Enter')
            want = [x for x in order if '/g2' in x]
            scr = tmux.wait_for(lambda s: "filter '/g2'" in s[3],
                                'the filter in the mode line')
            scr = tmux.wait_for(lambda s: len(screen_rows(s)[3]) == len(want),
                                '%d filtered rows' % len(want))
            check_visible('filter /g2', screen_rows(scr)[3], want, ora)
            check('rows ' not in scr[3], 'all filtered rows fit: %r' % scr[3])
            tmux.keys('\\')
            time.sleep(0.2)
            tmux.keys('Enter')
            tmux.wait_for(lambda s: 'filter' not in s[3] and 'rows ' in s[3],
                          'the filter gone')

            # Enter on the first group: its files, with their fair shares
            tmux.keys('Home')
            time.sleep(0.3)
            tmux.keys('Enter')
            scr = tmux.wait_for(lambda s: s[3].startswith(
                'by group: files of the group of %s/big1,' % mnt),
                'the group\'s files after Enter')
            rows = screen_rows(scr)[3]
            members = {p: fa[p] for p in fa if '/big' in p}
            check_text_files('files of big1', rows, members)
            check(not _soft, '; '.join(_soft))
            want = sorted(members, key=lambda p: (-members[p]['dup'], p))
            check([r['name'] for r in rows] == want, 'files of big1: %s, '
                  'want %s' % ([r['name'] for r in rows], want))
            tmux.keys('Escape')
            scr = tmux.wait_for(lambda s: s[3].startswith('by group, '),
                                'the groups again after Esc')
            wait_selected(tmux, order[0], 'Esc')
            tmux.keys('Enter')
            tmux.wait_for(lambda s: s[3].startswith('by group: files'),
                          'the files again')
            tmux.keys('Left')
            tmux.wait_for(lambda s: s[3].startswith('by group, '),
                          'the groups again after Left')

            # d: a new delay; a bad one is said and changes nothing
            tmux.keys('d')
            time.sleep(0.2)
            tmux.tm('send-keys', '-t', 'top', '-l', 'abc')
            tmux.keys('Enter')
            tmux.wait_for(lambda s: "the delay is 0.1 to 3600 seconds, not "
                          "'abc'" in s[-1] or "not 'abc'" in s[-2],
                          'the bad delay said')
            check('every 0.5 s' in tmux.screen()[3], 'delay changed by abc')
            tmux.keys('d')
            time.sleep(0.2)
            tmux.tm('send-keys', '-t', 'top', '-l', '2')
            tmux.keys('Enter')
            scr = tmux.wait_for(lambda s: 'every 2.0 s' in s[3],
                                '"every 2.0 s" after d 2')
            t0 = parse_header(scr[0:3])['seconds']
            time.sleep(1.0)
            t1 = parse_header(tmux.screen()[0:3])['seconds']
            scr = tmux.wait_for(lambda s: parse_header(s[0:3])['seconds']
                                >= t0 + 2, 'a frame 2 s later', timeout=6)
            check(t1 <= t0 + 1, 'frames still every 0.5 s: %d -> %d'
                  % (t0, t1))

            tmux.keys('q')
            end = time.monotonic() + 5
            while tmux.alive() and time.monotonic() < end:
                time.sleep(0.1)
            check(not tmux.alive(), 'session still there 5 s after q')
            with open(rcfile) as f:
                check(f.read().strip() == '0', 'exit status after q')
    finally:
        tmux.kill()


# ---------------------------------------------------------------- 1c. process view

def held_maps(pid):
    """{name: max_entries} of the BPF maps a process holds (fdinfo map_id)."""
    ids = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                ids.update(int(ln.split()[1]) for ln in f
                           if ln.startswith('map_id:'))
        except OSError:
            pass
    out = {}
    for i in ids:
        r = subprocess.run(['bpftool', '-j', 'map', 'show', 'id', str(i)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            j = json.loads(r.stdout)
            out[j.get('name', '')] = j['max_entries']
    return out


READER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no readahead: only the range
off, end = int(sys.argv[2]), int(sys.argv[3])
while off < end:
    off += len(os.pread(fd, min(1 << 20, end - off), off))
print('read', flush=True)
sys.stdin.read()                                    # stay alive until told
"""


def t_process(fstype):
    """Two readers of clones of a cached file: each one's row has exactly
    the pages that became duplicates through its reads, and the rows add up
    to the duplicates the window added (the oracle's, nothing cached but a
    before the start)."""
    with prepared(fstype) as mnt:
        a = mnt + '/a'
        make_file(a, 8 * MiB, seed=61)
        reflink(a, mnt + '/b')
        reflink(a, mnt + '/c')
        cold(mnt)
        read_range(a)
        # without --by process the attribution is not loaded: one-entry map
        plain = Top(['--json', '-d', '0.5', mnt])
        plain.wait(1)
        maps = held_maps(plain.p.pid)
        plain.stop()
        check(maps.get('tasks') == 1, 'top by group: task map %r (want 1 '
              'entry: attribution off)' % maps.get('tasks'))

        top = Top(['--json', '--by', 'process', '-d', '0.5', mnt])
        first = top.wait(1)
        check_json_shape('process: first frame', first, 'process')
        check(held_maps(top.p.pid).get('tasks') == 4096,
              'top --by process: task map %r' % held_maps(top.p.pid))
        check(first['rows'] == [] and first['totals']['dup_bytes'] == 0,
              'process: first frame (a cached before start, no reader): '
              'rows %s dup %s' % (first['rows'], first['totals']['dup_bytes']))
        readers = []
        for path, off, end in ((mnt + '/b', 0, 8 * MiB),
                               (mnt + '/c', 2 * MiB, 6 * MiB)):
            r = spawn(['/usr/bin/python3', '-c', READER, path, str(off),
                       str(end)], stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE)
            check(r.stdout.readline() == b'read\n', 'reader failed')
            readers.append(r)
            pin(path, range(off // P, end // P))   # DAMON keeps off
        try:
            ora, fa, fr = settle(mnt, top.wait_new)
        finally:
            for r in readers:
                r.stdin.close()
                r.wait(10)
        check_json_shape('process', fr, 'process')
        rows = {r['pid']: r for r in fr['rows']}
        want = {readers[0].pid: (2048, 2048), readers[1].pid: (1024, 1024)}
        got = {pid: (r['added'], r['dup_added']) for pid, r in rows.items()}
        check(got == want, 'process rows (added, dup_added) by pid %s, want '
              '%s' % (got, want))
        for r in fr['rows']:
            check(r['comm'] == 'python3' and r['dup_bytes'] ==
                  r['dup_added'] * P and r['cached_bytes'] == r['added'] * P
                  and r['name'].startswith('%d python3 ' % r['pid']) and
                  isinstance(r['cgroup_id'], int) and r['cgroup_id'] > 0,
                  'process row %s' % r)
        dup = ora['totals']['dup_bytes']
        check(dup == 12 * MiB and fr['totals']['dup_bytes'] == dup,
              'dup: frame %s, oracle %s, want 12 MiB' % (
                  mib(fr['totals']['dup_bytes']), mib(dup)))
        check(sum(r['dup_added'] for r in fr['rows']) * P == dup,
              'process rows add up to %s, the window added %s' % (
                  mib(sum(r['dup_added'] for r in fr['rows']) * P), mib(dup)))
        rc, err = top.stop()
        check(rc == 0, 'top --by process: exit %d: %s' % (rc, err))


@test('process_view_xfs')
def t_process_xfs():
    t_process('xfs')


@test('process_view_btrfs')
def t_process_btrfs():
    t_process('btrfs')


# ---------------------------------------------------------------- 2. batch

def t_batch(fstype):
    with prepared(fstype) as mnt:
        build_rich(mnt)
        cold(mnt)
        read_rich(mnt)

        def run3(args):
            def go():
                rc, out, err = run_top(args)
                check(rc == 0, 'top %s: exit %d: %s' % (' '.join(args), rc,
                                                         err))
                return out
            return go

        # --frames, and -n, its old name kept for compatibility
        for label, args in (('-b', ['-b', '--frames', '3', '-d', '0.5', mnt]),
                            ('pipe', ['-n', '3', '-d', '0.5', mnt])):
            ora, fa, out = settle(mnt, run3(args))
            expect('\x1b' not in out, '%s: escape sequences in the output' %
                   label)
            frames = parse_text(out)
            check(len(frames) == 3, '%s: %d frames, want 3' % (label,
                                                              len(frames)))
            hdr, rows = frames[-1]
            check_text_frame(label, hdr, rows, ora)
            check_text_groups(label + ' groups', rows, ora)

        ora, fa, out = settle(mnt, run3(['-b', '-n', '2', '-d', '0.5', '--by',
                                         'file', mnt]))
        frames = parse_text(out)
        check(len(frames) == 2, 'by file: %d frames, want 2' % len(frames))
        hdr, rows = frames[-1]
        check_text_frame('by file', hdr, rows, ora)
        check_text_files('by file', rows, fa)

        # -s name -r 3: the first three paths by name
        ora, fa, out = settle(mnt, run3(['-b', '-n', '1', '-d', '0.5', '--by',
                                         'file', '-s', 'name', '-r', '3',
                                         mnt]))
        frames = parse_text(out)
        check(len(frames) == 1, '-n 1: %d frames' % len(frames))
        got = [r['name'] for r in frames[0][1]]
        expect(got == sorted(fa)[:3], '-s name -r 3: rows %s, want %s' % (
            got, sorted(fa)[:3]))
        # -s cached: biggest first, ties by name
        ora, fa, out = settle(mnt, run3(['-b', '-n', '1', '-d', '0.5', '--by',
                                         'file', '-s', 'cached', mnt]))
        got = [r['name'] for r in parse_text(out)[0][1]]
        want = sorted(fa, key=lambda n: (-fa[n]['cached'], n))
        expect(got == want, '-s cached: rows %s, want %s' % (got, want))


@test('batch_xfs')
def t_batch_xfs():
    t_batch('xfs')


@test('batch_btrfs')
def t_batch_btrfs():
    t_batch('btrfs')


# ---------------------------------------------------------------- 2. JSON

def json_run(args, n):
    def go():
        rc, out, err = run_top(args)
        check(rc == 0, 'top %s: exit %d: %s' % (' '.join(args), rc, err))
        lines = out.splitlines()
        check(len(lines) == n, 'top %s: %d lines, want %d' % (
            ' '.join(args), len(lines), n))
        try:
            return [json.loads(x) for x in lines]
        except ValueError as e:
            raise Fail('top %s: not JSON Lines (%s): %r' % (
                ' '.join(args), e, out[:300]))
    return go


def t_json(fstype):
    with prepared(fstype) as mnt:
        build_rich(mnt)
        cold(mnt)
        base = fsimg.interference

        # Started before the workload: everything seen as events.
        top = Top(['--json', '-d', '0.5', mnt])
        first = top.wait(1)
        check_json_shape('first frame', first, 'group')
        ora0 = oracle.compute([mnt])
        expect(first['totals']['cached_bytes'] == 0 and
               first['totals']['dup_bytes'] == 0 and
               first['totals']['shared_bytes'] ==
               ora0['totals']['shared_bytes'] and
               first['totals']['groups'] == len(ora0['groups']),
               'first frame (nothing cached): totals %s, oracle %s' % (
                   first['totals'], ora0['totals']))
        read_rich(mnt)
        ora, fa, fr = settle(mnt, top.wait_new)
        check_json_shape('live', fr, 'group')
        check_json_totals('live', fr, ora)
        check_json_groups('live', fr, ora)
        clean = fsimg.interference == base
        for r in fr['rows']:
            expect(r['added'] - r['removed'] == r['cached_bytes'] // P,
                   'live: group %s added %d - removed %d != cached %d pages' %
                   (r['name'], r['added'], r['removed'],
                    r['cached_bytes'] // P))
            expect(not clean or (r['removed'] == r['reclaimed'] ==
                                 r['refaults'] == 0),
                   'live: group %s removed %d reclaimed %d refaults %d, '
                   'nothing left the cache' % (r['name'], r['removed'],
                                                r['reclaimed'],
                                                r['refaults']))
        rc, err = top.stop()
        expect(rc == 0, 'live top: exit %d after SIGTERM: %s' % (rc, err))

        # Started after: seeded from residency.
        ora, fa, frs = settle(mnt, json_run(['--json', '-n', '3', '-d', '0.5',
                                             mnt], 3))
        for k, f in enumerate(frs):
            check_json_shape('seeded frame %d' % (k + 1), f, 'group')
        check_json_totals('seeded', frs[-1], ora)
        check_json_groups('seeded', frs[-1], ora)
        ids = [{r['name']: (r['group_id'], r['dev'], r['ino']) for r in f['rows']}
               for f in frs]
        expect(all(x == ids[0] for x in ids), 'row ids moved between frames: '
               '%s' % ids)
        times = [f['unix_time'] for f in frs]
        expect(all(0.3 < b - a < 1.5 for a, b in zip(times, times[1:])),
               'unix_time of frames 0.5 s apart: %s' % times)

        ora, fa, frs = settle(mnt, json_run(['--json', '--by', 'file', '-n',
                                             '3', '-d', '0.5', mnt], 3))
        check_json_shape('by file', frs[-1], 'file')
        check_json_totals('by file', frs[-1], ora)
        check_json_files('by file', frs[-1], fa)

        # All pages were cached before start: one cgroup row holds them.
        ora, fa, frs = settle(mnt, json_run(['--json', '--by', 'cgroup', '-n',
                                             '2', '-d', '0.5', mnt], 2))
        fr = frs[-1]
        check_json_shape('by cgroup', fr, 'cgroup')
        check_json_totals('by cgroup', fr, ora)
        want = [('(cached before start)', ora['totals']['cached_bytes'],
                 sum(f['dup'] for f in fa.values()))]
        got = [(r['name'], r['cached_bytes'], r['dup_bytes'])
               for r in fr['rows']]
        expect(got == want, 'by cgroup, all cached before start: rows '
               '(name, cached, dup) %s, want %s' % (got, want))


@test('rows_page_xfs')
def t_rows_page():
    """-r N shows the first N rows of the whole order, which top picks
    without sorting every row: twelve files whose cached bytes grow against
    their name order (the scan's), so the first three in any other order
    are the wrong ones."""
    with prepared('xfs') as mnt:
        names = ['f%02d' % i for i in range(12)]
        for i, n in enumerate(names):
            make_file(mnt + '/' + n, (i + 1) * 256 * 1024, seed=10 + i)
        cold(mnt)
        for n in names:
            read_range(mnt + '/' + n)
        ora, fa, frs = settle(mnt, json_run(['--json', '--by', 'file', '-s', 'cached', '-r', '3',
                                             '-n', '2', '-d', '0.5', mnt], 2))
        order = [os.path.basename(r['name']) for r in frs[-1]['rows']]
        want = [os.path.basename(n) for n in sorted(fa, key=lambda n: (-fa[n]['cached'], n))[:3]]
        expect(order == want == ['f11', 'f10', 'f09'], '-r 3 by cached: rows %s, the oracle\'s '
               'first three %s' % (order, want))


@test('json_xfs')
def t_json_xfs():
    t_json('xfs')


@test('json_btrfs')
def t_json_btrfs():
    t_json('btrfs')


# ---------------------------------------------------------------- 3. reclaim

def row_named(fr, name):
    rows = [r for r in fr['rows'] if r['name'] == name]
    check(len(rows) == 1, 'no single row %r in %s' % (
        name, [(r['name'], r['cached_bytes']) for r in fr['rows']]))
    return rows[0]


def t_reclaim(fstype):
    if not memcg_v1():
        raise Skip('no cgroup v1 memory hierarchy at ' + CG_ROOT)
    limit = 24 * MiB
    size = 16 * MiB
    with prepared(fstype) as mnt:
        names = [mnt + '/' + n for n in ('a', 'b', 'c', 'd')]
        make_file(names[0], size, seed=7)
        for n in names[1:]:
            reflink(names[0], n)
        cold(mnt)
        cg = Memcg('r', limit=limit)
        try:
            top = Top(['--json', '--by', 'cgroup', '-d', '0.5', mnt])
            top.wait(1)
            vm0, st0 = vmstat(), cg.stat()
            per_pass = 4 * size // P

            # pass 1: 64 MiB through a 24 MiB cgroup
            read_in(cg, names)
            ora, fa, fr = settle(mnt, top.wait_new)
            vm1 = vmstat()
            check_json_shape('pass 1', fr, 'cgroup')
            check_json_totals('pass 1', fr, ora)
            r1 = row_named(fr, cg.name)
            where = 'pass 1, row %s' % cg.name
            expect(0 < r1['reclaimed'] <= per_pass,
                   '%s: reclaimed %d, want 1..%d (pages read)' % (
                       where, r1['reclaimed'], per_pass))
            expect(r1['cached_bytes'] <= limit, '%s: cached %s > limit %s' % (
                where, mib(r1['cached_bytes']), mib(limit)))
            expect(r1['cached_bytes'] == ora['totals']['cached_bytes'],
                   '%s: cached %s, oracle (every resident page was read in '
                   'the cgroup) %s' % (where, mib(r1['cached_bytes']),
                                       mib(ora['totals']['cached_bytes'])))
            expect(r1['dup_bytes'] == sum(f['dup'] for f in fa.values()),
                   '%s: dup %s, fair-share oracle %s' % (
                       where, mib(r1['dup_bytes']),
                       mib(sum(f['dup'] for f in fa.values()))))
            expect(r1['added'] >= per_pass,
                   '%s: added %d, but the reader brought in %d pages' % (
                       where, r1['added'], per_pass))
            expect(r1['added'] - r1['removed'] == r1['cached_bytes'] // P,
                   '%s: added %d - removed %d != cached %d pages' % (
                       where, r1['added'], r1['removed'],
                       r1['cached_bytes'] // P))
            expect(r1['reclaimed'] <= r1['removed'],
                   '%s: reclaimed %d > removed %d' % (where, r1['reclaimed'],
                                                      r1['removed']))
            expect(r1['refaults'] == 0, '%s: refaults %d before any page '
                   'came back' % (where, r1['refaults']))
            if 'pgsteal_file' in vm0:
                d = vm1['pgsteal_file'] - vm0['pgsteal_file']
                expect(r1['reclaimed'] <= d, '%s: reclaimed %d > /proc/vmstat '
                       'pgsteal_file delta %d' % (where, r1['reclaimed'], d))
            moved = [f['reclaim'] for f in top.frames
                     if f['reclaim']['memcg_stalls_per_s'] > 0 or
                     f['reclaim']['pages_reclaimed_per_s'] > 0]
            expect(moved, 'pass 1: no frame with memcg_stalls_per_s > 0 or '
                   'pages_reclaimed_per_s > 0: %s' % [
                       f['reclaim'] for f in top.frames])
            before = [r for r in fr['rows']
                      if r['name'] == '(cached before start)']
            expect(all(r['cached_bytes'] == 0 for r in before),
                   'pass 1: (cached before start) holds %s, nothing was '
                   'cached at start' % [r['cached_bytes'] for r in before])

            # pass 2: read again: pages reclaim took come back
            read_in(cg, names)
            ora, fa, fr = settle(mnt, top.wait_new)
            vm2, st2 = vmstat(), cg.stat()
            check_json_totals('pass 2', fr, ora)
            r2 = row_named(fr, cg.name)
            where = 'pass 2, row %s' % cg.name
            expect(0 < r2['refaults'] <= r2['reclaimed'],
                   '%s: refaults %d, want 1..reclaimed (%d)' % (
                       where, r2['refaults'], r2['reclaimed']))
            expect(r2['reclaimed'] <= 2 * per_pass,
                   '%s: reclaimed %d > %d pages read' % (
                       where, r2['reclaimed'], 2 * per_pass))
            expect(r2['cached_bytes'] <= limit, '%s: cached %s > limit %s' % (
                where, mib(r2['cached_bytes']), mib(limit)))
            expect(r2['cached_bytes'] == ora['totals']['cached_bytes'],
                   '%s: cached %s, oracle %s' % (
                       where, mib(r2['cached_bytes']),
                       mib(ora['totals']['cached_bytes'])))
            expect(r2['added'] - r2['removed'] == r2['cached_bytes'] // P,
                   '%s: added %d - removed %d != cached %d pages' % (
                       where, r2['added'], r2['removed'],
                       r2['cached_bytes'] // P))
            if 'workingset_refault_file' in st2:
                d = (st2['workingset_refault_file'] -
                     st0['workingset_refault_file'])
                expect(r2['refaults'] <= d, '%s: refaults %d > the cgroup\'s '
                       'memory.stat workingset_refault_file delta %d' % (
                           where, r2['refaults'], d))
            if 'pgsteal_file' in vm1:
                d = vm2['pgsteal_file'] - vm1['pgsteal_file']
                expect(r2['reclaimed'] - r1['reclaimed'] <= d,
                       '%s: reclaimed %d in pass 2 > /proc/vmstat '
                       'pgsteal_file delta %d' % (
                           where, r2['reclaimed'] - r1['reclaimed'], d))
            rc, err = top.stop()
            expect(rc == 0, 'top: exit %d after SIGTERM: %s' % (rc, err))
        finally:
            cg.remove()


def t_rebuild_counts(fstype):
    # A rebuild (a new clone) renumbers the files, but their counts go on:
    # no file shows its resident pages again as added, none goes backwards,
    # and pages resident at the start are resident, not added.
    with prepared(fstype) as mnt:
        a, b, c = mnt + '/a', mnt + '/b', mnt + '/c'
        make_file(a, 4 * MiB, seed=1)
        reflink(a, b)
        cold(mnt)
        read_range(b)                      # resident before top starts
        top = Top(['--json', '--by', 'file', '-d', '0.3', mnt])
        try:
            top.wait(2)
            read_range(a)
            before = top.wait_new(2)
            reflink(a, c)                  # a change: the map is rebuilt
            frames = []
            for _ in range(4):
                frames.append(top.wait_new(1))
        finally:
            rc, err = top.stop()
        check(rc == 0, 'top exit %d: %s' % (rc, err))
        pages = 4 * MiB // P

        def row(fr, path):
            rows = [r for r in fr['rows'] if r['name'] == path]
            check(len(rows) == 1, 'no single row for %s in %s' % (path, fr))
            return rows[0]
        for fr in [before] + frames:
            ra, rb = row(fr, a), row(fr, b)
            check(ra['added'] == pages and ra['removed'] == 0,
                  'a: added %d removed %d, want %d and 0 (frame at %.1f s)'
                  % (ra['added'], ra['removed'], pages, fr['seconds']))
            check(rb['added'] == 0 and rb['cached_bytes'] == 4 * MiB,
                  'b (resident at start): added %d cached %d' % (
                      rb['added'], rb['cached_bytes']))
            if fr is not before:
                check(ra['added_per_s'] == 0 and rb['added_per_s'] == 0,
                      'after the rebuild: added/s a %s b %s, nothing was read'
                      % (ra['added_per_s'], rb['added_per_s']))
        check(any(r['name'] == c for r in frames[-1]['rows']),
              'the new clone %s never showed up' % c)


@test('rebuild_keeps_counts_xfs')
def t_rebuild_counts_xfs():
    t_rebuild_counts('xfs')


@test('rebuild_keeps_counts_btrfs')
def t_rebuild_counts_btrfs():
    t_rebuild_counts('btrfs')


@test('reclaim_memcg_xfs')
def t_reclaim_xfs():
    t_reclaim('xfs')


@test('reclaim_memcg_btrfs')
def t_reclaim_btrfs():
    t_reclaim('btrfs')


# ---------------------------------------------------------------- churn

CHURN_SECONDS = float(os.environ.get('DUPCACHE_CHURN_SECONDS', '40'))


def bpf_prog_ids():
    out = subprocess.run(['bpftool', '-j', 'prog', 'list'], stdout=subprocess.PIPE,
                         check=True).stdout
    return {p['id'] for p in json.loads(out or b'[]')}


def held_bpf_progs(pid):
    """Ids of the BPF programs a process holds (prog and link fds, from fdinfo)."""
    ids = set()
    for fd in os.listdir('/proc/%d/fd' % pid):
        try:
            with open('/proc/%d/fdinfo/%s' % (pid, fd)) as f:
                ids.update(int(ln.split()[1]) for ln in f if ln.startswith('prog_id:'))
        except OSError:
            pass
    return ids


def proc_status(pid):
    """(open fds, VmRSS kB) of a process."""
    with open('/proc/%d/status' % pid) as f:
        rss = next(int(ln.split()[1]) for ln in f if ln.startswith('VmRSS:'))
    return len(os.listdir('/proc/%d/fd' % pid)), rss


class Churn:
    """Random changes of every kind the engine must follow, from one seed:
    clones (whole and ranges), plain copies and dedupes of them, buffered
    and O_DIRECT writes, truncates, deletes, btrfs snapshots and their
    deletion, reads in a small memory cgroup and drops."""

    MAX_FILES = 20

    def __init__(self, mnt, fstype, cg, seed):
        import random
        self.m, self.btrfs, self.cg = mnt, fstype == 'btrfs', cg
        self.rnd = random.Random(seed)
        self.n = 0
        self.base = mnt + '/base'
        if self.btrfs:
            fsimg.run(['btrfs', '-q', 'subvolume', 'create', self.base])
        else:
            os.mkdir(self.base)
        for k in range(3):
            make_file(self.new_name(), 4 * MiB, seed=100 + k)
        self.ops = {}

    def new_name(self):
        self.n += 1
        return '%s/f%d' % (self.base, self.n)

    def files(self):
        out = []
        for d, _, names in os.walk(self.m):
            out += [os.path.join(d, n) for n in names]
        return sorted(out)

    def own(self):
        return sorted(os.path.join(self.base, n) for n in os.listdir(self.base))

    def pick(self, files=None):
        return self.rnd.choice(files or self.own())

    def step(self):
        r = self.rnd
        own = self.own()
        kinds = ['read', 'read', 'drop', 'write', 'odirect', 'clone',
                 'clone_range', 'copy', 'dedupe', 'truncate', 'delete']
        if self.btrfs:
            # A deleted snapshot's blocks stay shared until btrfs's cleaner
            # has dropped them, later and with no event: the engine looks
            # for the drop to end (tracker.c) and reads the extents again.
            kinds += ['snapshot', 'unsnapshot']
        kind = r.choice(kinds)
        if len(own) >= self.MAX_FILES and kind in ('clone', 'copy'):
            kind = 'delete'
        if len(own) <= 2 and kind == 'delete':
            kind = 'clone'
        getattr(self, 'op_' + kind)(own)
        self.ops[kind] = self.ops.get(kind, 0) + 1

    def op_read(self, own):
        read_in(self.cg, self.rnd.sample(self.files(), min(3, len(self.files()))))

    def op_drop(self, own):
        fd = os.open(self.pick(self.files()), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def op_write(self, own):
        f = self.pick()
        size = os.path.getsize(f)
        off = self.rnd.randrange(0, max(size, 1) + MiB, PAGE)
        fd = os.open(f, os.O_WRONLY)
        try:
            os.pwrite(fd, fsimg.data(self.rnd.choice([PAGE, 64 << 10, MiB]), self.n), off)
            if self.rnd.random() < 0.5:
                os.fsync(fd)
        finally:
            os.close(fd)

    def op_odirect(self, own):
        import mmap
        f = self.pick()
        n = self.rnd.choice([64 << 10, MiB])
        buf = mmap.mmap(-1, n)
        buf.write(fsimg.data(n, self.n + 7))
        off = self.rnd.randrange(0, max(os.path.getsize(f), n), 64 << 10)
        fd = os.open(f, os.O_WRONLY | os.O_DIRECT)
        try:
            os.pwritev(fd, [buf], off)
        finally:
            os.close(fd)

    def op_clone(self, own):
        reflink(self.pick(self.files()), self.new_name())

    def op_copy(self, own):
        fsimg.run(['cp', '--reflink=never', self.pick(), self.new_name()])

    def op_clone_range(self, own):
        src, dst = self.pick(self.files()), self.pick()
        size = os.path.getsize(src) // MiB * MiB
        if size < MiB:
            return
        off = self.rnd.randrange(0, size, MiB)
        dst_off = self.rnd.randrange(0, os.path.getsize(dst) // MiB * MiB + 1, MiB)
        clone_range(src, off, dst, dst_off, self.rnd.randrange(MiB, size - off + 1, MiB))

    def op_dedupe(self, own):
        # identical bytes, not shared: the source of a plain copy and the copy
        a = self.pick()
        b = self.new_name()
        fsimg.run(['cp', '--reflink=never', a, b])
        size = os.path.getsize(a) // PAGE * PAGE
        if size:
            fsimg.run(['xfs_io', '-c', 'dedupe %s 0 0 %d' % (a, size), b])

    def op_truncate(self, own):
        f = self.pick()
        os.truncate(f, self.rnd.randrange(0, os.path.getsize(f) + 1, PAGE))

    def op_delete(self, own):
        os.unlink(self.pick())

    def op_snapshot(self, own):
        snap = '%s/snap%d' % (self.m, self.n)
        self.n += 1
        fsimg.run(['btrfs', '-q', 'subvolume', 'snapshot', self.base, snap])

    def op_unsnapshot(self, own):
        snaps = sorted(n for n in os.listdir(self.m) if n.startswith('snap'))
        if not snaps:
            return self.op_snapshot(own)
        snap = '%s/%s' % (self.m, self.rnd.choice(snaps))
        fsimg.unpin_all(snap)
        fsimg.run(['btrfs', '-q', 'subvolume', 'delete', snap])


def t_churn(fstype):
    if not memcg_v1():
        raise Skip('no cgroup v1 memory hierarchy at ' + CG_ROOT)
    asan = os.environ.get('ASAN_OPTIONS')
    if asan is not None:
        # ASan keeps freed memory in quarantine (256 MiB): RSS would grow
        # without a leak.  Without it, RSS is flat and LeakSanitizer still looks.
        os.environ['ASAN_OPTIONS'] = asan + ':quarantine_size_mb=0'
    try:
        churn_run(fstype)
    finally:
        if asan is not None:
            os.environ['ASAN_OPTIONS'] = asan


def churn_run(fstype):
    with prepared(fstype) as mnt:
        cg = Memcg('churn', limit=32 * MiB)
        churn = Churn(mnt, fstype, cg, seed=11)
        top = Top(['--json', '--by', 'file', '-d', '0.25', mnt])
        watch = spawn([BIN, 'report', '--json', '--watch', '86400', '-n', '0', mnt],
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
        top.wait(1)
        end = time.monotonic() + CHURN_SECONDS
        marks = []
        checkpoints = 0
        while True:
            for _ in range(8):
                churn.step()
            # quiescent: nothing runs; the engine rebuilds within a second
            time.sleep(1.3)
            for attempt in range(8):
                a = oracle.compute([mnt])
                fr = top.wait_new(2)
                b = oracle.compute([mnt])
                t = fr['totals']
                if a == b and all(t[k] == a['totals'][k] for k in
                                  ('files', 'shared_bytes', 'cached_bytes', 'dup_bytes')):
                    break
            else:
                raise Fail('checkpoint %d (%s): top totals %s, oracle %s' % (
                    checkpoints + 1, churn.ops, {k: t[k] for k in a['totals']},
                    a['totals']))
            checkpoints += 1
            marks.append(proc_status(top.p.pid))
            held = held_bpf_progs(top.p.pid) | held_bpf_progs(watch.pid)
            if time.monotonic() >= end:
                break
        # report --watch, ended by ^C in the same quiescent state
        a = oracle.compute([mnt])
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
        b = oracle.compute([mnt])
        check(watch.returncode == 0, 'report --watch exit %d: %s' % (
            watch.returncode, err[-300:]))
        j = json.loads(out)
        got = {k: j['totals'][k] for k in a['totals']}
        check(a == b and got == a['totals'], 'report --watch at the end: '
              '%s, oracle %s' % (got, a['totals']))
        rc, err = top.stop()
        check(rc == 0, 'top exit %d: %s' % (rc, err[-300:]))
        # programs are freed after an RCU grace period: give them a moment
        for _ in range(50):
            left = held & bpf_prog_ids()
            if not left:
                break
            time.sleep(0.1)
        check(held and not left, 'BPF programs of top and report --watch left '
              'after both stopped: %s (of %s)' % (sorted(left), sorted(held)))
        (fd0, rss0), (fd1, rss1) = marks[0], marks[-1]
        check(fd1 == fd0, 'top holds %d fds at the last checkpoint, %d at the '
              'first' % (fd1, fd0))
        check(rss1 <= rss0 + 8192, 'top RSS %d kB at the last checkpoint, %d kB '
              'at the first' % (rss1, rss0))
        check(checkpoints >= 2 and len(churn.ops) >= 8, 'only %d checkpoints, '
              'ops %s' % (checkpoints, churn.ops))
        print('    churn %s: %.0f s, %d checkpoints, ops %s' % (
            fstype, CHURN_SECONDS, checkpoints, churn.ops), flush=True)


@test('churn_xfs')
def t_churn_xfs():
    t_churn('xfs')


@test('churn_btrfs')
def t_churn_btrfs():
    t_churn('btrfs')


# ---------------------------------------------------------------- 4. cgroups

def t_cgroups(fstype):
    if not memcg_v1():
        raise Skip('no cgroup v1 memory hierarchy at ' + CG_ROOT)
    size = 8 * MiB
    with prepared(fstype) as mnt:
        a, b, c = mnt + '/a', mnt + '/b', mnt + '/c'
        make_file(a, size, seed=5)
        reflink(a, b)
        reflink(a, c)
        cold(mnt)
        # 2 MiB of c cached before start: 3 copies there, 2 elsewhere
        read_range(c, 0, 2 * MiB, exact=True)
        cga, cgb = Memcg('a'), Memcg('b')
        try:
            top = Top(['--json', '--by', 'cgroup', '-d', '0.5', mnt])
            fr = top.wait(1)
            check_json_shape('first frame', fr, 'cgroup')
            got = [(r['name'], r['cached_bytes']) for r in fr['rows']]
            expect(got == [('(cached before start)', 2 * MiB)],
                   'first frame rows (name, cached) %s, want %s' % (
                       got, [('(cached before start)', 2 * MiB)]))
            read_in(cga, [a])
            read_in(cgb, [b])
            pin(a)
            pin(b)
            ora, fa, fr = settle(mnt, top.wait_new)
            check_json_shape('after the reads', fr, 'cgroup')
            check_json_totals('after the reads', fr, ora)
            want = {cga.name: a, cgb.name: b, '(cached before start)': c}
            got = {r['name']: r for r in fr['rows']}
            expect(sorted(got) == sorted(want), 'rows %s, want %s' % (
                sorted(got), sorted(want)))
            for name in set(got) & set(want):
                r, f = got[name], fa[want[name]]
                expect(r['cached_bytes'] == f['cached'],
                       'row %s: cached %s, mincore of %s %s' % (
                           name, mib(r['cached_bytes']), want[name],
                           mib(f['cached'])))
                expect(r['dup_bytes'] == f['dup'],
                       'row %s: dup %s, fair share of %s %s' % (
                           name, mib(r['dup_bytes']), want[name],
                           mib(f['dup'])))
            for name, path in ((cga.name, a), (cgb.name, b)):
                if name not in got:
                    continue
                r = got[name]
                expect(fa[path]['cached'] == size,
                       '%s not fully cached: %s' % (path,
                                                    mib(fa[path]['cached'])))
                expect((r['added'], r['removed'], r['reclaimed'],
                        r['refaults']) == (size // P, 0, 0, 0),
                       'row %s: added/removed/reclaimed/refaults %s, want %s '
                       '(the reader brought in every page of %s once)' % (
                           name, (r['added'], r['removed'], r['reclaimed'],
                                  r['refaults']), (size // P, 0, 0, 0), path))
            if cga.name in got and cgb.name in got:
                expect(got[cga.name]['dup_bytes'] ==
                       got[cgb.name]['dup_bytes'],
                       'equal readers, unequal shares: %s vs %s' % (
                           got[cga.name]['dup_bytes'],
                           got[cgb.name]['dup_bytes']))
            total = sum(r['dup_bytes'] for r in fr['rows'])
            expect(total <= fr['totals']['dup_bytes'],
                   'cgroup shares add up to %s > total dup %s' % (
                       mib(total), mib(fr['totals']['dup_bytes'])))

            # a leaves the cache (POSIX_FADV_DONTNEED: not reclaim).  A's
            # row stays (its pages entered the cache while top ran) with
            # nothing cached; the shares of the others grow.
            drop(a)
            ora, fa, fr = settle(mnt, top.wait_new)
            check_json_totals('after dropping a', fr, ora)
            got = {r['name']: r for r in fr['rows']}
            expect(cga.name in got, 'after dropping a: no row %s any more '
                   '(rows %s)' % (cga.name, sorted(got)))
            if cga.name in got:
                r = got[cga.name]
                expect((r['cached_bytes'], r['dup_bytes'], r['added'],
                        r['removed'], r['reclaimed'], r['refaults']) ==
                       (0, 0, size // P, size // P, 0, 0),
                       'after dropping a: row %s cached, dup, added, '
                       'removed, reclaimed, refaults = %s, want %s' % (
                           cga.name,
                           (r['cached_bytes'], r['dup_bytes'], r['added'],
                            r['removed'], r['reclaimed'], r['refaults']),
                           (0, 0, size // P, size // P, 0, 0)))
            for name, path in ((cgb.name, b), ('(cached before start)', c)):
                r = got.get(name)
                expect(r is not None and
                       (r['cached_bytes'], r['dup_bytes']) ==
                       (fa[path]['cached'], fa[path]['dup']),
                       'after dropping a: row %s (cached, dup) = %s, '
                       'oracle for %s %s' % (
                           name, r and (r['cached_bytes'], r['dup_bytes']),
                           path, (fa[path]['cached'], fa[path]['dup'])))
            rc, err = top.stop()
            expect(rc == 0, 'top: exit %d after SIGTERM: %s' % (rc, err))
        finally:
            cga.remove()
            cgb.remove()


@test('cgroup_attribution_xfs')
def t_cgroups_xfs():
    t_cgroups('xfs')


@test('cgroup_attribution_btrfs')
def t_cgroups_btrfs():
    t_cgroups('btrfs')


# ---------------------------------------------------------------- runner

class Terminated(BaseException):
    pass


def _terminate(signum, frame):
    raise Terminated('signal %d' % signum)


def main(argv):
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', required=True)
    ap.add_argument('-k', action='append', default=[])
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print('test_top.py: needs root (loop mounts, BPF, cgroups)',
              file=sys.stderr)
        return 1
    if not os.access(a.bin, os.X_OK):
        print('test_top.py: %s is not an executable' % a.bin, file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix='dctest-top-bin-')
    os.chmod(tmp, 0o755)
    BIN = os.path.join(tmp, 'dupcache')
    shutil.copy2(a.bin, BIN)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _terminate)
    atexit.register(damon_restore)
    atexit.register(cleanup_cgroups)
    def with_soft_failures(fn):
        def body():
            del _soft[:]
            fn()
            if _soft:
                raise Fail('; '.join(_soft))
        return body
    selected = [(name, with_soft_failures(fn)) for name, fn, _ in SUITE.tests
                if not a.k or any(k in name for k in a.k)]
    try:
        damon_pause()
        return SUITE.run(selected, after_each=cleanup_cgroups, interrupts=(Terminated,))
    finally:
        fsimg.kill_children()
        cleanup_cgroups()
        damon_restore()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
