#!/usr/bin/env python3
"""benchmarks/ab_overhead.py - spprof's overhead measured A/B inside one process.

Separate runs of a program on a shared VM differ by far more than 1% (peers.py saw the same unprofiled work
take 3.0 to 6.0 s). So this measures spprof the other way: one process runs the cpu_shares mix in slices of
about 50 ms, alternating (in random order, pairwise) between spprof running and spprof paused, for each rate
and sample source. A slow phase of the machine then hits both kinds of slice alike. Figures, per config:
  * thread CPU ratio: median over slice pairs of (thread CPU of the profiled slice / of the paused slice) - 1:
    what the sampled thread pays (timer interrupt, signal delivery, handler, walk);
  * process CPU ratio: the same with process CPU time (adds the collector and pinning threads);
  * ns per sample: (profiled - paused thread CPU) / samples taken in the profiled slice, median over pairs.
Prints a markdown table. Usage: python ab_overhead.py [pairs=60] (needs spprof importable: build/ on sys.path).
"""
import os
import random
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "workloads"))
import spprof  # noqa: E402
from cpu_shares import calibrate, run_mix  # noqa: E402


class _Sink:
    def add(self, key, seconds):
        pass


def measure(rate, source, pairs, sizes, rounds, native=False):
    spprof.start(interval_ms=1000.0 / rate, source=source, native=native)
    perf_threads = spprof.stats()["threads_perf"]
    spprof.pause()
    rng = random.Random(rate)
    thread_r, proc_r, per_sample = [], [], []
    sink = _Sink()
    for _ in range(pairs):
        res = {}
        for on in rng.sample([True, False], 2):
            if on:
                spprof.resume()
            s0 = spprof.stats()["samples_captured"]
            t0, p0 = time.thread_time(), time.process_time()
            run_mix(rounds, sink, sizes)
            t1, p1 = time.thread_time(), time.process_time()
            s1 = spprof.stats()["samples_captured"]
            if on:
                spprof.pause()
            res[on] = (t1 - t0, p1 - p0, s1 - s0)
        (ton, pon, n), (toff, poff, _) = res[True], res[False]
        thread_r.append(ton / toff)
        proc_r.append(pon / poff)
        if n:
            per_sample.append((ton - toff) / n * 1e9)
    prof = spprof.stop()
    st = prof.stats
    return {"thread": statistics.median(thread_r) - 1, "process": statistics.median(proc_r) - 1,
            "ns": statistics.median(per_sample) if per_sample else None,
            "samples_per_s": st["samples_captured"] / max(1e-9, prof.duration), "perf": perf_threads,
            "dropped": st["samples_dropped"] + st["samples_dropped_memory"], "walk_errors": st["walk_errors"],
            "q": statistics.quantiles([x - 1 for x in thread_r], n=4) if len(thread_r) >= 4 else None}


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    sizes = calibrate()
    rounds = 2  # 2 rounds of the mix (10 calls of ~2 ms): ~40-50 ms per slice
    print("| rate | source | threads on perf | thread CPU overhead (median [q1, q3]) | process CPU overhead "
          "| ns per sample | dropped | walk errors |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    unwinder = getattr(spprof._spprof, "NATIVE_UNWINDER", "frame pointers")
    configs = [(s, r, False) for s in ("auto", "posix") for r in (100, 1000, 10000)]
    configs += [("auto", r, True) for r in (100, 1000)]
    for source, rate, native in configs:
        label = source + (", native=True (%s)" % unwinder if native else "")
        if True:
            try:
                m = measure(rate, source, pairs, sizes, rounds, native)
            except Exception as e:  # e.g. perf refused with source="perf": report, go on
                print("| %d Hz | %s | failed: %s | | | | | |" % (rate, label, e))
                continue
            q = m["q"]
            print("| %d Hz | %s | %d | **%+.2f%%** [%+.2f, %+.2f] | %+.2f%% | %s | %d | %d |" % (
                rate, label, m["perf"], 100 * m["thread"], 100 * q[0], 100 * q[2], 100 * m["process"],
                "%.0f" % m["ns"] if m["ns"] is not None else "—", m["dropped"], m["walk_errors"]))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
