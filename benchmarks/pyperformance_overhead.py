#!/usr/bin/env python3
"""benchmarks/pyperformance_overhead.py - spprof's and py-spy's overhead on nine pyperformance benchmarks.

Each run is a fresh process running one benchmark (benchmarks/workloads/pyperformance_bm.py: pyperformance's
own bm_*/run_benchmark.py, a fixed number of loops, no pyperf runner) under one configuration:
unprofiled, `spprof record` at 1 kHz and 100 Hz, py-spy 1 kHz (blocking, and --nonblocking). One round
runs every configuration once for every benchmark, in an order rotated by one per round; rounds repeat
--reps times. Figures per (benchmark, configuration):
  * work CPU: process CPU time (time.process_time, every thread) of the work phase, measured by the
    workload itself; profiled / unprofiled, ratio of the medians;
  * tree CPU: CPU time of the whole process tree from wait4's rusage (start-up, exit, `spprof record`'s
    launcher, py-spy's own process), ratio of the medians;
  * spread: min..max of the per-run ratios to the unprofiled median;
and the geometric mean of the median ratios over the benchmarks. Writes build/bench/pyperformance.json and
benchmarks/RESULTS-pyperformance.md. Needs build/bench-venv with pyperformance and py-spy
(benchmarks/install-peers.sh) and `make pypkg`.

    build/bench-venv/bin/python benchmarks/pyperformance_overhead.py               # ~12 min
    build/bench-venv/bin/python benchmarks/pyperformance_overhead.py --quick       # ~2 min, no files written
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

ROOT = peers.ROOT
BMS = ["raytrace", "richards", "nbody", "chaos", "deltablue", "go", "float", "hexiom", "json_loads"]
CONFIGS = [("baseline", None), ("spprof", 1000), ("spprof", 100), ("py-spy", 1000), ("py-spy-nb", 1000)]
WORKLOAD = "pyperformance_bm"


def add_spprof_at(name, tree):
    """A second spprof configuration from another source tree (`--compare DIR`: a checkout of an earlier commit,
    built with `make pypkg`), run with that tree's own tools/spprof: before/after figures from one run."""
    peers.TOOLS[name] = (
        [100, 1000],
        lambda r, o, w: [peers.PY, os.path.join(tree, "tools", "spprof"), "record", "-r", str(r),
                         "-f", "collapsed", "-o", o, "--", peers.PY] + w,
        peers.parse_collapsed, peers.spprof_stats, "spprof from %s" % tree)


def label(tool, rate):
    if tool == "spprof-mem":
        return "%s %d KiB" % (tool, rate)
    return tool if rate is None else "%s %s" % (tool, "1 kHz" if rate == 1000 else "%d Hz" % rate)


def run(bm, units, tool, rate, tmp):
    os.environ["BENCH_BM"] = bm
    r = peers.run_once(WORKLOAD, units, tool, rate, tmp, 600)
    r["bm"] = r["workload"] = bm
    r.pop("self", None)  # the profile's content is not looked at here
    return r


def calibrate(bm, seconds, tmp):
    units, r = 1, None
    for _ in range(4):
        r = run(bm, units, "baseline", None, tmp)
        if "error" in r:
            raise SystemExit("pyperformance_overhead: %s fails unprofiled: %s" % (bm, r["error"]))
        if r["cpu"] > 0.3 * seconds:
            break
        units = max(units + 1, int(units * 0.4 * seconds / max(r["cpu"], 1e-4)))
    return max(1, int(round(units * seconds / r["cpu"])))


def summarise(runs):
    rows = {}
    for bm in BMS:
        base = [r for r in runs if r["bm"] == bm and r["tool"] == "baseline" and "error" not in r]
        if not base:
            continue
        b = {m: peers.med([r[m] for r in base]) for m in ("cpu", "tree_cpu", "wall")}
        for tool, rate in CONFIGS:
            rs = [r for r in runs if r["bm"] == bm and r["tool"] == tool and r["rate"] == rate]
            ok = [r for r in rs if "error" not in r]
            row = {"runs": len(rs), "ok": len(ok), "errors": sorted({r["error"] for r in rs if "error" in r})}
            for m in ("cpu", "tree_cpu", "wall"):
                if ok:
                    row[m] = peers.med([r[m] for r in ok])
                    row[m + "_ratio"] = row[m] / b[m]
                    per = sorted(r[m] / b[m] for r in ok)
                    row[m + "_spread"] = (per[0], per[-1])
            if tool != "baseline":
                row["samples"] = peers.med([r.get("samples") for r in ok])
            rows["%s|%s|%s" % (bm, tool, rate)] = row
    return rows


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def pct(x):
    return "—" if x is None else "%+.1f%%" % (100.0 * (x - 1.0))


def table(data):
    rows = data["rows"]
    cfgs = [(t, r) for t, r in CONFIGS if t != "baseline" and t in data["tools_ok"]]
    L = []
    for metric, title in (("cpu", "Work phase, process CPU (time.process_time)"),
                          ("tree_cpu", "Process tree CPU (wait4 rusage: start-up, exit, launcher, out-of-process "
                           "sampler)")):
        L.append("### %s: profiled / unprofiled − 1, median (min..max of the runs)" % title)
        L.append("")
        L.append("| benchmark | unprofiled | " + " | ".join(label(t, r) for t, r in cfgs) + " |")
        L.append("|---|---:|" + "---:|" * len(cfgs))
        for bm in BMS:
            b = rows.get("%s|baseline|None" % bm)
            if not b or metric not in b:
                continue
            cells = []
            for t, r in cfgs:
                row = rows.get("%s|%s|%s" % (bm, t, r), {})
                if metric + "_ratio" not in row:
                    cells.append("failed")
                    continue
                lo, hi = row[metric + "_spread"]
                cells.append("%s (%s..%s)" % (pct(row[metric + "_ratio"]), pct(lo), pct(hi)))
            L.append("| %s | %.3f s | %s |" % (bm, b[metric], " | ".join(cells)))
        gm = [geomean([rows.get("%s|%s|%s" % (bm, t, r), {}).get(metric + "_ratio") for bm in BMS])
              for t, r in cfgs]
        L.append("| **geometric mean** | | %s |" % " | ".join("**%s**" % pct(g) for g in gm))
        L.append("")
    return L


def write_md(data, path):
    L = ["# spprof and its peers on pyperformance benchmarks (%s)" % ", ".join(BMS), ""]
    L.append("Generated by `%s` on %s (%.0f min); every figure comes from this one run."
             % (data["command"], data["date"], data["elapsed"] / 60))
    L.append("")
    L.append("| | |")
    L.append("|---|---|")
    L.append("| machine | %s, %d CPUs, kernel %s |" % (data["cpu"], data["ncpu"], data["kernel"]))
    L.append("| load average before / after | %s / %s |" % (data["load_before"], data["load_after"]))
    L.append("| Python | %s |" % data["python"])
    L.append("| pyperformance | %s |" % data["pyperformance"])
    L.append("| rounds | %d (every configuration of every benchmark once per round, order rotated per round) |"
             % data["reps"])
    L.append("| work phase | about %.1f s of CPU per unprofiled run (loops fixed per benchmark: %s) |"
             % (data["seconds"], ", ".join("%s %d" % (b, u) for b, u in data["units"].items())))
    for t, v in sorted(data["tools"].items()):
        L.append("| %s | %s |" % (t, v))
    L.append("")
    L.append("Each run is a fresh process: `benchmarks/workloads/pyperformance_bm.py` runs pyperformance's "
             "bm_*/run_benchmark.py")
    L.append("with a stand-in `pyperf` (bench_func: the function called N times in a loop; bench_time_func: "
             "called once")
    L.append("with N loops). spprof runs as `tools/spprof record -r RATE -f collapsed -o FILE -- python ...`, py-spy "
             "as")
    L.append("`py-spy record [--nonblocking] -r 1000 -f raw -o FILE -- python ...`.")
    L.append("")
    L.extend(table(data))
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7, help="rounds (default 7)")
    ap.add_argument("--seconds", type=float, default=1.5, help="unprofiled work-phase CPU seconds (default 1.5)")
    ap.add_argument("--bms", default="raytrace,richards,nbody,chaos,deltablue,go,float,hexiom,json_loads")
    ap.add_argument("--configs", default="baseline,spprof:1000,spprof:100,floor:1000,floor-tick:1000,py-spy:1000,py-spy-nb:1000")
    ap.add_argument("--quick", action="store_true", help="--reps 3 --seconds 0.5, print the table, write nothing")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "RESULTS-pyperformance.md"))
    ap.add_argument("--raw", default=os.path.join(ROOT, "build", "bench", "pyperformance.json"))
    ap.add_argument("--compare", metavar="DIR", help="also run spprof from the source tree DIR as 'spprof-ref'")
    a = ap.parse_args()
    global BMS, CONFIGS
    if a.quick:
        a.reps, a.seconds = 3, 0.5
    BMS = [b for b in a.bms.split(",") if b]
    CONFIGS = [(c.split(":")[0], int(c.split(":")[1]) if ":" in c else None) for c in a.configs.split(",")]
    if CONFIGS[0][0] != "baseline":
        CONFIGS.insert(0, ("baseline", None))
    if a.compare:
        add_spprof_at("spprof-ref", os.path.abspath(a.compare))
        if not any(t == "spprof-ref" for t, _ in CONFIGS):
            CONFIGS += [("spprof-ref", 1000), ("spprof-ref", 100)]
    tools, ok = {}, {"baseline"}
    for t in sorted({t for t, _ in CONFIGS if t != "baseline"}):
        good, v = peers.tool_ok(t) if t != "spprof-ref" else (True, "spprof from " + a.compare)
        tools[t] = v if good else "**skipped**: " + v
        if good:
            ok.add(t)
    CONFIGS = [(t, r) for t, r in CONFIGS if t in ok]
    t_start = time.time()
    load_before = open("/proc/loadavg").read().split()[:3]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        units = {bm: calibrate(bm, a.seconds, tmp) for bm in BMS}
        print("pyperformance_overhead: loops %s" % units, file=sys.stderr)
        jobs = [(bm, t, r) for bm in BMS for t, r in CONFIGS]
        for rep in range(a.reps):
            k = rep % len(CONFIGS)
            order = CONFIGS[k:] + CONFIGS[:k]
            for bm in BMS:
                for t, r in order:
                    res = run(bm, units[bm], t, r, tmp)
                    res["rep"] = rep
                    runs.append(res)
                    print("pyperformance_overhead: rep %d %-10s %-16s cpu %.3f tree %.3f%s" % (
                        rep, bm, label(t, r), res.get("cpu", 0), res["tree_cpu"],
                        "  ERROR " + res["error"] if "error" in res else ""), file=sys.stderr)
        del jobs
    import pyperformance
    data = {"command": "build/bench-venv/bin/python benchmarks/pyperformance_overhead.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)), "elapsed": time.time() - t_start,
            "cpu": ([l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")]
                    or ["?"])[0],
            "ncpu": os.cpu_count(), "kernel": platform.uname().release,
            "python": sys.version.split()[0], "pyperformance": pyperformance.__version__,
            "load_before": " ".join(load_before), "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
            "reps": a.reps, "seconds": a.seconds, "units": units, "tools": tools, "tools_ok": sorted(ok),
            "runs": runs}
    data["rows"] = summarise(runs)
    print("\n".join(table(data)))
    if not a.quick:
        os.makedirs(os.path.dirname(a.raw), exist_ok=True)
        with open(a.raw, "w") as f:
            json.dump(data, f, indent=1)
        write_md(data, a.out)
        print("pyperformance_overhead: wrote %s and %s" % (a.out, a.raw), file=sys.stderr)


if __name__ == "__main__":
    main()
