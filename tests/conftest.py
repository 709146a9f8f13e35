"""Shared fixtures of the Python tests (tests/test_python_*.py).

The package is imported from build/ (`make` builds build/spprof/: the extension for each interpreter, plus
the files of python/spprof/). Everything that profiles runs in a subprocess, under each interpreter:
every path in $SPPROF_PYTHONS (space-separated), and always `python3` and `python3.11-dbg`. A missing interpreter, or one whose extension was not built, is skipped with the reason.

Each subprocess has a timeout (the deadlock watchdog): a hang fails the test with the output so far."""
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
PKG = os.path.join(BUILD, "spprof")
TOOL = os.path.join(ROOT, "tools", "spprof")
# The published Speedscope schema (not shipped here): ../shared/reference/, or $SPPROF_SPEEDSCOPE_SCHEMA.
# Where it is absent the schema checks skip (named in the summary); under CI=true that is a failure.
SCHEMA = os.environ.get("SPPROF_SPEEDSCOPE_SCHEMA") or os.path.join(
    ROOT, "..", "shared", "reference", "speedscope-file-format-schema.json")
RESULT_TAG = "SPPROF-TEST-RESULT "

if BUILD not in sys.path:
    sys.path.insert(0, BUILD)


def interpreter_names():
    """Every interpreter in $SPPROF_PYTHONS, plus always python3 and python3.11-dbg (skipped if missing)."""
    names = []
    for n in os.environ.get("SPPROF_PYTHONS", "").split() + ["python3", "python3.11-dbg"]:
        if n not in names:
            names.append(n)
    return names


def interpreter_id(name):
    """A test id for an interpreter: its name, or for a path .../PREFIX/bin/python3 'PREFIX' (e.g. 3.13t)."""
    if os.sep not in name:
        return name
    parts = os.path.normpath(name).split(os.sep)
    return parts[-3] if len(parts) >= 3 and parts[-2] == "bin" else os.path.basename(name)


def pytest_generate_tests(metafunc):
    if "py" in metafunc.fixturenames:
        names = interpreter_names()
        metafunc.parametrize("py", names, indirect=True, ids=[interpreter_id(n) for n in names])


_suffix_cache = {}


class Interp:
    """An interpreter that can import spprof from build/."""

    def __init__(self, name, path, suffix):
        self.name, self.path, self.suffix = name, path, suffix
        self.debug = bool(re.search(r"\d+d-", suffix))  # e.g. .cpython-311d-x86_64-linux-gnu.so

    def __repr__(self):
        return f"Interp({self.name})"

    def env(self, extra=None):
        env = dict(os.environ)
        env["PYTHONPATH"] = BUILD + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.pop("PYTHONHOME", None)
        env["PYTHONFAULTHANDLER"] = "1"  # a crash prints every thread's Python stack
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(extra or {})
        return env


# For the summary: which interpreters ran (name -> path) and which were skipped (name -> reason), and how
# often a Speedscope schema check could not be made.
_interpreters_ran, _interpreters_skipped, _schema_missing = {}, {}, [0]


def _skip_interpreter(name, why):
    _interpreters_skipped.setdefault(name, why)
    pytest.skip(why)


@pytest.fixture
def py(request):
    interp = _py(request.param)
    _interpreters_ran[interp.name] = interp.path
    return interp


def _py(name):
    path = shutil.which(name) if os.sep not in name else (name if os.access(name, os.X_OK) else None)
    if path is None:
        _skip_interpreter(name, f"interpreter {name} not found")
    if name not in _suffix_cache:
        try:
            out = subprocess.run([path, "-c", "import sysconfig, sys; print(sysconfig.get_config_var('EXT_SUFFIX'));"
                                  "print(sys.implementation.name, *sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60)
            _suffix_cache[name] = out.stdout.split("\n")[0].strip() if out.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired):
            _suffix_cache[name] = None
    suffix = _suffix_cache[name]
    if not suffix:
        _skip_interpreter(name, f"interpreter {name} does not run")
    if not os.path.exists(os.path.join(PKG, "_spprof" + suffix)):
        _skip_interpreter(name, f"extension not built for {name} (no build/spprof/_spprof{suffix}; run make)")
    if not os.path.exists(os.path.join(PKG, "__init__.py")):
        _skip_interpreter(name, "build/spprof/__init__.py missing (run make)")
    return Interp(name, path, suffix)


PRELUDE = """\
import json, os, sys, threading, time
import spprof

def emit(obj):
    sys.stdout.write({tag!r} + json.dumps(obj) + "\\n")
    sys.stdout.flush()

def watchdog(seconds=5.0):
    # dumps every thread's stack and exits (code 1) unless re-armed or cancelled within `seconds`
    import faulthandler
    faulthandler.dump_traceback_later(seconds, exit=True)

def burn(seconds):
    t_end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < t_end:
        for i in range(2000): x = (x * 31 + i) & 0xFFFF
    return x

def dump(p):
    return {{"interval_ms": p.interval_ms, "mode": p.mode, "duration": p.duration, "stats": p.stats,
             "start_time": p.start_time,
             "threads": {{str(k): v for k, v in p.threads().items()}},
             "samples": [[s.thread_id, s.thread_name, s.timestamp, s.count, s.weight,
                          [list(f) for f in s.frames], s.end_timestamp] for s in p.samples]}}
""".format(tag=RESULT_TAG)


class Result:
    def __init__(self, proc, what):
        self.proc, self.what = proc, what
        self.returncode, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr
        self.results = [json.loads(line[len(RESULT_TAG):]) for line in proc.stdout.splitlines()
                        if line.startswith(RESULT_TAG)]

    def describe(self):
        return (f"{self.what}: exit {self.returncode}\n--- stdout (tail) ---\n{self.stdout[-3000:]}\n"
                f"--- stderr (tail) ---\n{self.stderr[-5000:]}")

    def ok(self):
        assert self.returncode == 0, self.describe()
        return self

    @property
    def result(self):
        assert self.results, "no result emitted\n" + self.describe()
        return self.results[-1]


@pytest.fixture
def run(py, tmp_path):
    """run(source, *args, timeout=30, env=None, input=None, name="prog.py") -> Result.

    source is dedented and prefixed with PRELUDE (spprof imported, emit(obj), dump(profile))."""
    counter = [0]

    def _run(source, *args, timeout=30, env=None, input=None, name=None, prelude=True):
        counter[0] += 1
        script = tmp_path / (name or f"prog{counter[0]}.py")
        script.write_text((PRELUDE if prelude else "") + textwrap.dedent(source))
        cmd = [py.path, str(script), *args]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=py.env(env),
                                  input=input, cwd=str(tmp_path))
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            pytest.fail(f"{py.name} {script.name}: no exit within {timeout} s (deadlock?)\n"
                        f"--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-5000:]}")
        return Result(proc, f"{py.name} {script.name}")

    _run.tmp_path = tmp_path
    _run.py = py
    return _run


def running_under_ci():
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def schema_or_none():
    """The Speedscope schema, or None where it is absent (counted for the summary; a failure under CI)."""
    if not os.path.exists(SCHEMA):
        _schema_missing[0] += 1
        if running_under_ci():
            pytest.fail(f"speedscope schema not found at {SCHEMA}: under CI (CI=true) the schema checks "
                        "must run (put the schema there or set SPPROF_SPEEDSCOPE_SCHEMA)")
        return None
    with open(SCHEMA) as f:
        return json.load(f)


def load_schema():
    schema = schema_or_none()
    if schema is None:
        pytest.skip(f"speedscope schema not found at {SCHEMA}")
    return schema


def pytest_terminal_summary(terminalreporter):
    """Says which interpreters the suites ran under, and whether the Speedscope schema checks ran."""
    tr = terminalreporter
    if not (_interpreters_ran or _interpreters_skipped or _schema_missing[0]):
        return
    tr.section("spprof: interpreters and schema")
    ran = ", ".join(f"{n} ({p})" for n, p in _interpreters_ran.items()) or "none"
    tr.write_line(f"interpreters that ran: {ran}")
    for n, why in _interpreters_skipped.items():
        if n not in _interpreters_ran:
            tr.write_line(f"interpreter skipped: {why}")
    if _schema_missing[0]:
        tr.write_line(f"speedscope schema NOT FOUND at {os.path.normpath(SCHEMA)}: {_schema_missing[0]} schema "
                      "checks skipped (set SPPROF_SPEEDSCOPE_SCHEMA, or run where ../shared/reference exists)")
    else:
        tr.write_line(f"speedscope schema: {os.path.normpath(SCHEMA)}")


def validate_speedscope(doc):
    import jsonschema

    jsonschema.validate(doc, load_schema())
    nframes = len(doc["shared"]["frames"])
    assert doc["profiles"], "no profile"
    for p in doc["profiles"]:
        assert len(p["samples"]) == len(p["weights"])
        assert all(0 <= i < nframes for s in p["samples"] for i in s)
        assert p["endValue"] - p["startValue"] == sum(p["weights"])


# ---- analysis of dump() results (plain data, no spprof import needed) ----

def samples(d, tid=None, name=None):
    out = d["samples"]
    if tid is not None:
        out = [s for s in out if s[0] == tid]
    if name is not None:
        out = [s for s in out if s[1] == name]
    return out


def weight(ss):
    return sum(s[4] for s in ss)


def leaf(s):
    return s[5][-1] if s[5] else None


def self_shares(ss, among=None):
    """{function: share of weight} by leaf function; among: restrict (and renormalize) to these."""
    acc = {}
    for s in ss:
        lf = leaf(s)
        fn = lf[0] if lf else "[empty]"
        if among is None or fn in among:
            acc[fn] = acc.get(fn, 0) + s[4]
    total = sum(acc.values())
    return {k: v / total for k, v in acc.items()} if total else {}


def functions_in(ss):
    return {f[0] for s in ss for f in s[5]}
