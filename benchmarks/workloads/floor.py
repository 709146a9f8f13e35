"""floor.py KIND SCRIPT [ARGS] - run SCRIPT with nothing but what every profiler of a kind must add.

KIND "mono:RATE": a timer signal to the main thread RATE times a second from a CLOCK_MONOTONIC timer (an
interrupt of its own per signal); "cpu:RATE": from the thread's CPU clock (delivered at the scheduler's tick);
both handled by a C handler that only counts, and "signal_floor: N signals" goes to stderr at exit.
"pymem": PyMem_SetAllocator hooks on the MEM and OBJ domains that only call the allocator they replaced.
The C side is benchmarks/floors.c, built here into build/bench/ on first use. Beside a profiler in the same
run, this is the part of its overhead that no profiler of that kind avoids on this machine.
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
    import sysconfig
    src = os.path.join(ROOT, "benchmarks", "floors.c")
    lib = os.path.join(ROOT, "build", "bench", "libfloors%s" % sysconfig.get_config_var("EXT_SUFFIX"))
    if not os.path.exists(lib) or os.path.getmtime(lib) < os.path.getmtime(src):
        os.makedirs(os.path.dirname(lib), exist_ok=True)
        tmp = lib + ".%d.tmp" % os.getpid()
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-I", sysconfig.get_paths()["include"],
                        "-o", tmp, src], check=True)
        os.replace(tmp, lib)
    return ctypes.PyDLL(lib)


def main():
    if sys.argv[1:2] == ["--probe"]:  # peers.tool_ok: builds the library, says what it is
        library()
        print({"mono": "empty C handler (benchmarks/floors.c), CLOCK_MONOTONIC timer",
               "cpu": "empty C handler (benchmarks/floors.c), the thread's CPU-clock timer",
               "pymem": "pass-through PyMem hooks (benchmarks/floors.c)"}[sys.argv[2]])
        return
    kind = sys.argv[1].split(":") if len(sys.argv) >= 3 else [""]
    if kind[0] not in ("mono", "cpu", "pymem") or (kind[0] != "pymem" and len(kind) != 2):
        raise SystemExit("usage: floor.py mono:RATE|cpu:RATE|pymem SCRIPT [ARGS]")
    script = sys.argv[2]
    lib = library()
    if kind[0] == "pymem":
        lib.spprof_floor_pymem()
    else:
        if lib.spprof_floor_arm(ctypes.c_long(int(kind[1])), 1 if kind[0] == "cpu" else 0) != 0:
            raise SystemExit("floor: timer_create/timer_settime failed: %s" % os.strerror(ctypes.get_errno()))
        atexit.register(lambda: print("signal_floor: %d signals" % lib.spprof_floor_signals(), file=sys.stderr))
    sys.argv = sys.argv[2:]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
