"""One pyperformance benchmark, run for a fixed number of loops without pyperf's runner.

    BENCH_BM=richards BENCH_UNITS=40 BENCH_RESULT=out.json python pyperformance_bm.py

Runs pyperformance's own bm_<BENCH_BM>/run_benchmark.py (from the installed `pyperformance` package) as
__main__, with a stand-in `pyperf` module: Runner.bench_func(name, f, *args) calls f(*args) BENCH_UNITS
times in a loop, Runner.bench_time_func(name, f, *args) calls f(BENCH_UNITS, *args) once, and
Runner.parse_args() gives the benchmark's defaults. No worker processes, no calibration, no statistics:
the process does the benchmark's work once, and its work phase (the loop, nothing of start-up or exit)
is timed with time.perf_counter (wall) and time.process_time (CPU of the whole process: every thread,
an in-process profiler's collector included). The record goes to BENCH_RESULT as in _common.py.
"""
import argparse
import os
import runpy
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Phase, units  # noqa: E402


def bm_path(name):
    import pyperformance

    base = os.path.join(os.path.dirname(pyperformance.__file__), "data-files", "benchmarks")
    path = os.path.join(base, "bm_" + name, "run_benchmark.py")
    if not os.path.exists(path):
        raise SystemExit("pyperformance_bm: no benchmark %r (%s)" % (name, path))
    return path


class Runner:
    """The part of pyperf.Runner the nine benchmarks use."""

    def __init__(self, *args, **kwargs):
        self.argparser = argparse.ArgumentParser()
        self.metadata = {}
        self.args = None

    def parse_args(self, args=None):
        self.args = self.argparser.parse_args([])
        return self.args

    def _run(self, name, call):
        import json
        import resource
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        with Phase("pyperformance:" + name):
            call()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        path = os.environ.get("BENCH_RESULT")
        if path:  # the work phase's user/system split, page faults and context switches, beside Phase's record
            with open(path) as f:
                rec = json.load(f)
            rec.update(utime=r1.ru_utime - r0.ru_utime, stime=r1.ru_stime - r0.ru_stime,
                       minflt=r1.ru_minflt - r0.ru_minflt, nvcsw=r1.ru_nvcsw - r0.ru_nvcsw,
                       nivcsw=r1.ru_nivcsw - r0.ru_nivcsw)
            with open(path, "w") as f:
                json.dump(rec, f)

    def bench_func(self, name, func, *args, **kwargs):
        n = units(1)

        def loop():
            for _ in range(n):
                func(*args)
        self._run(name, loop)

    def bench_time_func(self, name, func, *args, **kwargs):
        self._run(name, lambda: func(units(1), *args))


def main():
    name = os.environ.get("BENCH_BM") or (sys.argv[1] if len(sys.argv) > 1 else "")
    if not name:
        raise SystemExit("usage: BENCH_BM=<name> pyperformance_bm.py  (or pyperformance_bm.py <name>)")
    path = bm_path(name)
    shim = types.ModuleType("pyperf")
    shim.Runner = Runner
    shim.perf_counter = time.perf_counter
    sys.modules["pyperf"] = shim
    sys.argv = [path]
    runpy.run_path(path, run_name="__main__")


if __name__ == "__main__":
    main()
