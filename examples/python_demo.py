#!/usr/bin/env python3
"""python_demo.py [SECONDS] [THREADS] - the Python workload of `make demo`, with a known CPU split.

    tools/spprof record -o out/python.speedscope.json -- python3 examples/python_demo.py 3

THREADS worker threads (default 4, named "worker-0".."worker-3") repeat rounds until SECONDS (default 3) have
passed; the main thread waits for them in join(). A round calls three functions that run the same loop
(the same cost per iteration) for 5 : 3 : 2 units of iterations, so by construction their CPU shares are:

    hot_parse    50 %
    hot_compute  30 %
    cold_io      20 %

Each function's loop body is on one line and calls no other Python function, so the profile shows all of a
function's time as its self time, on that line.
"""
import sys
import threading
import time

UNIT = 50000  # iterations per unit of work (2.5-5 ms on CPython 3.11: every call lasts longer than a kernel tick)


def hot_parse(units):
    x = 0
    for i in range(units * UNIT): x = (x * 31 + i) & 0xFFFF  # noqa: E701  (loop: one line)
    return x


def hot_compute(units):
    x = 0
    for i in range(units * UNIT): x = (x * 31 + i) & 0xFFFF  # noqa: E701
    return x


def cold_io(units):
    x = 0
    for i in range(units * UNIT): x = (x * 31 + i) & 0xFFFF  # noqa: E701
    return x


def worker(deadline, rounds_done, index):
    rounds = 0
    while time.monotonic() < deadline:
        hot_parse(5)
        hot_compute(3)
        cold_io(2)
        rounds += 1
    rounds_done[index] = rounds


def main(argv):
    seconds = float(argv[1]) if len(argv) > 1 else 3.0
    nthreads = int(argv[2]) if len(argv) > 2 else 4
    deadline = time.monotonic() + seconds
    rounds = [0] * nthreads
    threads = [threading.Thread(target=worker, args=(deadline, rounds, i), name=f"worker-{i}")
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"python_demo: {nthreads} threads, {sum(rounds)} rounds in {seconds:g} s; "
          "expected CPU split: hot_parse 50%, hot_compute 30%, cold_io 20%")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
