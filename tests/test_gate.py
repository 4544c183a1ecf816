#!/usr/bin/python3
"""Tests of `dupcache gate` against tests/oracle.py on loop XFS/btrfs.

    /usr/bin/python3 tests/test_gate.py --bin ./dupcache [-k NAME]...

Run as root from the repo root.  Prints PASS/FAIL/SKIP per test and a last
line "gate: N passed, N failed, N skipped"; exits 1 if any failed.

The deterministic workload: three reflinked 32 MiB files read whole by
`cat` from a cold cache.  Every physical page then has 3 copies, so the
in-kernel peak of duplicate bytes is exactly 2 x 32 MiB; the oracle, taken
on the state the workload leaves, must say the same.  The workload's pages
are not mapped (cat reads them), so DAMON (proactive reclaim of idle
unmapped page cache, in coarse regions: a fresh page in an old idle region
may go at once) is paused for the run and always restored, as test_top.py
does; what the oracle looks at is pinned first.
Reclaim (a 24 MiB memory cgroup) is bounded by the kernel's own counters.
The JUnit files are read with Debian's python3-junitparser, the CI files
with python3-yaml.
"""
import argparse
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import oracle                                           # noqa: E402
import fsimg                                            # noqa: E402
from fsimg import (LoopFs, MiB, PAGE, spawn, make_file,  # noqa: E402
                   reflink, read_range, drop, cold, pin)
from harness import Fail, Suite, check                  # noqa: E402
from test_integration import btf_without                # noqa: E402
from test_top import (CG_ROOT, Memcg, memcg_v1, vmstat,  # noqa: E402
                      damon_pause, damon_restore, Terminated, _terminate)

FSTYPES = ('xfs', 'btrfs')
BIN = None
NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']
SIZE = 32 * MiB

SUITE = Suite('gate')
test = SUITE.test


def each_fs(name):
    """A test per filesystem type: fn(fs, mnt, out) with out a scratch dir
    outside the tracked tree (for JSON, JUnit, Markdown, budgets)."""
    def deco(fn):
        for t in FSTYPES:
            def body(t=t):
                fs = LoopFs(t)
                out = tempfile.mkdtemp(prefix='dupcache-gate-out-', dir='/tmp')
                try:
                    with fs as m:
                        fn(fs, m, out)
                finally:
                    shutil.rmtree(out, ignore_errors=True)
            test('%s_%s' % (name, t))(body)
        return fn
    return deco


# ---------------------------------------------------------------- the tool

def gate(args, cmd=None, timeout=120, user=False, env=None):
    """Run dupcache gate ARGS [-- CMD...]: (rc, stdout, stderr)."""
    full = (NOBODY if user else []) + [BIN, 'gate'] + list(args)
    if cmd is not None:
        full += ['--'] + list(cmd)
    e = dict(os.environ)
    for k in ('GITHUB_ACTIONS', 'GITHUB_STEP_SUMMARY'):
        e.pop(k, None)
    e.update(env or {})
    p = spawn(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE, env=e)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise Fail('%s did not finish within %d s' % (' '.join(full), timeout))
    return p.returncode, out.decode(errors='replace'), err.decode(errors='replace')


def gate_json(args, cmd, out, rc_want, name='g.json', **kw):
    """gate with --json; checks the exit code, returns (json, stdout, stderr)."""
    path = os.path.join(out, name)
    rc, so, se = gate(['--json', path] + list(args), cmd, **kw)
    check(rc == rc_want, 'gate %s exited %d, want %d; stdout=%r stderr=%r'
          % (' '.join(args), rc, rc_want, so[-800:], se[-800:]))
    with open(path) as f:
        j = json.load(f)
    check(j['schema'] == 1 and j['exit_code'] == rc,
          'schema %r, exit_code %r (exited %d)' % (j['schema'], j['exit_code'], rc))
    return j, so, se


def one_error_line(args, cmd=None, want=2, what=None, prefix='dupcache: gate: ', **kw):
    """Bad input: exit `want` and exactly one stderr line "dupcache: ..."."""
    rc, so, se = gate(args, cmd, timeout=60, **kw)
    lines = [ln for ln in se.splitlines() if ln.strip()]
    label = what or ' '.join(args)
    check(rc == want, '%s: exited %d, want %d; stderr=%r' % (label, rc, want, se))
    check(len(lines) == 1 and lines[0].startswith(prefix),
          '%s: want one line "%s...", got %r' % (label, prefix, lines))
    return lines[0]


def three_clones(m, n=3, size=SIZE):
    paths = [os.path.join(m, c) for c in 'abcdefgh'[:n]]
    make_file(paths[0], size, seed=7)
    for p in paths[1:]:
        reflink(paths[0], p)
    return paths


def cat(*paths):
    return ['sh', '-c', 'cat "$@" >/dev/null', 'sh'] + list(paths)


def after_workload(m):
    """The oracle on the state a workload left: pinned first, so it stays."""
    for p in fsimg.regular_files(m):
        pin(p)
    return oracle.compute([m])


def junit(path):
    """(tests, [(name, failure message or None, error message or None)])
    as python3-junitparser reads the file."""
    import junitparser
    xml = junitparser.JUnitXml.fromfile(path)
    suites = list(xml) if isinstance(xml, junitparser.JUnitXml) else [xml]
    cases = []
    for s in suites:
        for c in s:
            fail = err = None
            for r in c.result:
                if isinstance(r, junitparser.Failure):
                    fail = r.message
                elif isinstance(r, junitparser.Error):
                    err = r.message
            cases.append((c.name, fail, err))
    return sum(s.tests for s in suites), cases


def fair_share(copies, pages):
    """A file's share of the duplicates: pages it holds of physical pages
    with `copies` copies each carry floor(P * (copies - 1) / copies)."""
    return pages * (PAGE * (copies - 1) // copies)


def human(n):
    """Bytes as the tool prints them (binary units, one decimal below 100)."""
    units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
    v, u = float(n), 0
    while v >= 1024 and u < len(units) - 1:
        v, u = v / 1024, u + 1
    return '%d B' % n if u == 0 else ('%.1f %s' if v < 100 else '%.0f %s') % (v, units[u])


def check_metric(j, name, want, what=''):
    got = j['metrics'].get(name)
    check(got == want, '%s%s = %r, want %r' % (what, name, got, want))


def no_stall_tracepoints(err):
    return 'mm_vmscan_direct_reclaim' in err or 'mm_vmscan_memcg_reclaim' in err


# ---------------------------------------------------------------- workload

@each_fs('peak_exact')
def t_peak(fs, m, out):
    """3 clones of 32 MiB read from a cold cache: every figure exact."""
    paths = three_clones(m)
    cold(m, fs)
    md, ju = os.path.join(out, 'g.md'), os.path.join(out, 'g.xml')
    j, so, se = gate_json(['--max-dup', '64MiB', '--junit', ju, '--markdown', md, m],
                          cat(*paths), out, 0)
    want = after_workload(m)
    check(want['totals']['dup_bytes'] == 2 * SIZE and
          want['totals']['cached_bytes'] == 3 * SIZE,
          'oracle after the workload: %s' % want['totals'])
    npages = SIZE // PAGE
    check_metric(j, 'peak_dup_bytes', want['totals']['dup_bytes'])
    check_metric(j, 'end_dup_bytes', want['totals']['dup_bytes'])
    check_metric(j, 'end_cached_bytes', want['totals']['cached_bytes'])
    check_metric(j, 'cached_growth_bytes', want['totals']['cached_bytes'])
    check_metric(j, 'pages_added', 3 * npages)
    check_metric(j, 'refaults', 0)
    check_metric(j, 'reclaimed', 0)
    check_metric(j, 'workload_exit', 0)
    r = j['metrics']['peak_dup_ratio']
    check(abs(r - 100.0 * 2 / 3) < 1e-9, 'peak_dup_ratio %r, want 66.67' % r)
    check(abs(j['metrics']['end_dup_ratio'] - 100.0 * 2 / 3) < 1e-9,
          'end_dup_ratio %r' % j['metrics']['end_dup_ratio'])
    check(j['metrics']['page_cache_growth_bytes'] > 0,
          'page_cache_growth_bytes %r' % j['metrics']['page_cache_growth_bytes'])
    check(0 < j['metrics']['workload_seconds'] < 60, 'workload_seconds %r'
          % j['metrics']['workload_seconds'])
    # stalls are measured exactly when the engine has their tracepoints
    has_stalls = 'reclaim_stalls' in j['metrics']
    check(has_stalls != no_stall_tracepoints(se),
          'reclaim_stalls %s, yet stderr %r' % ('measured' if has_stalls else 'absent', se))
    check(j['verdict'] == 'pass' and j['mode'] == 'workload' and
          j['page_size'] == PAGE and j['filesystems'] == [fs.fstype] and
          j['files'] == 3, 'header %s' % {k: j[k] for k in (
              'verdict', 'mode', 'page_size', 'filesystems', 'files')})
    check(len(j['runs']) == 1 and j['runs'][0]['metrics'] == j['metrics'],
          'runs %s' % j['runs'])
    ck = j['checks']
    check(len(ck) == 1 and ck[0] == {'metric': 'peak_dup_bytes', 'budget': 'max',
                                     'limit': 64 * MiB, 'value': 2 * SIZE,
                                     'level': 'error', 'status': 'pass'},
          'checks %s' % ck)
    # the peak's offenders: the group, then the files with their fair shares
    grp = [g for g in want['groups']]
    check(len(grp) == 1, 'oracle groups %s' % grp)
    offs = j['offenders']
    check(offs[0]['kind'] == 'group' and offs[0]['dup_bytes'] == grp[0]['dup_bytes'] and
          offs[0]['files'] == 3 and offs[0]['path'] in paths, 'offenders %s' % offs[:1])
    files = sorted((o['path'], o['dup_bytes']) for o in offs if o['kind'] == 'file')
    check(files == [(p, fair_share(3, npages)) for p in paths],
          'file offenders %s, want %d each' % (files, fair_share(3, npages)))
    # the timeline: cold at 0, the peak at the end, never above the kernel's peak
    tl = j['timeline']
    check(tl[0]['dup_bytes'] == 0 and tl[0]['cached_bytes'] == 0 and tl[0]['seconds'] == 0,
          'first point %s' % tl[0])
    check(tl[-1]['dup_bytes'] == 2 * SIZE and tl[-1]['cached_bytes'] == 3 * SIZE,
          'last point %s' % tl[-1])
    check(max(p['dup_bytes'] for p in tl) <= j['metrics']['peak_dup_bytes'],
          'a sample above the peak')
    check(j['runs'][0]['peak_sample']['dup_bytes'] == 2 * SIZE, 'peak_sample %s'
          % j['runs'][0]['peak_sample'])
    # outputs: the table, JUnit (a real consumer), Markdown
    row = [ln for ln in so.splitlines() if ln.split()[:1] == ['peak_dup_bytes']]
    check(row and row[0].split()[-1] == 'PASS' and '64.0 MiB' in row[0],
          'table row %r' % row)
    n, cases = junit(ju)
    check(n == 1 and cases == [('peak_dup_bytes max', None, None)], 'JUnit %s' % cases)
    text = open(md).read()
    check('| metric | value | limit | level | status |' in text and
          re.search(r'^\| peak_dup_bytes \| 64\.0 MiB \| \\<= 64\.0 MiB \| error \| pass \|$',
                    text, re.M), 'Markdown table:\n%s' % text)
    chart = re.search(r'```mermaid\nxychart-beta\n(.*?)```', text, re.S)
    check(chart, 'no Mermaid xychart-beta in the Markdown:\n%s' % text)
    lines = re.findall(r'^\s*line \[([^\]]*)\]$', chart.group(1), re.M)
    check(len(lines) == 2, 'chart lines %r' % lines)
    dup = [float(v) for v in lines[0].split(',')]
    cached = [float(v) for v in lines[1].split(',')]
    check(dup[0] == 0 and max(dup) == 64.0 and max(cached) == 96.0 and
          len(dup) == len(cached) == min(len(tl), 60),
          'chart values dup %s cached %s' % (dup, cached))


@each_fs('budget_levels')
def t_budget(fs, m, out):
    """A budget below the peak fails (6, a JUnit <failure>), at and above
    it passes (0, none); a warn-level one only warns."""
    paths = three_clones(m)
    ju = os.path.join(out, 'g.xml')
    for limit, rc_want in ((2 * SIZE - 1, 6), (2 * SIZE, 0), ('1GiB', 0)):
        j, so, se = gate_json(['--max-dup', str(limit), '--junit', ju, m], cat(*paths), out,
                              rc_want)
        check_metric(j, 'peak_dup_bytes', 2 * SIZE, 'limit %s: ' % limit)
        n, cases = junit(ju)
        failed = [c for c in cases if c[1] is not None]
        if rc_want:
            check(j['verdict'] == 'fail' and j['checks'][0]['status'] == 'fail' and
                  j['checks'][0]['limit'] == 2 * SIZE - 1, 'JSON %s' % j['checks'])
            check(n == 1 and len(failed) == 1 and '64.0 MiB' in failed[0][1],
                  'JUnit for a failed budget: %s' % cases)
            check(re.search(r'^\s+peak_dup_bytes .* FAIL$', so, re.M), 'table %r' % so)
        else:
            check(j['verdict'] == 'pass' and n == 1 and not failed, 'JUnit %s' % cases)
    budget = os.path.join(out, 'b.json')
    with open(budget, 'w') as f:
        json.dump({'schema': 1, 'budgets': {
            'peak_dup_bytes': [{'max': '32 MiB', 'level': 'warn'}, {'max': '1.5 GiB'}],
            'peak_dup_ratio': {'max': '66.6%', 'level': 'warn'},
            'pages_added': {'max': 3 * SIZE // PAGE}}}, f)
    j, so, se = gate_json(['--budget', budget, '--junit', ju, m], cat(*paths), out, 0)
    st = [(c['metric'], c['level'], c['status'], c['limit']) for c in j['checks']]
    check(st == [('peak_dup_bytes', 'warn', 'warn', 32 * MiB),
                 ('peak_dup_bytes', 'error', 'pass', 1536 * MiB),
                 ('peak_dup_ratio', 'warn', 'warn', 66.6),
                 ('pages_added', 'error', 'pass', 3 * SIZE // PAGE)], 'checks %s' % st)
    check(j['verdict'] == 'warn', 'verdict %s' % j['verdict'])
    n, cases = junit(ju)
    check(n == 4 and not [c for c in cases if c[1] or c[2]], 'JUnit %s' % cases)
    check(len(re.findall(r' WARN$', so, re.M)) == 2, 'table %r' % so)
    # under GitHub Actions: annotations, failed checks first, then the offenders
    # largest first, at most 10 lines; two smaller groups (8 and 4 MiB of duplicates)
    x, y, z, w = (os.path.join(m, n) for n in 'xyzw')
    make_file(x, 8 * MiB, seed=11)
    reflink(x, y)
    make_file(z, 4 * MiB, seed=12)
    reflink(z, w)
    summary = os.path.join(out, 'summary.md')
    open(summary, 'w').write('earlier step\n')
    j, so, se = gate_json(['--max-dup', '1M', '--max-dup-ratio', '10', m], cat(*paths + [x, y, z, w]),
                          out, 6, env={'GITHUB_ACTIONS': 'true', 'GITHUB_STEP_SUMMARY': summary})
    ann = [ln for ln in so.splitlines() if ln.startswith('::')]
    offs = sorted(j['offenders'], key=lambda o: -o['dup_bytes'])    # stable: JSON order at ties
    want = ['::error title=dupcache gate offender::%s %s duplicate page cache: %s'
            % (o['kind'], human(o['dup_bytes']), o['path']) for o in offs]
    check([o['dup_bytes'] for o in offs] == [2 * SIZE] + [fair_share(3, SIZE // PAGE)] * 3 +
          [8 * MiB] + [fair_share(2, 8 * MiB // PAGE)] * 2 +
          [4 * MiB] + [fair_share(2, 4 * MiB // PAGE)] * 2, 'offenders %s' % offs)
    # GitHub's workflow commands escape '%' as %25
    check(ann[0].startswith('::error title=dupcache gate::peak_dup_bytes 76.0 MiB') and
          ann[1].startswith('::error title=dupcache gate::peak_dup_ratio 63.3%25') and
          ann[2:] == want[:8] and len(ann) == 10, 'annotations %r, want then %r' % (ann, want))
    text = open(summary).read()
    check(text.startswith('earlier step\n### dupcache gate: fail') and 'xychart-beta' in text,
          'GITHUB_STEP_SUMMARY %r' % text[:200])


@each_fs('baseline_relative')
def t_baseline(fs, m, out):
    """max_increase over a saved baseline, with and without the floor."""
    a, b, c = three_clones(m)
    base0, base32 = os.path.join(out, 'base0.json'), os.path.join(out, 'base32.json')
    rc, so, se = gate(['--save-baseline', base0, m], cat(a))
    check(rc == 0, 'saving a baseline exited %d: %r' % (rc, se))
    rc, so, se = gate(['--save-baseline', base32, m], cat(a, b))
    check(rc == 0, 'saving a baseline exited %d: %r' % (rc, se))
    b0, b32 = json.load(open(base0)), json.load(open(base32))
    check(b0['metrics']['peak_dup_bytes'] == 0 and b32['metrics']['peak_dup_bytes'] == SIZE,
          'baselines: peak %s and %s' % (b0['metrics']['peak_dup_bytes'],
                                         b32['metrics']['peak_dup_bytes']))
    # 32 MiB -> 64 MiB is +100%
    for pct, rc_want in (('100', 0), ('99.9%', 6)):
        j, so, se = gate_json(['--baseline', base32, '--max-increase', pct, m],
                              cat(a, b, c), out, rc_want)
        ck = j['checks'][0]
        limit = int(SIZE + SIZE * float(pct.rstrip('%')) / 100)
        check(ck['budget'] == 'max_increase' and ck['baseline'] == SIZE and
              ck['value'] == 2 * SIZE and ck['limit'] == limit and
              ck['status'] == ('pass' if rc_want == 0 else 'fail'),
              '--max-increase %s: %s (limit want %d)' % (pct, ck, limit))
    # over a 0-byte baseline, a percentage alone allows nothing: the floor does
    budget = os.path.join(out, 'b.json')
    for floor, rc_want in ((None, 6), (SIZE - PAGE, 6), ('32 MiB', 0)):
        spec = {'max_increase': '10%'}
        if floor is not None:
            spec['min_increase'] = floor
        with open(budget, 'w') as f:
            json.dump({'budgets': {'peak_dup_bytes': spec}}, f)
        j, so, se = gate_json(['--baseline', base0, '--budget', budget, m], cat(a, b), out,
                              rc_want)
        ck = j['checks'][0]
        want_limit = 0 if floor is None else (SIZE - PAGE if floor != '32 MiB' else SIZE)
        check(ck['limit'] == want_limit and ck['value'] == SIZE and ck['baseline'] == 0,
              'floor %r: %s' % (floor, ck))
    # a baseline without the metric: unmeasured, never a pass
    snap = os.path.join(out, 'snap.json')
    rc, so, se = gate(['--save-baseline', snap, m])
    check(rc == 0, 'snapshot baseline exited %d: %r' % (rc, se))
    j, so, se = gate_json(['--baseline', snap, '--max-increase', '50', m], cat(a), out, 6)
    check(j['checks'][0]['status'] == 'unmeasured' and
          'baseline' in j['checks'][0]['reason'], 'checks %s' % j['checks'])


@each_fs('runs_median')
def t_runs(fs, m, out):
    """--runs N: each run from a cold cache, the (lower) median checked."""
    a, b, c = three_clones(m)
    counter = os.path.join(out, 'count')
    # run k reads: 0: a b c (64 MiB dup), 1: a (0), 2: a b (32 MiB)
    script = ('n=$(cat %s); echo $((n + 1)) > %s; case $n in 0) cat a b c;; 1) cat a;; '
              '*) cat a b;; esac >/dev/null' % (counter, counter))
    for runs, peaks, median in ((3, [2 * SIZE, 0, SIZE], SIZE), (2, [2 * SIZE, 0], 0)):
        open(counter, 'w').write('0\n')
        j, so, se = gate_json(['--runs', str(runs), '--max-dup', str(SIZE), m],
                              ['sh', '-c', 'cd %s && %s' % (m, script)], out, 0)
        got = [r['metrics']['peak_dup_bytes'] for r in j['runs']]
        check(got == peaks, '--runs %d: peaks %s, want %s (a run not from a cold '
              'cache starts with the last one\'s pages)' % (runs, got, peaks))
        check_metric(j, 'peak_dup_bytes', median, '--runs %d: ' % runs)
        grown = [r['metrics']['cached_growth_bytes'] for r in j['runs']]
        want_growth = [3 * SIZE, SIZE, 2 * SIZE][:runs]
        check(grown == want_growth, 'cached_growth_bytes %s, want %s' % (grown, want_growth))
        check_metric(j, 'cached_growth_bytes', sorted(want_growth)[(runs - 1) // 2])
        check(j['runs'][j['median_run']]['metrics']['peak_dup_bytes'] == median,
              'median_run %d' % j['median_run'])
        check(j['checks'][0]['value'] == median and j['checks'][0]['status'] == 'pass',
              'checks %s' % j['checks'])


@each_fs('workload_failure')
def t_workload_failure(fs, m, out):
    """-- false exits 7 (checks still written); --allow-workload-failure."""
    a, b, c = three_clones(m, size=4 * MiB)
    ju = os.path.join(out, 'g.xml')
    j, so, se = gate_json(['--max-dup', '8M', '--junit', ju, m], ['false'], out, 7)
    check(j['workload_failed'] and j['metrics']['workload_exit'] == 1 and
          j['checks'][0]['status'] == 'pass' and j['verdict'] == 'pass',
          'JSON %s' % {k: j[k] for k in ('workload_failed', 'verdict', 'checks')})
    check(junit(ju)[0] == 1, 'JUnit written')
    j, so, se = gate_json(['--max-dup', '8M', '--allow-workload-failure', m], ['false'], out, 0)
    # a failed check with a failed workload: 7, or 6 when the failure is allowed
    cmd = ['sh', '-c', 'cat "$@" >/dev/null; exit 3', 'sh', a, b, c]
    j, so, se = gate_json(['--max-dup', str(8 * MiB - 1), m], cmd, out, 7)
    check(j['checks'][0]['status'] == 'fail' and j['metrics']['workload_exit'] == 3 and
          j['metrics']['peak_dup_bytes'] == 8 * MiB, 'JSON %s' % j['checks'])
    j, so, se = gate_json(['--max-dup', str(8 * MiB - 1), '--allow-workload-failure', m],
                          cmd, out, 6)
    # a command that cannot run: 127, said once
    j, so, se = gate_json([m], ['/nonexistent/workload'], out, 7)
    check(j['metrics']['workload_exit'] == 127 and
          'dupcache: gate: cannot run \'/nonexistent/workload\'' in se, 'stderr %r' % se)
    # the workload's output passes through
    rc, so, se = gate([m], ['sh', '-c', 'echo from-the-workload; echo to-stderr >&2'])
    check(rc == 0 and so.startswith('from-the-workload\n') and 'to-stderr' in se,
          'pass-through: stdout %r stderr %r' % (so[:80], se))


@each_fs('cold_and_warm')
def t_cold_warm(fs, m, out):
    """The tracked files' cache is dropped first (only theirs), --warm keeps it."""
    paths = three_clones(m, size=8 * MiB)
    outside = os.path.join(out, 'outside')
    make_file(outside, 4 * MiB, seed=3)
    read_range(outside)                 # pinned: stays whatever the gate does
    for p in paths:
        read_range(p, keep=False)       # unpinned: DONTNEED can drop it
    before = oracle.compute([m])
    check(before['totals']['dup_bytes'] == 16 * MiB, 'oracle before %s' % before['totals'])
    j, so, se = gate_json(['--warm', m], ['true'], out, 0)
    check_metric(j, 'peak_dup_bytes', before['totals']['dup_bytes'], '--warm: ')
    check_metric(j, 'end_cached_bytes', before['totals']['cached_bytes'], '--warm: ')
    check_metric(j, 'cached_growth_bytes', 0, '--warm: ')
    j, so, se = gate_json([m], ['true'], out, 0)
    check_metric(j, 'peak_dup_bytes', 0, 'cold: ')
    check_metric(j, 'end_cached_bytes', 0, 'cold: ')
    after = oracle.compute([m])
    check(after['totals']['cached_bytes'] == 0, 'oracle after the drop %s' % after['totals'])
    check(fsimg.resident_pages(outside) == 4 * MiB // PAGE,
          'a file outside the tracked tree lost its cache')


@each_fs('snapshot')
def t_snapshot(fs, m, out):
    """Without a workload: the state now, as nobody (no privilege needed);
    what needs the engine cannot be measured and fails."""
    paths = three_clones(m, size=8 * MiB)
    for p in paths:
        os.chown(p, 65534, 65534)      # the kernel shows a file's cache to its owner
        read_range(p)
    want = oracle.compute([m])
    ju = os.path.join(out, 'g.xml')
    os.chown(out, 65534, 65534)
    j, so, se = gate_json(['--max-dup', '16MiB', '--max-dup-ratio', '66.7', '--junit', ju, m],
                          None, out, 0, user=True)
    check(want == oracle.compute([m]), 'the page cache changed meanwhile')
    check(j['mode'] == 'snapshot' and j['metrics'] == {
        'end_dup_bytes': want['totals']['dup_bytes'],
        'end_cached_bytes': want['totals']['cached_bytes'],
        'end_dup_ratio': 100.0 * want['totals']['dup_bytes'] / want['totals']['cached_bytes']},
        'snapshot metrics %s, oracle %s' % (j['metrics'], want['totals']))
    check([(c['metric'], c['status']) for c in j['checks']] ==
          [('end_dup_bytes', 'pass'), ('end_dup_ratio', 'pass')], 'checks %s' % j['checks'])
    check(j['offenders'] == [{'kind': 'group', 'path': j['offenders'][0]['path'], 'files': 3,
                              'dup_bytes': 16 * MiB}], 'offenders %s' % j['offenders'])
    j, so, se = gate_json(['--max-dup', '16MiB', '--max-refaults', '0', '--junit', ju, m],
                          None, out, 6, user=True)
    ck = j['checks'][1]
    check(ck['metric'] == 'refaults' and ck['status'] == 'unmeasured' and ck['value'] is None and
          'without a workload' in ck['reason'], 'checks %s' % j['checks'])
    n, cases = junit(ju)
    check(n == 2 and cases[0] == ('end_dup_bytes max', None, None) and
          cases[1][0] == 'refaults max' and 'without a workload' in cases[1][2],
          'JUnit %s' % cases)


@each_fs('reclaim_in_memcg')
def t_reclaim(fs, m, out):
    """Two passes over 3 x 16 MiB of clones in a 24 MiB memory cgroup:
    reclaim, refaults and limit reclaim stalls, bounded by the kernel's own
    counters; the end state exact against the oracle."""
    if not memcg_v1():
        raise Fail('no cgroup v1 memory hierarchy at %s (this machine has one)' % CG_ROOT)
    size, limit = 16 * MiB, 24 * MiB
    paths = three_clones(m, size=size)
    per_pass = 3 * size // PAGE
    ora = os.path.join(out, 'oracle.json')
    # The cgroup at its limit goes on reclaiming after the last read (I/O and
    # btrfs workers charged to it): the workload lifts the limit, lets that
    # settle and takes the oracle as its last act, so it sees the state the
    # gate ends with.  Whatever still changes the cache from outside (someone's
    # drop_caches) shows as an oracle that differs afterwards: that attempt
    # does not count.
    for attempt in range(3):
        cold(m, fs)
        cg = Memcg('gate', limit=limit)
        try:
            vm0, st0 = vmstat(), cg.stat()
            script = ('echo $$ > {cg}/cgroup.procs && cat "$@" >/dev/null && cat "$@" >/dev/null '
                      '&& echo -1 > {cg}/memory.limit_in_bytes && sleep 0.5 && '
                      '/usr/bin/python3 {oracle} {m} > {ora}').format(
                          cg=cg.path, oracle=os.path.join(HERE, 'oracle.py'), m=m, ora=ora)
            j, so, se = gate_json([m], ['sh', '-c', script, 'sh'] + paths, out, 0)
            vm1, st1 = vmstat(), cg.stat()
            want = json.load(open(ora))
            if want == json.loads(json.dumps(oracle.compute([m]))):
                break
        finally:
            cg.remove()
    else:
        raise Fail('the page cache changed after each of 3 workloads ended (from outside)')
    mt = j['metrics']
    check(mt['end_cached_bytes'] == want['totals']['cached_bytes'] <= limit and
          mt['end_dup_bytes'] == want['totals']['dup_bytes'] and
          mt['cached_growth_bytes'] == mt['end_cached_bytes'],
          'end state %s, oracle %s' % (mt, want['totals']))
    steal = vm1['pgsteal_file'] - vm0['pgsteal_file']
    refault = st1['workingset_refault_file'] - st0['workingset_refault_file']
    check(0 < mt['reclaimed'] <= steal, 'reclaimed %d, want 1..%d (/proc/vmstat pgsteal_file)'
          % (mt['reclaimed'], steal))
    check(0 < mt['refaults'] <= min(refault, mt['reclaimed']),
          'refaults %d, want 1..min(memory.stat workingset_refault_file %d, reclaimed %d)'
          % (mt['refaults'], refault, mt['reclaimed']))
    # every page is read twice; what stayed resident across the passes is at most the limit
    check(mt['pages_added'] >= 2 * per_pass - limit // PAGE, 'pages_added %d < %d'
          % (mt['pages_added'], 2 * per_pass - limit // PAGE))
    check(0 < mt['peak_dup_bytes'] <= limit, 'peak_dup_bytes %s' % mt['peak_dup_bytes'])
    check(mt['reclaim_stalls'] > 0 and mt['reclaim_stall_ms'] > 0,
          'the cgroup limit caused no reclaim stall: %s ms in %s' % (
              mt['reclaim_stall_ms'], mt['reclaim_stalls']))


@test('stalls_unmeasured_without_tracepoints')
def t_stalls_unmeasured():
    """A kernel without a reclaim stall tracepoint: the stall metrics are
    not 0 but absent, and a budget on them fails as unmeasured."""
    with LoopFs('xfs') as m:
        a, b, c = three_clones(m, size=1 * MiB)
        out = tempfile.mkdtemp(prefix='dupcache-gate-out-', dir='/tmp')
        try:
            budget = os.path.join(out, 'b.json')
            json.dump({'budgets': {'reclaim_stalls': {'max': 0, 'level': 'warn'},
                                   'reclaim_stall_ms': {'max': 1000}}}, open(budget, 'w'))
            j, so, se = gate_json(['--budget', budget, m], cat(a, b), out, 0)
            check('reclaim_stalls' in j['metrics'] and
                  [c['status'] for c in j['checks']] == ['pass', 'pass'],
                  'with the tracepoints: %s, stderr %r' % (j['checks'], se))
            env = btf_without(['mm_vmscan_memcg_reclaim_end'], os.path.join(out, 'k.btf'))
            j, so, se = gate_json(['--budget', budget, m], cat(a, b), out, 6, env=env)
            check('mm_vmscan_memcg_reclaim_end' in se, 'stderr %r' % se)
            check('reclaim_stalls' not in j['metrics'] and 'reclaim_stall_ms' not in j['metrics']
                  and j['metrics']['peak_dup_bytes'] == 1 * MiB, 'metrics %s' % j['metrics'])
            check([(c['status'], c['value']) for c in j['checks']] ==
                  [('unmeasured', None), ('unmeasured', None)] and
                  'lacks the tracepoints' in j['checks'][0]['reason'] and
                  j['verdict'] == 'fail', 'checks %s' % j['checks'])
        finally:
            shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- bad input

@test('bad_input')
def t_bad_input():
    with LoopFs('xfs') as m:
        paths = three_clones(m, size=1 * MiB)
        out = tempfile.mkdtemp(prefix='dupcache-gate-out-', dir='/tmp')
        try:
            bad_input(m, paths, out)
        finally:
            shutil.rmtree(out, ignore_errors=True)


def bad_input(m, paths, out):
    for args, cmd, needle in (
            (['--max-dup', '12XB', m], None, "--max-dup takes a size"),
            (['--max-dup', '', m], None, "--max-dup takes a size"),
            (['--max-dup', '1.5.3M', m], None, "--max-dup takes a size"),
            (['--max-dup', '99999999999T', m], None, "--max-dup takes a size"),
            (['--max-dup-ratio', '120', m], None, "--max-dup-ratio takes a percentage"),
            (['--max-dup-ratio', 'half', m], None, "--max-dup-ratio takes a percentage"),
            (['--max-increase', '-5%', m], None, "--max-increase takes a percentage"),
            (['--max-refaults', '1.5', m], None, "--max-refaults takes a whole number"),
            (['--runs', '0', m], ['true'], "--runs takes 1 to 100"),
            (['--runs', '3', m], None, "go with -- COMMAND"),
            (['--warm', m], None, "go with -- COMMAND"),
            ([m], [], "-- needs a COMMAND"),
            ([], ['true'], "at least one PATH"),
            (['--max-increase', '10', m], None, "need a --baseline"),
            (['--json', '/nonexistent/dir/g.json', m], None, "cannot write in /nonexistent/dir"),
            (['--no-such', m], None, "unknown option '--no-such'")):
        line = one_error_line(args, cmd)
        check(needle in line, '%r: %r does not say %r' % (args, line, needle))
    budget = os.path.join(out, 'b.json')
    for content, needle in (
            ('{"budgets": ', 'not a JSON document'),
            ('[1]', 'not a JSON object'),
            ('{"schema": 2, "budgets": {}}', 'schema 2'),
            ('{"budget": {}}', 'no "budgets" object'),
            ('{"budgets": {"peak_dup": {"max": 1}}}', "unknown metric 'peak_dup'"),
            ('{"budgets": {"peak_dup_bytes": {"max": "64 MiX"}}}', 'peak_dup_bytes.max: a size'),
            ('{"budgets": {"peak_dup_bytes": {"max": -1}}}', 'peak_dup_bytes.max: a size'),
            ('{"budgets": {"peak_dup_ratio": {"max": "lots"}}}', 'peak_dup_ratio.max: a percentage'),
            ('{"budgets": {"refaults": {"max": 2.5}}}', 'refaults.max: a whole number'),
            ('{"budgets": {"refaults": {"max": 2, "level": "fatal"}}}', '"error" or "warn"'),
            ('{"budgets": {"refaults": {"limit": 2}}}', "unknown key 'limit'"),
            ('{"budgets": {"refaults": {"level": "warn"}}}', 'needs "max" or "max_increase"'),
            ('{"budgets": {"refaults": {"max": 1, "min_increase": 1}}}', '"max_increase", which is missing'),
            ('{"budgets": {"refaults": 3}}', 'an object')):
        open(budget, 'w').write(content)
        line = one_error_line(['--budget', budget, m], ['true'])
        check(needle in line, 'budget %s: %r does not say %r' % (content, line, needle))
    # a workload needs the engine: without the privilege, exit 4 before anything runs
    marker = '/tmp/dupcache-gate-ran-%d' % os.getpid()     # nobody could create it there
    try:
        line = one_error_line([m], ['touch', marker], want=4, user=True, prefix='dupcache: ')
        check('needs root' in line and not os.path.exists(marker), line)
    finally:
        if os.path.exists(marker):
            os.unlink(marker)
    line = one_error_line(['--budget', out + '/missing.json', m], ['true'])
    check('No such file' in line, line)
    # baselines: not one, a relative budget without one, one without a relative budget
    rel = ['--max-increase', '10', m]
    open(budget, 'w').write('{"schema": 1}')
    check('not a dupcache gate JSON' in one_error_line(['--baseline', budget] + rel),
          'baseline without verdict')
    base = os.path.join(out, 'base.json')
    rc, so, se = gate(['--save-baseline', base, m])
    check(rc == 0, 'saving a baseline: %d %r' % (rc, se))
    check('no budget is relative' in one_error_line(['--baseline', base, m]), 'no relative')
    j = json.load(open(base))
    j['page_size'] = PAGE * 16
    json.dump(j, open(budget, 'w'))
    line = one_error_line(['--baseline', budget] + rel)
    check('measured with %d-byte pages, this machine has %d: not comparable'
          % (PAGE * 16, PAGE) in line, line)
    j['page_size'] = PAGE
    j['filesystems'] = ['btrfs']
    json.dump(j, open(budget, 'w'))
    line = one_error_line(['--baseline', budget] + rel)
    check('measured on btrfs, these files are on xfs: not comparable' in line, line)


@test('baseline_other_fs')
def t_baseline_other_fs():
    """A baseline measured on btrfs is refused on XFS, with the reason."""
    with LoopFs('btrfs') as mb, LoopFs('xfs') as mx:
        out = tempfile.mkdtemp(prefix='dupcache-gate-out-', dir='/tmp')
        try:
            for m in (mb, mx):
                three_clones(m, size=1 * MiB)
            base = os.path.join(out, 'base.json')
            rc, so, se = gate(['--save-baseline', base, mb], cat(mb + '/a', mb + '/b'))
            check(rc == 0, 'baseline on btrfs: %d %r' % (rc, se))
            line = one_error_line(['--baseline', base, '--max-increase', '10', mx],
                                  cat(mx + '/a'))
            check('measured on btrfs, these files are on xfs: not comparable' in line, line)
            # both trees at once: the baseline must have both
            rc, so, se = gate(['--save-baseline', base, mb, mx], cat(mb + '/a', mx + '/a'))
            check(rc == 0 and json.load(open(base))['filesystems'] == ['btrfs', 'xfs'],
                  'two filesystems: %d %r' % (rc, se))
        finally:
            shutil.rmtree(out, ignore_errors=True)


@test('help')
def t_help():
    rc, so, se = gate(['--help'])
    check(rc == 0 and so.startswith('usage: dupcache gate') and '--max-dup SIZE' in so,
          'gate --help: %d %r' % (rc, so[:100]))
    r = subprocess.run([BIN, '--help'], stdout=subprocess.PIPE)
    check(r.returncode == 0 and b'\n  gate ' in r.stdout, 'dupcache --help: %r' % r.stdout)


@test('interrupt_forwarded')
def t_interrupt():
    """SIGTERM to the gate reaches the workload; what was seen is written, exit 7."""
    with LoopFs('xfs') as m:
        a, b, c = three_clones(m, size=1 * MiB)
        out = tempfile.mkdtemp(prefix='dupcache-gate-out-', dir='/tmp')
        try:
            p = spawn([BIN, 'gate', '--json', out + '/g.json', '--runs', '2', m, '--', 'sh', '-c',
                       'cat "$@" >/dev/null; echo started; exec sleep 60', 'sh', a, b],
                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            line = p.stdout.readline()
            check(line == b'started\n', 'workload said %r' % line)
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                raise Fail('the gate did not stop within 20 s of SIGTERM')
            err = p.stderr.read().decode(errors='replace')
            j = json.load(open(out + '/g.json'))
            check(rc == 7 and j['interrupted'] and len(j['runs']) == 1 and
                  j['metrics']['workload_exit'] == 128 + signal.SIGTERM and
                  j['metrics']['peak_dup_bytes'] == 1 * MiB,
                  'exit %d, JSON %s, stderr %r' % (rc, {k: j[k] for k in ('interrupted', 'metrics')},
                                                   err))
            check('interrupted after 1 of 2 runs' in err, 'stderr %r' % err)
        finally:
            shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------- CI files

@test('ci_files_parse', needs_bin=False)
def t_ci_files():
    """docs/ci: both parse as YAML and run the gate with a baseline."""
    import yaml
    gh = yaml.safe_load(open(os.path.join(ROOT, 'docs/ci/github-actions.yml')))
    gl = yaml.safe_load(open(os.path.join(ROOT, 'docs/ci/gitlab-ci.yml')))
    check(isinstance(gh, dict) and 'jobs' in gh and (True in gh or 'on' in gh),
          'GitHub workflow: keys %s' % list(gh))
    steps = [s for job in gh['jobs'].values() for s in job.get('steps', [])]
    runs = '\n'.join(s.get('run', '') for s in steps)
    check('dupcache gate' in runs and '--baseline' in runs and '--save-baseline' in runs and
          '--junit' in runs, 'GitHub workflow does not run the gate with a baseline')
    check(any('upload-artifact' in s.get('uses', '') for s in steps), 'no artifact upload')
    jobs = {k: v for k, v in gl.items() if isinstance(v, dict) and 'script' in v}
    script = '\n'.join(ln for v in jobs.values() for ln in v['script'])
    check(jobs and 'dupcache gate' in script and '--baseline' in script,
          'GitLab job does not run the gate with a baseline')
    check(any(v.get('artifacts', {}).get('reports', {}).get('junit') for v in jobs.values()),
          'GitLab job has no JUnit report')


# ---------------------------------------------------------------- runner

def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default='./dupcache')
    ap.add_argument('-k', action='append', default=[])
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print('test_gate.py must run as root', file=sys.stderr)
        return 2
    os.umask(0o022)
    # our own copy: a rebuild meanwhile cannot hand us half a file, and nobody can run it
    tmp = tempfile.mkdtemp(prefix='dupcache-gate-bin-', dir='/tmp')
    os.chmod(tmp, 0o755)
    BIN = os.path.join(tmp, 'dupcache')
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _terminate)
    atexit.register(damon_restore)
    try:
        shutil.copy2(opts.bin, BIN)
        os.chmod(BIN, 0o755)
        sel = [(n, f) for n, f, _ in SUITE.tests
               if not opts.k or any(k in n for k in opts.k)]
        damon_pause()
        return SUITE.run(sel, interrupts=(Terminated,))
    finally:
        damon_restore()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
