"""120 idle threads (blocked on an Event) beside a main thread running the cpu_shares mix.

A profiler should pay nothing for the idle threads in CPU mode; the main thread's per-function
shares are the ground truth, as in cpu_shares.
"""
import threading

from _common import Phase, units
from cpu_shares import calibrate, run_mix

NIDLE = 120


def main():
    stop = threading.Event()
    idle = [threading.Thread(target=stop.wait, name="idle%d" % i, daemon=True) for i in range(NIDLE)]
    for t in idle:
        t.start()
    sizes = calibrate()
    with Phase("idle_threads") as ph:
        run_mix(units(250), ph, sizes)
    stop.set()
    for t in idle:
        t.join()


if __name__ == "__main__":
    main()
