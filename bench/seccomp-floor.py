#!/usr/bin/env python3
"""bench/seccomp-floor.py BPF_FILE [RUNS]: the kernel's own cost of a seccomp
filter, without any container engine: wall time of fork + exec /bin/true +
wait, with and without the filter loaded in the child first (no_new_privs,
seccomp(SECCOMP_SET_MODE_FILTER)), alternating; and the load syscall alone,
timed inside the child. BPF_FILE is a program as libseccomp exports it, e.g.
the embedded runtime's cache: <berthd root>/runtime/.seccomp/<sha256>.bpf.
Run as root or not (no_new_privs needs no privilege). x86_64 only."""
import ctypes
import os
import struct
import sys
import time

SYS_SECCOMP = 317  # x86_64
SECCOMP_SET_MODE_FILTER = 1
PR_SET_NO_NEW_PRIVS = 38

libc = ctypes.CDLL("libc.so.6", use_errno=True)


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    bpf = open(sys.argv[1], "rb").read()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_char_p))

    def load():
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        return libc.syscall(SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, 0, ctypes.byref(prog))

    def run(filtered):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            if filtered and load() != 0:
                os._exit(99)
            os.execv("/bin/true", ["/bin/true"])
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit("the child failed: is the file a BPF program?")
        return (time.perf_counter() - t0) * 1000

    def load_time():
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            t0 = time.perf_counter_ns()
            rc = load()
            t1 = time.perf_counter_ns()
            os.write(w, struct.pack("qq", rc, t1 - t0))
            os._exit(0)
        os.close(w)
        rc, ns = struct.unpack("qq", os.read(r, 16))
        os.close(r)
        os.waitpid(pid, 0)
        if rc != 0:
            sys.exit("seccomp() refused the program")
        return ns / 1e6

    run(False), run(True)
    times = {False: [], True: []}
    for _ in range(runs):
        for f in (False, True):
            times[f].append(run(f))
    med = lambda v: sorted(v)[len(v) // 2]
    p90 = lambda v: sorted(v)[int(len(v) * 0.9)]
    print(f"{len(bpf) // 8} instructions, {runs} runs each, load {os.getloadavg()[0]:.2f}")
    for f in (False, True):
        name = "filtered" if f else "plain"
        print(f"fork+exec /bin/true {name}: median {med(times[f]):.3f} ms, p90 {p90(times[f]):.3f}")
    print(f"difference of medians: {med(times[True]) - med(times[False]):.3f} ms")
    loads = [load_time() for _ in range(runs)]
    print(f"the load syscall alone: median {med(loads):.3f} ms, p90 {p90(loads):.3f}")


main()
