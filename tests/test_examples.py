"""The Python examples build with examples/build_examples.sh and produce the profiles they promise:
- examples/embed_demo.c, a C program that embeds CPython: one profile with the native frames of its own C
  code (main -> c_hot_function) and the Python frames (with file and line) of the code it runs (py_hot);
- examples/extension/, an extension module with spprof compiled in (myext.profiler), used by demo.py: the
  time spent in the C function myext.crunch() shows up under its Python caller.
Each interpreter that exists ($SPPROF_PYTHONS, python3 and Debian's python3.11-dbg) is built for and
tested separately; a missing interpreter, Python.h or libpython is a skip."""
import collections
import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import interpreter_id, schema_or_none

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_SCRIPT = os.path.join(ROOT, "examples", "build_examples.sh")
EXT_DEMO = os.path.join(ROOT, "examples", "extension", "demo.py")
# Same interpreters as the other Python tests: $SPPROF_PYTHONS (space-separated), python3, python3.11-dbg.
INTERPRETERS = []
for _n in os.environ.get("SPPROF_PYTHONS", "").split() + ["python3", "python3.11-dbg"]:
    if _n not in INTERPRETERS:
        INTERPRETERS.append(_n)
COLLAPSED_LINE = re.compile(r"^[^;\n]+(;[^;\n]+)* [1-9][0-9]*$")


def check_speedscope(path):
    """Valid against the published schema (when available) and internally consistent; returns the doc."""
    with open(path) as f:
        doc = json.load(f)
    schema = schema_or_none()  # absent: not validated (named in the summary), a failure under CI=true
    if schema is not None:
        import jsonschema

        jsonschema.validate(doc, schema)
    nframes = len(doc["shared"]["frames"])
    for p in doc["profiles"]:
        assert len(p["samples"]) == len(p["weights"]) > 0
        assert all(0 <= i < nframes for s in p["samples"] for i in s)
        assert p["endValue"] - p["startValue"] == sum(p["weights"])
    return doc


def stack_weights(doc):
    """{(frame, ...) root first: total weight}, a frame being (name, file, line)."""
    frames = [(f["name"], f.get("file", ""), f.get("line", 0)) for f in doc["shared"]["frames"]]
    out = collections.Counter()
    for p in doc["profiles"]:
        for s, w in zip(p["samples"], p["weights"]):
            out[tuple(frames[i] for i in s)] += w
    return out


@pytest.fixture(scope="module", params=INTERPRETERS, ids=[interpreter_id(p) for p in INTERPRETERS])
def built(request, tmp_path_factory):
    py = request.param
    if shutil.which(py) is None:
        pytest.skip(f"{py} not found")
    out = tmp_path_factory.mktemp("examples-" + os.path.basename(py))
    proc = subprocess.run(["sh", BUILD_SCRIPT, str(out), py], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return py, out, proc.stdout


@pytest.fixture(scope="module")
def embed_out(built):
    py, out, log = built
    exe = out / "embed_demo"
    if not exe.exists():
        pytest.skip(f"embed_demo not built for {py}: {log.strip()}")
    res = out / "embed-out"
    res.mkdir()
    proc = subprocess.run([str(exe), str(res), "0.5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return res


@pytest.fixture(scope="module")
def ext_out(built):
    py, out, log = built
    if not list(out.glob("myext*.so")):
        pytest.skip(f"myext not built for {py}: {log.strip()}")
    res = out / "ext-out"
    res.mkdir()
    env = dict(os.environ, PYTHONPATH=str(out))
    proc = subprocess.run([py, EXT_DEMO, str(res / "ext.speedscope.json"), "1.0"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return res


def test_embed_collapsed_has_native_and_python_stacks(embed_out):
    with open(embed_out / "embed.collapsed") as f:
        lines = f.read().splitlines()
    assert lines
    native = python = total = 0
    for line in lines:
        assert COLLAPSED_LINE.match(line), line
        assert "<freed code object" not in line, line
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        total += int(count)
        if "c_hot_function" in frames:
            # native frames, true call order: main calls c_hot_function (nothing of Python's in between)
            i = frames.index("c_hot_function")
            assert "main" in frames[:i], line
            assert frames[frames.index("main") + 1] == "c_hot_function", line
            native += int(count)
        if any(f.startswith("py_hot (") for f in frames):
            # Python frames with file and line: <module> (line 17) -> py_driver (line 13) -> py_hot (lines 4-7)
            m = re.fullmatch(r"py_hot \(<embed_demo>:(\d+)\)", frames[-1])
            assert m and 4 <= int(m.group(1)) <= 7, line
            assert frames[-3:-1] == ["<module> (<embed_demo>:17)", "py_driver (<embed_demo>:13)"], line
            python += int(count)
    # the program spends about as long in c_hot_function as in py_hot
    assert native > 0.2 * total and python > 0.2 * total, (native, python, total)


def test_embed_native_mode_shows_c_frames_above_python(built, tmp_path):
    """embed_demo --native: the program's own C frames (main -> run_python) above the Python ones, then
    <module> -> py_driver -> py_hot, in call order (libunwind builds: no marker; frame pointers only: the
    Python part is still complete and the stack carries the marker)."""
    py, out, log = built
    exe = out / "embed_demo"
    if not exe.exists():
        pytest.skip(f"embed_demo not built for {py}: {log.strip()}")
    proc = subprocess.run([str(exe), str(tmp_path), "0.5", "--native"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = (tmp_path / "embed.collapsed").read_text().splitlines()
    hot = full = c_only = 0
    for line in lines:
        stack, count = line.rsplit(" ", 1)
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if "py_hot" in frames:
            hot += int(count)
            # Python frames in call order; before 3.11 each Python call goes through C (_PyEval_Vector...)
            # and those native frames sit between them, as they really do
            py_part = [f for f in frames[frames.index("<module>"):frames.index("py_hot") + 1]
                       if f in ("<module>", "py_driver", "py_hot")]
            assert py_part == ["<module>", "py_driver", "py_hot"], line
            if "run_python" in frames:
                assert frames.index("main") < frames.index("run_python") < frames.index("<module>"), line
                full += int(count)
            else:
                assert frames[0].startswith("[mixed stack:"), line
        if "c_hot_function" in frames:
            assert frames.index("main") + 1 == frames.index("c_hot_function"), line
            c_only += int(count)
    assert hot > 50 and c_only > 50, (hot, c_only, lines[:5])
    # build_examples.sh links libunwind when its header is there (and SPPROF_LIBUNWIND is not 0)
    libunwind = subprocess.run(["sh", os.path.join(ROOT, "tools", "have-libunwind.sh")]).returncode == 0
    if libunwind:
        assert full >= 0.9 * hot, (full, hot)  # DWARF unwinding gets through libpython


def test_embed_speedscope_valid(embed_out):
    doc = check_speedscope(embed_out / "embed.speedscope.json")
    assert len(doc["profiles"]) == 1  # one thread: the program's main thread
    frames = {(f["name"], f.get("file")) for f in doc["shared"]["frames"]}
    assert ("py_hot", "<embed_demo>") in frames
    assert any(name == "c_hot_function" for name, _ in frames)
    py_hot_lines = {f.get("line") for f in doc["shared"]["frames"] if f["name"] == "py_hot"}
    assert py_hot_lines and py_hot_lines <= {4, 5, 6, 7}, py_hot_lines


def test_extension_demo_attributes_crunch_to_its_python_caller(ext_out):
    doc = check_speedscope(ext_out / "ext.speedscope.json")
    weights = stack_weights(doc)
    total = sum(weights.values())
    by_leaf = collections.Counter()
    for stack, w in weights.items():
        assert not any(f[0].startswith("<freed code object") for f in stack), stack
        leaf = stack[-1]
        if leaf[0] in ("uses_crunch", "pure_python"):
            assert leaf[1] == EXT_DEMO and leaf[2] > 0, stack  # Python frames: demo.py, with a line
            assert [f[0] for f in stack[-2:-1]] == ["workload"], stack
        by_leaf[leaf[0]] += w
    # crunch() runs in C with no Python frame of its own: its time is its caller's, uses_crunch
    assert by_leaf["uses_crunch"] > 0.05 * total, by_leaf  # ~60% with python3, ~20% with the slower debug build
    assert by_leaf["pure_python"] > 0.05 * total, by_leaf


def test_extension_profiler_submodule(built):
    py, out, _ = built
    if not list(out.glob("myext*.so")):
        pytest.skip(f"myext not built for {py}")
    code = (
        "import myext.profiler as p, myext\n"
        "assert myext.profiler is p and p.__name__ == 'myext.profiler'\n"
        "assert issubclass(p.Error, RuntimeError) and p.Error.__module__ == 'myext.profiler'\n"
        "assert p.state() == 'stopped'\n"
        "assert isinstance(myext.crunch(1000), int)\n"
        "print('ok')\n"
    )
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(out)))
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_two_copies_of_spprof_in_one_process(built):
    """myext vendors its own copy of spprof; the package's _spprof is another. Both run at once: each copy's
    handler passes the other's timer signals on (per-copy cookie), so both get their samples."""
    py, out, _ = built
    if not list(out.glob("myext*.so")):
        pytest.skip(f"myext not built for {py}")
    code = (
        "import sys, time\n"
        f"sys.path.insert(0, {os.path.join(ROOT, 'build', 'spprof')!r})\n"
        "import _spprof, myext.profiler as p\n"
        "p.start(1000000, 0); _spprof.start(1000000, 0)\n"
        "end = time.process_time() + 1.0\n"
        "while time.process_time() < end: sum(range(1000))\n"
        "_spprof.stop(); p.stop()\n"
        "print(p.stats()['samples_in_profile'], _spprof.stats()['samples_in_profile'])\n"
    )
    if not list((pathlib.Path(ROOT) / "build" / "spprof").glob("_spprof*.so")):
        pytest.skip("build/spprof not built")
    proc = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(out)))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    mine, theirs = map(int, proc.stdout.split())
    assert mine >= 20 and theirs >= 20, (mine, theirs)
