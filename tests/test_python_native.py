"""native=True: mixed native + Python stacks in call order.

A test extension (tests/ext_chain.c, built here with frame pointers) runs Python -> ext_chain.outer ->
ext_outer -> ext_inner -> ext_spin (C work) and then calls back into Python (py_leaf). Every sample must show
these in that order. Whether the interpreter's own C code can be walked depends on how it was built: with frame
pointers the whole chain appears (py_caller, ext_outer, ext_inner, py_leaf, with CPython's call machinery in
between), and likewise when the extension was built with libunwind (DWARF unwinding, the default where
libunwind-dev is installed); with frame pointers only and a libpython without them (pyenv's and Debian's
builds), the walk stops inside libpython, the Python frames are still all there, in order, and the stack
ends with a "[mixed stack: ...]" marker instead of a guess."""
import os
import subprocess
import sysconfig

import pytest

from conftest import ROOT


def build_chain(py, out_dir):
    inc, suffix, cflags = (subprocess.run([py.path, "-c", "import sysconfig as s; print(s.get_paths()['include']); "
                                           "print(s.get_config_var('EXT_SUFFIX')); print(s.get_config_var('CFLAGS') or '')"],
                                          capture_output=True, text=True, check=True).stdout.split("\n")[:3])
    target = os.path.join(str(out_dir), "ext_chain" + suffix)
    subprocess.run([os.environ.get("CC", "cc"), "-std=c99", "-O1", "-g", "-fPIC", "-shared", "-fno-omit-frame-pointer",
                    "-Wall", "-Wextra", "-Werror", "-I" + inc, os.path.join(ROOT, "tests", "ext_chain.c"), "-o", target],
                   check=True, capture_output=True, text=True)
    return "-fno-omit-frame-pointer" in cflags


CHAIN = '''
import ext_chain
def py_leaf():
    return burn(0.002)
def py_caller():
    return ext_chain.outer(py_leaf, 300000)
spprof.start(interval_ms=1, native=True)
t_end = time.thread_time() + 1.0
while time.thread_time() < t_end:
    py_caller()
p = spprof.stop()
emit({"unwinder": spprof._spprof.NATIVE_UNWINDER,
      "stacks": [[s.weight, [f[0] for f in s.frames]] for s in p.samples if s.thread_id == threading.get_native_id()]})
'''


def test_chain_in_call_order(run, py):
    fp_python = build_chain(py, run.tmp_path)
    r = run(CHAIN, env={"PYTHONPATH": str(run.tmp_path) + os.pathsep + os.path.join(ROOT, "build")}).ok()
    stacks, unwinder = r.result["stacks"], r.result["unwinder"]
    in_c = [names for w, names in stacks if names and names[-1] == "ext_spin"]
    in_cb = [names for w, names in stacks if "py_leaf" in names]
    assert len(in_c) >= 20 and len(in_cb) >= 20, (len(in_c), len(in_cb), stacks[:5])

    def order(names, *wanted):
        pos = [names.index(w) for w in wanted]
        return pos == sorted(pos)

    # C work: the extension's frames under the Python caller, in call order, on every interpreter
    for names in in_c:
        assert order(names, "py_caller", "ext_outer", "ext_inner", "ext_spin"), names
        assert names.index("<module>") < names.index("py_caller"), names
    # callback into Python
    for names in in_cb:
        assert order(names, "<module>", "py_caller", "py_leaf"), names
    marked = [n for n in in_cb if n[0].startswith("[mixed stack:")]  # root first: the marker is at the root
    full = [n for n in in_cb if "ext_inner" in n and n not in marked]
    if fp_python or unwinder == "libunwind":
        # the whole chain, interpreter frames replaced, nothing marked (frame pointers everywhere, or DWARF)
        assert len(full) >= 0.9 * len(in_cb), (len(full), len(in_cb), [n for n in in_cb if n not in full][:3])
        for names in full:
            assert order(names, "py_caller", "ext_outer", "ext_inner", "py_leaf"), names
            assert "_PyEval_EvalFrameDefault" not in names, names
        # a sample that lands inside the dynamic loader (ld.so, other than __tls_get_addr) is walked with
        # frame pointers only (loader-lock safety): rare, and marked
        assert len(marked) <= 0.1 * len(in_cb), marked[:3]
    else:
        # the walk could not get through libpython: the Python frames are kept, and the stack says so
        assert len(marked) + len(full) == len(in_cb), [n for n in in_cb if n not in marked and n not in full][:3]
        for names in full:
            assert order(names, "py_caller", "ext_outer", "ext_inner", "py_leaf"), names


def test_native_false_has_no_native_frames(run, py):
    build_chain(py, run.tmp_path)
    r = run(CHAIN.replace("native=True", "native=False"),
            env={"PYTHONPATH": str(run.tmp_path) + os.pathsep + os.path.join(ROOT, "build")}).ok()
    names = {n for w, ns in r.result["stacks"] for n in ns}
    assert "py_caller" in names and not ({"ext_outer", "ext_inner", "ext_spin"} & names), sorted(names)


def test_record_native_flag(run, py, tmp_path):
    build_chain(py, tmp_path)
    script = tmp_path / "chain.py"
    script.write_text("import time, threading\ndef burn(s):\n    t = time.thread_time() + s\n    while time.thread_time() < t: pass\n"
                      + CHAIN.split("spprof.start")[0] + "t_end = time.thread_time() + 0.6\nwhile time.thread_time() < t_end:\n    py_caller()\n")
    out = tmp_path / "native.collapsed"
    env = py.env({"PYTHONPATH": str(tmp_path)})
    proc = subprocess.run([py.path, os.path.join(ROOT, "tools", "spprof"), "record", "--native", "-r", "1000", "-o", str(out),
                           "--", py.path, str(script)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert ";ext_outer" in text and ";ext_inner" in text and "ext_spin" in text, text[:2000]


def test_library_frames_under_python_caller(run):
    """zlib from Python with native=True: samples inside libz show the library's own frames below the Python
    function that called it (root first: ..., compress_task, ..., a libz frame)."""
    r = run('''
    import zlib
    data = bytes(range(256)) * 4096
    def compress_task():
        return len(zlib.compress(data, 9))
    spprof.start(interval_ms=1, native=True)
    t_end = time.thread_time() + 0.8
    while time.thread_time() < t_end:
        compress_task()
    p = spprof.stop()
    emit({"unwinder": spprof._spprof.NATIVE_UNWINDER,
          "stacks": [[s.weight, [[f[0], f[1]] for f in s.frames]] for s in p.samples
                     if s.thread_id == threading.get_native_id()]})
    ''').ok()
    total = in_z = under = 0
    for w, frames in r.result["stacks"]:
        total += w
        files = [f[1] for f in frames]
        z = [i for i, f in enumerate(files) if "libz" in f or "zlib" in os.path.basename(f)]
        if z:
            in_z += w
            names = [f[0] for f in frames]
            if "compress_task" in names and names.index("compress_task") < z[0]:
                under += w
    assert in_z > 0.5 * total, (in_z, total)  # compression is where the time goes
    # with libunwind through libz and libpython; with frame pointers only the walk stops in libz, and the
    # Python frames are appended on the root side (with the marker): the order holds either way
    assert under >= 0.9 * in_z, (under, in_z, r.result["unwinder"])
