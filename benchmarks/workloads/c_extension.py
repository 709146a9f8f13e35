"""Time spent inside C extensions: zlib, hashlib and (when installed) NumPy, called from Python.

The ground truth is each calling Python function's thread CPU time; a sampling profiler that shows
Python frames attributes the C time to its caller as self time. NumPy runs single-threaded
(OPENBLAS_NUM_THREADS=1) so that the main thread's CPU time is the truth.
"""
import hashlib
import os
import random
import time
import zlib

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
try:
    import numpy
except ImportError:
    numpy = None

from _common import Phase, units

rng = random.Random(2)
DATA = bytes(rng.getrandbits(8) if i % 3 else 32 for i in range(1 << 16))


def compress_task():
    return len(zlib.decompress(zlib.compress(DATA, 6)))


def hash_task():
    h = hashlib.sha256()
    for _ in range(40):
        h.update(DATA)
    return h.hexdigest()


if numpy is not None:
    MAT = numpy.random.default_rng(3).random((256, 256))

    def numpy_task():
        return float((MAT @ MAT).sum())
else:
    numpy_task = None


def python_task():
    s = 0
    for i in range(60000):
        s += i * i % 7
    return s


TASKS = [t for t in (compress_task, hash_task, numpy_task, python_task) if t is not None]


def main():
    clock = time.thread_time
    with Phase("c_extension") as ph:
        for _ in range(units(200)):
            for task in TASKS:
                t = clock()
                task()
                ph.add(task.__name__, clock() - t)


if __name__ == "__main__":
    main()
