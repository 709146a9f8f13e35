"""tools/spprof record, end to end: the program runs as it would without the tool (exit status, stdin,
stdout, stderr, sys.argv, environment of its children) and its profile is written however it ends."""
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import TOOL, validate_speedscope

# CPU-bound for `seconds` of this thread's CPU time (shared by the test programs below)
HOT_LOOP = r'''
import os, sys, time

def hot_loop(seconds):
    t_end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < t_end:
        for i in range(1000): x = (x * 31 + i) & 0xFFFF
    return x
'''

PROG = HOT_LOOP + r'''

def main():
    what = sys.argv[1]
    if what == "echo":
        data = sys.stdin.read()
        sys.stdout.write(data.upper())
        print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "bootstrap_in_path":
                          any(os.path.join("spprof", "_bootstrap") in p for p in sys.path),
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
    (["record", "--serve", "70000", "--", sys.executable, "x.py"], "out of range"),
    (["record", "--serve", "localhost:http", "--", sys.executable, "x.py"], "not HOST:PORT"),
    (["record", "-o", "x.json"], "no command"),
    (["record", "-o", "x.json", "-r", "abc", "--", sys.executable, "x.py"], "not a number"),
    (["record", "-o", "x.json", "-r", "0", "--", sys.executable, "x.py"], "out of range"),
    (["record", "-o", "x.json", "-r", "30000", "--", sys.executable, "x.py"], "out of range"),
    (["record", "-o", "x.json", "--mode", "fast", "--", sys.executable, "x.py"], "invalid choice"),
    (["record", "-o", "x.json", "-f", "png", "--", sys.executable, "x.py"], "invalid choice"),
    (["record", "-o", "x.json", "--bogus", "--", sys.executable, "x.py"], "unrecognized arguments"),
    (["record", "-o", "x.json", "--", "python3", "-I", "x.py"], "-I"),
    (["record", "-o", "x.json", "--", "python3", "-sE", "x.py"], "-E"),
    (["record", "-o", "x.json", "--memory-rate-kb", "64", "--", sys.executable, "x.py"], "only with --memory"),
    (["record", "-o", "x.json", "--memory", "-r", "500", "--", sys.executable, "x.py"], "-r/--rate does not apply"),
    (["record", "-o", "x.json", "--memory", "--native", "--", sys.executable, "x.py"], "--native does not apply"),
    (["record", "-o", "x.json", "--memory", "--mode", "wall", "--", sys.executable, "x.py"], "--mode does not"),
    (["record", "-o", "x.json", "--memory", "--threads", "--", sys.executable, "x.py"], "--threads does not"),
    (["record", "-o", "x.json", "--memory", "--source", "posix", "--", sys.executable, "x.py"], "--source does"),
    (["record", "-o", "x.json", "--memory", "--memory-limit", "50", "--", sys.executable, "x.py"],
     "--memory-limit does not"),
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


# ---- outputs: one policy (see spprof._write_output), and a run that profiled nothing leaves them alone ----

def test_record_output_symlink_fifo_device_stdout(py, prog, tmp_path):
    target = tmp_path / "real" / "target.json"
    target.parent.mkdir()
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o020666, os.makedev(1, 3))  # a copy of /dev/null's node, never the real one
    except PermissionError:
        dev = None
    got = []
    import threading
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    args = ["-o", str(link), "-o", str(fifo), "-o", "-", "-f", "collapsed"] + (["-o", str(dev)] if dev else [])
    proc = record(args, [py.path, str(prog), "exit0"])
    reader.join(30)
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert "hot_loop (" in target.read_text()
    assert len(got) == 1 and "hot_loop (" in got[0], got
    assert fifo.is_fifo()
    assert "hot_loop (" in proc.stdout  # -o -
    assert "standard output" in proc.stderr or "/dev/stdout" in proc.stderr
    if dev:
        st = os.stat(dev)
        assert (st.st_mode & 0o170000) == 0o020000 and st.st_rdev == os.makedev(1, 3), "the device was replaced"


def test_record_nothing_profiled_keeps_existing_output(py, tmp_path):
    out = tmp_path / "a.json"
    good = b'{"a good profile": 1}\n'
    out.write_bytes(good)
    proc = record(["-o", str(out)], [py.path, str(tmp_path / "nosuchfile.py")])
    assert proc.returncode == 2, proc.stderr
    assert out.read_bytes() == good
    assert "left as it was" in proc.stderr and str(out) in proc.stderr, proc.stderr


@pytest.mark.parametrize("cmd,code", [(["/bin/ls", "/no/such/dir"], 2), (["sh", "-c", "exit 5"], 5)],
                         ids=["ls", "sh"])
def test_record_not_python_says_so(cmd, code, tmp_path):
    out = tmp_path / "a.json"
    out.write_text("good\n")
    proc = record(["-o", str(out)], cmd)
    assert proc.returncode == code, proc.stderr
    assert "not a Python program" in proc.stderr and "no profile written" in proc.stderr, proc.stderr
    assert out.read_text() == "good\n"


def test_record_unwritable_output_fallback_is_private(py, prog, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = blocker / "x.collapsed"
    proc = record(["-o", str(out)], [py.path, str(prog), "exit0"])
    m = re.search(r"-> (\S+\.collapsed) \(could not write", proc.stderr)
    assert proc.returncode == 0 and m, proc.stderr
    try:
        assert oct(os.stat(m.group(1)).st_mode & 0o777) == "0o600"  # profiles hold paths, arguments, names
    finally:
        os.unlink(m.group(1))


def test_record_refuses_an_interpreter_without_a_build(tmp_path):
    import glob
    build = os.path.join(os.path.dirname(TOOL), os.pardir, "build", "spprof")
    have = {os.path.basename(p) for p in glob.glob(os.path.join(build, "_spprof*.so"))}
    for other in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1[0-9]*/bin/python3"))):
        v = subprocess.run([other, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                           capture_output=True, text=True).stdout.strip()
        if v and "_spprof" + v not in have:
            break
    else:
        pytest.skip("no interpreter without a build of spprof")
    marker = tmp_path / "ran"
    proc = record(["-o", str(tmp_path / "a.json")], [other, "-c", f"open({str(marker)!r}, 'w')"])
    assert proc.returncode == 2, proc.stderr
    assert f"make pypkg PYTHON={other}" in proc.stderr and "builds:" in proc.stderr, proc.stderr
    assert not marker.exists() and not (tmp_path / "a.json").exists()


# ---- exit paths: signals without a Python-level handler, os._exit, what no code can see ----

SIGNAL_PROG = HOT_LOOP + r"""
import signal
what = sys.argv[1]
if what == "getsignal":
    print(repr([signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                                             signal.SIGQUIT)]))
    sys.exit(0)
hot_loop(0.3)
if what == "os_exit":
    sys.stdout.flush()
    os._exit(3)
if what == "fork_child_os_exit":
    pid = os.fork()
    if pid == 0:
        hot_loop(0.1)
        os._exit(0)
    os.waitpid(pid, 0)
    print("after child:", os.path.exists(sys.argv[2]), flush=True)
    sys.exit(0)
if what == "raw_fork_term":
    # fork() without the atfork handlers (the raw system call): the child still has spprof's exit-signal
    # handler, as a child signalled right after fork() has until its atfork handler runs
    import ctypes, signal
    pid = ctypes.CDLL(None, use_errno=True).syscall(57)  # SYS_fork, x86-64
    if pid == 0:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(2)
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    print("child:", os.WIFSIGNALED(status) and os.WTERMSIG(status), flush=True)
    hot_loop(0.1)
    sys.exit(0)
if what == "kill_last":  # the signal as the very last statement: the exit path may start before it is handled
    os.kill(os.getpid(), int(sys.argv[2]))
    sys.exit(0)
if what == "kill":
    os.kill(os.getpid(), int(sys.argv[2]))
    time.sleep(30)
    print("not killed")
"""


@pytest.fixture
def sigprog(tmp_path):
    p = tmp_path / "sigprog.py"
    p.write_text(SIGNAL_PROG)
    return p


def test_record_getsignal_unchanged(py, sigprog, tmp_path):
    plain = subprocess.run([py.path, str(sigprog), "getsignal"], capture_output=True, text=True, timeout=60)
    proc = record(["-o", str(tmp_path / "a.json")], [py.path, str(sigprog), "getsignal"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == plain.stdout and "Handlers.SIG_DFL" in plain.stdout, (proc.stdout, plain.stdout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGQUIT],
                         ids=lambda s: signal.Signals(s).name)
def test_record_exit_signal_writes_profile_and_dies_of_it(py, sigprog, tmp_path, sig):
    out = tmp_path / "sig.collapsed"
    plain = subprocess.run([py.path, str(sigprog), "kill", str(int(sig))], capture_output=True, timeout=60)
    proc = record(["-o", str(out)], [py.path, str(sigprog), "kill", str(int(sig))])
    assert plain.returncode == -sig
    assert proc.returncode == -sig, (proc.returncode, proc.stderr)
    assert "hot_loop (" in out.read_text()
    assert signal.Signals(sig).name in proc.stderr and "not killed" not in proc.stdout


def test_record_exit_signal_as_the_last_statement(py, sigprog, tmp_path):
    # the program dies of it without spprof; under record it did not (exit 0: the exit path ran first)
    for k in range(3):
        out = tmp_path / f"last{k}.collapsed"
        proc = record(["-o", str(out), "-q"], [py.path, str(sigprog), "kill_last", str(int(signal.SIGTERM))])
        assert proc.returncode == -signal.SIGTERM, (k, proc.returncode, proc.stderr)
        assert "hot_loop (" in out.read_text()


def test_record_os_exit_writes_profile(py, sigprog, tmp_path):
    out = tmp_path / "e.collapsed"
    proc = record(["-o", str(out)], [py.path, str(sigprog), "os_exit"])
    assert proc.returncode == 3, proc.stderr
    assert "hot_loop (" in out.read_text() and "os._exit" in proc.stderr


def test_record_fork_child_os_exit_does_not_write(py, sigprog, tmp_path):
    out = tmp_path / "f.collapsed"
    proc = record(["-o", str(out), "-q"], [py.path, str(sigprog), "fork_child_os_exit", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert "after child: False" in proc.stdout  # the child's os._exit wrote nothing
    assert "hot_loop (" in out.read_text()


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the test forks with the raw x86-64 system call")
def test_record_fork_child_signalled_before_its_atfork_handler(py, sigprog, tmp_path):
    # the child's SIGTERM is the child's: it dies of it, the parent goes on (it used to write its profile and
    # die of the child's signal: regrtest's fork pool tests under load)
    out = tmp_path / "t.collapsed"
    proc = record(["-o", str(out), "-q"], [py.path, str(sigprog), "raw_fork_term"])
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert f"child: {int(signal.SIGTERM)}" in proc.stdout, proc.stdout
    assert "hot_loop (" in out.read_text()


def test_record_sigkill_is_reported(py, sigprog, tmp_path):
    out = tmp_path / "k.json"
    proc = record(["-o", str(out)], [py.path, str(sigprog), "kill", str(int(signal.SIGKILL))])
    assert proc.returncode == -signal.SIGKILL
    assert "no profile written" in proc.stderr and "SIGKILL" in proc.stderr, proc.stderr
    assert not out.exists()


POOL_PROG = r"""
import multiprocessing as mp, sys
def f(x):
    return x * x
if __name__ == "__main__":
    ctx = mp.get_context("fork")
    for i in range(30):
        pool = ctx.Pool(2)
        assert pool.map(f, range(8)) == [x * x for x in range(8)]
        pool.terminate()
        pool.join()
    print("pools done", flush=True)
"""


def test_record_fork_pool_terminate(py, tmp_path):
    # fork workers must not inherit a handler: Pool.terminate() SIGTERMs them and waits for them to die
    p = tmp_path / "pool.py"
    p.write_text(POOL_PROG)
    out = tmp_path / "pool.json"
    proc = record(["-o", str(out)], [py.path, str(p)], timeout=120)
    assert proc.returncode == 0 and "pools done" in proc.stdout, proc.stderr
    load_speedscope(out)


def test_version_is_the_header_version():
    """`spprof --version` (here tools/spprof: the source tree's header; installed: tests/install_smoke.py)."""
    with open(os.path.join(os.path.dirname(TOOL), os.pardir, "spprof.h")) as f:
        want = re.search(r'^#define SPPROF_VERSION_STRING "([^"]+)"', f.read(), re.M).group(1)
    proc = subprocess.run([TOOL, "--version"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == f"spprof {want}\n", (proc.stdout, proc.stderr)
