"""What the Python suites share: their verdicts, the test registry and the
run loop that prints `PASS name` / `FAIL name: why` / `SKIP name: why` and
closes with `SUITE: N passed, N failed, N skipped`."""
import traceback

import fsimg


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
        """Run (name, function) pairs; return the process exit code."""
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
