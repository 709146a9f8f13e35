"""The SVG flame graph: one self-contained file (parsed as XML, no external reference), its frames' widths
are the profile's own numbers, it renders in headless Chromium and its scripts work there: search (#s=)
colours the matching frames and reports their share, click-zoom (#z=) fills the width with one frame.
`record` without -o writes spprof-PROGRAM-TIME.svg titled with the command line."""
import glob
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from browser import dump_dom, need_chromium, screenshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
TOOL = os.path.join(ROOT, "tools", "spprof")
SVG = "{http://www.w3.org/2000/svg}"

WORKLOAD = """\
import sys, threading, time
def burn(s):
    t = time.thread_time() + s
    while time.thread_time() < t:
        pass
def alpha():
    burn(0.3)
def beta():
    burn(0.1)
def main():
    ts = [threading.Thread(target=f, name=f.__name__) for f in (alpha, beta)]
    for t in ts: t.start()
    for t in ts: t.join()
    keep = [bytearray(5000) for _ in range(2000)]
    return keep
"""


def frames_of(path):
    """[(name, value, depth, x)] of the flame graph at path, and the root svg element."""
    root = ET.parse(path).getroot()
    assert root.tag == SVG + "svg"
    out = []
    for g in root.iter(SVG + "g"):
        if g.get("class") == "f":
            out.append((g.get("data-n"), float(g.get("data-v")), int(g.get("data-d")), float(g.get("data-x"))))
    return out, root


def self_contained(path):
    text = open(path, encoding="utf-8").read()
    refs = re.findall(r"(?:href|src)\s*=|url\(|@import|https?://(?!www\.w3\.org/2000/svg)", text)
    assert not refs, refs
    return text


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A CPU profile and a heap snapshot of WORKLOAD, saved as SVG (and their own numbers)."""
    tmp = tmp_path_factory.mktemp("flame")
    (tmp / "work.py").write_text(WORKLOAD + """
import json, spprof, spprof.memprof as memprof
spprof.start(interval_ms=1)
memprof.start(sampling_rate_kb=16)
keep = main()
p = spprof.stop()
snap = memprof.get_snapshot()
p.save("cpu.svg", title="work.py: the flame graph test")
p.save("cpu-threads.svg", threads=True)
snap.save("heap.svg")
snap.save("alloc.svg", live=False)
incl = p.function_shares(inclusive=True)
print(json.dumps({"weight": p.total_weight, "interval_ms": p.interval_ms, "incl": incl,
                  "live": snap.total_bytes, "allocated": sum(a.estimated_bytes for a in snap.allocations),
                  "threads": {t: n for t, n in p.threads().items()}}))
""")
    env = dict(os.environ, PYTHONPATH=BUILD)
    out = subprocess.run([sys.executable, "work.py"], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json
    return tmp, json.loads(out.stdout.splitlines()[-1])


def test_svg_numbers(graphs):
    tmp, res = graphs
    frames, root = frames_of(tmp / "cpu.svg")
    self_contained(tmp / "cpu.svg")
    total = float(root.get("data-total"))
    assert total == res["weight"]
    assert root.get("data-unit") == "seconds" and float(root.get("data-scale")) == res["interval_ms"] / 1000
    assert root.find(SVG + "text").get("id") == "title"
    assert "work.py: the flame graph test" in ET.tostring(root.find(SVG + "text"), encoding="unicode")
    for fn in ("alpha", "beta", "burn"):  # each function's frames sum to its inclusive share
        v = sum(f[1] for f in frames if f[0] == fn)
        assert abs(v / total - res["incl"][fn]) < 1e-9, (fn, v / total, res["incl"][fn])
    assert [f for f in frames if f[2] == 0] == [("all", total, 0, 0.0)]
    # children fit inside their parent
    for name, v, d, x in frames:
        if d:
            assert any(p[2] == d - 1 and p[3] <= x + 1e-6 and x + v <= p[3] + p[1] + 1e-6 for p in frames), name
    tframes, _ = frames_of(tmp / "cpu-threads.svg")
    names = {f[0] for f in tframes if f[2] == 1}
    assert {f"alpha (tid {t})" for t, n in res["threads"].items() if n == "alpha"} <= names, names
    heap, hroot = frames_of(tmp / "heap.svg")
    self_contained(tmp / "heap.svg")
    assert hroot.get("data-unit") == "bytes" and abs(float(hroot.get("data-total")) - res["live"]) < 1e-6 * res["live"]
    assert sum(f[1] for f in heap if f[0] == "main") > 0.5 * 2000 * 5000
    alloc, aroot = frames_of(tmp / "alloc.svg")
    assert abs(float(aroot.get("data-total")) - res["allocated"]) < 1e-6 * res["allocated"]
    sub = ET.tostring(hroot.findall(SVG + "text")[1], encoding="unicode")
    assert "live heap" in sub and "MiB" in sub, sub


def test_svg_in_chromium(graphs):
    """Rendered by a real browser: the search from the URL colours burn's frames and reports burn's true
    share; zooming into beta leaves beta's subtree (full width) and its ancestors, hides alpha."""
    need_chromium()
    tmp, res = graphs
    url = "file://" + str(tmp / "cpu.svg")
    dom = ET.fromstring(dump_dom(url + "#s=^bu.n$&z=beta", tmp))  # the DOM after the scripts ran
    assert dom.get("data-ready") == "1", "the script did not run to its end"
    matched = next(t for t in dom.iter(SVG + "text") if t.get("id") == "matched")
    share = float(matched.get("data-share"))
    assert abs(share - res["incl"]["burn"]) < 1e-6, (share, res["incl"]["burn"])
    assert matched.text.startswith(f"Matched: {100 * res['incl']['burn']:.1f}%"), matched.text
    seen = set()
    for g in dom.iter(SVG + "g"):
        if "f" not in (g.get("class") or "").split():
            continue
        name, cls, rect = g.get("data-n"), g.get("class").split(), g.find(SVG + "rect")
        seen.add(name)
        assert (g.get("data-match") == "1") == (name == "burn"), name
        assert (rect.get("fill") == "rgb(230,0,230)") == (name == "burn"), name
        if name == "alpha":
            assert "hide" in cls, "alpha stays visible when zoomed into beta"
        if name == "beta":
            assert "hide" not in cls and abs(float(rect.get("width")) - 1180) < 0.01 and float(rect.get("x")) == 10
        if name == "all":
            assert "parent" in cls and "hide" not in cls
    assert {"alpha", "beta", "burn", "all"} <= seen
    png = screenshot(url + "#s=burn", str(tmp / "cpu.png"), tmp, size=(1200, 260))
    png2 = screenshot("file://" + str(tmp / "heap.svg"), str(tmp / "heap.png"), tmp, size=(1200, 400))
    print("screenshots:", png, png2)


def test_record_default_output(tmp_path):
    """No -o: spprof-<program>-<time>.svg in the current directory, titled with the command line."""
    (tmp_path / "app.py").write_text(WORKLOAD + "main()\n")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, TOOL, "record", "-r", "500", "--", "python3", "app.py", "--flag"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    made = glob.glob(str(tmp_path / "spprof-app-*.svg"))
    assert len(made) == 1 and re.search(r"spprof-app-\d{8}-\d{6}\.svg$", made[0]), os.listdir(tmp_path)
    assert made[0] in proc.stderr
    frames, root = frames_of(made[0])
    title = root.find(SVG + "text").find(SVG + "title").text
    assert title.endswith("app.py --flag") and "python3" in title, title
    assert any(f[0] == "alpha" for f in frames)
