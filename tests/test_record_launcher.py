"""tools/spprof record's launcher costs every profiled run its own start-up: it must not start a second
interpreter to ask for the extension suffix when the program runs under the interpreter that runs the tool
(that probe was ~8 ms of every run, a fifth of the launcher's cost)."""
import importlib.machinery
import importlib.util
import os
import subprocess
import sys

from conftest import TOOL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool():
    """The CLI module (spprof/_cli.py) as tools/spprof sets it up."""
    loader = importlib.machinery.SourceFileLoader("spprof_tool", TOOL)
    spec = importlib.util.spec_from_loader("spprof_tool", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod.load_cli()


def test_same_interpreter_needs_no_probe(monkeypatch):
    tool = load_tool()
    pkgdir = tool.find_package_dir()
    assert pkgdir, "build the package first (make pypkg)"
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not os.path.isfile(os.path.join(pkgdir, "spprof", "_spprof" + suffix)):
        import pytest
        pytest.skip(f"no _spprof build for {sys.executable}")

    def no_probe(*a, **k):
        raise AssertionError(f"a second interpreter was started: {a[0] if a else k}")
    monkeypatch.setattr(subprocess, "run", no_probe)
    assert tool.interpreter_mismatch(sys.executable, pkgdir) is None


def test_other_interpreter_without_build_is_still_refused(tmp_path):
    """The probe still runs for another interpreter: a package dir without its build is reported."""
    tool = load_tool()
    (tmp_path / "spprof").mkdir()
    msg = tool.interpreter_mismatch(sys.executable, str(tmp_path))
    assert msg and "has no build for it" in msg, msg


def test_record_bootstrap_imports_only_what_start_needs():
    """What `import spprof._record` pulls in is paid by every recorded program before its first line: the
    fallback's tempfile (and with it random, shutil) is imported when used, not at start-up."""
    code = ("import sys; sys.path.insert(0, %r); import spprof._record; "
            "print(sorted(m for m in ('tempfile', 'random', 'shutil') if m in sys.modules))"
            % os.path.join(ROOT, "build"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout
