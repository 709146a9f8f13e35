#!/usr/bin/env python3
"""cpython_regrtest.py - CPython's own regression tests under the profiler (make test-regrtest, part of make test).

Runs a subset of the signal-, thread-, fork- and syscall-sensitive modules of the interpreter's `test` package
with regrtest (`python -m test`, cases picked with -m/-i so that the matrix stays within a few minutes), once
unprofiled and once under each of `tools/spprof record` modes:

    none    python -m test ...                         (the reference run)
    cpu     record -r 1000 (CPU time, 1 kHz)
    wall    record --mode wall -r 2000
    native  record --native -r 1000
    memory  record --memory

Results are compared per test case (regrtest's --junit-xml): a case that passes unprofiled and does not pass
under a mode (fails, errors, is skipped, or never ran because the process died or hung) is a regression. A
regression is run again alone (same mode, -m CASE) to tell a reproducible failure from a timing flake of the
loaded machine; the run fails on reproducible regressions, and flakes are listed. Cases that fail unprofiled
(this machine's environment) are ignored: they prove nothing about the profiler.

    tests/cpython_regrtest.py [--python PY]... [--modes none,cpu,wall,native,memory] [--out DIR] [--only MOD]

Only the process that `record` execs is profiled: regrtest runs every test in that process (no -j), so
threads, forks, signal handlers and system calls of the tests all share it with the profiler. Children that
tests start with subprocess are not profiled (they are the test's own, unchanged programs).

Exit status: 0 no reproducible regression, 1 regressions (listed with the first lines of their tracebacks),
2 setup error (no spprof build for the interpreter, regrtest missing)."""
import argparse
import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.join(ROOT, "build")
TOOL = os.path.join(ROOT, "tools", "spprof")

MODES = {
    "none": None,
    "cpu": ["-r", "1000"],
    "wall": ["--mode", "wall", "-r", "2000"],
    "native": ["--native", "-r", "1000"],
    "memory": ["--memory"],
}

# Modules and the cases picked from them. `match`/`ignore` are regrtest -m/-i glob patterns on test ids. The
# unprofiled run time of each selection on the default python3 (3.11, this 2-core machine) is in the comment;
# what is left out is said with the reason (nearly always: seconds spent waiting for a timeout).
SUITES = [
    # itimers (REAL, VIRTUAL, PROF), wakeup fd, sigwait, pthread_kill, interprocess signals, stress delivery,
    # SA_RESTART. Left out, as they wait for timeouts (seconds each) and repeat what the kept cases exercise:
    # test_siginterrupt_off (30 s), test_siginterrupt_on, sigtimedwait/sigwaitinfo variants of test_sigwait,
    # test_wakeup_fd_during (test_wakeup_fd_early is its twin)
    ("test_signal", [], ["*test_siginterrupt_off", "*test_siginterrupt_on", "*test_sigtimedwait*",
                         "*PendingSignalsTests.test_sigwaitinfo", "*test_wakeup_fd_during"]),
    # the EINTR retry of the wrapped system calls (PEP 475) in this process: test_eintr itself only runs
    # _test_eintr.py in a child process, which record would not profile. Left out: the sendmsg/recvmsg/sendall
    # twins of send/recv, and the FIFO open tests (0.3-0.7 s each)
    ("_test_eintr", [], ["*test_recvmsg", "*test_sendmsg", "*test_sendall", "*test_os_open", "*test_open"]),
    # threads, fork with threads, join at shutdown, interrupt_main, atexit, one lock family with its timeouts
    ("test_threading", ["*.ThreadTests.*", "*ThreadJoinOnShutdown*", "*InterruptMainTests*", "*AtexitTests*",
                        "*.LockTests.*", "*.EventTests.*"],
     ["*test_various_ops_large_stack", "*test_recursion_limit"]),
    # POSIX process creation, signals to children, fds across exec, communicate with timeouts. Left out: the
    # *_dead tests (1.1 s each of sleeping), test_communicate_repeated_call_after_stdout_close (2 s)
    ("test_subprocess", ["*POSIXProcessTestCase*", "*ProcessTestCase.test_communicate*",
                         "*ProcessTestCase.test_wait*"],
     ["*_dead", "*test_communicate_repeated_call_after_stdout_close", "*test_swap_std_fds_with_one_closed",
      "*test_communicate_timeout_large_output"]),
    # epoll (the default selector on Linux), with its EINTR tests; poll/select repeat the same cases
    ("test_selectors", ["*EpollSelectorTestCase*"], []),
    ("test_socket", ["*BasicTCPTest*", "*BasicUDPTest*", "*InterruptedRecvTimeoutTest*",
                     "*InterruptedSendTimeoutTest*", "*NonBlockingTCPTests*", "*SendfileUsingSendTest*",
                     "*TestSocketSharing*", "*NetworkConnectionNoServer*", "*ContextManagersTest*"], []),
    ("test_os", ["*ForkTests*", "*PidTests*", "*TestSendfile*", "*ExecTests*", "*FDInheritanceTests*",
                 "*TestInvalidFD*", "*PosixTester*", "*EventfdTests*"], []),
    ("test_faulthandler", ["*test_dump_traceback*", "*test_enable*", "*test_sigsegv*", "*test_register*",
                           "*test_disable*", "*test_is_enabled*"], ["*_later*"]),
    # fork pools: map/apply/async/terminate/context manager, worker lifetime; process terminate/kill
    ("test_multiprocessing_fork", ["*WithProcessesTestPool.*", "*WithProcessesTestPoolWorkerLifetime*",
                                   "*WithProcessesTestProcess.test_terminate*",
                                   "*WithProcessesTestProcess.test_kill*", "*WithProcessesTestEvent*"],
     ["*test_map_no_failfast", "*test_async_timeout*", "*test_imap_unordered_handle_iterable_exception"]),
    # the epoll event loop: call_later, signal handlers (add_signal_handler), subprocesses, sockets, pipes
    ("test_asyncio.test_events", ["*EPollEventLoopTests*"],
     ["*test_create_connection*", "*test_create_server*", "*ssl*"]),
]


# Cases that fail under the profiler because of a bug that is known and still open, with the issue item. They run
# in every mode and are reported under KNOWN OPEN (they do not fail the run); when one of them passes in every
# mode, the run says so (a failure near the edge, 10001 for 10000, can pass by chance: it does not fail the run). Keep this list short and
# never put a case here that is not tied to an open issue.
KNOWN_OPEN = {
    # (empty: test_signal's StressTest.test_stress_delivery_dependent, issue 11 signals item 2, passes since
    # spprof samples with a free real-time signal and leaves SIGPROF to the program)
}

# Tests that can never share a process with any profiler, by name, with the reason. (None today. "It uses
# SIGPROF" is not a reason: spprof can sample with another signal.)
NEVER_WITH_A_PROFILER = {}

# Where an interpreter ships test._test_multiprocessing but not test_multiprocessing_fork (pyenv's 3.11/3.12),
# this module, in a directory given with --testdir, does what CPython's test_multiprocessing_fork.py does
# (under another name: regrtest treats the name test_multiprocessing_fork as a package directory).
MP_FORK_SHIM_NAME = "test_spprof_mp_fork"
MP_FORK_SHIM = """import test._test_multiprocessing
test._test_multiprocessing.install_tests_in_module_dict(globals(), 'fork')
"""

TIMEOUT = 120  # seconds per regrtest process (the slowest selection takes ~25 s): a hang fails what it did not finish
RETRY_CAP = 8  # failed cases run again alone per (module, mode); more than that count as failed without a retry


def interp_info(py):
    code = ("import sys, sysconfig, os\n"
            "print(sysconfig.get_config_var('EXT_SUFFIX'))\n"
            "print('%d.%d' % sys.version_info[:2])\n"
            "try:\n import test, test.libregrtest\n print(os.path.dirname(test.__file__))\n"
            "except Exception:\n print('')\n"
            "names = ()\n"
            "for m in ('test.libregrtest.cmdline', 'test.libregrtest.utils'):\n"
            " try:\n  names = __import__(m, fromlist=['x']).RESOURCE_NAMES\n  break\n"
            " except Exception: pass\n"
            "print(' '.join(names))\n")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return None
    suffix, version, testdir, resources = (r.stdout.split("\n") + ["", "", "", ""])[:4]
    return {"suffix": suffix, "version": version, "testdir": testdir, "resources": resources.split()}


def module_present(testdir, name):
    path = os.path.join(testdir, *name.split("."))
    return os.path.exists(path + ".py") or os.path.isdir(path)


class Case:
    def __init__(self, status, detail=""):
        self.status, self.detail = status, detail  # status: pass, fail, skip, missing


def parse_junit(path):
    cases = {}
    root = ET.parse(path).getroot()
    for tc in root.iter("testcase"):
        name = tc.get("name")
        kinds = {child.tag: child for child in tc}
        if "failure" in kinds or "error" in kinds:
            el = kinds.get("failure", kinds.get("error"))
            text = (el.text or el.get("message") or el.get("type") or "").strip()
            cases[name] = Case("fail", text)
        elif "skipped" in kinds:
            cases[name] = Case("skip", (kinds["skipped"].text or kinds["skipped"].get("message") or "").strip())
        else:
            cases[name] = Case("pass")
    return cases


def run_one(py, info, module, match, ignore, mode, outdir, tag, extra_testdir=None):
    """One regrtest process; returns (cases by id, seconds, note about how the process ended)."""
    junit = os.path.join(outdir, f"{tag}.xml")
    log = os.path.join(outdir, f"{tag}.log")
    for p in (junit,):
        if os.path.exists(p):
            os.unlink(p)
    wanted = [r for r in ("subprocess", "walltime", "cpu") if r in info["resources"]]
    cmd = [py, "-m", "test", "--junit-xml", junit]
    if wanted:
        cmd += ["-u", ",".join(wanted)]
    if extra_testdir:
        cmd += ["--testdir", extra_testdir]
    for m in match:
        cmd += ["-m", m]
    for i in ignore:
        cmd += ["-i", i]
    cmd.append(module)
    if MODES[mode] is not None:
        prof = os.path.join(outdir, f"{tag}.collapsed")
        cmd = [py, TOOL, "record", "-q", "-o", prof] + MODES[mode] + ["--"] + cmd
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("SPPROF_PACKAGE_DIR", None)
    t0 = time.monotonic()
    with open(log, "w") as logf:
        logf.write("$ " + " ".join(cmd) + "\n")
        logf.flush()
        p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=outdir,
                             start_new_session=True)
        try:
            rc = p.wait(timeout=TIMEOUT)
            note = "" if rc in (0, 1, 2) else (f"died of signal {-rc}" if rc < 0 else f"exit status {rc}")
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            note = f"hung: killed after {TIMEOUT} s"
    seconds = time.monotonic() - t0
    cases = {}
    if os.path.exists(junit):
        try:
            cases = parse_junit(junit)
        except ET.ParseError as e:
            note = (note + "; " if note else "") + f"unreadable junit xml: {e}"
    elif not note:
        note = f"no junit xml (exit status {rc})"
    return cases, seconds, note, log


def first_lines(text, n=6):
    lines = [l for l in text.splitlines() if l.strip()]
    return "\n".join("        " + l for l in lines[-n:])


def run_interpreter(py, modes, outroot, only, jobs):
    info = interp_info(py)
    if info is None:
        print(f"regrtest: {py}: cannot run it, skipped")
        return 2, []
    if not info["testdir"]:
        print(f"regrtest: {py} ({info['version']}): no `test` package (regrtest) installed, skipped")
        return 0, []
    ext = os.path.join(BUILD, "spprof", "_spprof" + info["suffix"])
    if any(MODES[m] for m in modes) and not os.path.exists(ext):
        print(f"regrtest: {py} ({info['version']}): no spprof build ({ext} missing): "
              f"make pypkg PYTHON={py} or SPPROF_PYTHONS={py}")
        return 2, []
    outdir = os.path.join(outroot, info["version"] + info["suffix"].split("-")[0].replace(".cpython", ""))
    os.makedirs(outdir, exist_ok=True)
    shimdir = None
    print(f"regrtest: {py} (Python {info['version']}), modes {', '.join(modes)}; logs in {outdir}")
    rows, regressions, flakes, known = [], [], [], []
    planned = []  # (module, regrtest name, match, ignore, testdir)
    for module, match, ignore in SUITES:
        if only and module not in only:
            continue
        testdir = None
        regr_name = module
        if not module_present(info["testdir"], module):
            if module == "test_multiprocessing_fork" and module_present(info["testdir"], "_test_multiprocessing"):
                if shimdir is None:
                    shimdir = tempfile.mkdtemp(prefix="spprof-regrtest-")
                    with open(os.path.join(shimdir, MP_FORK_SHIM_NAME + ".py"), "w") as f:
                        f.write(MP_FORK_SHIM)
                print(f"  {module}: not in this interpreter's test package: test._test_multiprocessing's fork "
                      f"tests through {MP_FORK_SHIM_NAME}.py instead")
                testdir, regr_name = shimdir, MP_FORK_SHIM_NAME
            else:
                print(f"  {module}: SKIPPED: not in this interpreter's test package ({info['testdir']})")
                rows.append((module, {m: None for m in modes}))
                continue
        planned.append((module, regr_name, match, ignore, testdir))
    # every (module, mode) is its own regrtest process; `jobs` of them at a time
    results = {}

    def task(item):
        (module, regr_name, match, ignore, testdir), mode = item
        never = [p for p in NEVER_WITH_A_PROFILER if p.startswith(module)]
        ign = list(ignore) + (never if mode != "none" else [])
        return (module, mode), run_one(py, info, regr_name, match, ign, mode, outdir, f"{module}.{mode}", testdir)

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as ex:
        for key, res in ex.map(task, [(pl, m) for pl in planned for m in modes]):
            results[key] = res
    for module, regr_name, match, ignore, testdir in planned:
        res = {m: results[(module, m)] for m in modes}
        base = res["none"][0]
        for mode in modes:
            if mode == "none":
                continue
            cases, secs, note, log = res[mode]
            if note:
                # the process died, hung or wrote no results: its unfinished cases fail (a hang or a death is not
                # a timing flake: the pool hang of record's inherited SIGTERM handler is intermittent); the whole
                # selection runs once more in this mode, for the report
                cases2, _, note2, _ = run_one(py, info, regr_name, match, ignore, mode, outdir,
                                              f"{module}.{mode}.rerun", testdir)
            retried = 0
            for name, c in sorted(base.items()):
                if c.status != "pass":
                    continue
                got = cases.get(name, Case("missing", note or "not run"))
                if got.status == "pass":
                    continue
                if note:
                    g2 = cases2.get(name, Case("missing", note2 or "not run"))
                elif retried < RETRY_CAP:
                    # again, alone: reproducible, or a timing flake of the loaded machine?
                    retried += 1
                    exact = name.replace("[", "[[]")  # the full id as a glob pattern
                    again, _, again_note, _ = run_one(py, info, regr_name, [exact], [], mode, outdir,
                                                      f"{module}.{mode}.retry{retried}", testdir)
                    g2 = again.get(name, Case("missing", again_note or "not run"))
                else:
                    g2 = Case("fail", "not run again: more than RETRY_CAP failures in this module and mode")
                entry = (module, mode, name, got, log, g2)
                if name in KNOWN_OPEN:
                    known.append(entry)
                    continue
                # a process that died or hung is never a timing flake, even if the rerun got through
                (flakes if g2.status == "pass" and not note else regressions).append(entry)
        rows.append((module, res))
        print_row(module, res, modes)
    if shimdir:
        shutil.rmtree(shimdir, ignore_errors=True)
    print_matrix(py, info, rows, modes)
    ran = set()
    for module, res in rows:
        ran.update(n for n, c in res["none"][0].items() if c.status == "pass")
    fixed = [n for n in KNOWN_OPEN if n in ran and not any(e[2] == n for e in known)]
    for n in fixed:
        print(f"\nKNOWN_OPEN case now passes in every mode: {n} ({KNOWN_OPEN[n]}): remove it from KNOWN_OPEN")
    for title, lst in (("KNOWN OPEN (fail under the profiler because of an open issue: see KNOWN_OPEN)", known),
                       ("FLAKY (failed in the matrix, passed when run again alone)", flakes),
                       ("REGRESSIONS (pass unprofiled, not under the profiler; reproduced alone)", regressions)):
        if not lst:
            continue
        print(f"\n{title}: {len(lst)}")
        for module, mode, name, got, log, g2 in lst:
            print(f"  [{mode}] {name}: {got.status}  (log: {log})")
            if got.detail:
                print(first_lines(got.detail))
    return (1 if regressions else 0), regressions


def counts(cases):
    n = {"pass": 0, "fail": 0, "skip": 0}
    for c in cases.values():
        n[c.status if c.status in n else "fail"] += 1
    return n


def cell(result):
    if result is None:
        return "absent"
    cases, secs, note, _ = result
    n = counts(cases)
    s = f"{n['pass']}/{n['fail']}/{n['skip']} {secs:.0f}s"
    return s + ("!" if note else "")


def print_row(module, results, modes):
    parts = [f"{m}={cell(results.get(m))}" for m in modes]
    notes = [f"{m}: {results[m][2]}" for m in modes if results.get(m) and results[m][2]]
    print(f"  {module}: " + "  ".join(parts) + (("  (" + "; ".join(notes) + ")") if notes else ""), flush=True)


def print_matrix(py, info, rows, modes):
    w = max([len(r[0]) for r in rows] + [6])
    print(f"\nmatrix for {py} (Python {info['version']}): pass/fail/skip per case, wall time "
          f"(! = the process did not end normally: died, hung or wrote no results)")
    print("  " + "module".ljust(w) + "".join(m.rjust(18) for m in modes))
    total = {m: [0, 0, 0, 0.0] for m in modes}
    for module, results in rows:
        line = "  " + module.ljust(w)
        for m in modes:
            r = results.get(m) if isinstance(results, dict) else None
            line += cell(r).rjust(18)
            if r:
                n = counts(r[0])
                t = total[m]
                t[0] += n["pass"]
                t[1] += n["fail"]
                t[2] += n["skip"]
                t[3] += r[1]
        print(line)
    print("  " + "total".ljust(w) + "".join(f"{t[0]}/{t[1]}/{t[2]} {t[3]:.0f}s".rjust(18)
                                             for t in (total[m] for m in modes)))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", action="append", help="interpreter (repeatable; default: python3)")
    ap.add_argument("--modes", default="none,cpu,wall,native,memory")
    ap.add_argument("--out", default=os.path.join(BUILD, "regrtest"), help="logs, junit xml and profiles")
    ap.add_argument("--only", action="append", help="run only this module (repeatable)")
    ap.add_argument("-j", "--jobs", type=int, default=2,
                    help="regrtest processes at a time (default 2: the cases mostly wait, and a failure is "
                         "run again alone before it counts)")
    args = ap.parse_args(argv[1:])
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}: choose from {', '.join(MODES)}")
    if "none" not in modes:
        modes.insert(0, "none")
    pythons = args.python or ["python3"]
    t0 = time.monotonic()
    status = 0
    for py in pythons:
        path = shutil.which(py) or py
        rc, _ = run_interpreter(path, modes, args.out, args.only, args.jobs)
        status = max(status, rc)
    print(f"\nregrtest: {time.monotonic() - t0:.0f} s in all; "
          + ("OK" if status == 0 else "FAILED" if status == 1 else "setup error"))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
