#!/usr/bin/env python3
"""benchmarks/memprof_instructions.py - instructions the memory profiler's hooks cost, counted by callgrind.

Instruction counts do not move with the load of a shared machine, unlike wall time. An object-churn loop (a
dict, a tuple, a list and a str per iteration) runs unprofiled and under memprof.start(512), with 0 and N
iterations each; the work phase is the difference of the two totals. The hooks' own instructions per call
come from callgrind's per-function totals and call counts (the inlined fast paths of spprof.h are counted
under the hook that inlines them).

    python3 benchmarks/memprof_instructions.py [--python /path/to/python3.X] [-n 200000]

--python must be the interpreter's real executable (not a pyenv shim: valgrind would measure the shell)."""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROG = """
import sys
sys.path.insert(0, {build!r})
if sys.argv[1] == "on":
    import spprof.memprof as mp
    mp.start(512)
def work(n):
    for i in range(n):
        d = {{"a": i, "b": (i, i + 1)}}
        l = [i, i, i]
        s = str(i)
work(int(sys.argv[2]))
"""


def callgrind(py, prog, mode, n, out):
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", py, prog, mode, str(n)],
                       capture_output=True, text=True, check=True)
    return int(re.search(r"Collected : (\d+)", r.stderr).group(1))


def hook_calls(out):
    """{hook: (self instructions, calls)} of spprof__py_{malloc,calloc,realloc,free}_D."""
    txt = subprocess.run(["callgrind_annotate", "--tree=caller", out], capture_output=True, text=True,
                         check=True).stdout
    selfs, calls = {}, {}
    for line in txt.splitlines():
        m = re.match(r"\s*([\d,]+) .*\* +\S+:(spprof__py_(?:malloc|calloc|realloc|free)_\d)\b", line)
        if m:
            selfs[m.group(2)] = selfs.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
        m = re.match(r"\s*[\d,]+ .*< +\S+:(spprof__py_(?:malloc|calloc|realloc|free)_\d) \(([\d,]+)x\)", line)
        if m:
            calls[m.group(1)] = max(calls.get(m.group(1), 0), int(m.group(2).replace(",", "")))
    return {k: (v, calls.get(k, 0)) for k, v in selfs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=os.path.realpath(sys.executable))
    ap.add_argument("-n", type=int, default=200000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "churn.py")
        with open(prog, "w") as f:
            f.write(PROG.format(build=os.path.join(ROOT, "build")))
        tot = {}
        for mode in ("none", "on"):
            for n in (0, a.n):
                tot[mode, n] = callgrind(a.python, prog, mode, n, os.path.join(tmp, f"cg.{mode}.{n}"))
        base = tot["none", a.n] - tot["none", 0]
        prof = tot["on", a.n] - tot["on", 0]
        print(f"work phase, {a.n} iterations: unprofiled {base:,} instructions, memprof.start(512) {prof:,} "
              f"(+{100.0 * (prof - base) / base:.1f}%, {(prof - base) / a.n:.0f} per iteration)")
        print("start-up (import spprof.memprof + start): "
              f"{tot['on', 0] - tot['none', 0]:,} instructions")
        for hook, (ins, calls) in sorted(hook_calls(os.path.join(tmp, f"cg.on.{a.n}")).items()):
            if calls:
                print(f"  {hook:24s} {calls:>10,} calls  {ins / calls:5.1f} instructions per call")


if __name__ == "__main__":
    main()
