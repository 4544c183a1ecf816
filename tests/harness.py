"""What the Python suites share: their verdicts, the test registry and the
run loop that prints `PASS name` / `FAIL name: why` / `SKIP name: why` and
closes with `SUITE: N passed, N failed, N skipped`."""
import ctypes
import os
import traceback

import fsimg

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
MNT_DETACH = 2
# Where a machine that someone set up by hand has them; a fresh one has neither.
TRACE_MOUNTS = ('/sys/kernel/debug/tracing', '/sys/kernel/tracing',
                '/sys/kernel/debug')


def _mounted(path):
    with open('/proc/self/mountinfo') as f:
        return any(ln.split()[4] == path for ln in f)


def fresh_mount_namespace():
    """Go on in a private mount namespace in which tracefs and debugfs are
    not mounted, as on a fresh machine, whatever this machine has: the tool
    must not depend on them, and the suites prove it by running there.
    Mounts the tests make stay in the namespace and go with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0 or \
            libc.mount(None, b'/', None, MS_REC | MS_PRIVATE, None) != 0:
        raise OSError(ctypes.get_errno(), 'unshare/mount: a private mount '
                      'namespace for the tests')
    for path in TRACE_MOUNTS:
        while _mounted(path):
            if libc.umount2(path.encode(), MNT_DETACH) != 0:
                raise OSError(ctypes.get_errno(), 'umount ' + path)


class Skip(Exception):
    pass


class Fail(AssertionError):
    pass


def check(cond, msg):
    """A failure the rest of the test cannot go on from."""
    if not cond:
        raise Fail(msg)


class Suite:
    def __init__(self, name):
        self.name = name
        self.tests = []     # (name, function, needs the binary)

    def test(self, name, needs_bin=True):
        def deco(fn):
            self.tests.append((name, fn, needs_bin))
            return fn
        return deco

    def run(self, selected, after_each=None, interrupts=()):
        """Run (name, function) pairs, in a fresh mount namespace (see
        fresh_mount_namespace); return the process exit code."""
        fresh_mount_namespace()
        npass = nfail = nskip = 0
        rc = None
        for name, fn in selected:
            try:
                fn()
            except Skip as e:
                nskip += 1
                print('SKIP %s: %s' % (name, e), flush=True)
            except (KeyboardInterrupt, fsimg.Interrupted) + tuple(interrupts):
                nfail += 1
                print('FAIL %s: interrupted' % name, flush=True)
                rc = 130
                break
            except Fail as e:
                nfail += 1
                lines = str(e).splitlines() or ['']
                print('FAIL %s: %s' % (name, lines[0]), flush=True)
                for ln in lines[1:]:
                    print('    ' + ln, flush=True)
            except Exception as e:          # noqa: BLE001
                nfail += 1
                print('FAIL %s: %s: %s' % (name, type(e).__name__, e), flush=True)
                for ln in traceback.format_exc().splitlines():
                    print('    ' + ln, flush=True)
            else:
                npass += 1
                print('PASS %s' % name, flush=True)
            finally:
                fsimg.kill_children()
                if after_each:
                    after_each()
        print('%s: %d passed, %d failed, %d skipped' % (self.name, npass, nfail, nskip),
              flush=True)
        return rc or (1 if nfail else 0)
