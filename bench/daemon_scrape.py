#!/usr/bin/python3
"""Cost of the daemon's /metrics: 200 reflinked pairs of 256 KiB files on a
loop XFS, all cached, a live daemon; prints the scrape size, the time per
GET (200 in a row) and the daemon's RSS.  As root, from the repo root:
    /usr/bin/python3 bench/daemon_scrape.py [BINARY]
"""
import sys, time, os, http.client
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'tests'))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else './dupcache')
sys.dont_write_bytecode = True
from fsimg import LoopFs, make_file, reflink, read_range, cold, MiB, spawn
import subprocess
with LoopFs('xfs') as m:
    for i in range(200):
        make_file('%s/f%d' % (m, i), 256 << 10, seed=i, fsync=False)
        reflink('%s/f%d' % (m, i), '%s/g%d' % (m, i))
    os.sync(); cold(m)
    for i in range(200):
        read_range('%s/f%d' % (m, i)); read_range('%s/g%d' % (m, i))
    p = spawn([BIN, 'daemon', '-d', '1', '--listen', '19600', m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    t = time.monotonic(); n = 0
    for _ in range(200):
        c = http.client.HTTPConnection('127.0.0.1', 19600); c.request('GET', '/metrics'); b = c.getresponse().read(); c.close(); n += len(b)
    dt = time.monotonic() - t
    rss = [l for l in open('/proc/%d/status' % p.pid) if l.startswith('VmRSS')][0].split()[1]
    print('400 files: %d bytes per scrape, %.2f ms per GET (200 GETs), daemon VmRSS %s kB' % (n // 200, dt / 200 * 1000, rss))
    p.terminate(); p.wait()
