"""Shared by the benchmark workloads: how much work to do, ground truth, and the result record.

A workload does a fixed amount of work (BENCH_UNITS, set by benchmarks/peers.py after calibrating the
machine), measures its own work phase (wall and process CPU time) and the ground truth (CPU seconds per
function or per thread, from time.thread_time() around each piece of work), and writes one JSON record
to the file named by BENCH_RESULT (stdout when unset). Profilers never see this file.
"""
import json
import os
import time


def units(default):
    return max(1, int(os.environ.get("BENCH_UNITS", default)))


class Phase:
    """Times the work phase: `with Phase("name") as ph: ...; ph.truth[...] += seconds`."""

    def __init__(self, name, truth_kind="function"):
        self.name, self.truth_kind, self.truth = name, truth_kind, {}

    def add(self, key, seconds):
        self.truth[key] = self.truth.get(key, 0.0) + seconds

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        wall, cpu = time.perf_counter() - self.w0, time.process_time() - self.c0
        if exc[0] is not None:
            return False
        rec = {"workload": self.name, "wall": wall, "cpu": cpu,
               "truth_kind": self.truth_kind, "truth": self.truth}
        path = os.environ.get("BENCH_RESULT")
        if path:
            with open(path, "w") as f:
                json.dump(rec, f)
        else:
            print(json.dumps(rec, indent=1))
        return False


def renamed(fn, name):
    """A copy of fn whose code object has its own name (co_qualname too on 3.11+), so that profilers
    that show code objects can tell the copies apart."""
    kw = {"co_name": name}
    if hasattr(fn.__code__, "co_qualname"):
        kw["co_qualname"] = name
    return type(fn)(fn.__code__.replace(**kw), fn.__globals__, name)
