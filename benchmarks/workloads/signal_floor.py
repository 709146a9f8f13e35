"""signal_floor.py RATE CLOCK SCRIPT [ARGS] - run SCRIPT with nothing but a timer signal to its main thread.

RATE signals a second (CLOCK "mono": a CLOCK_MONOTONIC timer, an interrupt of its own per signal; "cpu": the
thread's CPU clock, delivered at the scheduler's tick), handled by a C handler that only counts
(benchmarks/signal_floor.c, built here into build/bench/ on first use). Beside a profiler in the same run,
this is the part of its overhead that no signal-based sampler avoids on this machine. Prints
"signal_floor: N signals" to stderr at exit.
"""
import atexit
import ctypes
import os
import runpy
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def library():
    src = os.path.join(ROOT, "benchmarks", "signal_floor.c")
    lib = os.path.join(ROOT, "build", "bench", "libsignal_floor.so")
    if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        tmp = lib + ".%d.tmp" % os.getpid()
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-o", tmp, src], check=True)
        os.replace(tmp, lib)
    return ctypes.CDLL(lib)


def main():
    if sys.argv[1:2] == ["--probe"]:  # peers.tool_ok: builds the library, says what it is
        library()
        print("empty C handler (benchmarks/signal_floor.c), %s timer" % (
            "the thread's CPU-clock" if sys.argv[2:] == ["cpu"] else "CLOCK_MONOTONIC"))
        return
    if len(sys.argv) < 4 or sys.argv[2] not in ("mono", "cpu"):
        raise SystemExit("usage: signal_floor.py RATE mono|cpu SCRIPT [ARGS]")
    rate, clock, script = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    lib = library()
    if lib.spprof_floor_arm(ctypes.c_long(rate), 1 if clock == "cpu" else 0) != 0:
        raise SystemExit("signal_floor: timer_create/timer_settime failed: %s" % os.strerror(ctypes.get_errno()))
    atexit.register(lambda: print("signal_floor: %d signals" % lib.spprof_floor_signals(), file=sys.stderr))
    sys.argv = sys.argv[3:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
