"""tools/spprof record --subprocesses: every Python process of the program's tree in one profile (or one file
per process with {pid}). Ground truth: child_work() runs only in children and parent_work() only in the
program, each for 0.4 s of CPU time (40 samples at 100 Hz); the program exits with status 5."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import TOOL

PROG = r'''
import multiprocessing as mp, os, subprocess, sys, time

def spin(sec):
    t = time.thread_time() + sec
    x = 0
    while time.thread_time() < t:
        for i in range(300): x = (x * 31 + i) & 0xFFFF

def child_work(n):
    spin(0.4)
    return os.getpid()

def parent_work():
    spin(0.4)

if __name__ == "__main__":
    method = sys.argv[1]
    if method == "os.fork":
        pid = os.fork()
        if pid == 0:
            child_work(0)
            os._exit(0)  # no exit handlers: its samples are written all the same
        parent_work()
        os.waitpid(pid, 0)
    elif method == "sigkill":
        pid = os.fork()
        if pid == 0:
            child_work(0)
            os.kill(os.getpid(), 9)  # no code runs: this child's samples are lost, nothing else
        parent_work()
        os.waitpid(pid, 0)
    elif method == "subprocess":
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {here!r}); "
                        "import prog; prog.child_work(0)"], check=True)
        parent_work()
    else:
        with mp.get_context(method).Pool(2) as p:  # leaving the block terminates (SIGTERMs) the workers
            p.map(child_work, range(2), chunksize=1)
        parent_work()
    sys.exit(5)
'''

SUMMARY = re.compile(r"spprof record: (\d+) samples \([\d.]+ s of cpu time\) in (\d+) process(?:es)?, (\d+) threads?")
PROC = re.compile(r"^pid (\d+) \(([^)]*)\)$")


@pytest.fixture
def prog(tmp_path):
    p = tmp_path / "prog.py"
    p.write_text(PROG)
    return p


def record(tmp_path, prog, method, *outs):
    res = subprocess.run([sys.executable, TOOL, "record", "--subprocesses"] + [a for o in outs for a in ("-o", str(o))]
                         + ["--", "python3", str(prog), method], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 5, res.stderr
    # the children's parts were merged and their directory removed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("spprof-parts-")], list(tmp_path.iterdir())
    return res


def by_process(collapsed_path, key, scale=1):
    """{pid: {key(frames): sum of weights * scale}} from a collapsed file whose first frame is the process;
    stacks whose key is None are left out."""
    out = {}
    with open(collapsed_path) as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            frames = stack.split(";")
            m = PROC.match(frames[0])
            assert m, line
            k = key(frames)
            if k is not None:
                d = out.setdefault(int(m.group(1)), {})
                d[k] = d.get(k, 0) + int(n) * scale
    return out


def on_stack(frames, fns):
    """The first of fns that is a frame of the stack, or None."""
    return next((fn for fn in fns if any(f.startswith(fn + " ") for f in frames)), None)


def per_process(collapsed_path):
    """{pid: {function: samples}}: child_work / parent_work when on the stack, else the leaf function."""
    return by_process(collapsed_path,
                      lambda frames: on_stack(frames, ("child_work", "parent_work")) or frames[-1].split(" (")[0])


@pytest.mark.parametrize("method", ["os.fork", "subprocess", "fork", "spawn", "forkserver"])
def test_subprocesses_one_profile(tmp_path, prog, method):
    out = tmp_path / "p.collapsed"
    res = record(tmp_path, prog, method, out)
    procs = per_process(out)
    root = [pid for pid, d in procs.items() if d.get("parent_work", 0) > 0]
    assert len(root) == 1, procs
    assert 25 <= procs[root[0]]["parent_work"] <= 55, procs  # 40 samples
    assert procs[root[0]].get("child_work", 0) == 0
    children = {pid: d["child_work"] for pid, d in procs.items() if d.get("child_work")}
    want = 1 if method in ("os.fork", "subprocess") else 2
    assert sum(children.values()) >= want * 25 and sum(children.values()) <= want * 55, procs
    assert all(d.get("parent_work", 0) == 0 for pid, d in procs.items() if pid not in root), procs
    if want == 2:  # 2 tasks, chunksize 1, over 2 workers: 1 or 2 of them did the work
        assert 1 <= len(children) <= 2, procs
    m = SUMMARY.search(res.stderr)
    assert m and int(m.group(2)) == len(procs) >= 1 + (1 if want == 1 else 1), res.stderr
    assert int(m.group(1)) >= sum(sum(d.values()) for d in procs.values()) * 0.9


def test_subprocesses_every_format(tmp_path, prog):
    """Speedscope one profile per thread named 'pid N (command): thread', pprof labels pid and process,
    SVG a process level; the same numbers in each."""
    outs = [tmp_path / n for n in ("p.json", "p.collapsed", "p.pb.gz", "p.svg")]
    record(tmp_path, prog, "os.fork", *outs)
    procs = per_process(outs[1])
    assert len(procs) == 2
    doc = json.load(open(outs[0]))
    names = [p["name"] for p in doc["profiles"]]
    for n in names:
        assert re.match(r"^pid \d+ \(python3 prog\.py os\.fork\): MainThread \(tid \d+\)$", n), names
    assert {int(re.match(r"pid (\d+)", n).group(1)) for n in names} == set(procs)
    svg = outs[3].read_text()
    for pid in procs:
        assert f"pid {pid} (python3" in svg
    from pprof_read import raw, GO
    if GO is None:
        pytest.skip("go (golang-go) not installed: pprof not read back")
    pp = raw(str(outs[2]))
    seen = {}
    for s in pp["samples"]:
        lab = s["labels"]
        assert "process" in lab and "os.fork" in lab["process"], lab
        pid = int(re.match(r"\[?(\d+)", lab["pid"]).group(1))  # (pprof_read keeps one label per line)
        seen[pid] = seen.get(pid, 0) + s["values"][0]
    assert set(seen) == set(procs), (seen, procs)


def test_subprocesses_file_per_process(tmp_path, prog):
    """-o with {pid}: one file per process, each with only its own samples; nothing merged."""
    record(tmp_path, prog, "fork", tmp_path / "p-{pid}.collapsed")
    files = sorted(tmp_path.glob("p-*.collapsed"))
    by_pid = {}
    for f in files:
        pid = int(re.match(r"p-(\d+)\.collapsed", f.name).group(1))
        text = f.read_text()
        for line in text.splitlines():
            assert line.startswith(f"pid {pid} ("), line  # the process first, and it is this file's
        by_pid[pid] = text
    parents = [p for p, t in by_pid.items() if "parent_work" in t]
    workers = [p for p, t in by_pid.items() if "child_work" in t]
    assert len(parents) == 1 and 1 <= len(workers) <= 2 and parents[0] not in workers, by_pid.keys()
    assert not list(tmp_path.glob("p.collapsed"))


MEMPROG = r'''
import multiprocessing as mp, os, sys

CHUNK = 4096
kept = []

def hold(mib):
    return [bytearray(CHUNK) for _ in range(mib * 2**20 // CHUNK)]

def fork_child_holds_40():
    keep = hold(40)
    if sys.argv[1] == "keep": kept.append(keep)   # live at exit too
    if sys.argv[1] == "sigkill": os.kill(os.getpid(), 9)

def spawn_child_holds_56(how):
    keep = hold(56)
    if how == "keep": kept.append(keep)

def parent_keeps_16():
    return hold(16)

def parent_holds_24():
    keep = hold(24)
    if sys.argv[1] == "keep": kept.append(keep)

if __name__ == "__main__":
    before = parent_keeps_16()    # held by the parent across the fork: the forked child must not report it
    pid = os.fork()
    if pid == 0:
        fork_child_holds_40()
        os._exit(0)              # no exit handlers: its part is written all the same
    os.waitpid(pid, 0)
    p = mp.get_context("spawn").Process(target=spawn_child_holds_56, args=(sys.argv[1],))
    p.start(); p.join()
    parent_holds_24()
    sys.exit(3)
'''

# Each function holds MiB of 4 KiB bytearrays (each also costs its 56-byte object and an 8-byte list slot: the
# truth is MiB * (4096 + 64) / 4096 = MiB * 1.0156). Sampled at 4 KiB, an allocation of 4097 bytes is taken
# with p = 1 - exp(-4097/4096) = 0.632 and stands for 4097/p bytes: the estimate of N chunks is binomial, its
# relative standard deviation sqrt((1 - p) / (N p)): 1.19 % for 16 MiB (N = 4096), 0.97 % for 24, 0.75 % for 40,
# 0.64 % for 56 (the small object headers, sampled at p ~ 1.4 %, add 0.1 % at most). +-6 % is 5 standard
# deviations of the smallest; seen over 6 runs: -2.2 % .. +2.2 % (each of the four).
MEM_TOL = 0.06
MEM_TRUTH = 1.0156


def memory_record(tmp_path, prog, how, *outs, extra=()):
    res = subprocess.run([sys.executable, TOOL, "record", "--memory", "--memory-rate-kb", "4", "--subprocesses"]
                         + list(extra) + [a for o in outs for a in ("-o", str(o))] + ["--", "python3", str(prog), how],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=dict(os.environ, TMPDIR=str(tmp_path)))
    assert res.returncode == 3, res.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("spprof-parts-")], list(tmp_path.iterdir())
    return res


def memory_per_process(collapsed_path):
    """{pid: {function: MiB}}: the bytes under each *_holds_N / parent_keeps_16 function, by process."""
    def key(frames):
        named = [fr.split(" (")[0] for fr in frames[1:] if "_holds_" in fr or "_keeps_" in fr]
        return named[-1] if named else "other"
    return by_process(collapsed_path, key, 1 / 2**20)


def check_amounts(procs, want):
    """want: {function: MiB}; each in exactly one process, within MEM_TOL of its truth, and nowhere else."""
    where = {}
    for pid, d in procs.items():
        for fn, mib in d.items():
            if fn in want:
                assert fn not in where, f"{fn} in two processes: {procs}"
                where[fn] = pid
                truth = want[fn] * MEM_TRUTH
                assert abs(mib / truth - 1) <= MEM_TOL, f"{fn}: {mib:.2f} MiB, truth {truth:.2f}: {procs}"
    assert set(where) == set(want), procs
    return where


def test_memory_subprocesses_known_amounts(tmp_path):
    """--memory --subprocesses: each process's heap at its own peak, the process first; the forked child does
    not report the 16 MiB its parent held across the fork; every format."""
    prog = tmp_path / "memprog.py"
    prog.write_text(MEMPROG)
    outs = [tmp_path / n for n in ("m.collapsed", "m.json", "m.svg", "m.pb.gz")]
    res = memory_record(tmp_path, prog, "free", *outs)
    procs = memory_per_process(outs[0])
    where = check_amounts(procs, {"parent_keeps_16": 16, "parent_holds_24": 24, "fork_child_holds_40": 40,
                                  "spawn_child_holds_56": 56})
    assert where["parent_keeps_16"] == where["parent_holds_24"]
    assert len({where["parent_holds_24"], where["fork_child_holds_40"], where["spawn_child_holds_56"]}) == 3
    m = re.search(r"spprof record: (\d+) allocation samples in (\d+) processes, ~([\d.]+) MiB at peaks \(summed\)",
                  res.stderr)
    assert m and int(m.group(2)) == len(procs) >= 3, res.stderr
    assert float(m.group(3)) >= (16 + 24 + 40 + 56) * (1 - MEM_TOL), res.stderr
    assert "each process's heap at its own peak" in res.stderr
    # Speedscope: the process is the root frame of every stack, in both views (peak, allocated)
    doc = json.load(open(outs[1]))
    from conftest import schema_or_none, validate_speedscope
    if schema_or_none() is not None:
        validate_speedscope(doc)
    frames = doc["shared"]["frames"]
    for prof in doc["profiles"]:
        roots = {frames[st[0]]["name"] for st in prof["samples"]}
        assert {int(PROC.match(r).group(1)) for r in roots} == set(procs), (prof["name"], roots)
    svg = outs[2].read_text()
    for pid in procs:
        assert f"pid {pid} (python3" in svg
    from pprof_read import raw, GO
    if GO is None:
        pytest.skip("go (golang-go) not installed: pprof not read back")
    pp = raw(str(outs[3]))
    inuse = {}
    for s in pp["samples"]:
        root = pp["locations"][s["locs"][-1]]["lines"][0][0]  # -raw lists the leaf first, the process last
        pid = int(PROC.match(root).group(1))
        inuse[pid] = inuse.get(pid, 0) + s["values"][3]
    for pid, d in procs.items():
        assert abs(inuse[pid] / 2**20 - sum(d.values())) < 0.01 * sum(d.values()) + 0.01, (inuse, procs)


def test_memory_subprocesses_live_at_exit_file_per_process(tmp_path):
    """--live-at-exit: what each process holds at exit (the fork child's os._exit too); {pid}: one file each."""
    prog = tmp_path / "memprog.py"
    prog.write_text(MEMPROG)
    memory_record(tmp_path, prog, "keep", tmp_path / "m-{pid}.collapsed", extra=["--live-at-exit"])
    procs = {}
    for f in tmp_path.glob("m-*.collapsed"):
        pid = int(re.match(r"m-(\d+)\.collapsed", f.name).group(1))
        got = memory_per_process(f)
        assert set(got) == {pid}, (f.name, got)  # only its own process in each file
        procs.update(got)
    check_amounts(procs, {"parent_keeps_16": 16, "parent_holds_24": 24, "fork_child_holds_40": 40,
                          "spawn_child_holds_56": 56})
    assert not list(tmp_path.glob("m.collapsed"))


def test_memory_subprocesses_killed_child(tmp_path):
    """A forked child killed by SIGKILL loses its own data only: the others are there, right."""
    prog = tmp_path / "memprog.py"
    prog.write_text(MEMPROG)
    memory_record(tmp_path, prog, "sigkill", tmp_path / "m.collapsed")
    procs = memory_per_process(tmp_path / "m.collapsed")
    check_amounts(procs, {"parent_keeps_16": 16, "parent_holds_24": 24, "spawn_child_holds_56": 56})


def test_subprocesses_killed_child(tmp_path, prog):
    """A child killed by SIGKILL loses its own samples only: the program's profile is written, its status kept."""
    out = tmp_path / "p.collapsed"
    res = record(tmp_path, prog, "sigkill", out)
    procs = per_process(out)
    assert len(procs) == 1, procs
    (d,) = procs.values()
    assert 25 <= d["parent_work"] <= 55 and "child_work" not in d, procs
    assert re.search(r"in 1 process, 1 thread", res.stderr), res.stderr


RUNNING = r'''
import ctypes, os, subprocess, sys, time

def spin(sec):
    t = time.thread_time() + sec
    x = 0
    while time.thread_time() < t:
        for i in range(300): x = (x * 31 + i) & 0xFFFF

def daemon_work():
    if sys.argv[3] == "memory":
        keep = daemon_holds_24()
        time.sleep(30)
    spin(30)

def hold(mib):
    return [bytearray(4096) for _ in range(mib * 256)]

def daemon_holds_24():
    return hold(24)

def forgotten_work():
    spin(30)

def parent_work():
    spin(0.4)

if __name__ == "__main__":
    pids = sys.argv[1]
    if os.fork() == 0:                # a daemon: double fork, new session, never waited for
        os.setsid()
        if os.fork() == 0:
            with open(pids, "a") as f: f.write(f"{os.getpid()}\n")
            daemon_work()
            os._exit(0)
        os._exit(0)
    if sys.argv[2] == "stuck":        # a child in a C call that holds the GIL: it cannot answer
        if os.fork() == 0:
            with open(pids, "a") as f: f.write(f"{os.getpid()}\n")
            ctypes.PyDLL(None).sleep(30)
            os._exit(0)
    if sys.argv[3] == "cpu":          # a worker the program forgot to wait for
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.Popen([sys.executable, "-c", f"import sys, os; sys.path.insert(0, {here!r}); import running; "
                          f"open({pids!r}, 'a').write(str(os.getpid()) + chr(10)); running.forgotten_work()"])
    parent_work()
    time.sleep(0.3)
    sys.exit(5)
'''


def run_no_wait_for_children(tmp_path, args):
    """record ARGS with stdout/stderr in files: children that outlive it keep their copies of its descriptors
    (a pipe would wait for them); returns what subprocess.run would, for record's own exit."""
    with open(tmp_path / "out.txt", "w+") as o, open(tmp_path / "err.txt", "w+") as e:
        proc = subprocess.Popen([sys.executable, TOOL, "record"] + args, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, env=dict(os.environ, TMPDIR=str(tmp_path)))
        rc = proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, rc, (tmp_path / "out.txt").read_text(),
                                       (tmp_path / "err.txt").read_text())


@pytest.mark.parametrize("stuck", ["", "stuck"])
def test_subprocesses_still_running_at_exit(tmp_path, stuck):
    """Children still running when the program exits (a daemonized grandchild, a subprocess never waited for):
    record exits at once with the program's status, their samples so far are in the profile, the summary says
    how many were still running (partial) and how many did not answer (a child holding the GIL: left out)."""
    import time
    prog = tmp_path / "running.py"
    prog.write_text(RUNNING)
    pids = tmp_path / "pids"
    out = tmp_path / "p.collapsed"
    t0 = time.monotonic()
    try:
        res = run_no_wait_for_children(tmp_path, ["--subprocesses", "-o", str(out), "--", "python3", str(prog),
                                                  str(pids), stuck or "-", "cpu"])
        took = time.monotonic() - t0
        alive = [int(p) for p in pids.read_text().split()]
        assert len(alive) == (3 if stuck else 2)
        for pid in alive:
            os.kill(pid, 0)  # they run for 30 s: still running when record returned
    finally:
        for pid in [int(p) for p in pids.read_text().split()] if pids.exists() else []:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    assert res.returncode == 5, res.stderr
    assert took < 15, f"record took {took:.1f} s (the children run 30 s)"  # ~1 s, +1.5 s for a silent child
    # {pid: {function on the stack: samples}}
    procs = by_process(out, lambda frames: on_stack(frames, ("daemon_work", "forgotten_work", "parent_work")))
    by_fn = {fn: pid for pid, d in procs.items() for fn in d}
    assert set(by_fn) == {"daemon_work", "forgotten_work", "parent_work"}, procs
    assert len(set(by_fn.values())) == 3 and all(len(d) == 1 for d in procs.values()), procs
    assert by_fn["daemon_work"] in alive and by_fn["forgotten_work"] in alive
    # the children ran alongside the program's 0.4 s of CPU and 0.3 s of sleep: some tens of samples each
    spun = {fn: procs[pid][fn] for fn, pid in by_fn.items()}
    assert spun["daemon_work"] >= 10 and spun["forgotten_work"] >= 10, spun
    assert 25 <= spun["parent_work"] <= 55, spun
    assert "2 processes still running at the program's exit: samples so far (partial)" in res.stderr, res.stderr
    if stuck:
        assert "1 still running did not answer within 1.5 s: left out" in res.stderr, res.stderr
        assert took < 1.5 + 10
    else:
        assert "did not answer" not in res.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("spprof-parts-")], list(tmp_path.iterdir())


def test_memory_subprocesses_still_running_at_exit(tmp_path):
    """--memory: a daemonized child still running at the program's exit gives its heap so far (24 MiB held)."""
    prog = tmp_path / "running.py"
    prog.write_text(RUNNING)
    pids = tmp_path / "pids"
    out = tmp_path / "m.collapsed"
    try:
        res = run_no_wait_for_children(tmp_path, ["--memory", "--memory-rate-kb", "4", "--subprocesses", "-o",
                                                  str(out), "--", "python3", str(prog), str(pids), "-", "memory"])
        alive = [int(p) for p in pids.read_text().split()]
    finally:
        for pid in [int(p) for p in pids.read_text().split()] if pids.exists() else []:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
    assert res.returncode == 5, res.stderr
    procs = memory_per_process(out)
    where = check_amounts(procs, {"daemon_holds_24": 24})
    assert where["daemon_holds_24"] == alive[0]
    assert "1 process still running at the program's exit: samples so far (partial)" in res.stderr, res.stderr
