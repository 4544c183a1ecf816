#!/usr/bin/python3
"""vmtest case: page cache sharing (kernel/patches) driven by
`dupcache daemon --enforce` (bpf/policy.bpf.c).  Runs inside the VM as root.

On a loop XFS (reflink=1): a 64 MiB file `a` and clones b c d e, and `w`
with its own clones for the write tests.  Each check is reported on
$VMTEST_RESULTS as PASS/FAIL pcshare.NAME; the oracles are /proc/meminfo
(Cached:), /proc/vmstat (the kernel's pcshare_* counters), md5 of each
file's bytes as written, and the BPF object ids the kernel lists.

  without_policy  reading a b c d caches 4 copies; report: dup = 3 copies
  gate_without_policy  `dupcache gate --max-dup <one copy>` around reading a b c d
                  fails (exit 6): its exact peak is 3 copies' duplicate bytes
  one_copy        with the daemon, after drop_caches (inodes too), clones read
                  before their donor: growth <= 1.05 x one copy, 3 shares, every
                  checksum its own file's, report: dup 0, the clones cache nothing
  gate_one_copy   the same gate while the daemon enforces passes (exit 0): peak
                  <= one copy's bytes, 3 shares granted during it
  kernel_refused  e changed after the daemon's scan: the policy still proposes
                  a, the kernel refuses (pcshare_kernel_refused +1), e's bytes
  etxtbsy         write opens and truncate(2) of a shared clone and its donor fail while shared,
                  succeed after close; mmap of a shared clone reads right
  switch          SIGUSR1: no new shares; SIGUSR2: shares again
  kill9           after kill -9 + --stale-after: no new shares; the
                  registration is still there (6.1 keeps it)
  restart         a new daemon replaces it (says so) and shares again
  trust_domain    --trust-uid 0 --trust-cgroup DIR: an opener in DIR's
                  subtree shares; in another cgroup or as uid 1000, not; the
                  policy counts exactly those 2 outside the domain
  clean_stop      SIGTERM: exit 0; the kernel lists no BPF program, map or
                  struct_ops of ours afterwards
  map_full        --max-files too small for a set: left out and counted
  map_follows_rescan  the kernel's donor map (bpftool) is every other member ->
                  the donor, before and after a member stops being a clone
  metrics         --metrics FILE holds the last report's figures
"""
import hashlib
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time

REPO = os.environ.get('VMTEST_REPO', '/work/main')
RESULTS = os.environ.get('VMTEST_RESULTS', '/dev/stdout')
BIN = os.environ.get('VMTEST_BIN') or os.path.join(REPO, 'dupcache')
MiB = 1 << 20
SIZE = 64 * MiB
ONE_COPY_KIB = SIZE // 1024
WORK = '/tmp/pcshare'
MNT = WORK + '/m'
CG = '/sys/fs/cgroup/trusted'
STALE = 2.0
DATA = os.urandom(SIZE)   # a's bytes

failed = []
daemons = []


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


def sh(*cmd):
    log('$', ' '.join(cmd))
    subprocess.run(cmd, check=True)


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
    subprocess.run(['umount', MNT], stderr=subprocess.DEVNULL)
    subprocess.run(['losetup', '-D'])
    subprocess.run(['rm', '-rf', WORK])
    for sub in (CG + '/sub', CG):
        try:
            os.rmdir(sub)
        except OSError:
            pass
    # A killed daemon's registration would outlive us: ours only, by name.
    subprocess.run(['bpftool', 'struct_ops', 'unregister', 'name', 'dupcache_share'],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def setup():
    os.makedirs(MNT, exist_ok=True)
    sh('truncate', '-s', '1G', WORK + '/img')
    sh('mkfs.xfs', '-q', '-m', 'reflink=1', WORK + '/img')
    sh('mount', '-o', 'loop', WORK + '/img', MNT)
    with open(os.path.join(MNT, 'a'), 'wb') as f:
        f.write(DATA)
    for c in 'bcde':
        sh('cp', '--reflink=always', os.path.join(MNT, 'a'), os.path.join(MNT, c))
    with open(os.path.join(MNT, 'w'), 'wb') as f:
        f.write(os.urandom(MiB))
    sh('cp', '--reflink=always', os.path.join(MNT, 'w'), os.path.join(MNT, 'w2'))
    os.sync()


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


def main():
    if subprocess.run(['bpftool', 'btf', 'dump', 'file', '/sys/kernel/btf/vmlinux'],
                      stdout=subprocess.PIPE, text=True).stdout.find("STRUCT 'pcshare_ops'") < 0:
        check('btf_type', False, 'the kernel has no struct pcshare_ops (CONFIG_PCSHARE)')
        return
    check('btf_type', True)
    setup()
    want = hashlib.md5(DATA).hexdigest()
    prog_ids0, map_ids0 = bpf_ids('prog'), bpf_ids('map')

    # 2. Without the policy: four copies, and the report says three are duplicates.
    drop_caches()
    c0 = cached_kib()
    sums = read_files('abcd')
    growth = cached_kib() - c0
    log('Cached: grew %d KiB reading a b c d without a policy (one copy: %d KiB)' % (growth, ONE_COPY_KIB))
    rep = report()
    check('without_policy', growth >= 4 * ONE_COPY_KIB * 0.95 and
          rep['totals']['dup_bytes'] == 3 * SIZE and set(sums.values()) == {want},
          'Cached: +%d KiB, dup_bytes %d' % (growth, rep['totals']['dup_bytes']))
    # The CI gate on the same reads: a budget of one copy's duplicate bytes fails.
    rc, g = gate('abcd')
    check('gate_without_policy', rc == 6 and g['metrics'].get('peak_dup_bytes') == 3 * SIZE,
          'exit %d, peak_dup_bytes %s, want exit 6 and %d' % (rc, g['metrics'].get('peak_dup_bytes'),
                                                              3 * SIZE))

    # 2. With the policy: one copy.
    d = Daemon('-d', '600')
    first = d.wait_report()
    m = first['enforcement']['policy_map']
    donor_of = donors(first)
    check('policy_map', m['files'] == 5 and m['sets'] == 2 and m['left_out'] == 0 and
          donor_of['b'] in 'abcde' and donor_of['w'] in ('w', 'w2'), '%s %s' % (m, donor_of))
    donor = donor_of['a']
    members = [n for n in 'abcd' if n != donor]
    d.send(signal.SIGUSR1)          # check the off switch first, on a cold cache
    time.sleep(0.5)
    drop_caches()
    check('switch_off', shares_during(lambda: md5(members[0])) == 0, 'shared while off')
    d.send(signal.SIGUSR2)
    time.sleep(0.5)
    drop_caches()
    c0 = cached_kib()
    # Clones first: the donor's inode was dropped too, the kernel reads it in.
    granted = shares_during(lambda: sums.update(read_files(members + [donor])))
    growth = cached_kib() - c0
    log('Cached: grew %d KiB reading a b c d with the policy (one copy: %d KiB)' % (growth, ONE_COPY_KIB))
    check('one_copy', growth <= ONE_COPY_KIB * 1.05, 'Cached: +%d KiB' % growth)
    check('granted', granted == 3, 'pcshare_granted +%d, want +3' % granted)
    check('checksums', all(sums[n] == want for n in 'abcd'), str(sums))
    rep = report()
    cached = cached_by_file(rep)
    check('report_dup_zero', rep['totals']['dup_bytes'] == 0 and cached[donor] == SIZE and
          all(cached[n] == 0 for n in members),
          'dup_bytes %d, cached %s' % (rep['totals']['dup_bytes'], cached))
    # The gate under the sharing policy: at most one copy's duplicate bytes (its
    # drop is per file, the shares come back as the clones are read again).
    g0 = vmstat('pcshare_granted')
    rc, g = gate('abcd')
    granted = vmstat('pcshare_granted') - g0
    check('gate_one_copy', rc == 0 and g['metrics'].get('peak_dup_bytes', SIZE + 1) <= SIZE and
          granted == 3, 'exit %d, peak_dup_bytes %s, pcshare_granted +%d' % (
              rc, g['metrics'].get('peak_dup_bytes'), granted))

    # 3. The kernel checks for itself: e changed after the daemon's scan, so
    # the policy still proposes a donor for it (e itself if it is the donor).
    victim = 'e' if donor != 'e' else members[0]
    block = os.urandom(4096)
    with open(os.path.join(MNT, victim), 'r+b') as f:
        f.seek(10 * 4096)
        f.write(block)
    os.sync()
    e_sum = hashlib.md5(DATA[:10 * 4096] + block + DATA[11 * 4096:]).hexdigest()
    k0, g0 = vmstat('pcshare_kernel_refused'), vmstat('pcshare_granted')
    got = md5(victim)
    check('kernel_refused', vmstat('pcshare_kernel_refused') - k0 == 1 and
          vmstat('pcshare_granted') == g0 and got == e_sum,
          'refused +%d, granted +%d' % (vmstat('pcshare_kernel_refused') - k0,
                                         vmstat('pcshare_granted') - g0))

    # 3. No writes while shared; mmap reads the right bytes.
    w2_path = os.path.join(MNT, 'w2' if donor_of['w'] == 'w' else 'w')
    w_path = os.path.join(MNT, donor_of['w'])
    clone_path = os.path.join(MNT, [n for n in members if n != victim][0])
    donor_path = os.path.join(MNT, donor)
    fd = os.open(clone_path, os.O_RDONLY)
    try:
        errs = []
        for p in (clone_path, donor_path):
            for what, op in (('opened for writing', lambda: os.close(os.open(p, os.O_WRONLY))),
                             ('truncated', lambda: os.truncate(p, SIZE))):
                try:
                    op()
                    errs.append('%s %s' % (what, p))
                except OSError as e:
                    if e.errno != 26:  # ETXTBSY
                        errs.append('%s: %s' % (p, e))
        check('etxtbsy', not errs, '; '.join(errs))
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            check('mmap_read', hashlib.md5(mm).hexdigest() == want, 'wrong bytes through mmap')
    finally:
        os.close(fd)
    # After the last shared open is gone, writes work (on w, a set of its own).
    fd = os.open(w2_path, os.O_RDONLY)
    shared = vmstat('pcshare_released')
    os.close(fd)
    try:
        with open(w2_path, 'r+b') as f:
            f.write(b'x')
        with open(w_path, 'r+b') as f:
            f.write(b'y')
        check('write_after_close', vmstat('pcshare_released') > shared, 'no share was released')
    except OSError as e:
        check('write_after_close', False, str(e))

    # 4. kill -9: the registration stays, but it stops proposing.
    d.stop(signal.SIGKILL)
    time.sleep(STALE + 1)
    check('kill9_still_registered', registered() == ['dupcache_share'], str(registered()))
    drop_caches()
    c0 = cached_kib()
    n = shares_during(lambda: read_files('ab'))
    growth = cached_kib() - c0
    check('kill9_no_new_shares', n == 0 and growth >= 2 * ONE_COPY_KIB * 0.95,
          'granted +%d, Cached: +%d KiB' % (n, growth))

    # 4. Restart: the stale registration is replaced; trust domain on the way.
    os.makedirs(CG + '/sub', exist_ok=True)
    prom = WORK + '/dupcache.prom'
    d = Daemon('-d', '1', '--trust-uid', '0', '--trust-cgroup', CG, '--metrics', prom)
    r0 = d.wait_report()
    end = time.time() + 10   # the replaced registration is freed asynchronously
    while time.time() < end and registered() != ['dupcache_share']:
        time.sleep(0.2)
    check('restart', d.wait_stderr('did not stop cleanly') and
          registered() == ['dupcache_share'],
          'stderr %r, registered %s' % (d.err, registered()))
    outside0 = r0['enforcement']['policy']['outside_domain']

    def opener(cgroup, uid, name):
        def pre():
            with open(cgroup + '/cgroup.procs', 'w') as f:
                f.write(str(os.getpid()))
            if uid:
                os.setgid(uid)
                os.setuid(uid)
        subprocess.run(['md5sum', os.path.join(MNT, name)], preexec_fn=pre, check=True,
                       stdout=subprocess.DEVNULL)

    d2 = donors(r0)['a']
    others = [n for n in 'abcd' if n not in (d2, victim)]   # two or three clones
    m1, m2, m3 = others[0], others[1], others[-1]
    drop_caches()
    ins = shares_during(lambda: opener(CG + '/sub', 0, m1))
    out_cg = shares_during(lambda: opener('/sys/fs/cgroup', 0, m2))
    out_uid = shares_during(lambda: opener(CG + '/sub', 1000, m3))
    n = len(d.lines)
    last = d.wait_report(after=n)
    outside = last['enforcement']['policy']['outside_domain'] - outside0
    check('trust_domain', (ins, out_cg, out_uid, outside) == (1, 0, 0, 2),
          'shares in/other cgroup/other uid %d/%d/%d, outside_domain +%d' % (ins, out_cg, out_uid, outside))

    # The donor map follows the rescans: what the kernel's map holds, read
    # back with bpftool, is every other member -> the donor.
    def want_map(members, donor):
        ino = lambda n: os.stat(os.path.join(MNT, n)).st_ino
        return {ino(n): ino(donor) for n in members if n != donor}

    members_now = [n for n in 'abcde' if n != victim]   # the set as the daemon sees it
    before = donor_map()
    with open(os.path.join(MNT, m1), 'ab') as f:   # m1 grows: no clone any more
        f.write(b'!')
    n = len(d.lines)
    after_rep = d.wait_report(after=n + 1)            # a whole rescan after the write
    after = donor_map()
    members_now.remove(m1)
    check('map_follows_rescan',
          before == want_map(members_now + [m1], d2) and
          after == want_map(members_now, d2) and
          after_rep['enforcement']['policy_map']['files'] == len(after),
          'map before %s, after %s' % (before, after))

    # 5. Clean stop: nothing of ours stays in the kernel.
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
    want = {'dupcache_clone_sets': last['totals']['sets'],
            'dupcache_clone_set_files': last['totals']['files'],
            'dupcache_saving_bytes': last['totals']['saving_bytes'],
            'dupcache_sharing_on': 1,
            'dupcache_policy_map_files': e['policy_map']['files'],
            'dupcache_policy_map_left_out_files': e['policy_map']['left_out']}
    for k in ('proposed', 'not_a_clone', 'outside_domain', 'stale', 'off', 'own_open'):
        want['dupcache_policy_answers_total{answer="%s"}' % k] = e['policy'][k]
    for k in ('granted', 'policy_refused', 'kernel_refused', 'released'):
        want['dupcache_kernel_shares_total{event="%s"}' % k] = e['kernel'][k]
    # (the file holds the node agent's other metrics too: sizes, timestamps, build info)
    with open(prom) as f:
        got = {}
        for line in f:
            if not line.startswith('#'):
                key, value = line.rsplit(' ', 1)
                got[key] = float(value)
    check('metrics', all(got.get(k) == v for k, v in want.items()) and
          e['kernel']['granted'] == vmstat('pcshare_granted'),
          'metrics %s, want %s' % ({k: got.get(k) for k in want}, want))

    # A full map: whole sets that do not fit are left out, and said so.
    d = Daemon('-n', '1', '--max-files', str(len(members_now) - 2))
    rc = d.stop_when_done()
    full = json.loads(d.lines[0])['enforcement']['policy_map'] if d.lines else {}
    check('map_full', rc == 0 and full.get('files') == 0 and
          full.get('left_out') == len(members_now) - 1 and
          registered() == [], 'exit %s, policy_map %s, registered %s' % (rc, full, registered()))


try:
    main()
except Exception as e:  # a broken step is a failure, never a skip
    check('run', False, '%s: %s' % (type(e).__name__, e))
finally:
    cleanup()
sys.exit(1 if failed else 0)
