#!/usr/bin/env python3
"""top.py FILE.collapsed [N] [--bytes] - the functions with the most self and total weight in a collapsed-stacks file.

A line of the file is `frame;frame;...;leaf COUNT` (root first); with spprof's thread flag the first frame is
the thread's name. Self weight goes to the leaf, total weight to every distinct frame on the stack.
COUNT is time (sampling intervals) in a CPU profile; --bytes reads it as bytes (a memory profile:
`record --memory`, HeapSnapshot.save, spprof_mem_write_collapsed): "allocated here" and "allocated below"."""
import re
import sys
from collections import Counter


class Bad(Exception):
    pass


def read(path):
    try:
        with open(path, "rb") as f:
            head = f.read(5)
    except OSError as e:
        raise Bad(f"cannot read {path}: {e.strerror or e}")
    if head[:2] == b"\x1f\x8b":
        raise Bad(f"{path} is gzip-compressed (pprof?): read it with `go tool pprof -top {path}`")
    if head[:1] == b"{" or head[:2] == b"[{":
        raise Bad(f"{path} is JSON (Speedscope?), not collapsed stacks: open it at https://www.speedscope.app, "
                  "or write a .collapsed file (save(\"x.collapsed\") / record -o x.collapsed)")
    if head in (b"<?xml", b"<svg ", b"<svg\n"):
        raise Bad(f"{path} looks like XML (an SVG flame graph?): open it in a browser")
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for no, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                raise Bad(f"{path}:{no}: not a collapsed-stacks line (\"root;...;leaf COUNT\"): {line[:80]!r}")
            frames = stack.split(";")
            if len(frames) > 1 and re.search(r" \(tid \d+\)$", frames[0]):
                frames = frames[1:]  # thread name, not a function
            stacks.append((frames, int(count)))
    return stacks


def human_bytes(n):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def main(argv):
    args = [a for a in argv[1:] if a != "--bytes"]
    as_bytes = len(args) != len(argv) - 1
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        n = int(args[1]) if len(args) > 1 else 10
    except ValueError:
        print(f"top.py: N must be a number, got {args[1]!r}", file=sys.stderr)
        return 2
    path = args[0]
    try:
        stacks = read(path)
    except Bad as e:
        print(f"top.py: {e}", file=sys.stderr)
        return 1
    total = sum(c for _, c in stacks)
    if not total:
        print(f"top.py: {path} has no samples: profile a longer run, or raise the sampling rate (record -r HZ; "
              "with --memory, lower --memory-rate-kb)", file=sys.stderr)
        return 1
    self_t, incl = Counter(), Counter()
    for frames, c in stacks:
        self_t[frames[-1]] += c
        for fr in set(frames):
            incl[fr] += c
    if as_bytes:
        print(f"{path}: {human_bytes(total)} ({total} bytes, estimated)")
        tables = (("allocated in the function itself (self)", self_t),
                  ("allocated in the function and its callees (total)", incl))
        head = f"{'self':>10} {'self %':>7} {'total':>10} {'total %':>8}  function"
    else:
        print(f"{path}: {total} sampling intervals")
        tables = (("by self time", self_t), ("by total time (self + callees)", incl))
        head = f"{'self %':>7} {'total %':>8}  function"
    for title, table in tables:
        print(f"\ntop functions {title}:")
        print(head)
        for name, _ in table.most_common(n):
            if as_bytes:
                print(f"{human_bytes(self_t[name]):>10} {100.0 * self_t[name] / total:7.1f} "
                      f"{human_bytes(incl[name]):>10} {100.0 * incl[name] / total:8.1f}  {name}")
            else:
                print(f"{100.0 * self_t[name] / total:7.1f} {100.0 * incl[name] / total:8.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
