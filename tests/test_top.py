"""tools/spprof top: the live view under a real terminal (tmux: capture-pane / send-keys), its keys, the
program's output and exit status, and the plain tables when stdout is not a terminal. The workload's shares
are known: hot() and cold() spin for 30 ms and 10 ms of CPU time in turn (75% / 25% of the samples)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import TOOL

WORKLOAD = r'''
import os, sys, time

def hot():
    t = time.thread_time() + 0.030
    x = 0
    while time.thread_time() < t:
        for i in range(300): x = (x * 31 + i) & 0xFFFF

def cold():
    t = time.thread_time() + 0.010
    x = 0
    while time.thread_time() < t:
        for i in range(300): x = (x * 31 + i) & 0xFFFF

def main(stop_file, limit):
    t_end = time.time() + limit
    n, last = 0, 0.0
    while time.time() < t_end and not os.path.exists(stop_file):
        hot(); cold()
        if time.time() - last > 0.5:
            n += 1
            last = time.time()
            print(f"tick {n}", flush=True)
    print("workload done", flush=True)
    sys.exit(3)

main(sys.argv[1], float(sys.argv[2]))
'''

ROW = re.compile(r"^\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(?:(\S+)\s+)?(\S+) \((\S+)\)\s*$")


def rows(screen):
    """{function: (own%, total%, own% since start, total% since start, own n, total n, thread)} of a table."""
    out = {}
    order = []
    for line in screen.splitlines():
        m = ROW.match(line)
        if m:
            key = m.group(8) if not m.group(7) else (m.group(7), m.group(8))
            out.setdefault(key, tuple(float(m.group(i)) for i in range(1, 7)) + (m.group(7),))
            order.append(key)
    return out, order


class Tmux:
    def __init__(self, tmp_path):
        self.sock = str(tmp_path / "tmux.sock")
        self.name = "spproftop"

    def run(self, *args, check=True):
        return subprocess.run(["tmux", "-S", self.sock] + list(args), capture_output=True, text=True,
                              check=check, timeout=20)

    def start(self, command):
        self.run("new-session", "-d", "-s", self.name, "-x", "80", "-y", "24", command)

    def screen(self):
        return self.run("capture-pane", "-p", "-t", self.name).stdout

    def keys(self, *k):
        self.run("send-keys", "-t", self.name, *k)

    def wait_for(self, pred, timeout, what):
        t_end = time.monotonic() + timeout
        while True:
            s = self.screen()
            if pred(s):
                return s
            if time.monotonic() > t_end:
                raise AssertionError(f"{what} not seen within {timeout} s; screen:\n{s}")
            time.sleep(0.2)

    def kill(self):
        self.run("kill-server", check=False)


@pytest.fixture
def workload(tmp_path):
    p = tmp_path / "work.py"
    p.write_text(WORKLOAD)
    return p


def built():
    import glob
    return glob.glob(os.path.join(os.path.dirname(TOOL), "..", "build", "spprof", "_spprof.cpython-*.so"))


pytestmark = pytest.mark.skipif(not built() or os.name != "posix", reason="needs `make pypkg` and POSIX")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_live_view_keys_and_quit(tmp_path, workload):
    stop = tmp_path / "stop"
    tm = Tmux(tmp_path)
    t0 = time.monotonic()
    tm.start(f"{sys.executable} {TOOL} top -- python3 {workload} {stop} 60; echo EXIT=$?; sleep 60")
    try:
        # the hot function is on screen within 5 s of the start
        s = tm.wait_for(lambda s: "hot (work.py)" in s, 5.0, "hot (work.py)")
        assert time.monotonic() - t0 < 5.0
        assert "sort: own last second" in s and "view: all threads" in s
        # shares since start, once there are enough samples (<= 2.5 points of sampling error at 300)
        s = tm.wait_for(lambda s: rows(s)[0].get("hot", (0,) * 6)[5] + rows(s)[0].get("cold", (0,) * 6)[5] >= 300,
                        30.0, "300 samples of hot and cold")
        r, order = rows(s)
        assert 63 <= r["hot"][2] <= 87, s  # own since start: 75%
        assert 13 <= r["cold"][2] <= 37, s
        assert r["hot"][2] == r["hot"][3] and r["main"][2] <= 3 and r["main"][3] >= 95, s  # leaf / caller
        assert order[0] == "hot", s  # sorted by own time of the last second
        # the program's output is shown under the table
        assert "-- program output" in s and re.search(r"^tick \d+", s, re.M), s
        # t: sorted by total; the first rows are at 100%
        tm.keys("t")
        s = tm.wait_for(lambda s: "sort: total last second" in s, 3.0, "sort by total")
        r, order = rows(s)
        assert order[0] in ("<module>", "main") and r[order[0]][1] >= 95, s
        # h: per-thread rows, with the thread's name
        tm.keys("h")
        s = tm.wait_for(lambda s: "view: per thread" in s, 3.0, "per-thread view")
        r, order = rows(s)
        assert ("MainThread", "hot") in r, s
        tm.keys("h", "o")
        # space: paused, the numbers stand still while the program runs on
        tm.keys("Space")
        s1 = tm.wait_for(lambda s: "PAUSED" in s, 3.0, "PAUSED")
        time.sleep(2.2)
        s2 = tm.screen()
        assert rows(s1)[0] == rows(s2)[0], (s1, s2)
        tm.keys("Space")
        tm.wait_for(lambda s: "PAUSED" not in s and rows(s)[0].get("hot") != rows(s2)[0].get("hot"), 4.0,
                    "the view running again")
        # q: the view is gone, the program runs on (its output goes to the terminal), exits with its status
        tm.keys("q")
        s = tm.wait_for(lambda s: "spprof top" not in s, 3.0, "the view closed")
        last_tick = max(int(x) for x in re.findall(r"^tick (\d+)", s, re.M))
        s = tm.wait_for(lambda s: max(int(x) for x in re.findall(r"^tick (\d+)", s, re.M)) > last_tick + 1,
                        5.0, "the program's output after q")
        stop.write_text("")
        s = tm.wait_for(lambda s: "EXIT=" in s, 10.0, "the program's end")
        assert "workload done" in s and "EXIT=3" in s, s
        assert re.search(r"\d+ samples \(cpu, [\d.]+ s\) in 1 thread; since start", s.replace("\n", "")), s
    finally:
        tm.kill()


def test_top_plain_tables_and_exit_status(tmp_path, workload):
    """stdout not a terminal: a table a second on stdout, the program's output as is, its exit status."""
    stop = tmp_path / "stop"
    res = subprocess.run([sys.executable, TOOL, "top", "--", "python3", str(workload), str(stop), "3.5"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 3, res.stderr
    assert "workload done" in res.stdout and "tick 1\n" in res.stdout
    tables = [t for t in res.stdout.split("spprof top  ")[1:]]
    assert len(tables) >= 3, res.stdout
    last, _ = rows(tables[-1])
    assert 60 <= last["hot"][2] <= 90 and 10 <= last["cold"][2] <= 40, tables[-1]
    assert re.search(r"spprof top: .*: \d+ samples \(cpu, [\d.]+ s\) in 1 thread; since start:", res.stderr)
    own = {m.group(2): float(m.group(1)) for m in
           re.finditer(r"^\s*([\d.]+)\s+[\d.]+\s+\d+\s+\d+\s+(\S+) \(work\.py\)$", res.stderr, re.M)}
    assert 60 <= own["hot"] <= 90 and 10 <= own["cold"] <= 40, res.stderr


def test_top_signal_and_not_python(tmp_path):
    """The program dies of a signal: so does top. A command that is not Python: said, its status kept."""
    prog = tmp_path / "die.py"
    prog.write_text("import os, signal, time\nt = time.time() + 1.2\nwhile time.time() < t: pass\n"
                    "os.kill(os.getpid(), signal.SIGTERM)\ntime.sleep(10)\n")
    res = subprocess.run([sys.executable, TOOL, "top", "--", "python3", str(prog)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == -signal.SIGTERM, (res.returncode, res.stderr)
    res = subprocess.run([sys.executable, TOOL, "top", "--", "sh", "-c", "exit 7"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 7
    assert "no profile data (it did not start spprof" in res.stderr, res.stderr
    res = subprocess.run([sys.executable, TOOL, "top", "--"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "no command given" in res.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_native_toggle(tmp_path, workload):
    """--native: the interpreter's C functions are rows; n hides them and their time goes to hot()/cold()."""
    stop = tmp_path / "stop"
    tm = Tmux(tmp_path)
    tm.start(f"{sys.executable} {TOOL} top --native -- python3 {workload} {stop} 60; echo EXIT=$?; sleep 60")
    native = re.compile(r"\(\S*\.so[\d.]*\)|\(python3[\d.]*\)")
    try:
        s = tm.wait_for(lambda s: native.search(s) and "hot (work.py)" in s, 8.0, "native frames")
        assert "native frames: shown" in s
        tm.keys("n")
        s = tm.wait_for(lambda s: "native frames: hidden" in s, 3.0, "native frames hidden")
        assert not native.search(s), s
        r, order = rows(s)
        assert r["hot"][2] >= 50 and r["hot"][2] > r["cold"][2] > 5, s  # their own time is back with them
        assert order[0] == "hot", s
        tm.keys("n")
        tm.wait_for(lambda s: "native frames: shown" in s and native.search(s), 3.0, "native frames again")
        stop.write_text("")
        s = tm.wait_for(lambda s: "EXIT=" in s, 10.0, "the program's end")
        assert "EXIT=3" in s, s
    finally:
        tm.kill()


def test_top_counts_each_sample_once(tmp_path):
    """One stack for 2.5 s of CPU (a run of samples that grows across many messages): the samples since start
    match the CPU time at 100 Hz, counted once (not again in every message the run is still open)."""
    prog = tmp_path / "long.py"
    prog.write_text("import time\ndef long_one():\n    t = time.process_time() + 2.5\n"
                    "    while time.process_time() < t: pass\nlong_one()\nprint('cpu', time.process_time())\n")
    res = subprocess.run([sys.executable, TOOL, "top", "--", "python3", str(prog)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    cpu = float(re.search(r"^cpu ([\d.]+)", res.stdout, re.M).group(1))
    n = int(re.search(r"spprof top: .*: (\d+) samples", res.stderr).group(1))
    assert 0.6 * 100 * cpu <= n <= 1.1 * 100 * cpu, (n, cpu, res.stderr)
    m = re.search(r"^\s*([\d.]+)\s+[\d.]+\s+(\d+)\s+\d+\s+long_one \(long\.py\)$", res.stderr, re.M)
    assert m and float(m.group(1)) >= 90 and int(m.group(2)) >= 0.9 * n, res.stderr


TREE = r'''
import multiprocessing as mp, sys, time

def child_work(n):  # the leaf itself: its own time is its total
    t = time.thread_time() + 0.4
    while time.thread_time() < t:
        pass

def parent_work():
    t = time.thread_time() + 0.4
    while time.thread_time() < t:
        pass

if __name__ == "__main__":
    with mp.get_context(sys.argv[1]).Pool(2) as p:
        p.map(child_work, range(2), chunksize=1)
    parent_work()
    sys.exit(5)
'''


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_top_subprocesses(tmp_path, method):
    """top --subprocesses: the pool's workers connect too; child_work (2 x 0.4 s, in the workers) and
    parent_work (0.4 s, in the program) share the samples 2:1; the program's status is kept."""
    prog = tmp_path / "prog.py"
    prog.write_text(TREE)
    res = subprocess.run([sys.executable, TOOL, "top", "--subprocesses", "--", "python3", str(prog), method],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 5, res.stderr
    m = re.search(r"spprof top: .*: (\d+) samples \(cpu, [\d.]+ s\) in (\d+) processes, (\d+) threads", res.stderr)
    assert m and int(m.group(2)) >= 2, res.stderr
    own = {mm.group(2): float(mm.group(1)) for mm in
           re.finditer(r"^\s*([\d.]+)\s+[\d.]+\s+\d+\s+\d+\s+(\w+) \(prog\.py\)$", res.stderr, re.M)}
    assert 50 <= own["child_work"] <= 80 and 20 <= own["parent_work"] <= 45, res.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_top_ctrl_c(tmp_path, workload):
    """Ctrl-C reaches the program as usual (its traceback is shown), top dies of the same signal, and the
    terminal is back in its normal mode (canonical, echo)."""
    stop = tmp_path / "stop"
    tm = Tmux(tmp_path)
    tm.start(f"bash -c 'trap \"echo trapped\" INT; {sys.executable} {TOOL} top -- python3 {workload} {stop} 60; "
             "echo EXIT=$?; stty -a | grep -o -- \"-*icanon\\|-*echo \"; sleep 60'")
    try:
        tm.wait_for(lambda s: "hot (work.py)" in s, 8.0, "the view")
        tm.keys("C-c")
        s = tm.wait_for(lambda s: "EXIT=" in s, 10.0, "the end")
        assert "KeyboardInterrupt" in s and "EXIT=130" in s, s
        assert re.search(r"^icanon$", s, re.M) and re.search(r"^echo\s*$", s, re.M), s
        assert re.search(r"\d+ samples \(cpu", s), s
    finally:
        tm.kill()


def test_top_restarts_a_long_session(tmp_path):
    """Past MAX_RUNS runs of samples the streamer stops and starts the session again (long watches stay
    cheap): forced here every second (SPPROF_RECORD_TOP_MAX_RUNS=50 with ~130 runs a second), the samples
    since start still match the CPU time at 1000 Hz, and the 15 ms / 5 ms shares stay 75 / 25."""
    prog = tmp_path / "alt.py"
    prog.write_text("import time\ndef a():\n    t = time.thread_time() + 0.015\n"
                    "    while time.thread_time() < t: pass\n"
                    "def b():\n    t = time.thread_time() + 0.005\n    while time.thread_time() < t: pass\n"
                    "t_end = time.process_time() + 3.5\nwhile time.process_time() < t_end:\n    a(); b()\n"
                    "print('cpu', time.process_time())\n")
    res = subprocess.run([sys.executable, TOOL, "top", "-r", "1000", "--", "python3", str(prog)],
                         capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, SPPROF_RECORD_TOP_MAX_RUNS="50"))
    assert res.returncode == 0, res.stderr
    cpu = float(re.search(r"^cpu ([\d.]+)", res.stdout, re.M).group(1))
    n = int(re.search(r"spprof top: .*: (\d+) samples", res.stderr).group(1))
    assert 0.7 * 1000 * cpu <= n <= 1.1 * 1000 * cpu, (n, cpu, res.stderr)
    own = {m.group(2): float(m.group(1)) for m in
           re.finditer(r"^\s*([\d.]+)\s+[\d.]+\s+\d+\s+\d+\s+(\w+) \(alt\.py\)$", res.stderr, re.M)}
    assert 62 <= own["a"] <= 88 and 12 <= own["b"] <= 38, res.stderr
