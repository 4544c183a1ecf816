#!/usr/bin/python3
"""Small helpers for bench/run.sh (page-cache drops, cold reads, BPF stats).

usage: helper.py drop FILE...
       helper.py coldread FILE...            -> "WALL CPU": seconds of a cold sequential read
                                                (1 MiB reads), and the reader's user+sys time
       helper.py warm FILE...                -> read the files (make them resident)
       helper.py randread FILE N SEED        -> cold random 4 KiB reads with POSIX_FADV_RANDOM;
                                                prints "N SECONDS"
       helper.py randreads N SEED FILE...    -> the same, each read of a random page of a random FILE
       helper.py resident FILE...            -> resident pages (sum of fincore's PAGES)
       helper.py clonedup FILE...            -> "DUP_BYTES CACHED_BYTES" of whole-file reflinked
                                                clones of one file (mincore, through ctypes)
       helper.py mktree DIR NDIRS NFILES SIZE   originals of the small-file tree
       helper.py progstat PID NAME           -> "prog_id run_time_ns run_cnt added_pages removed_pages"
                                                of the BPF program NAME loaded by process PID
       helper.py mem PID                     -> JSON: map memory (bytes_memlock) and RSS of PID
       helper.py maxrss COMMAND...           -> peak RSS (VmHWM) of COMMAND in KiB, its output discarded
       helper.py median X...                 -> median
"""
import json
import os
import random
import statistics
import subprocess
import sys
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNK = 1 << 20


def die(msg):
    print(f"helper.py: {msg}", file=sys.stderr)
    sys.exit(1)


def drop(paths):
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_all(paths):
    buf = bytearray(CHUNK)
    mv = memoryview(buf)
    total = 0
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            while True:
                n = os.readv(fd, [mv])
                if n <= 0:
                    break
                total += n
        finally:
            os.close(fd)
    return total


def coldread(paths):
    drop(paths)
    c0 = time.process_time()
    t0 = time.perf_counter()
    read_all(paths)
    t1 = time.perf_counter()
    c1 = time.process_time()
    print(f"{t1 - t0:.6f} {c1 - c0:.6f}")


def randread(paths, n, seed):
    """n cold random 4 KiB reads, each of a random page of a random one of paths."""
    fds = [os.open(p, os.O_RDONLY) for p in paths]
    try:
        pages = min(os.fstat(fd).st_size // PAGE for fd in fds)
        if n > pages * len(fds):
            die(f"{len(fds)} files of {pages} pages, asked for {n} random reads")
        for fd in fds:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        rnd = random.Random(seed)
        idx = rnd.sample(range(pages * len(fds)), n)
        t0 = time.perf_counter()
        for k in idx:
            fd, i = fds[k % len(fds)], k // len(fds)
            if len(os.pread(fd, PAGE, i * PAGE)) != PAGE:
                die(f"short read at page {i}")
        dt = time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
    print(n, f"{dt:.6f}")


def resident(paths):
    out = subprocess.run(["fincore", "-b", "-n", "-o", "PAGES", *paths],
                         check=True, capture_output=True, text=True).stdout
    print(sum(int(x) for x in out.split()))


def residency(path):
    """mincore() vector of a file (1 byte per page), through libc (ctypes)."""
    import ctypes
    import ctypes.util
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pages = (size + PAGE - 1) // PAGE
        if not pages:
            return b""
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        if addr in (None, ctypes.c_void_p(-1).value):
            die(f"{path}: mmap: {os.strerror(ctypes.get_errno())}")
        vec = ctypes.create_string_buffer(pages)
        try:
            if libc.mincore(addr, size, vec) != 0:
                die(f"{path}: mincore: {os.strerror(ctypes.get_errno())}")
        finally:
            libc.munmap(addr, size)
        return vec.raw
    finally:
        os.close(fd)


def clonedup(paths):
    """Duplicate bytes among whole-file clones of one file: page i of every
    file is the same physical page, so dup = P * sum_i max(0, copies_i - 1)."""
    mask = bytes(b & 1 for b in range(256))
    vecs = [residency(p).translate(mask) for p in paths]  # one 0/1 byte per page
    n = min(len(v) for v in vecs)
    copies = sum(v[:n].count(1) for v in vecs)
    anyres = 0
    for v in vecs:
        anyres |= int.from_bytes(v[:n], "little")
    # sum over pages of max(0, copies - 1) = copies - pages with any copy
    dup = copies - bin(anyres).count("1")
    print(dup * PAGE, sum(v.count(1) for v in vecs) * PAGE)


def mktree(root, ndirs, nfiles, size):
    rnd = random.Random(1)
    for d in range(ndirs):
        dpath = os.path.join(root, f"d{d:03d}")
        os.makedirs(dpath, exist_ok=True)
        for f in range(nfiles):
            with open(os.path.join(dpath, f"f{f:03d}"), "wb") as fh:
                fh.write(rnd.randbytes(size))


def fdinfo_ids(pid, field):
    ids = []
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(os.path.join(base, fd)) as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        ids.append(int(line.split()[1]))
        except OSError:
            pass  # fd closed meanwhile
    return sorted(set(ids))


def bpftool(*args):
    out = subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def find_prog(pid, name):
    """NAME, or NAME* for a prefix (bpftrace truncates its program names)."""
    for prog_id in fdinfo_ids(pid, "prog_id"):
        prog = bpftool("prog", "show", "id", str(prog_id))
        got = prog.get("name", "")
        if got == name or (name.endswith("*") and got.startswith(name[:-1])):
            return prog
    die(f"process {pid} holds no BPF program named {name}")


def engine_totals(prog):
    """The engine's event totals (pages added/removed of tracked files): the
    counts of its per-CPU map cpu_state, summed over the CPUs."""
    for map_id in prog.get("map_ids", []):
        if bpftool("map", "show", "id", str(map_id)).get("name") != "cpu_state":
            continue
        sums = {}
        for entry in bpftool("map", "dump", "id", str(map_id)):
            for cpu in entry.get("formatted", {}).get("values", []):
                for k, v in cpu["value"]["counts"].items():
                    sums[k] = sums.get(k, 0) + v
        return sums
    return {}


def progstat(pid, name):
    prog = find_prog(pid, name)
    if "run_time_ns" not in prog:
        # bpftool leaves the fields out while kernel.bpf_stats_enabled has never been on
        prog.setdefault("run_time_ns", 0)
        prog.setdefault("run_cnt", 0)
    t = engine_totals(prog)
    print(prog["id"], prog["run_time_ns"], prog["run_cnt"], t.get("added", -1), t.get("removed", -1))


def mem(pid):
    ids = set(fdinfo_ids(pid, "map_id"))
    try:
        ids |= set(find_prog(pid, "folio_added").get("map_ids", []))
    except SystemExit:
        pass
    maps = []
    for map_id in sorted(ids):
        m = bpftool("map", "show", "id", str(map_id))
        maps.append({"id": map_id, "name": m.get("name", "?"), "bytes": m.get("bytes_memlock", 0),
                     "max_entries": m.get("max_entries", 0)})
    status = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                status[k] = int(v.split()[0]) * 1024
    print(json.dumps({"map_bytes": sum(m["bytes"] for m in maps), "maps": maps, **status}))


def maxrss(cmd):
    """Peak RSS of cmd, from its own VmHWM (a high-water mark) read every
    2 ms until it exits: getrusage would count this Python's memory too,
    which a vfork'ed child's exec records as its own peak."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    hwm = 0
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        hwm = max(hwm, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    if proc.returncode:
        die(f"{cmd[0]} exited {proc.returncode}")
    print(hwm)


def median(xs):
    m = statistics.median(float(x) for x in xs)
    print(int(m) if m.is_integer() else m)


def main(argv):
    if len(argv) < 2:
        die(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "drop":
        drop(args)
    elif cmd == "coldread":
        coldread(args)
    elif cmd == "warm":
        read_all(args)
    elif cmd == "randread":
        randread([args[0]], int(args[1]), int(args[2]))
    elif cmd == "randreads":
        randread(args[2:], int(args[0]), int(args[1]))
    elif cmd == "resident":
        resident(args)
    elif cmd == "clonedup":
        clonedup(args)
    elif cmd == "mktree":
        mktree(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif cmd == "progstat":
        progstat(int(args[0]), args[1])
    elif cmd == "mem":
        mem(int(args[0]))
    elif cmd == "maxrss":
        maxrss(args)
    elif cmd == "median":
        median(args)
    else:
        die(f"unknown command {cmd}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv)
