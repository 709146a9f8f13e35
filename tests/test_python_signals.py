"""The program's signals stay the program's under the profiler (issue 11): spprof samples with a free
real-time signal, so a program's SIGPROF save/restore and its own SIGPROF handler work as without it; a
program that takes spprof's own signal over wins, and spprof stops with one line on stderr."""
import json
import os
import subprocess

import pytest

from conftest import TOOL

HOT_LOOP = r'''
import json, os, signal, sys, time

def hot_loop(seconds):
    t_end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < t_end:
        for i in range(1000): x = (x * 31 + i) & 0xFFFF
    return x
'''

# Repro 1: the usual save/restore of the SIGPROF handler. Python's table says SIG_DFL for a handler it did
# not install, so with spprof's handler on SIGPROF the restore put SIG_DFL under running timers (exit 155).
SAVE_RESTORE = HOT_LOOP + r'''
hot_loop(0.2)
old = signal.signal(signal.SIGPROF, signal.SIG_IGN)
signal.signal(signal.SIGPROF, old)
hot_loop(0.8)
print("survived", signal.getsignal(signal.SIGPROF), flush=True)
'''

# Repro 2: the program's own SIGPROF handler: never called while the program arms nothing, then called by
# its own profiling itimer (100 Hz of CPU time), while spprof keeps sampling.
OWN_HANDLER = HOT_LOOP + r'''
calls = []
def on_prof(signum, frame):
    calls.append(signum)
signal.signal(signal.SIGPROF, on_prof)
hot_loop(1.0)
unarmed = len(calls)
signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)
hot_loop(1.0)
signal.setitimer(signal.ITIMER_PROF, 0)
print(json.dumps({"unarmed": unarmed, "armed": len(calls) - unarmed}), flush=True)
'''


def record(py, out, mode, script, timeout=120):
    return subprocess.run([TOOL, "record", "-o", str(out), "-r", "1000", "--mode", mode, "--", py.path, str(script)],
                          capture_output=True, text=True, timeout=timeout, env=py.env())


def hot_weight(collapsed):
    """Weight of the collapsed lines that run hot_loop (intervals of 1 ms)."""
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "hot_loop" in stack:
            total += int(n)
    return total


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_sigprof_save_restore_keeps_running(py, tmp_path, mode):
    script = tmp_path / "save_restore.py"
    script.write_text(SAVE_RESTORE)
    out = tmp_path / "p.collapsed"
    proc = record(py, out, mode, script)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    assert "survived" in proc.stdout
    w = hot_weight(out)
    # 1 s of CPU in hot_loop at 1 kHz; wide margin for a loaded machine (wall mode counts elapsed time)
    assert w >= 500, (w, proc.stderr[-2000:])
    assert "installed its own handler" not in proc.stderr


@pytest.mark.parametrize("mode", ["cpu", "wall"])
def test_own_sigprof_handler_and_profiler_both_work(py, tmp_path, mode):
    script = tmp_path / "own_handler.py"
    script.write_text(OWN_HANDLER)
    out = tmp_path / "p.collapsed"
    proc = record(py, out, mode, script)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["unarmed"] == 0, got       # never called into a handler that armed nothing
    assert 30 <= got["armed"] <= 150, got  # its own itimer: ~100 calls in 1 s of CPU
    w = hot_weight(out)
    assert w >= 1000, (w, proc.stderr[-2000:])  # spprof sampled both seconds (2 s of CPU at 1 kHz)
    assert "installed its own handler" not in proc.stderr


# The program takes spprof's own signal (stats()["signal"]) over: its handler wins, spprof stops sampling,
# says so once on stderr and in stats(), keeps the profile so far, and stop() works.
TAKE_OVER = HOT_LOOP + r'''
import spprof
spprof.start(interval_ms=1)
hot_loop(0.3)
sig = spprof.stats()["signal"]
calls = []
signal.signal(sig, lambda s, f: calls.append(s))
deadline = time.time() + 5
while not spprof.stats()["handler_replaced"] and time.time() < deadline:
    hot_loop(0.01)
replaced = spprof.stats()["handler_replaced"]
hot_loop(0.1)
before = spprof.stats()["samples_captured"]
n_calls = len(calls)
hot_loop(0.5)
after = spprof.stats()["samples_captured"]
p = spprof.stop()
print(json.dumps({"signal": sig, "replaced": replaced, "samples_before": before, "samples_after": after,
                  "calls_later": len(calls) - n_calls, "profile": p.sample_count,
                  "still_theirs": signal.getsignal(sig) is not signal.SIG_DFL}), flush=True)
'''


def test_program_takes_the_signal_over(py, tmp_path):
    script = tmp_path / "take_over.py"
    script.write_text(TAKE_OVER)
    proc = subprocess.run([py.path, str(script)], capture_output=True, text=True, timeout=120, env=py.env())
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    import signal as s
    assert s.SIGRTMIN <= got["signal"] <= s.SIGRTMAX, got
    assert got["replaced"] == 1, got
    assert got["samples_after"] == got["samples_before"], got  # sampling stopped
    assert got["calls_later"] == 0, got                          # nothing of ours reaches the program's handler
    assert got["profile"] >= 100, got                            # the profile so far (0.3 s at 1 kHz) is kept
    assert got["still_theirs"], got
    lines = [ln for ln in proc.stderr.splitlines() if "installed its own handler" in ln]
    assert len(lines) == 1 and f"signal {got['signal']}" in lines[0] and "profiling stopped" in lines[0], proc.stderr


# Two copies of spprof in one process (the README's promise): the Python extension and a second copy, built
# here as a shared object from spprof.h with SPPROF_STATIC and hidden symbols (as an extension that vendors
# the header would be). Each takes its own free real-time signal, both sample, neither sees the other as the
# program taking its signal over.
COPY2_C = r'''
#define _GNU_SOURCE
#define SPPROF_STATIC
#define SPPROF_IMPLEMENTATION
#include "spprof.h"
__attribute__((visibility("default"))) int copy2_start(long long interval_ns) {
    spprof_config c = spprof_config_default();
    c.interval_ns = interval_ns;
    return spprof_start(&c) == SPPROF_OK ? 0 : -1;
}
__attribute__((visibility("default"))) long long copy2_stop(int *signo, int *replaced) {
    spprof_stats st;
    spprof_stop();
    spprof_get_stats(&st);
    *signo = st.signo;
    *replaced = st.handler_replaced;
    return (long long)st.samples_in_profile;
}
'''

TWO_COPIES = HOT_LOOP + r'''
import ctypes
import spprof
lib = ctypes.CDLL(sys.argv[1])
first = sys.argv[2]
if first == "python":
    spprof.start(interval_ms=1)
    assert lib.copy2_start(ctypes.c_longlong(1000000)) == 0
else:
    assert lib.copy2_start(ctypes.c_longlong(1000000)) == 0
    spprof.start(interval_ms=1)
hot_loop(1.0)
sig2, rep2 = ctypes.c_int(), ctypes.c_int()
n2 = lib.copy2_stop(ctypes.byref(sig2), ctypes.byref(rep2))
st = spprof.stats()
p = spprof.stop()
print(json.dumps({"sig1": st["signal"], "rep1": st["handler_replaced"], "n1": p.sample_count,
                  "sig2": sig2.value, "rep2": rep2.value, "n2": n2}), flush=True)
'''


@pytest.mark.parametrize("first", ["python", "copy2"])
def test_two_copies_take_different_signals(py, tmp_path, first):
    from conftest import ROOT
    src = tmp_path / "copy2.c"
    src.write_text(COPY2_C)
    lib = tmp_path / "libcopy2.so"
    subprocess.run([os.environ.get("CC", "cc"), "-std=c99", "-O1", "-fPIC", "-shared", "-fvisibility=hidden",
                    "-fno-omit-frame-pointer", "-Wall", "-Wextra", "-Werror", "-I" + ROOT, str(src), "-o", str(lib),
                    "-pthread", "-ldl", "-lrt"], check=True, capture_output=True, text=True)
    script = tmp_path / "two_copies.py"
    script.write_text(TWO_COPIES)
    proc = subprocess.run([py.path, str(script), str(lib), first], capture_output=True, text=True, timeout=120,
                          env=py.env())
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-3000:])
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["sig1"] != got["sig2"], got
    assert got["rep1"] == 0 and got["rep2"] == 0, got
    # 1 s of CPU at 1 kHz each; the Python copy samples the Python thread, the C copy every thread
    assert got["n1"] >= 300 and got["n2"] >= 300, got
    assert "installed its own handler" not in proc.stderr
