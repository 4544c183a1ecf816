#!/usr/bin/python3
"""Tests of `dupcache daemon` as a node agent: /metrics over HTTP scraped by
a real Prometheus server, the textfile, SIGHUP, the service files.

    /usr/bin/python3 tests/test_daemon.py --bin ./dupcache [-k NAME]...

Run as root from the repo root.  Every figure is compared with
tests/oracle.py (FIEMAP + mincore), per filesystem, on loop XFS and btrfs.
Last line: "daemon: N passed, N failed, N skipped"; exits 1 if any failed.
"""
import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import oracle                                                   # noqa: E402
from fsimg import (LoopFs, MiB, PAGE, spawn, make_file, reflink,  # noqa: E402
                   read_range, drop, cold)
from harness import Fail, Skip, Suite, check                    # noqa: E402

BIN = None
NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups']
SUITE = Suite('daemon')
test = SUITE.test
FS_METRICS = {'dupcache_dup_bytes': 'dup_bytes',
              'dupcache_cached_bytes': 'cached_bytes',
              'dupcache_shared_bytes': 'shared_bytes',
              'dupcache_files': 'files'}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the text format

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{name: {frozenset(labels): value}}; HELP and TYPE once per family,
    before its samples, and every sample line well formed."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith('# TYPE '):
            fam = line.split()[2]
            check(fam not in typed, 'TYPE %s twice' % fam)
            typed.add(fam)
            continue
        if not line or line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        check(m, 'not a sample line: %r' % line)
        name, labels, value = m.groups()
        check(name in typed, 'sample before its TYPE: %r' % line)
        lab = frozenset((k, v.replace('\\"', '"').replace('\\n', '\n')
                         .replace('\\\\', '\\'))
                        for k, v in LABEL.findall(labels or ''))
        out.setdefault(name, {})[lab] = float(value)
    return out


def by_fs(metrics, name):
    return {dict(k)['fs']: v for k, v in metrics.get(name, {}).items()}


def check_fs_figures(per_fs, mounts, what):
    """per_fs: {metric: {fs: value}}; equal to the oracle of each mount."""
    diffs = []
    for mnt in mounts:
        want = oracle.compute([mnt])['totals']
        for metric, key in FS_METRICS.items():
            got = per_fs.get(metric, {}).get(mnt)
            if got != want[key]:
                diffs.append('%s{fs="%s"}: daemon %s, oracle %s' % (metric, mnt, got, want[key]))
    for metric in FS_METRICS:
        extra = set(per_fs.get(metric, {})) - set(mounts)
        if extra:
            diffs.append('%s: filesystems not scanned: %s' % (metric, sorted(extra)))
    if diffs:
        raise Fail('%s: the daemon differs from the oracle:\n%s' % (what, '\n'.join(diffs)))


# ---------------------------------------------------------------- the daemon

class Daemon:
    """dupcache daemon --listen 127.0.0.1:PORT in the background."""

    def __init__(self, args, user=False, port=None, listen=True):
        self.port = port or free_port()
        self.addr = '127.0.0.1:%d' % self.port
        # A --listen in args comes later and wins (the last one counts);
        # listen=False: the config file says where.
        cmd = [BIN, 'daemon'] + (['--listen', self.addr] if listen else []) + list(args)
        if user:
            cmd = NOBODY + cmd
        self.p = spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
        self.err = []
        self.t = threading.Thread(target=self._read_err, daemon=True)
        self.t.start()

    def _read_err(self):
        for line in iter(self.p.stderr.readline, b''):
            self.err.append(line.decode(errors='replace'))

    def stderr(self):
        return ''.join(self.err)

    def request(self, method='GET', path='/metrics', timeout=10):
        c = http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.getheader('Content-Type'), r.read().decode()
        finally:
            c.close()

    def wait_metrics(self, timeout=60):
        """The first served report."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.p.poll() is not None:
                raise Fail('daemon exited %d: %r' % (self.p.returncode, self.stderr()))
            try:
                st, ctype, body = self.request()
                if st == 200:
                    check(ctype.startswith('text/plain; version=0.0.4'),
                          'Content-Type %r' % ctype)
                    return parse_metrics(body)
            except OSError:
                pass
            time.sleep(0.2)
        raise Fail('no /metrics within %d s; stderr %r' % (timeout, self.stderr()))

    def fds(self):
        return len(os.listdir('/proc/%d/fd' % self.p.pid))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise Fail('daemon did not stop within 30 s of SIGTERM')
        self.t.join(10)
        check(rc == 0, 'daemon exited %d; stderr %r' % (rc, self.stderr()[-500:]))
        bad = [ln for ln in self.err if ln.strip() and not ln.startswith('dupcache: ')]
        check(not bad, 'stderr lines not "dupcache: ...": %r' % bad[:3])


def check_live(d, metrics, want_live):
    live = metrics.get('dupcache_live', {}).get(frozenset())
    if want_live and live == 0:
        if not os.path.exists('/sys/kernel/btf/vmlinux'):
            raise Skip('no kernel BTF: the engine cannot load (%s)' % d.stderr().strip())
        raise Fail('root, BTF present, yet snapshot figures: %r' % d.stderr())
    check(live == (1 if want_live else 0), 'dupcache_live %s, want %d' % (live, want_live))


# ---------------------------------------------------------------- Prometheus

class Prometheus:
    """A real Prometheus server on 127.0.0.1, scraping targets every second,
    its storage in a temporary directory that goes with it."""

    def __init__(self, targets):
        if not shutil.which('prometheus'):
            raise Fail('no prometheus binary: make deps installs the Debian package')
        self.dir = tempfile.mkdtemp(prefix='dupcache-prom-')
        self.port = free_port()
        conf = os.path.join(self.dir, 'prometheus.yml')
        with open(conf, 'w') as f:
            f.write('global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n'
                    'scrape_configs:\n  - job_name: dupcache\n    static_configs:\n'
                    '      - targets: [%s]\n' % ', '.join("'%s'" % t for t in targets))
        self.log = open(os.path.join(self.dir, 'log'), 'w+')
        self.p = spawn(['prometheus', '--config.file=' + conf,
                        '--storage.tsdb.path=' + os.path.join(self.dir, 'data'),
                        '--web.listen-address=127.0.0.1:%d' % self.port],
                       stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()
        shutil.rmtree(self.dir, True)

    def query(self, q):
        url = 'http://127.0.0.1:%d/api/v1/query?%s' % (self.port, urllib.parse.urlencode({'query': q}))
        with urllib.request.urlopen(url, timeout=10) as r:
            j = json.load(r)
        check(j.get('status') == 'success', 'query %r: %s' % (q, j))
        return j['data']['result']

    def wait(self, q, cond, timeout=60, what=''):
        """The query's result once cond(result) holds."""
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            if self.p.poll() is not None:
                self.log.seek(0)
                raise Fail('prometheus exited %d: %s' % (self.p.returncode, self.log.read()[-800:]))
            try:
                last = self.query(q)
                if cond(last):
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        raise Fail('prometheus: %s: %r never held within %d s; last %r' % (what, q, timeout, last))

    def per_fs(self, mounts):
        """{metric: {fs: value}} of the latest samples, once every mount has one."""
        out = {}
        for metric in FS_METRICS:
            res = self.wait(metric, lambda r: {s['metric'].get('fs') for s in r} >= set(mounts),
                            what='a sample per filesystem')
            out[metric] = {s['metric']['fs']: float(s['value'][1]) for s in res}
        return out


def populate(mx, mb):
    """Different states on the two filesystems, pinned (fsimg) so they stay."""
    a, b, c = mx + '/a', mx + '/b', mx + '/c'
    make_file(a, 8 * MiB, seed=1)
    reflink(a, b)
    reflink(a, c)
    x, y = mb + '/x', mb + '/y'
    make_file(x, 4 * MiB, seed=2)
    reflink(x, y)
    make_file(mb + '/z', 1 * MiB, seed=3)
    cold(mx)
    cold(mb)
    read_range(a)
    read_range(b)
    read_range(c, 0, 2 * MiB, exact=True)
    read_range(x)
    read_range(y, 1 * MiB, 1 * MiB, exact=True)
    read_range(mb + '/z')
    return a, b, c, x, y


def prometheus_test(live):
    with LoopFs('xfs') as mx, LoopFs('btrfs') as mb:
        a, b, c, x, y = populate(mx, mb)
        mounts = [mx, mb]
        check(oracle.compute([mx])['totals']['dup_bytes'] == 10 * MiB and
              oracle.compute([mb])['totals']['dup_bytes'] == 1 * MiB, 'oracle: workload?')
        d = Daemon(['-d', '1'] + ([] if live else ['--snapshot']) + mounts)
        try:
            check_live(d, d.wait_metrics(), live)
            with Prometheus([d.addr]) as prom:
                prom.wait('up{job="dupcache"}', lambda r: r and r[0]['value'][1] == '1',
                          what='target up')
                check_fs_figures(prom.per_fs(mounts), mounts, 'Prometheus, first state')
                res = prom.query('dupcache_live')
                check(res and float(res[0]['value'][1]) == (1 if live else 0), 'dupcache_live %r' % res)
                res = prom.query('dupcache_build_info')
                check(res and res[0]['metric'].get('version'), 'build_info %r' % res)
                # A change: b dropped; the next report (and scrape) follows it.
                drop(b)
                want = oracle.compute([mx])['totals']['dup_bytes']
                check(want == 2 * MiB, 'oracle after drop: %s' % want)
                prom.wait('dupcache_dup_bytes{fs="%s"}' % mx,
                          lambda r: r and float(r[0]['value'][1]) == want, what='dup after drop')
                check_fs_figures(prom.per_fs(mounts), mounts, 'Prometheus, after dropping b')
                # Summing over fs gives the total, as the oracle of both trees says.
                total = oracle.compute(mounts)['totals']['dup_bytes']
                res = prom.query('sum(dupcache_dup_bytes)')
                check(res and float(res[0]['value'][1]) == total, 'sum %r, want %d' % (res, total))
        finally:
            d.stop()


@test('prometheus_live')
def t_prom_live():
    """Root: the BPF engine's live figures, scraped by Prometheus."""
    prometheus_test(True)


@test('prometheus_snapshot')
def t_prom_snapshot():
    """--snapshot: a scan per interval, scraped by Prometheus."""
    prometheus_test(False)


@test('snapshot_fallback_unprivileged')
def t_fallback():
    """As nobody the engine cannot load: the daemon says so, goes on with
    snapshot figures (dupcache_live 0) and they equal the oracle."""
    with LoopFs('xfs') as mx:
        a = mx + '/a'
        make_file(a, 4 * MiB, seed=1)
        reflink(a, mx + '/b')
        for p in (a, mx + '/b'):
            # mincore shows a file's page cache to its owner (or a writer) only
            shutil.chown(p, 'nobody', 'nogroup')
        cold(mx)
        read_range(a)
        read_range(mx + '/b')
        d = Daemon(['-d', '1', mx], user=True)
        try:
            m = d.wait_metrics()
            check_live(d, m, False)
            check('snapshot figures' in d.stderr(), 'stderr %r' % d.stderr())
            check_fs_figures({k: by_fs(m, k) for k in FS_METRICS}, [mx], 'nobody')
            check(oracle.compute([mx])['totals']['dup_bytes'] == 4 * MiB, 'oracle dup')
        finally:
            d.stop()


@test('textfile_equals_http')
def t_textfile():
    """--metrics FILE and /metrics are one rendering: the same bytes; the
    clone set figures and the per-cgroup shares add up to the oracle's."""
    with LoopFs('xfs') as mx:
        a = mx + '/a'
        make_file(a, 4 * MiB, seed=1)
        reflink(a, mx + '/b')
        cold(mx)
        read_range(a)
        read_range(mx + '/b', 0, 1 * MiB, exact=True)
        prom = mx + '.prom'
        d = Daemon(['-d', '3600', '--metrics', prom, mx])
        try:
            m = d.wait_metrics()
            _, _, body = d.request()
            with open(prom) as f:
                check(f.read() == body, 'textfile and /metrics differ')
            st, _, head = d.request('HEAD')
            check(st == 200 and head == '', 'HEAD: %d %r' % (st, head[:80]))
            want = oracle.compute([mx])['totals']
            check(want['dup_bytes'] == 1 * MiB, 'oracle %s' % want)
            check(m['dupcache_clone_sets'][frozenset()] == 1 and
                  m['dupcache_clone_set_files'][frozenset()] == 2 and
                  m['dupcache_saving_bytes'][frozenset()] == 1 * MiB, 'clone sets %s' % m)
            if m['dupcache_live'][frozenset()] == 1:
                cg = m['dupcache_cgroup_dup_bytes']
                check(sum(cg.values()) == want['dup_bytes'],
                      'cgroup dup shares %s, total %d' % (cg, want['dup_bytes']))
                check(sum(m['dupcache_cgroup_cached_bytes'].values()) == want['cached_bytes'],
                      'cgroup cached %s' % m['dupcache_cgroup_cached_bytes'])
                check(m['dupcache_cgroups_dropped'][frozenset()] == 0, 'dropped')
            for k in ('dupcache_scan_duration_seconds', 'dupcache_last_scan_timestamp_seconds',
                      'dupcache_scan_errors_total'):
                check(k in m, 'no %s' % k)
            check(abs(m['dupcache_last_scan_timestamp_seconds'][frozenset()] - time.time()) < 60,
                  'timestamp')
        finally:
            d.stop()
            if os.path.exists(prom):
                os.unlink(prom)
        # The cap: none exported, all counted as dropped.
        d = Daemon(['-d', '3600', '--max-cgroups', '0', mx])
        try:
            m = d.wait_metrics()
            if m['dupcache_live'][frozenset()] == 1:
                check('dupcache_cgroup_dup_bytes' not in m, 'cgroups exported past the cap')
                check(m['dupcache_cgroups_dropped'][frozenset()] >= 1, 'dropped %s'
                      % m.get('dupcache_cgroups_dropped'))
        finally:
            d.stop()


@test('cgroup_cap')
def t_cgroup_cap():
    """Per-cgroup figures under their own names, the most duplicated
    --max-cgroups of them, the rest counted: three cgroups' worth of clone
    pairs (each page cached twice, so the fair shares are exact), cap 2."""
    import test_top                 # its memory cgroup v1 helpers
    if not test_top.memcg_v1():
        raise Skip('no cgroup v1 memory hierarchy at ' + test_top.CG_ROOT)
    from fsimg import pin
    with LoopFs('xfs') as mx:
        sets = {'a': 8 * MiB, 'b': 4 * MiB, 'c': 2 * MiB}
        for i, (n, size) in enumerate(sets.items()):
            make_file('%s/%s' % (mx, n), size, seed=i + 1)
            reflink('%s/%s' % (mx, n), '%s/%s2' % (mx, n))
        cold(mx)
        read_range(mx + '/c')               # before the engine: (unknown)
        read_range(mx + '/c2')
        cga, cgb = test_top.Memcg('da'), test_top.Memcg('db')
        d = None
        try:
            d = Daemon(['-d', '1', '--max-cgroups', '2', mx])
            check_live(d, d.wait_metrics(), True)
            test_top.read_in(cga, [mx + '/a', mx + '/a2'])
            test_top.read_in(cgb, [mx + '/b', mx + '/b2'])
            for n in ('a', 'a2', 'b', 'b2'):
                pin(mx + '/' + n)
            want = {cga.name: (8 * MiB, 16 * MiB), cgb.name: (4 * MiB, 8 * MiB)}
            for n, (dup, cached) in (('a', want[cga.name]), ('b', want[cgb.name])):
                o = oracle.compute([mx + '/' + n, mx + '/' + n + '2'])['totals']
                check((o['dup_bytes'], o['cached_bytes']) == (dup, cached), 'oracle %s: %s' % (n, o))
            end = time.monotonic() + 30
            while True:
                m = parse_metrics(d.request()[2])
                got = {dict(k)['cgroup']: (v, m['dupcache_cgroup_cached_bytes'].get(k))
                       for k, v in m.get('dupcache_cgroup_dup_bytes', {}).items()}
                if got == want or time.monotonic() > end:
                    break
                time.sleep(0.5)
            check(got == want, 'cgroups (dup, cached) %s, want %s' % (got, want))
            check(m['dupcache_cgroups_dropped'][frozenset()] == 1,
                  'dropped %s, want 1 (the (unknown) one)' % m['dupcache_cgroups_dropped'])
            check(by_fs(m, 'dupcache_dup_bytes') == {mx: oracle.compute([mx])['totals']['dup_bytes']}
                  == {mx: 14 * MiB}, 'fs dup %s' % by_fs(m, 'dupcache_dup_bytes'))
        finally:
            if d:
                d.stop()
            cga.remove()
            cgb.remove()


def raw(port, data, timeout=5):
    """Send bytes, return what comes back until the server closes or waits."""
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    try:
        s.sendall(data)
        got = b''
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += chunk
        return got
    finally:
        s.close()


@test('http_robustness')
def t_http():
    """Unknown paths 404, other methods 405, a junk request line and a 64
    KiB header refused, 200 concurrent clients bounded: the daemon still
    serves afterwards and holds no more descriptors than before."""
    with LoopFs('xfs') as mx:
        make_file(mx + '/a', 1 * MiB, seed=1)
        reflink(mx + '/a', mx + '/b')
        d = Daemon(['-d', '1', '--snapshot', mx])
        try:
            d.wait_metrics()
            base = d.fds()
            for path in ('/', '/metricsx', '/metrics/', '/../etc/passwd'):
                st, _, _ = d.request(path=path)
                check(st == 404, '%s: %d, want 404' % (path, st))
            for method in ('POST', 'PUT', 'DELETE'):
                st, _, _ = d.request(method)
                check(st == 405, '%s: %d, want 405' % (method, st))
            got = raw(d.port, b'\x00\xff JUNK LINE\r\n\r\n')
            check(not got or got.startswith(b'HTTP/1.1 400'), 'junk: %r' % got[:80])
            big = b'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'a' * 65536 + b'\r\n\r\n'
            got = raw(d.port, big)
            check(not got.startswith(b'HTTP/1.1 200'), '64 KiB header served: %r' % got[:80])
            check(not got or re.match(rb'HTTP/1\.1 4(31|13|00)', got), '64 KiB header: %r' % got[:80])
            socks = []
            try:
                for _ in range(200):
                    s = socket.socket()
                    s.settimeout(5)
                    try:
                        s.connect(('127.0.0.1', d.port))
                        s.sendall(b'GET /metrics HTTP/1.1\r\n')   # never finished
                    except OSError:
                        pass
                    socks.append(s)
                time.sleep(1)
                held = d.fds()
                check(held <= base + 32 + 8, '%d descriptors with 200 clients (%d before)' % (held, base))
            finally:
                for s in socks:
                    s.close()
            # Connections the limit left in the listen backlog are taken (and
            # found closed) only as earlier ones go: idle ones after the 10 s
            # timeout, so within a few timeouts.
            end = time.monotonic() + 45
            while d.fds() > base and time.monotonic() < end:
                time.sleep(0.2)
            check(d.fds() <= base, 'descriptors %d after the clients left, %d before' % (d.fds(), base))
            st, _, body = d.request()
            check(st == 200 and 'dupcache_dup_bytes' in body, 'after the abuse: %d' % st)
        finally:
            d.stop()


@test('listen_errors')
def t_listen_errors():
    """A bad --listen is a usage error (exit 2, one line); a port in use
    exits 1 saying so."""
    for bad in ('', 'x', '0', '65536', '1.2.3:80', '::1:80', '[::1]', 'localhost:80', '1.2.3.4:'):
        r = subprocess.run([BIN, 'daemon', '--listen', bad, '/tmp'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=20)
        err = r.stderr.decode()
        check(r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith('dupcache: '),
              '--listen %r: exit %d, %r' % (bad, r.returncode, err))
    # IPv6 in brackets; a bare port binds 127.0.0.1 only.
    with LoopFs('xfs') as mx:
        make_file(mx + '/a', 1 * MiB, seed=1)
        for listen, host, other in (('[::1]:%d', '::1', '127.0.0.1'), ('%d', '127.0.0.1', '::1')):
            port = free_port()
            d = Daemon(['--snapshot', '-d', '3600', '--listen', listen % port, mx], port=port)
            try:
                end = time.monotonic() + 30
                while True:
                    try:
                        c = http.client.HTTPConnection(host, port, timeout=5)
                        c.request('GET', '/metrics')
                        st = c.getresponse().status
                        c.close()
                        break
                    except OSError:
                        check(time.monotonic() < end and d.p.poll() is None,
                              '%s: nothing on %s: %r' % (listen, host, d.stderr()))
                        time.sleep(0.2)
                check(st == 200, '%s: %d' % (listen, st))
                try:
                    socket.create_connection((other, port), timeout=5).close()
                    raise Fail('--listen %s also answers on %s' % (listen % port, other))
                except OSError:
                    pass
            finally:
                d.stop()
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([BIN, 'daemon', '--snapshot', '--listen', str(port), '/tmp'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        err = r.stderr.decode()
        check(r.returncode == 1 and 'Address already in use' in err, 'in use: %d %r' % (r.returncode, err))


@test('sighup_reload')
def t_sighup():
    """SIGHUP reads the config file again: new trees, and the metrics follow."""
    with LoopFs('xfs') as mx, LoopFs('btrfs') as mb:
        populate(mx, mb)
        conf = tempfile.NamedTemporaryFile('w', prefix='dupcache-conf-', delete=False)
        try:
            port = free_port()
            conf.write('# first\ntree = %s\ninterval = 1\nmin-size = 1\nlisten = %d\n' % (mx, port))
            conf.close()
            d = Daemon(['--config', conf.name], port=port, listen=False)
            try:
                m = d.wait_metrics()
                check_fs_figures({k: by_fs(m, k) for k in FS_METRICS}, [mx], 'before SIGHUP')
                with open(conf.name, 'w') as f:
                    f.write('tree = %s\ninterval = 1\nlisten = %d\n' % (mb, d.port))
                d.p.send_signal(signal.SIGHUP)
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    m = parse_metrics(d.request()[2])
                    if set(by_fs(m, 'dupcache_dup_bytes')) == {mb}:
                        break
                    time.sleep(0.3)
                check_fs_figures({k: by_fs(m, k) for k in FS_METRICS}, [mb], 'after SIGHUP')
                check('reloaded' in d.stderr(), 'stderr %r' % d.stderr())
                # A new listen address is taken over, the old one let go.
                port = free_port()
                with open(conf.name, 'w') as f:
                    f.write('tree = %s\ninterval = 1\nlisten = 127.0.0.1:%d\n' % (mb, port))
                old_port = d.port
                d.p.send_signal(signal.SIGHUP)
                end = time.monotonic() + 30
                d.port = port
                while True:
                    try:
                        st, _, body = d.request()
                        if st == 200:   # 503 until its first report
                            m = parse_metrics(body)
                            break
                    except OSError:
                        pass
                    check(time.monotonic() < end, 'nothing on the new port: %r' % d.stderr())
                    time.sleep(0.2)
                check(set(by_fs(m, 'dupcache_dup_bytes')) == {mb}, 'new port serves %s' % m.keys())
                try:
                    socket.create_connection(('127.0.0.1', old_port), timeout=5).close()
                    raise Fail('the old port still answers after the reload')
                except OSError:
                    pass
                # A config that does not parse keeps the running one.
                with open(conf.name, 'w') as f:
                    f.write('tree = %s\nlisten = %d\nno-such-key = 1\n' % (mx, d.port))
                d.p.send_signal(signal.SIGHUP)
                time.sleep(2.5)
                m = parse_metrics(d.request()[2])
                check(set(by_fs(m, 'dupcache_dup_bytes')) == {mb}, 'bad config applied: %s'
                      % by_fs(m, 'dupcache_dup_bytes'))
                check("unknown key 'no-such-key'" in d.stderr(), 'stderr %r' % d.stderr())
                # --snapshot (like the enforce options) changes on restart only.
                live = m['dupcache_live'][frozenset()]
                with open(conf.name, 'w') as f:
                    f.write('tree = %s\nlisten = %d\nsnapshot = %s\n'
                            % (mb, d.port, 'no' if live == 0 else 'yes'))
                d.p.send_signal(signal.SIGHUP)
                end = time.monotonic() + 30
                while 'on restart only' not in d.stderr() and time.monotonic() < end:
                    time.sleep(0.2)
                check('on restart only' in d.stderr(), 'stderr %r' % d.stderr())
                time.sleep(2.5)
                m = parse_metrics(d.request()[2])
                check(m['dupcache_live'][frozenset()] == live, 'source changed on reload')
            finally:
                d.stop()
        finally:
            os.unlink(conf.name)
    for text, what in (('tree /x\n', "not 'key = value'"), ('off = maybe\n', 'yes or no'),
                       ('config = /x\n', 'unknown key')):
        with tempfile.NamedTemporaryFile('w', prefix='dupcache-conf-') as f:
            f.write(text)
            f.flush()
            r = subprocess.run([BIN, 'daemon', '--config', f.name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=20)
            err = r.stderr.decode()
            check(r.returncode == 2 and what in err and len(err.splitlines()) == 1,
                  'config %r: exit %d, %r' % (text, r.returncode, err))


# ---------------------------------------------------------------- service files

def make_install(**kw):
    # -o BIN: install the binary under test as it is, never rebuild it here.
    args = ['make', '-s', '-C', ROOT, '-o', BIN, 'install', 'BIN=' + BIN] + \
        ['%s=%s' % kv for kv in kw.items()]
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    check(r.returncode == 0, '%s: %s' % (' '.join(args), r.stdout.decode()[-800:]))


def man_pages():
    d = os.path.join(ROOT, 'docs', 'man')
    return sorted(f for f in os.listdir(d) if f.endswith('.1'))


@test('make_install')
def t_install():
    """make install DESTDIR=... PREFIX=/usr: the binary, every man page of
    docs/man, the completion, the unit with its paths filled in, the config."""
    dest = tempfile.mkdtemp(prefix='dupcache-install-')
    try:
        make_install(DESTDIR=dest, PREFIX='/usr')
        want = ['usr/bin/dupcache', 'usr/share/bash-completion/completions/dupcache',
                'usr/lib/systemd/system/dupcache-daemon.service', 'etc/dupcache/daemon.conf'] + \
            ['usr/share/man/man1/' + m for m in man_pages()]
        got = sorted(os.path.relpath(os.path.join(d, f), dest)
                     for d, _, fs in os.walk(dest) for f in fs)
        check(got == sorted(want), 'installed %s, want %s' % (got, sorted(want)))
        check(os.access(os.path.join(dest, 'usr/bin/dupcache'), os.X_OK), 'binary not executable')
        unit = open(os.path.join(dest, 'usr/lib/systemd/system/dupcache-daemon.service')).read()
        check('ExecStart=/usr/bin/dupcache daemon --config /etc/dupcache/daemon.conf' in unit and
              '@' not in unit.replace('$MAINPID', ''), 'unit paths: %r' % unit[:200])
        # A config already there is kept.
        conf = os.path.join(dest, 'etc/dupcache/daemon.conf')
        with open(conf, 'w') as f:
            f.write('tree = /mine\n')
        make_install(DESTDIR=dest, PREFIX='/usr')
        check(open(conf).read() == 'tree = /mine\n', 'make install replaced the config')
    finally:
        shutil.rmtree(dest, True)


@test('man_pages')
def t_man():
    """Every page renders without a warning (man -l and groff -ww), and
    dupcache(1) names each command's page."""
    pages = man_pages()
    for need in ('dupcache.1', 'dupcache-daemon.1', 'dupcache-gate.1'):
        check(need in pages, 'no docs/man/%s' % need)
    for m in pages:
        path = os.path.join(ROOT, 'docs', 'man', m)
        r = subprocess.run(['man', '-l', '--warnings', path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=dict(os.environ, MANWIDTH='80'), timeout=60)
        check(r.returncode == 0 and not r.stderr and len(r.stdout) > 500,
              'man -l %s: exit %d, %r' % (m, r.returncode, r.stderr.decode()[:300]))
        r = subprocess.run(['groff', '-man', '-ww', '-z', path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        check(r.returncode == 0 and not r.stderr, 'groff %s: %r' % (m, r.stderr.decode()[:300]))
    text = open(os.path.join(ROOT, 'docs', 'man', 'dupcache.1')).read()
    for cmd in ('report', 'top', 'daemon', 'gate'):
        check('dupcache\\-%s (1)' % cmd in text, 'dupcache.1 does not name dupcache-%s(1)' % cmd)
    # The daemon's page lists every option of its --help.
    daemon = open(os.path.join(ROOT, 'docs', 'man', 'dupcache-daemon.1')).read().replace('\\-', '-')
    helptext = subprocess.run([BIN, 'daemon', '--help'], stdout=subprocess.PIPE).stdout.decode()
    missing = sorted(o for o in set(re.findall(r'--[a-z][a-z-]+', helptext)) if o not in daemon)
    check(not missing, 'dupcache-daemon.1 lacks %s' % missing)


def complete(words):
    script = ('source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _dupcache; printf "%%s\\n" "${COMPREPLY[@]}"'
              % (os.path.join(ROOT, 'contrib', 'bash-completion', 'dupcache'),
                 ' '.join("'%s'" % w for w in words), len(words) - 1))
    r = subprocess.run(['bash', '-c', script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    check(r.returncode == 0 and not r.stderr, 'completion %r: %r' % (words, r.stderr.decode()))
    return [w for w in r.stdout.decode().split('\n') if w]


@test('bash_completion')
def t_completion():
    """Commands and each command's options come from the binary's --help."""
    got = complete([BIN, ''])
    check(sorted(got) == ['--help', '--version', 'daemon', 'gate', 'report', 'top'], 'commands %s' % got)
    check(complete([BIN, 'da']) == ['daemon'], 'da: %s' % complete([BIN, 'da']))
    for cmd in ('report', 'top', 'daemon', 'gate'):
        helptext = subprocess.run([BIN, cmd, '--help'], stdout=subprocess.PIPE).stdout.decode()
        want = sorted(set(re.findall(r'--[a-z][a-z0-9-]+', helptext)))
        got = complete([BIN, cmd, '--'])
        check(got == want, '%s --: %s, want %s' % (cmd, got, want))
    check(complete([BIN, 'daemon', '--li']) == ['--listen'], 'daemon --li')
    check(complete([BIN, 'daemon', '--metrics', '/et']) == ['/etc'], 'file after --metrics')
    check(complete([BIN, 'daemon', '-d', '']) == [], 'nothing after -d SECONDS')
    check('bash' in complete([BIN, 'gate', '/tmp', '--', 'bas']), 'command after gate --')


@test('systemd_unit')
def t_unit():
    """systemd-analyze verify passes on the installed unit (its ExecStart the
    binary installed, its Documentation= page found under MANPATH)."""
    if not shutil.which('systemd-analyze'):
        raise Skip('no systemd-analyze on this machine')
    dest = tempfile.mkdtemp(prefix='dupcache-unit-')
    try:
        make_install(PREFIX=dest, SYSCONFDIR=dest + '/etc')
        unit = os.path.join(dest, 'lib/systemd/system/dupcache-daemon.service')
        r = subprocess.run(['systemd-analyze', 'verify', unit], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120,
                           env=dict(os.environ, MANPATH=os.path.join(dest, 'share/man')))
        check(r.returncode == 0 and not r.stdout.strip(), 'verify: %r' % r.stdout.decode())
        text = open(unit).read()
        for want in ('Type=notify', 'ExecReload=', 'ProtectSystem=strict', 'NoNewPrivileges=yes',
                     'CapabilityBoundingSet=CAP_DAC_READ_SEARCH CAP_FOWNER CAP_BPF CAP_PERFMON'):
            check(want in text, 'unit lacks %r' % want)
        # The sample config it points at parses (and names a tree).
        r = subprocess.run([BIN, 'daemon', '--config', os.path.join(dest, 'etc/dupcache/daemon.conf'),
                            '--snapshot', '--frames', '1', '--listen', str(free_port()), '--json'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check(r.returncode in (0, 3), 'sample config: exit %d %r' % (r.returncode, r.stderr.decode()))
    finally:
        shutil.rmtree(dest, True)


def own_bounding_caps():
    with open('/proc/self/status') as f:
        bnd = int([ln for ln in f if ln.startswith('CapBnd:')][0].split()[1], 16)
    names = {'dac_read_search': 2, 'fowner': 3, 'sys_admin': 21, 'sys_resource': 24,
             'perfmon': 38, 'bpf': 39}
    return {n for n, bit in names.items() if bnd & (1 << bit)}


def run_with_caps(caps, args):
    """BIN as nobody with exactly these capabilities (ambient, bounding)."""
    c = ','.join(['-all'] + ['+' + x for x in sorted(caps)])
    cmd = NOBODY + ['--inh-caps=' + c, '--ambient-caps=' + c, '--bounding-set=' + c, BIN] + list(args)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


@test('unit_capabilities')
def t_unit_caps():
    """The unit's capability set is enough: as nobody with only those, on
    root's 0600 files in a 0700 directory, live figures equal the oracle;
    with only CAP_DAC_READ_SEARCH + CAP_FOWNER, snapshot figures do."""
    unit = open(os.path.join(ROOT, 'contrib', 'dupcache-daemon.service')).read()
    line = [ln for ln in unit.splitlines() if ln.startswith('CapabilityBoundingSet=')][0]
    caps = {c[4:].lower() for c in line.split('=', 1)[1].split()}
    check(caps == set(re.search(r'^AmbientCapabilities=(.*)$', unit, re.M).group(1).lower()
                      .replace('cap_', '').split()), 'bounding and ambient sets differ')
    # CAP_SYS_RESOURCE only matters before 5.11 (memlock); a container may lack it.
    if 'sys_resource' not in own_bounding_caps():
        caps.discard('sys_resource')
    with LoopFs('xfs') as mx:
        os.chmod(mx, 0o700)
        a = mx + '/a'
        make_file(a, 4 * MiB, seed=1)
        reflink(a, mx + '/b')
        for p in (a, mx + '/b'):
            os.chmod(p, 0o600)
        cold(mx)
        read_range(a)
        read_range(mx + '/b', 0, 1 * MiB, exact=True)
        want = oracle.compute([mx])['totals']
        check(want['dup_bytes'] == 1 * MiB, 'oracle %s' % want)
        for cs, live in ((caps, True), ({'dac_read_search', 'fowner'}, False)):
            rc, out, err = run_with_caps(cs, ['daemon', '--frames', '1', '--json', mx])
            check(rc == 0, 'caps %s: exit %d %r' % (sorted(cs), rc, err))
            j = json.loads(out)
            check(j['live'] == live, 'caps %s: live %s; %r' % (sorted(cs), j['live'], err))
            fs = j['filesystems']
            check(len(fs) == 1 and fs[0]['fs'] == mx and
                  {k: fs[0][k] for k in ('files', 'dup_bytes', 'cached_bytes', 'shared_bytes')} ==
                  {k: want[k] for k in ('files', 'dup_bytes', 'cached_bytes', 'shared_bytes')},
                  'caps %s: %s, oracle %s' % (sorted(cs), fs, want))


@test('sd_notify_ready')
def t_notify():
    """READY=1 on $NOTIFY_SOCKET once the first report is out, RELOADING=1
    then READY=1 on SIGHUP, STOPPING=1 at the end."""
    with LoopFs('xfs') as mx:
        make_file(mx + '/a', 1 * MiB, seed=1)
        d = tempfile.mkdtemp(prefix='dupcache-notify-')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            path = os.path.join(d, 'notify')
            sock.bind(path)
            sock.settimeout(30)
            p = spawn([BIN, 'daemon', '--snapshot', '-d', '3600', mx], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, env=dict(os.environ, NOTIFY_SOCKET=path))
            check(sock.recv(4096) == b'READY=1', 'first message')
            p.send_signal(signal.SIGHUP)
            check(sock.recv(4096) == b'RELOADING=1', 'reload message')
            check(sock.recv(4096) == b'READY=1', 'ready after reload')
            p.send_signal(signal.SIGTERM)
            check(sock.recv(4096) == b'STOPPING=1', 'stopping')
            check(p.wait(timeout=30) == 0, 'exit %s' % p.returncode)
        finally:
            sock.close()
            shutil.rmtree(d, True)


@test('contrib_manifests')
def t_manifests():
    """The DaemonSet and the Grafana dashboard parse, and every metric the
    dashboard queries is one the daemon exports (a live daemon, as root)."""
    import yaml
    docs = list(yaml.safe_load_all(open(os.path.join(ROOT, 'contrib', 'kubernetes', 'daemonset.yaml'))))
    kinds = [x['kind'] for x in docs]
    check('DaemonSet' in kinds and 'ConfigMap' in kinds, 'kinds %s' % kinds)
    ds = docs[kinds.index('DaemonSet')]
    c = ds['spec']['template']['spec']['containers'][0]
    check(c['args'][0] == 'daemon', 'args %s' % c['args'])
    conf = docs[kinds.index('ConfigMap')]['data']['daemon.conf']
    port = c['ports'][0]['containerPort']
    check('listen = 0.0.0.0:%d' % port in conf, 'config listens elsewhere than port %d' % port)
    check(set(c['securityContext']['capabilities']['add']) >= {'BPF', 'PERFMON', 'DAC_READ_SEARCH'},
          'capabilities %s' % c['securityContext']['capabilities'])
    # The ConfigMap's config parses as the daemon's own.
    with tempfile.NamedTemporaryFile('w', prefix='dupcache-conf-') as f:
        f.write(conf.replace('0.0.0.0:%d' % port, '127.0.0.1:%d' % free_port()))
        f.flush()
        r = subprocess.run([BIN, 'daemon', '--config', f.name, '--snapshot', '--frames', '1', '--json'],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        check(r.returncode in (0, 3) and json.loads(r.stdout)['mode'] == 'advisory',
              'ConfigMap config: exit %d %r' % (r.returncode, r.stderr.decode()))
    dash = json.load(open(os.path.join(ROOT, 'contrib', 'grafana', 'dupcache.json')))
    exprs = [t['expr'] for p in dash['panels'] for t in p.get('targets', [])]
    exprs += [v['query'] for v in dash['templating']['list'] if v['type'] == 'query']
    used = set(n for e in exprs for n in re.findall(r'\bdupcache_[a-z_]+', e))
    check(len(used) >= 10, 'dashboard uses only %s' % sorted(used))
    with LoopFs('xfs') as mx:
        make_file(mx + '/a', 1 * MiB, seed=1)
        reflink(mx + '/a', mx + '/b')
        read_range(mx + '/a')
        d = Daemon(['-d', '3600', mx])
        try:
            m = d.wait_metrics()
            check_live(d, m, True)
        finally:
            d.stop()
    # Enforce-mode families exist only with --enforce on a patched kernel.
    exported = set(m) | {'dupcache_policy_answers_total'}
    missing = sorted(used - exported)
    check(not missing, 'the dashboard queries metrics the daemon does not export: %s' % missing)
    src = open(os.path.join(ROOT, 'src', 'daemon.c')).read()
    check('"dupcache_policy_answers_total"' in src, 'policy answers metric gone from daemon.c')


# ---------------------------------------------------------------- runner

def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument('--bin', default='./dupcache')
    ap.add_argument('-k', action='append', default=[])
    ap.add_argument('--list', action='store_true')
    opts = ap.parse_args()
    BIN = os.path.abspath(opts.bin)
    sel = [(n, f) for n, f, _ in SUITE.tests if not opts.k or any(k in n for k in opts.k)]
    if opts.list:
        for n, _ in sel:
            print(n)
        return 0
    os.umask(0o022)
    if os.geteuid() != 0:
        print('test_daemon.py must run as root', file=sys.stderr)
        return 2
    return SUITE.run(sel)


if __name__ == '__main__':
    sys.exit(main())
