#!/usr/bin/env python3
"""benchmarks/memprof_overhead.py - spprof's sampling memory profiler beside tracemalloc and memray, one run.

An allocation-heavy workload (`churn`, `keep`: the kept part is bytes and NumPy buffers, so the live truth is
exact) runs unprofiled and under each configuration, each run in a FRESH process (no hook outlives its
configuration), configurations rotated per round. Medians of the work phase's wall time, peak RSS, the
profiler's own memory and its estimate of the kept live bytes go to benchmarks/RESULTS-memprof.md, every run
to build/bench/memprof.json. Run with the bench venv (install-peers.sh puts NumPy and memray there):
build/bench-venv/bin/python benchmarks/memprof_overhead.py [--reps 5] [--spprof-dir build]. A missing tool is
skipped with a note."""
import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
SPPROF_DIR = BUILD  # where the spprof package is imported from (--spprof-dir)
MiB = 1 << 20

# name: (description, extra environment of the child)
CONFIGS = {
    "none": ("unprofiled", {}),
    "spprof-512k": ("spprof memprof.start(512): PyMem hooks + GOT hooks (default rate)", {}),
    "spprof-64k": ("spprof memprof.start(64)", {}),
    "spprof-512k-nonative": ("memprof.start(512, native_hooks=False): PyMem hooks only, NumPy's malloc unseen", {}),
    "spprof-preload": ("LD_PRELOAD libspprof_alloc.so, SPPROF_MEM_RATE=524288, + memprof.start(512)",
                       {"SPPROF_MEM_RATE": "524288"}),
    "tracemalloc-1": ("tracemalloc.start(1)", {}),
    "tracemalloc-16": ("tracemalloc.start(16)", {}),
    "memray": ("memray.Tracker(file, native_traces=False): sees malloc & mmap (pymalloc arenas, not objects)", {}),
    "memray-agg": ("memray.Tracker(file, native_traces=False, file_format=AGGREGATED_ALLOCATIONS)", {}),
}

NOTES = """Median s: wall time of the work phase (profiler started before it; snapshots, file flushing not
included); ratio = median / median of *none* (on a shared machine a few %% is noise; every run is in
build/bench/memprof.json). Peak RSS: ru_maxrss of the child (interpreter, NumPy, ~%.0f MiB kept, profiler),
taken at the end of the run; *RSS over none*: its median less the median of *none* (what the profiler adds to
the process at its peak: tables, hooks' state, its own module and the libraries it loads).
*own memory*: spprof's footprint_bytes (its tables as mapped), *of it resident*: footprint_resident_bytes
(mincore over those pages, at the end: mapped whole, touched as used), or
tracemalloc.get_tracemalloc_memory() at the end. *kept live*: estimated bytes live under keep() (spprof: live
samples with keep() on the stack; tracemalloc: traces on its lines) vs the exact sum kept; *all live*: all the
tool sees live at the end (spprof: estimated_live_bytes; with LD_PRELOAD, since process start)."""


# ---- the workload (child side) ------------------------------------------------------------------------------

def keep(rng, np, kept):
    """Allocates what stays live: bytes of 1-64 KiB, and NumPy buffers of 1 KiB - 1 MiB when NumPy is there.
    Returns the exact bytes kept (bytes: sys.getsizeof, header included; arrays: nbytes)."""
    if np is not None and rng.random() < 0.25:
        a = np.empty(int(1024 * 1024 ** rng.random()), dtype=np.uint8)  # (np.ones is Python code: its frame
        a.fill(1)                                                        # would be tracemalloc-1's leaf)
        kept.append(a)
        return a.nbytes
    b = b"k" * int(1024 * 64 ** rng.random())
    kept.append(b)
    return sys.getsizeof(b)


def churn(rng, np, iters, keep_every):
    """Fixed work: per iteration one short-lived object of 16 B - 64 KiB (dict, list, str, bytes, bytearray,
    or a NumPy array of 1 KiB - 1 MiB), at most 64 alive at once; every keep_every-th iteration keep()."""
    kept, truth, trash = [], 0, []
    for i in range(iters):
        size = int(16 * 4096 ** rng.random())
        k = rng.random()
        if k < 0.25:
            o = {j: str(j) for j in range(size // 96 + 1)}
        elif k < 0.45:
            o = list(range(size // 8 + 1))
        elif k < 0.6:
            o = "x" * size
        elif k < 0.75:
            o = b"y" * size
        elif k < 0.85 or np is None:
            o = bytearray(size)
        elif k < 0.93:
            o = np.empty(int(1024 * 1024 ** rng.random()) // 8)
        else:
            o = np.ones(int(1024 * 1024 ** rng.random()), dtype=np.uint8)
        trash.append(o)
        if len(trash) >= 64:
            trash.clear()
        if i % keep_every == 0:
            truth += keep(rng, np, kept)
    return kept, truth


def child(config, iters, keep_every, tmp):
    sys.path.insert(0, SPPROF_DIR)
    try:
        import numpy as np
    except ImportError:  # the workload then makes bytearrays instead
        np = None
    rng = random.Random(42)
    rec, tracker = {"config": config, "numpy": np is not None}, None
    if config.startswith("spprof"):
        import spprof.memprof as memprof
        memprof.start(64 if config == "spprof-64k" else 512, native_hooks=not config.endswith("nonative"))
    elif config.startswith("tracemalloc"):
        import tracemalloc
        tracemalloc.start(int(config.split("-")[1]))
    elif config.startswith("memray"):
        import memray
        path = os.path.join(tmp, "memray-%d.bin" % os.getpid())
        kw = {"file_format": memray.FileFormat.AGGREGATED_ALLOCATIONS} if config == "memray-agg" else {}
        tracker = memray.Tracker(path, native_traces=False, **kw)
        tracker.__enter__()
    t0 = time.perf_counter()
    kept, truth = churn(rng, np, iters, keep_every)
    rec.update(wall=time.perf_counter() - t0, truth_kept=truth)
    if config.startswith("spprof"):
        st, snap = memprof.get_stats(), memprof.get_snapshot(freed=False)
        rec["est_kept"] = sum(s.estimated_bytes for s in snap.samples if any(f.function == "keep" for f in s.frames))
        rec.update(footprint=st["footprint_bytes"], resident=st.get("footprint_resident_bytes"),
                   est_live=st["estimated_live_bytes"], samples=st["samples"],
                   preloaded=st["preloaded"], dropped=st["dropped_map_full"] + st["dropped_stacks_full"])
        memprof.shutdown()
    elif config.startswith("tracemalloc"):
        lines, snap = {ln for _, _, ln in keep.__code__.co_lines() if ln}, tracemalloc.take_snapshot()
        rec.update(est_kept=sum(t.size for t in snap.traces if any(f.filename == __file__ and f.lineno in lines
                                                                     for f in t.traceback)),
                   est_live=tracemalloc.get_traced_memory()[0], footprint=tracemalloc.get_tracemalloc_memory())
        tracemalloc.stop()
    elif tracker:
        tracker.__exit__(None, None, None)
        rec["file_bytes"] = os.path.getsize(path)
        os.unlink(path)
    rec["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(rec))


# ---- the driver ---------------------------------------------------------------------------------------------

def probe(config):
    """(ok, version or why) for a configuration's tool, in a child like the measured ones."""
    code = {"spprof": "import sys; sys.path.insert(0, %r); from spprof import memprof, __version__ as v; print(v)"
                      % SPPROF_DIR,
            "tracemalloc": "import sys; print('Python', sys.version.split()[0])",
            "memray": "import importlib.metadata as m, memray; print(m.version('memray'))",
            "none": "try:\n import numpy; print('NumPy', numpy.__version__)\nexcept ImportError:\n print('no NumPy')"
            }[config.split("-")[0]]
    env = child_env(config)
    if config == "spprof-preload" and not os.path.exists(env["LD_PRELOAD"]):
        return False, "%s missing (make pypkg)" % env["LD_PRELOAD"]
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return (True, p.stdout.strip()) if p.returncode == 0 else (False, (p.stderr.strip().splitlines() or ["?"])[-1])


def child_env(config):
    env = dict(os.environ, **CONFIGS[config][1])
    if config == "spprof-preload":
        env["LD_PRELOAD"] = os.path.join(SPPROF_DIR, "spprof", "libspprof_alloc.so")
    return env


def run_one(config, a, tmp):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", config, "--iters", str(a.iters),
           "--keep-every", str(a.keep_every), "--tmp", tmp, "--spprof-dir", SPPROF_DIR]
    p = subprocess.run(cmd, capture_output=True, text=True, env=child_env(config), timeout=600)
    if p.returncode != 0:
        return {"config": config, "error": (p.stderr.strip().splitlines() or ["rc %d" % p.returncode])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def med(runs, key):
    v = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(v) if v else None


def summarise(data):
    rows, base, rss0 = [], None, None
    for c in data["configs"]:
        runs = [r for r in data["runs"] if r["config"] == c and "error" not in r]
        w = med(runs, "wall")
        if w is None:
            continue
        base = w if c == "none" else base
        notes = [] if len(runs) == data["reps"] else ["n=%d" % len(runs)]
        if med(runs, "est_kept") is not None:
            errs = [100 * (r["est_kept"] / r["truth_kept"] - 1) for r in runs]
            notes.append("kept live: est. %.1f of %.1f MiB, error %s (per rep)" % (
                med(runs, "est_kept") / MiB, med(runs, "truth_kept") / MiB, " ".join("%+.0f%%" % e for e in errs)))
        for key, fmt, unit in (("est_live", "all live %.1f MiB", MiB), ("samples", "%d samples", 1),
                               ("footprint", "own memory %.2f MiB", MiB), ("resident", "of it resident %.2f MiB", MiB),
                               ("file_bytes", "file %.0f KiB", 1024)):
            if med(runs, key) is not None:
                notes.append(fmt % (med(runs, key) / unit))
        if any(r.get("dropped") for r in runs):
            notes.append("DROPPED %d" % max(r["dropped"] for r in runs))
        if c == "spprof-preload" and not all(r.get("preloaded") for r in runs):
            notes.append("PRELOAD NOT IN USE")
        rss0 = med(runs, "maxrss") if c == "none" else rss0
        rows.append({"config": c, "wall": w, "ratio": w / base if base else None, "maxrss": med(runs, "maxrss"),
                     "rss_over": med(runs, "maxrss") - rss0 if rss0 else None,
                     "walls": [round(r["wall"], 3) for r in runs], "notes": "; ".join(notes)})
    return rows


def table(rows):
    out = ["| config | median s | ratio vs none | overhead % | peak RSS MiB | RSS over none MiB | notes |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = ("%.3f" % r["ratio"], "%+.1f%%" % (100 * (r["ratio"] - 1))) if r["ratio"] else ("—", "—")
        over = "%+.1f" % (r["rss_over"] / MiB) if r.get("rss_over") is not None else "—"
        out.append("| %s | %.3f | %s | %s | %.0f | %s | %s |" % ((r["config"], r["wall"]) + ratio +
                                                                (r["maxrss"] / MiB, over, r["notes"])))
    return "\n".join(out)


def write_results(data, rows, path):
    lines = ["# spprof's memory profiler beside tracemalloc and memray: overhead, memory, accuracy", "",
             "Generated by `%s` on %s; every figure below comes from this one run (%.0f s)." % (
                 data["cmd"], data["date"], data["elapsed"]), "",
             "| | |", "|---|---|",
             "| machine | %s, %d CPUs, kernel %s |" % (data["cpu"], data["ncpu"], data["kernel"]),
             "| load average before / after | %s / %s |" % (data["load_before"], data["load_after"]),
             "| Python | %s |" % data["python"],
             "| spprof | imported from %s |" % data["spprof_dir"],
             "| repetitions | %d per configuration (%d when over %gx the unprofiled time in round 0), each run in "
             "a fresh process, configurations rotated per round |" % (data["reps"], data["slow_reps"], data["slow"]),
             "| workload | %d iterations, keep() every %d (see `churn` and `keep`) |" % (
                 data["iters"], data["keep_every"])]
    for c, v in data["tools"].items():
        lines.append("| %s | %s; %s |" % (c, v["version"] if v["ok"] else "**skipped: %s**" % v["version"],
                                          CONFIGS[c][0]))
    lines += ["", table(rows), "",
              NOTES % (statistics.median([r["truth_kept"] for r in data["runs"] if "truth_kept" in r]) / MiB), ""]
    errs = [r for r in data["runs"] if "error" in r]
    if errs:
        lines += ["Failed runs: " + "; ".join("%s: %s" % (r["config"], r["error"][:120]) for r in errs), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions of every configuration (default 5)")
    ap.add_argument("--iters", type=int, default=150000, help="workload iterations (default 150000: ~1.1 s here)")
    ap.add_argument("--keep-every", type=int, default=150, help="keep() every N iterations (default 150: ~48 MiB)")
    ap.add_argument("--slow", type=float, default=5.0, help="a configuration this many times slower than none in "
                    "round 0 runs in the first --slow-reps rounds only (default 5)")
    ap.add_argument("--slow-reps", type=int, default=1, help="(default 1: tracemalloc, else the run takes 20 min)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, of: " + ", ".join(CONFIGS))
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "RESULTS-memprof.md"))
    ap.add_argument("--raw", default=os.path.join(BUILD, "bench", "memprof.json"))
    ap.add_argument("--spprof-dir", default=BUILD, help="directory holding the spprof package (default build/)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global SPPROF_DIR
    SPPROF_DIR = os.path.abspath(a.spprof_dir)
    if a.child:
        return child(a.child, a.iters, a.keep_every, a.tmp)
    configs = [c for c in a.configs.split(",") if c]
    if set(configs) - set(CONFIGS):
        ap.error("unknown configuration(s): %s" % ", ".join(set(configs) - set(CONFIGS)))
    configs = ["none"] + [c for c in configs if c != "none"]
    info = {c: dict(zip(("ok", "version"), probe(c))) for c in configs}  # version: why, when not ok
    for c in [c for c in configs if not info[c]["ok"]]:
        print("memprof_overhead: skipping %s: %s" % (c, info[c]["version"]), file=sys.stderr)
    configs = [c for c in configs if info[c]["ok"]]
    t_start, load_before = time.time(), open("/proc/loadavg").read().split()[:3]
    runs, slow = [], set()
    with tempfile.TemporaryDirectory(prefix="spprof-memprof-") as tmp:
        for rep in range(a.reps):
            order = configs[rep % len(configs):] + configs[:rep % len(configs)]
            for c in order:
                if c in slow and rep >= a.slow_reps:
                    continue
                r = dict(run_one(c, a, tmp), rep=rep)
                runs.append(r)
                print("memprof_overhead: rep %d %-22s %s" % (rep, c, "ERROR " + r["error"] if "error" in r else
                      "wall %.3fs rss %.0f MiB" % (r["wall"], r["maxrss"] / MiB)), file=sys.stderr)
            if rep == 0:  # round 0 starts with none: a configuration many times slower is not repeated as often
                base = next((r["wall"] for r in runs if r["config"] == "none" and "wall" in r), None)
                slow = {r["config"] for r in runs if base and r.get("wall", 0) > a.slow * base}
    cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")] or ["?"]
    data = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_start)), "cpu": cpu[0], "ncpu": os.cpu_count(),
            "kernel": platform.release(), "python": "%s %s" % (platform.python_version(), sys.implementation.name),
            "load_before": " ".join(load_before), "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
            "elapsed": time.time() - t_start, "reps": a.reps, "slow": a.slow, "slow_reps": a.slow_reps,
            "iters": a.iters, "keep_every": a.keep_every, "tools": info, "configs": configs, "runs": runs,
            "spprof_dir": os.path.relpath(SPPROF_DIR, ROOT) if SPPROF_DIR.startswith(ROOT) else SPPROF_DIR,
            "cmd": " ".join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(ROOT) else "python",
                             os.path.relpath(__file__, ROOT)] + sys.argv[1:])}
    rows = data["rows"] = summarise(data)
    os.makedirs(os.path.dirname(a.raw), exist_ok=True)
    with open(a.raw, "w") as f:
        json.dump(data, f, indent=1)
    write_results(data, rows, a.out)
    print(table(rows))
    print("memprof_overhead: wrote %s and %s" % (a.out, a.raw), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
