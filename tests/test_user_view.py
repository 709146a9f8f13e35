"""What a user sees: tools/top.py speaks bytes for memory profiles and gives one-line errors for files it
cannot read; record --nolineno / Profile.by_function() make a function one frame; native frames print
without ":0"; Python errors name the Python call and say what to do."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = os.path.join(ROOT, "tools", "top.py")
TOOL = os.path.join(ROOT, "tools", "spprof")


def top(*args):
    return subprocess.run([sys.executable, TOP, *map(str, args)], capture_output=True, text=True, timeout=30)


def test_top_bytes_and_errors(tmp_path):
    mem = tmp_path / "heap.collapsed"
    mem.write_text("<module> (a.py:1);load;read_all 3145728\n<module> (a.py:1);cache 1048576\n")
    r = top(mem, 5, "--bytes")
    assert r.returncode == 0, r.stderr
    assert "4.0 MiB" in r.stdout and "allocated" in r.stdout and "time" not in r.stdout, r.stdout
    assert "   3.0 MiB    75.0" in r.stdout, r.stdout  # read_all: 3 MiB, 75 % self
    r = top(mem)
    assert r.returncode == 0 and "sampling intervals" in r.stdout and "self time" in r.stdout
    cases = {
        tmp_path / "missing.collapsed": "cannot read",
        tmp_path / "p.json": "JSON",
        tmp_path / "p.pb.gz": "go tool pprof",
        tmp_path / "bad.collapsed": "bad.collapsed:2: not a collapsed-stacks line",
        tmp_path / "empty.collapsed": "no samples",
        tmp_path / "g.svg": "SVG",
    }
    (tmp_path / "g.svg").write_text('<?xml version="1.0"?><svg/>')
    (tmp_path / "p.json").write_text('{"$schema": "x"}')
    (tmp_path / "p.pb.gz").write_bytes(b"\x1f\x8b\x08\x00")
    (tmp_path / "bad.collapsed").write_text("a;b 1\nnot a line\n")
    (tmp_path / "empty.collapsed").write_text("")
    for path, needle in cases.items():
        r = top(path)
        assert r.returncode == 1 and needle in r.stderr, (path, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr


def test_nolineno(tmp_path):
    """A function that runs on several lines is one frame with --nolineno, with all of its time."""
    (tmp_path / "app.py").write_text("""\
import time
def worker():
    t = time.thread_time() + 0.3
    x = 0
    while time.thread_time() < t:
        x += 1
        x *= 1
        x -= 1
worker()
""")
    for flag, out in (([], "lines.collapsed"), (["--nolineno"], "nolines.collapsed")):
        proc = subprocess.run([sys.executable, TOOL, "record", "-r", "500", *flag, "-o", out, "-o", out + ".json",
                               "--", "python3", "app.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
    def worker_frames(name):
        frames = set()
        for line in (tmp_path / name).read_text().splitlines():
            frames |= {f for f in line.rsplit(" ", 1)[0].split(";") if f.startswith("worker (")}
        return frames
    assert len(worker_frames("lines.collapsed")) >= 2  # several lines of worker were sampled
    only = worker_frames("nolines.collapsed")
    assert only == {f"worker ({tmp_path / 'app.py'})"}, only
    doc = json.loads((tmp_path / "nolines.collapsed.json").read_text())
    workers = [f for f in doc["shared"]["frames"] if f["name"] == "worker"]
    assert len(workers) == 1 and "line" not in workers[0], workers
    total = sum(int(l.rsplit(" ", 1)[1]) for l in (tmp_path / "nolines.collapsed").read_text().splitlines())
    with_worker = sum(int(l.rsplit(" ", 1)[1]) for l in (tmp_path / "nolines.collapsed").read_text().splitlines()
                      if "worker (" in l)
    assert with_worker > 0.8 * total


def test_python_messages(run):
    r = run("""
    import spprof.memprof as memprof
    from spprof import Frame
    out = {}
    for name, call in (("snap", memprof.get_snapshot), ("mstop", memprof.stop), ("stop", spprof.stop),
                       ("pause", spprof.pause)):
        try:
            call()
        except spprof.Error as e:
            out[name] = str(e)
    spprof.start()
    try:
        spprof.start()
    except spprof.Error as e:
        out["start2"] = str(e)
    spprof.stop()
    out["native"] = str(Frame("start_thread", "/lib/libc.so.6", 0))
    out["py"] = str(Frame("f", "a.py", 3))
    emit(out)
    """).ok()
    m = r.result
    assert m["snap"].startswith("memprof.get_snapshot(): ") and "call memprof.start() first" in m["snap"]
    assert m["mstop"].startswith("memprof.stop(): ") and "memprof.start() first" in m["mstop"]
    assert m["stop"] == "spprof.stop(): the profiler is not started: call spprof.start() first", m["stop"]
    assert m["pause"].startswith("spprof.pause(): ") and "spprof.start() first" in m["pause"]
    assert m["start2"].startswith("spprof.start(): ") and "stop" in m["start2"]
    assert not any("spprof_" in v for v in m.values()), m
    assert m["native"] == "start_thread (/lib/libc.so.6)" and m["py"] == "f (a.py:3)"


def test_profiler_frames_left_out(run):
    """spprof's own C functions (e.g. spprof_thread_unregister, run by a thread's exit) are not shown: the
    sample stays, on the caller."""
    r = run("""
    from spprof import _build_profile, _Session
    raw = [(7, "t", 0, 0, 1, 2, (("spprof_thread_unregister", "/x/_spprof.so", 0),
                                 ("__nptl_deallocate_tsd", "/lib/libc.so.6", 0), ("start_thread", "/lib/libc.so.6", 0))),
           (7, "t", 0, 0, 1, 1, (("spprof_stats_like", "app.py", 3), ("main", "app.py", 1)))]
    p = _build_profile(raw, {}, _Session(1.0, "cpu"), 0, {})
    emit([[f.function for f in s.frames] for s in p.samples] + [p.total_weight])
    """).ok()
    assert r.result == [["start_thread", "__nptl_deallocate_tsd"], ["main", "spprof_stats_like"], 3]
