"""tools/spprof record, end to end: the program runs as it would without the tool (exit status, stdin,
stdout, stderr, sys.argv, environment of its children) and its profile is written however it ends."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import TOOL, validate_speedscope

PROG = r'''
import os, sys, time

def hot_loop(seconds):
    t_end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < t_end:
        for i in range(1000): x = (x * 31 + i) & 0xFFFF
    return x

def main():
    what = sys.argv[1]
    if what == "echo":
        data = sys.stdin.read()
        sys.stdout.write(data.upper())
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "bootstrap_in_path":
                          any("spprof_bootstrap" in p for p in sys.path),
                          "pythonpath": os.environ.get("PYTHONPATH"),
                          "spprof_env": sorted(k for k in os.environ if k.startswith("SPPROF_RECORD"))}))
        sys.stderr.write("to-stderr\n")
        hot_loop(0.2)
        import subprocess
        child = subprocess.run([sys.executable, "-c", "import sys; print('child', 'spprof' in sys.modules)"],
                               capture_output=True, text=True)
        print(child.stdout.strip())
        return 0
    hot_loop(0.2)
    if what == "exit3":
        sys.exit(3)
    if what == "raise":
        1 / 0
    if what == "forever":
        print("ready", flush=True)
        while True:
            hot_loop(0.05)
    return 0

import json
if __name__ == "__main__":
    sys.exit(main())
'''


@pytest.fixture
def prog(tmp_path):
    p = tmp_path / "prog.py"
    p.write_text(PROG)
    return p


def record(args, cmd, timeout=60, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run([TOOL, "record", *args, "--", *cmd], timeout=timeout, **kw)


def load_speedscope(path):
    with open(path) as f:
        doc = json.load(f)
    validate_speedscope(doc)
    return doc


def frame_names(doc):
    return {f["name"] for f in doc["shared"]["frames"]}


def test_record_preserves_stdio_argv_env(py, prog, tmp_path):
    custom = tmp_path / "custom-site"
    custom.mkdir()
    (custom / "sitecustomize.py").write_text("import sys\nsys.stderr.write('custom sitecustomize ran\\n')\n")
    out = tmp_path / "sub" / "profile.json"  # parent directory created by the tool
    env = dict(os.environ, PYTHONPATH=str(custom))
    args = ["echo", "a b", "--flag", "ü", "", "-o"]
    proc = record(["-o", str(out)], [py.path, str(prog), *args], input="hello\nworld\n", env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["HELLO", "WORLD"], proc.stdout
    info = json.loads(lines[2])
    assert info["argv"] == [str(prog), *args]
    assert info["path0"] == str(prog.parent) and not info["bootstrap_in_path"]
    assert info["pythonpath"] == str(custom) and info["spprof_env"] == []
    assert lines[3] == "child False"  # child processes are not profiled
    assert "to-stderr" in proc.stderr and "custom sitecustomize ran" in proc.stderr
    summary = [l for l in proc.stderr.splitlines() if l.startswith("spprof record:")]
    assert len(summary) == 1 and str(out) in summary[0] and re.search(r"\d+ samples", summary[0]), proc.stderr
    doc = load_speedscope(out)
    assert "hot_loop" in frame_names(doc)
    assert any(p["name"].startswith("MainThread (tid ") for p in doc["profiles"])


@pytest.mark.parametrize("what,code", [("exit0", 0), ("exit3", 3), ("raise", 1)])
def test_record_exit_codes(py, prog, tmp_path, what, code):
    out = tmp_path / f"{what}.collapsed"
    proc = record(["-o", str(out), "-r", "500"], [py.path, str(prog), what])
    assert proc.returncode == code, proc.stderr
    if what == "raise":
        assert "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr
    text = out.read_text()
    assert "hot_loop (" in text and text.endswith("\n")
    for line in text.splitlines():
        assert re.match(r"^[^;\n]+(;[^;\n]+)* [1-9][0-9]*$", line), line


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_record_signals(py, prog, tmp_path, sig):
    out = tmp_path / "sig.json"
    p = subprocess.Popen([TOOL, "record", "-o", str(out), "--", py.path, str(prog), "forever"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        p.send_signal(sig)
        _, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if sig == signal.SIGTERM:
        assert p.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), (p.returncode, err)
        assert "SIGTERM" in err
    else:  # KeyboardInterrupt, then Python exits by SIGINT
        assert p.returncode in (-signal.SIGINT, 128 + signal.SIGINT), (p.returncode, err)
        assert "KeyboardInterrupt" in err
    doc = load_speedscope(out)
    assert "hot_loop" in frame_names(doc)
    assert str(out) in err


def test_record_unwritable_output_goes_to_temp_file(py, prog, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "x.json"  # parent is a regular file: cannot be created, even by root
    proc = record(["-o", str(out)], [py.path, str(prog), "exit0"])
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"-> (\S+\.json) \(could not write " + re.escape(str(out)), proc.stderr)
    assert m, proc.stderr
    try:
        assert "hot_loop" in frame_names(load_speedscope(m.group(1)))
    finally:
        os.unlink(m.group(1))


def test_record_formats_and_wall_mode(py, prog, tmp_path):
    a = tmp_path / "a.json"
    proc = record(["-o", str(a), "-f", "collapsed", "--mode", "wall", "-r", "200", "--threads", "-q"],
                  [py.path, str(prog), "exit0"])
    assert proc.returncode == 0 and "spprof record:" not in proc.stderr, proc.stderr
    lines = a.read_text().splitlines()
    assert lines and all(l.startswith("MainThread (tid ") for l in lines), lines[:3]
    b = tmp_path / "b.txt"
    proc = record(["-o", str(b), "-f", "speedscope"], [py.path, str(prog), "exit0"])
    assert proc.returncode == 0, proc.stderr
    load_speedscope(b)
    # one run, both formats (by name)
    c, d = tmp_path / "c.json", tmp_path / "c.collapsed"
    proc = record(["-o", str(c), "-o", str(d)], [py.path, str(prog), "exit0"])
    assert proc.returncode == 0, proc.stderr
    assert "hot_loop" in frame_names(load_speedscope(c)) and "hot_loop (" in d.read_text()
    assert f"-> {c}, {d}" in proc.stderr


def test_record_help_documents_every_option():
    proc = subprocess.run([TOOL, "record", "-h"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for opt in ("-o OUT", "--output", "-f", "--format", "speedscope", "collapsed", "-r HZ", "--rate",
                "--mode", "cpu", "wall", "--threads", "--memory-limit", "-q", "--quiet", "--"):
        assert opt in proc.stdout, opt
    top = subprocess.run([TOOL, "-h"], capture_output=True, text=True, timeout=30)
    assert top.returncode == 0 and "record" in top.stdout


@pytest.mark.parametrize("args,needle", [
    ([], "the following arguments are required"),
    (["record", "--", sys.executable, "x.py"], "-o"),
    (["record", "-o", "x.json"], "no command"),
    (["record", "-o", "x.json", "-r", "abc", "--", sys.executable, "x.py"], "not a number"),
    (["record", "-o", "x.json", "-r", "0", "--", sys.executable, "x.py"], "out of range"),
    (["record", "-o", "x.json", "-r", "30000", "--", sys.executable, "x.py"], "out of range"),
    (["record", "-o", "x.json", "--mode", "fast", "--", sys.executable, "x.py"], "invalid choice"),
    (["record", "-o", "x.json", "-f", "svg", "--", sys.executable, "x.py"], "invalid choice"),
    (["record", "-o", "x.json", "--bogus", "--", sys.executable, "x.py"], "unrecognized arguments"),
    (["record", "-o", "x.json", "--", "python3", "-I", "x.py"], "-I"),
    (["record", "-o", "x.json", "--", "python3", "-sE", "x.py"], "-E"),
    (["frobnicate"], "invalid choice"),
])
def test_record_bad_options_exit_2(args, needle, tmp_path):
    proc = subprocess.run([TOOL, *args], capture_output=True, text=True, timeout=30, cwd=str(tmp_path))
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert needle in proc.stderr, proc.stderr
    assert not os.path.exists(tmp_path / "x.json")


def test_record_command_not_found(tmp_path):
    proc = subprocess.run([TOOL, "record", "-o", str(tmp_path / "x.json"), "--", "no-such-command-spprof"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 127 and "command not found" in proc.stderr
