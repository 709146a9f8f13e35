"""spprof.serve() and `record --serve`: Go's net/http/pprof endpoints, fetched over HTTP by the real client
(`go tool pprof`): a CPU profile of the next N seconds (its own session when none runs; the window of the
running session under record), the heap as pprof, the index page; bad parameters 400, other paths 404, a
second concurrent profile 409; loopback by default."""
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from pprof_read import need_go, raw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
TOOL = os.path.join(ROOT, "tools", "spprof")

APP = """\
import os, sys, threading, time
def burn_cpu(seconds):
    t = time.thread_time() + seconds
    while time.thread_time() < t:
        pass
def keep_memory():
    return [bytearray(4000) for _ in range(3000)]
def spin_until_done():
    end = time.monotonic() + 60
    while not os.path.exists("done") and time.monotonic() < end:
        burn_cpu(0.05)
"""


def get(url, timeout=30):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(proc, pattern, what, timeout=30):
    """The first match of pattern in proc's stderr lines (read as they come)."""
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    proc.kill()
    pytest.fail(f"no {what} on stderr: {''.join(seen)}")


def test_serve_api(tmp_path):
    need_go()
    (tmp_path / "app.py").write_text(APP + """
import spprof, spprof.memprof as memprof
memprof.start(sampling_rate_kb=16)
kept = keep_memory()
host, port = spprof.serve()
sys.stderr.write(f"listening {host} {port}\\n"); sys.stderr.flush()
spin_until_done()
""")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=BUILD))
    try:
        m = wait_for(proc, r"listening (\S+) (\d+)", "address")
        assert m.group(1) == "127.0.0.1"
        base = f"http://127.0.0.1:{m.group(2)}/debug/pprof"
        p = raw(f"{base}/profile?seconds=1.5", tmpdir=tmp_path)
        assert p["types"] == ["samples/count", "cpu/nanoseconds"] and p["header"]["Period"] == "10000000"
        assert 1.4 <= float(p["header"]["Duration"].rstrip("s")) < 10, p["header"]
        leaf = {}
        for s in p["samples"]:
            name = p["locations"][s["locs"][0]]["lines"][0][0] if s["locs"] else "?"
            leaf[name] = leaf.get(name, 0) + s["values"][1]
        total = sum(leaf.values())
        assert total > 0 and leaf.get("burn_cpu", 0) > 0.8 * total, leaf
        h = raw(f"{base}/heap?gc=1", tmpdir=tmp_path)
        assert h["default"] == "inuse_space/bytes"
        kept = sum(s["values"][3] for s in h["samples"]
                   if any(p2["lines"][0][0] == "keep_memory" for p2 in (h["locations"][i] for i in s["locs"])))
        assert kept > 0.5 * 3000 * 4000, kept
        code, body = get(f"{base}/")
        assert code == 200 and b'href="profile?seconds=30"' in body and b"heap" in body
        for bad in ("profile?seconds=abc", "profile?seconds=0", "profile?seconds=-1", "profile?seconds=1e9",
                    "profile?seconds=1&debug=1", "heap?gc=2", "heap?debug=1", "heap?x=1"):
            code, body = get(f"{base}/{bad}")
            assert code == 400 and body.strip(), (bad, code, body)
        for missing in ("goroutine", "cmdline", "symbol", "../../etc/passwd"):
            assert get(f"{base}/{missing}")[0] == 404, missing
        first = {}
        t = threading.Thread(target=lambda: first.update(r=get(f"{base}/profile?seconds=2")))
        t.start()
        time.sleep(0.5)
        code, body = get(f"{base}/profile?seconds=1")
        t.join()
        assert code == 409 and b"another request" in body, (code, body)
        assert first["r"][0] == 200 and first["r"][1][:2] == b"\x1f\x8b"
    finally:
        (tmp_path / "done").write_text("")
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_record_serve(tmp_path):
    """Under record (a session runs from the first line): /profile?seconds=N answers with the window of
    that session; the whole-run profile is still written at exit."""
    need_go()
    (tmp_path / "app.py").write_text(APP + "spin_until_done()\n")
    proc = subprocess.Popen([sys.executable, TOOL, "record", "-r", "200", "--serve", "127.0.0.1:0", "-o", "run.pb.gz",
                             "--", "python3", "app.py"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        m = wait_for(proc, r"serving (http://127\.0\.0\.1:\d+/debug/pprof/)", "address")
        time.sleep(1.0)
        p = raw(m.group(1) + "profile?seconds=1", tmpdir=tmp_path)
        assert p["header"]["Period"] == "5000000"
        cpu = sum(s["values"][1] for s in p["samples"])
        # the window: at most 1 s of CPU (one busy thread) plus the runs straddling its edges
        assert 0.02e9 < cpu < 1.3e9, cpu
        assert 0.9 < float(p["header"]["Duration"].rstrip("s")) < 5
        assert any(p["locations"][s["locs"][0]]["lines"][0][0] == "burn_cpu" for s in p["samples"] if s["locs"])
    finally:
        (tmp_path / "done").write_text("")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    whole = raw(str(tmp_path / "run.pb.gz"))
    assert sum(s["values"][1] for s in whole["samples"]) > cpu


def test_serve_arguments(run):
    """Bad arguments are refused with the reason; a port in use is an OSError; IPv6 loopback works."""
    r = run("""
    import socket, urllib.request
    out = {}
    for key, args in (("port", ("127.0.0.1", 70000)), ("bool", ("127.0.0.1", True)), ("host", ("", 0)),
                      ("hosttype", (3, 0))):
        try:
            spprof.serve(*args)
        except (TypeError, ValueError) as e:
            out[key] = f"{type(e).__name__}: {e}"
    host, port = spprof.serve()
    try:
        spprof.serve(host, port)
    except OSError as e:
        out["inuse"] = "OSError"
    try:
        h6, p6 = spprof.serve("::1", 0)
        out["v6"] = urllib.request.urlopen(f"http://[::1]:{p6}/debug/pprof/", timeout=10).status
    except OSError as e:
        out["v6"] = f"no IPv6 here: {e}"
    emit(out)
    """).ok()
    m = r.result
    assert m["port"].startswith("ValueError: port") and m["bool"].startswith("TypeError: port")
    assert m["host"].startswith("TypeError: host") and m["hosttype"].startswith("TypeError: host")
    assert m["inuse"] == "OSError"
    assert m["v6"] == 200 or str(m["v6"]).startswith("no IPv6"), m["v6"]
