"""Eight Python threads with known CPU shares 1:2:...:8 (thread i runs worker_i, i+1 parts of work).

Each worker is a copy of the same loop under its own code-object name, so a profile's self time in
worker_i is thread i's time. Ground truth: time.thread_time() of each thread at its end.
"""
import threading
import time

from _common import Phase, renamed, units

NTHREADS = 8


def _worker(n, parts):
    s = 0
    for _ in range(parts):
        for i in range(n):
            s += i * i % 7
    return s


WORKERS = [renamed(_worker, "worker_%d" % i) for i in range(NTHREADS)]


def main():
    rounds = units(40)
    barrier = threading.Barrier(NTHREADS + 1)
    spent = {}

    def body(i):
        barrier.wait()
        WORKERS[i](20000, rounds * (i + 1))
        spent["worker_%d" % i] = time.thread_time()

    threads = [threading.Thread(target=body, args=(i,), name="w%d" % i) for i in range(NTHREADS)]
    for t in threads:
        t.start()
    with Phase("threads8", truth_kind="thread") as ph:
        barrier.wait()
        for t in threads:
            t.join()
        ph.truth.update(spent)


if __name__ == "__main__":
    main()
