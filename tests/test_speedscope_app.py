"""Speedscope output in the real speedscope app (1.25.0, ../shared/reference/speedscope-1.25.0.tgz, extracted
under build/), served on 127.0.0.1 beside the profiles and opened in headless Chromium with
index.html#profileURL=...: the profile imports without an error, the busiest thread is the one shown
(activeProfileIndex), and a memory profile opens on its live heap, named as such."""
import functools
import html
import http.server
import json
import os
import re
import subprocess
import sys
import tarfile
import threading

import pytest

from browser import dump_dom, need_chromium, screenshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
TGZ = os.path.join(ROOT, "..", "shared", "reference", "speedscope-1.25.0.tgz")
APP = os.path.join(BUILD, "speedscope-1.25.0", "package", "dist", "release")
DEMO = os.path.join(BUILD, "native_demo")


def speedscope_app():
    if not os.path.isfile(os.path.join(APP, "index.html")):
        if not os.path.isfile(TGZ):
            pytest.skip(f"speedscope release not found at {TGZ}")
        dest = os.path.join(BUILD, "speedscope-1.25.0")
        tmp = dest + f".tmp.{os.getpid()}"
        with tarfile.open(TGZ) as t:
            t.extractall(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:  # another test run extracted it meanwhile
            pass
    return APP


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(directory, base URL): an HTTP server on 127.0.0.1 serving the app as app/ and the directory's files."""
    need_chromium()
    root = tmp_path_factory.mktemp("speedscope")
    os.symlink(speedscope_app(), root / "app")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def shown(base, name, tmp):
    """What the app shows for profile `name`: (page title, profile name in the toolbar, "i/n")."""
    dom = dump_dom(f"{base}/app/index.html#profileURL={base}/{name}", tmp, budget_ms=8000)
    assert "Something went wrong" not in dom and "Unrecognized format" not in dom, dom[-3000:]
    title = html.unescape(re.search(r"<title>([^<]*)</title>", dom).group(1))
    m = re.search(r"<span>([^<]*) <span[^>]*>\((\d+)/(\d+)\)</span>", dom)
    assert m, f"no profile name in the toolbar (not loaded?)\n{dom[-3000:]}"
    return title, html.unescape(m.group(1)), (int(m.group(2)), int(m.group(3)))


def test_speedscope_app(served):
    root, base = served
    (root / "work.py").write_text("""
import json, threading, time, spprof, spprof.memprof as memprof
def burn(s):
    t = time.thread_time() + s
    while time.thread_time() < t:
        pass
memprof.start(sampling_rate_kb=16)
spprof.start(interval_ms=1)
burn(0.02)                          # the main thread comes first, with little time
ts = [threading.Thread(target=burn, args=(s,), name=n) for n, s in (("small", 0.05), ("busy", 0.3))]
for t in ts: t.start()
for t in ts: t.join()
keep = [bytearray(4000) for _ in range(1000)]
p = spprof.stop()
p.save("cpu.json")
memprof.get_snapshot().save("heap.json")
""")
    env = dict(os.environ, PYTHONPATH=BUILD)
    proc = subprocess.run([sys.executable, "work.py"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    subprocess.run([DEMO, str(root), "0.5"], check=True, capture_output=True, timeout=120)
    doc = json.loads((root / "cpu.json").read_text())
    weights = [sum(p["weights"]) for p in doc["profiles"]]
    assert doc["profiles"][doc["activeProfileIndex"]]["name"].startswith("busy ("), doc["activeProfileIndex"]
    assert weights[doc["activeProfileIndex"]] == max(weights) and doc["activeProfileIndex"] != 0

    title, name, (i, n) = shown(base, "cpu.json", root)
    assert title == doc["name"] + " - speedscope"
    assert name.startswith("busy (tid ") and (i, n) == (doc["activeProfileIndex"] + 1, len(doc["profiles"])), (name, i, n)

    title, name, (i, n) = shown(base, "heap.json", root)
    assert "memory profile" in title and name.startswith("live heap: ") and (i, n) == (1, 2), (title, name, i, n)

    cdoc = json.loads((root / "native.speedscope.json").read_text())
    cw = [sum(p["weights"]) for p in cdoc["profiles"]]
    assert cw[cdoc["activeProfileIndex"]] == max(cw)
    title, name, (i, n) = shown(base, "native.speedscope.json", root)
    assert name == cdoc["profiles"][cdoc["activeProfileIndex"]]["name"] and i == cdoc["activeProfileIndex"] + 1
    png = screenshot(f"{base}/app/index.html#profileURL={base}/cpu.json", str(root / "cpu.png"), root,
                     size=(1200, 500), budget_ms=8000)
    print("screenshot:", png)
