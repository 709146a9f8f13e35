"""memory_demo.py - a workload with known memory behaviour, for `make demo` (tools/spprof record --memory).

build_cache() keeps 60 MB of 1 KiB..1 MiB buffers alive until exit; parse_records() churns 400 MB of
short-lived objects and keeps nothing; load_table() keeps 20 MB (NumPy when installed, else bytearrays).
Expected: live at exit ~60 MB from build_cache and ~20 MB from load_table; churn dominated by parse_records.
"""
import math
import random


def build_cache(total=60_000_000):
    rng = random.Random(7)
    cache, size = [], 0
    while size < total:
        n = int(math.exp(rng.uniform(math.log(1024), math.log(1 << 20))))
        cache.append(bytearray(n))
        size += n
    return cache


def parse_records(total=400_000_000):
    done = 0
    while done < total:
        rows = [("k%d" % i, bytes(200)) for i in range(5000)]
        done += sum(len(r[1]) + 60 for r in rows)
    return done


def load_table(nbytes=20_000_000):
    try:
        import numpy as np
        return np.zeros(nbytes // 8)
    except ImportError:
        return [bytearray(100_000) for _ in range(nbytes // 100_000)]


if __name__ == "__main__":
    cache = build_cache()
    parse_records()
    table = load_table()
    print(f"memory_demo: {sum(len(b) for b in cache) / 1e6:.0f} MB cached, table {20} MB")
