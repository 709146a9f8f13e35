"""demo.py - profile Python code that calls a C extension (myext) which has spprof built in.

Usage:  sh examples/build_examples.sh build/examples python3
        PYTHONPATH=build/examples python3 examples/extension/demo.py out/ext.speedscope.json [SECONDS]

Time inside myext.crunch() shows up under its Python caller, uses_crunch(); pure_python() is the
pure-Python hot spot. Open the output in https://www.speedscope.app.
"""
import sys
import time

import myext
from myext import profiler  # spprof's module API, compiled into myext's .so


def pure_python(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def uses_crunch(n):
    return myext.crunch(n)


def workload(seconds):
    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        uses_crunch(3_000_000)
        pure_python(60_000)
        rounds += 1
    return rounds


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    profiler.start(1_000_000, 0)  # 1 ms of CPU time per sample, mode 0 = cpu (1 = wall)
    try:
        rounds = workload(seconds)
    finally:
        profiler.stop()
    profiler.write_speedscope(out)
    st = profiler.stats()
    print(f"{rounds} rounds; samples: {st['samples_in_profile']} in profile, "
          f"{st['samples_dropped']} dropped, {st['walk_errors']} walk errors")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
