#!/usr/bin/env python3
"""top.py FILE.collapsed [N] - print the functions with the most self time and total time in a collapsed-stacks file.

A line of the file is `frame;frame;...;leaf COUNT` (root first); with spprof's thread flag the first frame is
the thread's name. Self time goes to the leaf, total time to every distinct frame on the stack."""
import re
import sys
from collections import Counter


def read(path):
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            if len(frames) > 1 and re.search(r" \(tid \d+\)$", frames[0]):
                frames = frames[1:]  # thread name, not a function
            stacks.append((frames, int(count)))
    return stacks


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    n = int(argv[2]) if len(argv) > 2 else 10
    stacks = read(argv[1])
    total = sum(c for _, c in stacks) or 1
    self_t, incl = Counter(), Counter()
    for frames, c in stacks:
        self_t[frames[-1]] += c
        for fr in set(frames):
            incl[fr] += c
    print(f"{argv[1]}: {total} sampling intervals")
    for title, table in (("by self time", self_t), ("by total time (self + callees)", incl)):
        print(f"\ntop functions {title}:")
        print(f"{'self %':>7} {'total %':>8}  function")
        for name, _ in table.most_common(n):
            print(f"{100.0 * self_t[name] / total:7.1f} {100.0 * incl[name] / total:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
