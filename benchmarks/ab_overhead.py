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
Then the same A/B for the peers that can be switched on and off inside one process (vmprof, pyinstrument,
yappi, cProfile), beside spprof at 1 kHz. Prints markdown tables. Usage: python ab_overhead.py [pairs=60]
[--no-peers] (spprof is imported from build/; the peers from the running interpreter, i.e. the bench venv).
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


def ab_pairs(enable, disable, pairs, sizes, rounds, seed, count=lambda: 0):
    """Slice pairs in random order, profiler on (enable() .. disable()) and off; per pair the thread CPU
    ratio, process CPU ratio and extra thread ns per counted sample (count(): samples so far)."""
    rng = random.Random(seed)
    sink = _Sink()
    thread_r, proc_r, per_sample = [], [], []
    for _ in range(pairs):
        res = {}
        for on in rng.sample([True, False], 2):
            if on:
                enable()
            s0 = count()
            t0, p0 = time.thread_time(), time.process_time()
            run_mix(rounds, sink, sizes)
            t1, p1 = time.thread_time(), time.process_time()
            n = count() - s0
            if on:
                disable()
            res[on] = (t1 - t0, p1 - p0, n)
        (ton, pon, n), (toff, poff, _) = res[True], res[False]
        thread_r.append(ton / toff)
        proc_r.append(pon / poff)
        if n:
            per_sample.append((ton - toff) / n * 1e9)
    return {"thread": statistics.median(thread_r) - 1, "process": statistics.median(proc_r) - 1,
            "ns": statistics.median(per_sample) if per_sample else None,
            "q": statistics.quantiles([x - 1 for x in thread_r], n=4)}


def measure(rate, source, pairs, sizes, rounds, native=False):
    spprof.start(interval_ms=1000.0 / rate, source=source, native=native)
    perf_threads = spprof.stats()["threads_perf"]
    spprof.pause()
    m = ab_pairs(spprof.resume, spprof.pause, pairs, sizes, rounds, rate,
                 lambda: spprof.stats()["samples_captured"])
    st = spprof.stop().stats
    m.update(perf=perf_threads, dropped=st["samples_dropped"] + st["samples_dropped_memory"],
             walk_errors=st["walk_errors"])
    return m


def peer_switches(tool, rate):
    """(enable, disable, finish) for an in-process peer that can be switched on and off inside one process."""
    if tool == "cProfile":
        import cProfile
        p = cProfile.Profile()
        return p.enable, p.disable, lambda: None
    if tool == "yappi":
        import yappi
        yappi.set_clock_type("cpu")
        return yappi.start, yappi.stop, yappi.clear_stats
    if tool == "pyinstrument":
        from pyinstrument import Profiler
        p = Profiler(interval=1.0 / rate)
        return p.start, p.stop, lambda: None
    if tool == "vmprof":
        import tempfile
        import vmprof
        f = tempfile.TemporaryFile()
        return (lambda: vmprof.enable(f.fileno(), period=1.0 / rate, native=False)), vmprof.disable, f.close
    raise ValueError(tool)


def measure_peer(tool, rate, pairs, sizes, rounds):
    enable, disable, finish = peer_switches(tool, rate)
    m = ab_pairs(enable, disable, pairs, sizes, rounds, rate)
    finish()
    return m["thread"], m["q"]


def peers_table(pairs, sizes, rounds):
    """The same A/B measurement for the peers that can be switched on and off in-process (py-spy and Austin run
    in another process and cannot), beside spprof at the same rate."""
    print()
    print("| tool (1 kHz where it samples) | thread CPU overhead (median [q1, q3]) |")
    print("|---|---:|")
    m = measure(1000, "auto", pairs, sizes, rounds)
    print("| **spprof** | **%+.2f%%** [%+.2f, %+.2f] |" % (100 * m["thread"], 100 * m["q"][0], 100 * m["q"][2]))
    for tool in ("vmprof", "pyinstrument", "yappi", "cProfile"):
        try:
            med, q = measure_peer(tool, 1000, pairs, sizes, rounds)
        except Exception as e:  # not installed, or cannot restart: say so
            print("| %s | not measured: %s |" % (tool, str(e)[:80]))
            continue
        print("| %s | %+.2f%% [%+.2f, %+.2f] |" % (tool, 100 * med, 100 * q[0], 100 * q[2]))
        sys.stdout.flush()


def main():
    pairs = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 60
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
    if "--no-peers" not in sys.argv:
        peers_table(pairs, sizes, rounds)


if __name__ == "__main__":
    main()
