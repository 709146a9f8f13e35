"""install_smoke.py PYTHON... - `pip install .` into a fresh venv per interpreter, then checks the installed
copy.

For each interpreter: build/install-smoke/NAME/venv is made anew (`PYTHON -m venv`), the source tree is
installed into it with pip (the pyproject.toml build, from scratch: setuptools from PyPI or pip's cache), and
every check runs from a temporary directory outside the source tree with no PYTHONPATH, so only the installed package can
be found:
  api        import spprof from the venv; version = SPPROF_VERSION_STRING of spprof.h (also the metadata's);
             start/stop profile a known function; get_include() holds this tree's spprof.h, spprof_python.h;
             py.typed and the stubs are installed; _spprof.pyi declares every public name of _spprof, and
             __init__.pyi every name of spprof.__all__
  cli        the `spprof` command and `python -m spprof`: --version, record (Speedscope and collapsed), the
             program's exit status passed through, an interpreter without a build refused
  memprof    spprof.memprof in-process, and `spprof record --memory` (the installed libspprof_alloc.so)
  extension  examples/extension (myext.c + setup.py) built with pip against spprof.get_include(), run
Prints one line per check and a summary; exits 1 if any check failed. An interpreter that is missing or
cannot make a venv is reported as skipped (exit 0 unless nothing at all ran).
"""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "build", "install-smoke")

# The workloads the profiles must name (smoke_hot: CPU, smoke_alloc: 2000 x 16 KiB kept alive).
HOT = r"""
def smoke_hot(seconds):
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        for i in range(2000):
            x = (x * 31 + i) & 0xFFFF
    return x
"""

ALLOC = r"""
keep = []

def smoke_alloc():
    for _ in range(2000):
        keep.append(bytearray(16384))
"""

PROG = "import sys, time\n" + HOT + r"""
smoke_hot(0.3)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""

MEMPROG = "import sys\n" + ALLOC + """
smoke_alloc()
"""

API = r"""
import importlib.metadata, json, os, sys, time
import spprof, spprof._spprof as C
""" + HOT + r"""
spprof.start(interval_ms=1)
smoke_hot(0.3)
p = spprof.stop()
pkg = os.path.dirname(spprof.__file__)
print(json.dumps({
    "file": spprof.__file__, "version": spprof.__version__, "c_version": C.__version__,
    "dist_version": importlib.metadata.version("spprof"),
    "functions": sorted({f.function for s in p.samples for f in s.frames}),
    "include": spprof.get_include(),
    "c_names": sorted(n for n in dir(C) if not (n.startswith("__") and n.endswith("__"))),
    "typed": os.path.isfile(os.path.join(pkg, "py.typed")),
    "stub": os.path.join(pkg, "_spprof.pyi"),
    "pkg_stub": os.path.join(pkg, "__init__.pyi"),
    "public": sorted(set(spprof.__all__) | {"get_include", "__version__"}),
}))
"""

MEMAPI = r"""
import json
import spprof.memprof as memprof
""" + ALLOC + r"""
memprof.start(sampling_rate_kb=64)
smoke_alloc()
snap = memprof.get_snapshot()
memprof.stop()
top = [[str(f), b] for f, b, c in snap.top_allocators(5)]
memprof.shutdown()
print(json.dumps({"total": snap.total_bytes, "top": top}))
"""


def header_version():
    with open(os.path.join(ROOT, "spprof.h"), encoding="utf-8") as f:
        return re.search(r'^#define SPPROF_VERSION_STRING "([^"]+)"', f.read(), re.M).group(1)


def clean_env(venv):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
           and not k.startswith("SPPROF_")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


class Checker:
    def __init__(self, name):
        self.name, self.failed, self.passed = name, [], []

    def check(self, what, ok, detail=""):
        (self.passed if ok else self.failed).append(what)
        print(f"  {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f": {detail}"), flush=True)
        return ok


def run(cmd, cwd, env, timeout=300, input=None):
    """subprocess.run; a command that cannot start or does not end is a failed result (exit 127 / 124)."""
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              input=input)
    except OSError as e:
        return subprocess.CompletedProcess(cmd, 127, "", f"cannot run {cmd[0]}: {e}")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return subprocess.CompletedProcess(cmd, 124, out, err + f"\n(no exit within {timeout} s)")


def describe(proc):
    return (f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-2000:]}\n"
            f"--- stderr ---\n{proc.stderr[-3000:]}")


def last_json(proc):
    """The JSON object a helper program printed last."""
    return json.loads(proc.stdout.strip().splitlines()[-1])


def speedscope_names(path):
    return {fr["name"] for fr in json.load(open(path))["shared"]["frames"]}


def file_has(path, needle):
    return os.path.isfile(path) and needle in open(path).read()


def write(path, text, mode=None):
    with open(path, "w") as f:
        f.write(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


def check_stub(c, label, stub, names, what):
    """The stub file is installed and declares every one of names."""
    if c.check(f"api: {label} installed", os.path.isfile(stub), stub):
        missing = sorted(set(names) - stub_names(stub))
        c.check(f"api: {what}", not missing, missing)


def stub_names(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def smoke(py, name):
    path = shutil.which(py) if os.sep not in py else py
    if not path:
        print(f"install-smoke {name}: skipped (interpreter {py} not found)")
        return None
    base = os.path.join(OUT, name)
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    venv = os.path.join(base, "venv")
    vpy = os.path.join(venv, "bin", "python")
    t0 = time.monotonic()
    proc = run([path, "-m", "venv", venv], ROOT, dict(os.environ))
    if proc.returncode != 0:
        print(f"install-smoke {name}: skipped ({py} -m venv failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    env = clean_env(venv)
    c = Checker(name)
    print(f"install-smoke {name} ({path}): pip install {ROOT} into {venv}", flush=True)
    shutil.rmtree(os.path.join(ROOT, "build", "setuptools"), ignore_errors=True)  # no object of an older build
    proc = run([vpy, "-m", "pip", "install", "-q", ROOT], base, env, timeout=900)
    if not c.check("pip install .", proc.returncode == 0, describe(proc)):
        return c
    t_install = time.monotonic() - t0
    work = tempfile.mkdtemp(prefix="spprof-smoke-")
    try:
        _checks(c, venv, vpy, env, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"  ({t_install:.0f} s to install, {time.monotonic() - t0:.0f} s in all)")
    return c


def _checks(c, venv, vpy, env, work):
    version = header_version()
    prog = write(os.path.join(work, "prog.py"), PROG)

    # api
    proc = run([vpy, "-c", API], work, env)
    if c.check("api: import, start/stop", proc.returncode == 0, describe(proc)):
        info = last_json(proc)
        c.check("api: the venv's copy is imported", os.path.realpath(info["file"]).startswith(
            os.path.realpath(venv) + os.sep), info["file"])
        c.check("api: version = SPPROF_VERSION_STRING", info["version"] == info["c_version"] == version
                == info["dist_version"], f"{info['version']}, {info['c_version']}, {info['dist_version']} "
                f"vs {version}")
        c.check("api: profile has the hot function", "smoke_hot" in info["functions"], info["functions"])
        inc = info["include"]
        same = all(os.path.isfile(os.path.join(inc, h)) and
                   open(os.path.join(inc, h), "rb").read() == open(os.path.join(ROOT, h), "rb").read()
                   for h in ("spprof.h", "spprof_python.h"))
        c.check("api: get_include() holds this tree's spprof.h, spprof_python.h",
                same and os.path.realpath(inc).startswith(os.path.realpath(venv) + os.sep), inc)
        c.check("api: py.typed installed", info["typed"])
        check_stub(c, "_spprof.pyi", info["stub"], info["c_names"],
                   "the stub declares every public name of _spprof")
        # __init__.pyi (kept for the decorator's overloads) must not fall behind __init__.py
        check_stub(c, "__init__.pyi", info["pkg_stub"], info["public"],
                   "__init__.pyi declares spprof.__all__, get_include, __version__")

    # cli
    spprof = os.path.join(venv, "bin", "spprof")
    for label, cmd in (("spprof", [spprof]), ("python -m spprof", [vpy, "-m", "spprof"])):
        proc = run(cmd + ["--version"], work, env)
        c.check(f"cli: {label} --version", proc.returncode == 0 and proc.stdout.strip() == f"spprof {version}",
                describe(proc))
    out = os.path.join(work, "out", "p.json")
    proc = run([spprof, "record", "-o", out, "--", vpy, prog, "3"], work, env)
    ok = proc.returncode == 3 and os.path.isfile(out)
    if c.check("cli: spprof record (exit status 3 kept, Speedscope written)", ok, describe(proc)):
        names = speedscope_names(out)
        c.check("cli: the Speedscope profile has the hot function", "smoke_hot" in names, sorted(names)[:20])
    coll = os.path.join(work, "p.collapsed")
    proc = run([vpy, "-m", "spprof", "record", "-r", "500", "-o", coll, "--", "python", prog], work, env)
    ok = proc.returncode == 0 and file_has(coll, "smoke_hot")
    c.check("cli: python -m spprof record (collapsed, `python` from PATH)", ok, describe(proc))

    # an interpreter the installed copy has no build for is refused, with how to get one (a stand-in: a
    # script named like a python that answers the launcher's question as a 3.99 would, and else leaves a mark)
    mark = os.path.join(work, "fake-ran")
    fake = write(os.path.join(work, "python3.99"),
                 f'#!/bin/sh\nif [ "$1" = -S ]; then echo .cpython-399-x86_64-linux-gnu.so; echo 3.99.0; '
                 f'exit 0; fi\ntouch {mark}\n', 0o755)
    proc = run([spprof, "record", "-o", os.path.join(work, "never.json"), "--", fake, prog], work, env)
    ok = proc.returncode == 2 and "pip install" in proc.stderr and "has no build" in proc.stderr
    c.check("cli: an interpreter without a build is refused (pip install hint)",
            ok and not os.path.exists(mark), describe(proc))

    # memprof
    proc = run([vpy, "-c", MEMAPI], work, env)
    ok = proc.returncode == 0
    if c.check("memprof: spprof.memprof in-process", ok, describe(proc)):
        info = last_json(proc)
        top = info["top"][0][0] if info["top"] else ""
        # 2000 x 16 KiB live = 32 MiB; a sampled estimate, so a wide margin
        c.check("memprof: live bytes estimate and top allocator", 16e6 < info["total"] < 64e6 and
                top.startswith("smoke_alloc"), info)
    memprog = write(os.path.join(work, "mem.py"), MEMPROG)
    mout = os.path.join(work, "mem.collapsed")
    proc = run([spprof, "record", "--memory", "--memory-rate-kb", "64", "-o", mout, "--", vpy, memprog],
               work, env)
    ok = proc.returncode == 0 and file_has(mout, "smoke_alloc")
    c.check("memprof: spprof record --memory (installed libspprof_alloc.so)", ok, describe(proc))

    # extension built against spprof.get_include()
    ext = os.path.join(work, "ext")
    os.makedirs(ext)
    for f in ("myext.c", "setup.py", "demo.py"):
        shutil.copy(os.path.join(ROOT, "examples", "extension", f), ext)
    # setuptools with bdist_wheel (70.1+): older venvs have 65 without it, 3.12+ venvs have none
    if run([vpy, "-c", "import setuptools.command.bdist_wheel"], work, env).returncode != 0:
        proc = run([vpy, "-m", "pip", "install", "-q", "-U", "setuptools>=70.1"], work, env, timeout=600)
        if not c.check("extension: setuptools for the venv", proc.returncode == 0, describe(proc)):
            return
    proc = run([vpy, "-m", "pip", "install", "-q", "--no-build-isolation", ext], work, env, timeout=600)
    if c.check("extension: pip install examples/extension (include_dirs=[spprof.get_include()])",
               proc.returncode == 0, describe(proc)):
        eout = os.path.join(work, "ext.json")
        proc = run([vpy, os.path.join(ext, "demo.py"), eout, "0.5"], work, env)
        ok = proc.returncode == 0 and os.path.isfile(eout)
        if c.check("extension: demo.py profiles itself with myext.profiler", ok, describe(proc)):
            names = speedscope_names(eout)
            c.check("extension: its profile has uses_crunch", "uses_crunch" in names, sorted(names)[:20])


def interpreter_id(py):
    if os.sep not in py:
        return py
    parts = os.path.normpath(py).split(os.sep)
    return parts[-3] if len(parts) >= 3 and parts[-2] == "bin" else os.path.basename(py)


def main(argv):
    pythons = []
    for p in argv or ["python3"]:
        if p not in pythons:
            pythons.append(p)
    results = [(p, smoke(p, interpreter_id(p))) for p in pythons]
    ran = [(p, r) for p, r in results if r is not None]
    print("install-smoke: " + "; ".join(
        f"{p}: " + ("skipped" if r is None else f"{len(r.passed)} passed, {len(r.failed)} failed")
        for p, r in results))
    if not ran:
        print("install-smoke: no interpreter could be tested")
        return 1
    return 1 if any(r.failed for p, r in ran) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
