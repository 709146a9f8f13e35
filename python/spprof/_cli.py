"""spprof - command-line front end of the spprof sampling profiler.

  spprof record [-o OUT] [-f svg|speedscope|pprof|collapsed] [-r HZ] [--mode cpu|wall] [--source auto|posix|perf|perf-user] [--native] [--threads] [--nolineno] [--serve [HOST:]PORT] [-q] -- python3 script.py [args]
  spprof top [-r HZ] [--mode cpu|wall] [--source SRC] [--native] -- python3 script.py [args]   (a live view)

`record` profiles a Python program from its first line to its exit, in-process: no ptrace, no root. It puts a
bootstrap sitecustomize.py first on PYTHONPATH and then *execs* the command, so the program keeps this
process (pid, signals, terminal), its arguments (sys.argv), stdin/stdout/stderr and its exit status. The
profile is written when the program exits: normally, by sys.exit(n), by an uncaught exception, by
KeyboardInterrupt (SIGINT), by os._exit(), or by SIGTERM/SIGHUP/SIGUSR1/SIGUSR2/SIGQUIT (written, then the
process dies of the signal as it would have; no Python-level handler: signal.getsignal() and fork children
see the defaults). SIGKILL / the OOM killer, and programs that are not Python, are reported on stderr by a
watcher process. A run that profiled nothing leaves existing outputs as they were. A one-line summary goes to
stderr.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import sys

# This module is the whole command line: `spprof` (the console script) and `python -m spprof` import it as
# spprof._cli; tools/spprof, the launcher of a source tree, loads this file by its path (without importing
# the spprof package, which needs the extension built for the launcher's interpreter) and sets PACKAGE_DIRS.
# So no relative imports here. The bootstrap (a sitecustomize.py) is shipped next to it, in the package.
HERE = os.path.dirname(os.path.realpath(__file__))
BOOTSTRAP_DIR = os.path.join(HERE, "_bootstrap")
# Directories that may hold a built spprof/ package, tried after SPPROF_PACKAGE_DIR (tools/spprof: build/).
PACKAGE_DIRS = []  # type: list[str]
# How to get a build of _spprof for another interpreter (tools/spprof: `make pypkg PYTHON=...`).
BUILD_HINT = ("install spprof with that interpreter (`{py} -m pip install spprof`, or `pip install .` in "
              "spprof's source)")
# The header that holds SPPROF_VERSION_STRING, where this module is not part of a package (tools/spprof).
VERSION_HEADER = None
MIN_INTERVAL_MS, MAX_INTERVAL_MS = 0.05, 60000.0
MAX_HZ, MIN_HZ = 1000.0 / MIN_INTERVAL_MS, 1000.0 / MAX_INTERVAL_MS
ENV = "SPPROF_RECORD_"

EPILOG = """\
examples:
  spprof record -- python3 app.py                 # -> spprof-app-20250101-120000.svg, a flame graph
  spprof record -o out/profile.json -- python3 app.py --port 8080
  spprof record -o out/profile.collapsed -r 1000 --mode wall -- python3 -m mypkg.main
  spprof record --memory -o heap.pb.gz -- python3 app.py && go tool pprof -top heap.pb.gz

Formats (-f, or by OUT's name):
  svg         .svg: an interactive flame graph (hover, click to zoom, search; no other file needed), titled
              with the command line; widths are time (CPU or wall), with --memory bytes of the heap at its peak
  speedscope  .json: open it at https://www.speedscope.app; weights in nanoseconds (one profile per
              thread, the busiest opens first); with --memory bytes (heap at its peak, and everything allocated)
  pprof       .pb.gz / .pprof: gzip-compressed profile.proto for go tool pprof, Pyroscope, Parca; values
              samples/count and cpu|wall/nanoseconds, labels thread and thread_id; with --memory Go's heap
              types alloc_objects, alloc_space, inuse_objects, inuse_space (counts and bytes)
  collapsed   anything else: "root;...;leaf COUNT" lines for flamegraph.pl, speedscope or tools/top.py;
              COUNT is sampling intervals (time), with --memory bytes of the heap at its peak
Without -o, the output is spprof-PROGRAM-YYYYMMDD-HHMMSS.svg in the current directory. If OUT cannot be
written, the profile goes to a temporary file and the summary says where.

The command must be the Python program itself (python3 script.py, python3 -m module, ./script.py with a
python shebang, a console script): the process that is exec'd is the one profiled; other processes it
starts are not, unless --subprocesses: then every Python process of the tree (os.fork, multiprocessing
fork/spawn/forkserver, subprocesses of a Python with a spprof build) is profiled with the same settings;
children write their part when they end (os._exit and SIGTERM too) and the program merges the parts at its
exit: a child still running then gives its samples so far (asked over a socket, 1.5 s at most; the summary
counts them, partial), one killed by SIGKILL is left out. OUT with {pid}: one file per
process instead. With --memory: each process's heap (at its own peak, or --live-at-exit), the process as
the first frame. Python options -I, -E and -S would skip the bootstrap and are refused.
The program imports spprof from SPPROF_PACKAGE_DIR if set, else from the package this command belongs to
(tools/spprof in a source tree: build/, made by `make`).
"""


def version():
    """SPPROF_VERSION_STRING of spprof.h: the installed package's (spprof.__version__, from the extension
    built from that header), or, for tools/spprof, read from the source tree's header."""
    if __package__ == "spprof":
        import spprof
        return spprof.__version__
    if VERSION_HEADER:
        try:
            with open(VERSION_HEADER, encoding="utf-8") as f:
                m = re.search(r'^#define SPPROF_VERSION_STRING "([^"]+)"', f.read(), re.M)
        except OSError:
            m = None
        if m:
            return m.group(1)
    return "unknown"


class _VersionAction(argparse.Action):
    """--version: the version is looked up only when asked for (no cost to `record`)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"spprof {version()}")
        parser.exit()


def rate(text):
    try:
        hz = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not (MIN_HZ <= hz <= MAX_HZ):
        raise argparse.ArgumentTypeError(
            f"{text} Hz is out of range: the sampling interval must be {MIN_INTERVAL_MS:g} ms to "
            f"{MAX_INTERVAL_MS:g} ms, i.e. {MIN_HZ:.4g} to {MAX_HZ:g} Hz")
    return hz


def host_port(text):
    """"PORT", "HOST:PORT" or "[V6]:PORT" -> (host, port); loopback unless a host is given."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]") or "127.0.0.1"
    try:
        n = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not HOST:PORT or PORT: {text!r}")
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is out of range (0 to 65535)")
    return host, n


def memory_mb(text):
    try:
        mb = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not (1 <= mb <= 1 << 20):
        raise argparse.ArgumentTypeError(f"{text} MiB is out of range (1 to {1 << 20})")
    return mb


def make_parser():
    parser = argparse.ArgumentParser(
        prog="spprof", description="spprof: an in-process sampling profiler for Python programs.")
    parser.add_argument("--version", action=_VersionAction, help="print spprof's version and exit")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND")
    sub.required = True
    rec = sub.add_parser(
        "record", help="run a Python program under the profiler and write its profile",
        description=__doc__.split("\n\n")[2].strip(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [-o OUT] [-f {svg,speedscope,pprof,collapsed}] [-r HZ] [--mode {cpu,wall}] [--source SRC] "
              "[--native] [--threads] [--nolineno] [--memory] [--serve [HOST:]PORT] [--subprocesses] [-q] "
              "-- COMMAND [ARGS...]")
    rec.add_argument("-o", "--output", metavar="OUT", action="append",
                     help="where to write the profile (parent directories are created; '-' is standard "
                          "output); may be given more than once, e.g. -o p.svg -o p.pb.gz: one run, both "
                          "formats (default: spprof-PROGRAM-TIME.svg)")
    rec.add_argument("-f", "--format", choices=("svg", "speedscope", "pprof", "collapsed"),
                     help="output format of every OUT (default: by OUT's name: .svg, .json (speedscope), "
                          ".pb.gz or .pprof (pprof), else collapsed; see below)")
    rec.add_argument("-r", "--rate", type=rate, default=None, metavar="HZ",
                     help="samples per second of CPU time (wall time with --mode wall), default 100; "
                          f"{MIN_HZ:.4g} to {MAX_HZ:g}")
    rec.add_argument("--mode", choices=("cpu", "wall"), default=None,
                     help="cpu: each thread's CPU time, idle threads not sampled (default); "
                          "wall: elapsed time, sleeping and blocked threads too")
    rec.add_argument("--source", choices=("auto", "posix", "perf", "perf-user"), default=None,
                     help="where the sampling signals come from (--mode cpu): auto = a perf_event task-clock "
                          "per thread where the kernel allows it (full rate), else POSIX timers (CPU-clock "
                          "timers fire on kernel ticks, so above CONFIG_HZ each sample carries more weight); "
                          "perf/perf-user fail if the kernel refuses (default auto)")
    rec.add_argument("--native", action="store_true",
                     help="mixed stacks: native frames (C extensions, libraries) in call order, each interpreter "
                          "frame replaced by the Python frames it runs (needs frame pointers in that code)")
    rec.add_argument("--nolineno", action="store_true",
                     help="frames by function (and file), without the line: a function is one frame in every "
                          "format (one row in Speedscope's sandwich view), as py-spy's --nolineno")
    rec.add_argument("--threads", action="store_true",
                     help="collapsed and svg: start each stack with its thread, \"NAME (tid N)\"")
    rec.add_argument("--memory-limit", type=memory_mb, default=None, metavar="MB",
                     help="bound on the in-memory profile in MiB, default 100 (samples beyond it are "
                          "counted as dropped)")
    rec.add_argument("--memory", action="store_true",
                     help="memory profile instead of CPU: sampled allocations (Python and malloc, from process "
                          "start, through the preloaded libspprof_alloc.so); the outputs show the heap at its "
                          "peak (Speedscope: also everything allocated), in bytes")
    rec.add_argument("--live-at-exit", action="store_true",
                     help="--memory: show the heap live at exit instead of the heap at its peak")
    rec.add_argument("--memory-rate-kb", type=float, default=None, metavar="KB",
                     help="--memory: mean KiB allocated between samples, default 512")
    rec.add_argument("--serve", type=host_port, default=None, metavar="[HOST:]PORT",
                     help="also serve Go's net/http/pprof endpoints while the program runs "
                          "(/debug/pprof/profile?seconds=N, /debug/pprof/heap with --memory) for go tool pprof, "
                          "Grafana Alloy, Parca; HOST defaults to 127.0.0.1 (another address is reachable "
                          "from elsewhere); PORT 0 picks a free one; the address goes to stderr")
    rec.add_argument("--subprocesses", action="store_true",
                     help="also profile every Python process the program starts, at any depth (os.fork, "
                          "multiprocessing fork/spawn/forkserver, subprocess of a Python with a spprof build), "
                          "with the same settings, into one output: Speedscope one profile per thread named "
                          "'pid N (command): thread', collapsed and svg with the process as the first frame, "
                          "pprof labels pid and process; or one file per process when OUT holds {pid}. The "
                          "program sees PYTHONPATH and SPPROF_RECORD_* in its environment")
    rec.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr (errors are still shown)")
    rec.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                     help="the program to run, after --")
    top = sub.add_parser(
        "top", help="run a Python program and show where it spends its time, live",
        description=TOP_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [-r HZ] [--mode {cpu,wall}] [--source SRC] [--native] [--subprocesses] -- COMMAND [ARGS...]")
    top.add_argument("-r", "--rate", type=rate, default=100.0, metavar="HZ",
                     help=f"samples per second of CPU time (wall time with --mode wall), default 100; "
                          f"{MIN_HZ:.4g} to {MAX_HZ:g}")
    top.add_argument("--mode", choices=("cpu", "wall"), default="cpu", help="as for record (default cpu)")
    top.add_argument("--source", choices=("auto", "posix", "perf", "perf-user"), default="auto",
                     help="as for record (default auto)")
    top.add_argument("--native", action="store_true", help="mixed stacks, as for record (key n hides them)")
    top.add_argument("--subprocesses", action="store_true",
                     help="also every Python process the program starts (as record --subprocesses); each "
                          "connects to a socket in a private temporary directory; per-thread rows name the pid")
    top.add_argument("cmd", nargs=argparse.REMAINDER, metavar="COMMAND [ARGS...]",
                     help="the program to run, after --")
    parser.top_parser = top
    return parser, rec


TOP_DESCRIPTION = """\
`top` runs a Python program (as record does: exec'd with spprof loaded from its first line) and shows, on
the terminal, refreshed every second, where it spends its time: per function the share of the samples in
which it is the leaf (OWN%) and on the stack (TOTAL%), over the last second and since start, its own
sample count since start, the program's threads. The program sends aggregated numbers (a few KiB a second)
over a socket this command owns; no file is written, no port opened.

keys:  o / t    sort by own / total time of the last second (O / T: since start)
       h        per-thread rows (a THREAD column) or all threads together
       n        hide / show native frames (with --native; their time goes to the calling Python function)
       space    pause the display (the data keeps coming)
       q        quit the view: the program runs on to its end (Ctrl-C stops it, as usual)

The view is drawn on /dev/tty (alternate screen). When the program's stdout/stderr are that terminal, they
go through a pseudo-terminal: its last lines are shown under the table, and all of it is written to the
terminal when the view closes (q, or the program's end). The program's stdin is unchanged (if it reads the
terminal, keys may go to it). When stdout is not a terminal, a plain table is printed to stdout every second
instead. At the end a table since start goes to stderr, and `top` exits with the program's exit status (or
dies of the same signal).

With --subprocesses every Python process the program starts is shown too (as record --subprocesses): each
connects to a socket in a private temporary directory; the header counts processes, per-thread rows read
PID:thread.

examples:
  spprof top -- python3 app.py --port 8080
  spprof top --subprocesses -- python3 -m pytest -n 4
  spprof top --mode wall -- python3 -m mypkg.worker
"""


def find_package_dir():
    candidates = []
    if os.environ.get("SPPROF_PACKAGE_DIR"):
        candidates.append(os.environ["SPPROF_PACKAGE_DIR"])
    candidates += PACKAGE_DIRS
    if __package__ == "spprof":  # imported from an installed (or built) package: that package
        candidates.append(os.path.dirname(HERE))
    for c in candidates:
        if os.path.isfile(os.path.join(c, "spprof", "__init__.py")):
            return os.path.realpath(c)
    try:
        spec = importlib.util.find_spec("spprof")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and spec.origin.endswith("__init__.py"):
        return os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))
    return None


PY_NAME = re.compile(r"^python[0-9.]*[a-z]*(-dbg)?(\.exe)?$", re.I if os.name == "nt" else 0)
PY_OPTS_WITH_ARG = {"W", "X"}


def python_options_that_skip_bootstrap(cmd):
    """The interpreter options in cmd (when cmd[0] is a python) that would skip sitecustomize/PYTHONPATH."""
    if not PY_NAME.match(os.path.basename(cmd[0])):
        return []
    bad = []
    args = iter(cmd[1:])
    for a in args:
        if a == "--" or a == "-" or not a.startswith("-"):
            break
        if a.startswith("--"):
            if a == "--check-hash-based-pycs":
                next(args, None)
            continue
        letters = a[1:]
        for i, ch in enumerate(letters):
            if ch in "IES":
                bad.append("-" + ch)
            if ch in ("c", "m"):
                return bad  # the rest is the program
            if ch in PY_OPTS_WITH_ARG:
                if i == len(letters) - 1:
                    next(args, None)
                break
    return bad


def interpreter_of(exe):
    """The Python interpreter exe is or runs (a '#!' line naming a python), else None."""
    if PY_NAME.match(os.path.basename(exe)):
        return exe
    try:
        with open(exe, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    words = first[2:].decode("utf-8", "replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        found = shutil.which(words[0]) if words else None
        words = [found] if found else []
    if words and PY_NAME.match(os.path.basename(words[0])):
        return words[0]
    return None


def interpreter_mismatch(exe, pkgdir):
    """A message when the program's interpreter has no _spprof build in pkgdir (it would run unprofiled)."""
    py = interpreter_of(exe)
    if py is None:
        return None
    # The interpreter running this tool (the usual case: `spprof record -- python3 ...` with the same python3):
    # its own extension suffix, without starting a second interpreter to ask (~8 ms of every run).
    py_path = shutil.which(py) if os.sep not in py else py
    try:
        same = py_path is not None and os.path.samefile(os.path.realpath(py_path), os.path.realpath(sys.executable))
    except OSError:
        same = False
    if same:
        import importlib.machinery
        suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
        if os.path.isfile(os.path.join(pkgdir, "spprof", "_spprof" + suffix)):
            return None
    import subprocess
    try:
        res = subprocess.run([py, "-S", "-c", "import sys, sysconfig; "
                              "print(sysconfig.get_config_var('EXT_SUFFIX') or ''); print(sys.version.split()[0])"],
                             capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None  # cannot ask: the program's own start will tell
    lines = res.stdout.split()
    if res.returncode != 0 or len(lines) < 2 or not lines[0]:
        return None
    suffix, version = lines[0], lines[1]
    if os.path.isfile(os.path.join(pkgdir, "spprof", "_spprof" + suffix)):
        return None
    builds = sorted(n[len("_spprof"):] for n in os.listdir(os.path.join(pkgdir, "spprof"))
                    if n.startswith("_spprof") and n.endswith(".so"))
    return (f"{py} is Python {version} (extension suffix {suffix}), and spprof in {pkgdir} has no build for it "
            f"(builds: {', '.join(builds) or 'none'}); {BUILD_HINT.format(py=shutil.which(py) or py)} "
            "and run again (the program was not run)")


def start_watcher(name, outs):
    """Starts the watcher; returns the descriptor the program reports on (-1: no watcher).

    The watcher says on stderr when the program ended without writing a profile or saying why: it was not
    Python (the bootstrap never reported "S"), or it was killed where no code runs (SIGKILL, the OOM killer:
    "S" without "D"). It is double-forked before the exec (the intermediate is reaped here), so it is not the
    program's child (wait() and SIGCHLD are the program's as before), and it calls setsid(): it is in no
    process group of the program's (kill(0, ...), the terminal's Ctrl-C / job control do not reach it). It
    keeps only stderr (its stdin and stdout are /dev/null, so a pipe on the program's stdout ends with it).
    The program gets one descriptor, the write end of a pipe, as high as RLIMIT_NOFILE allows (its own
    descriptors stay numbered as without spprof); the bootstrap makes it close-on-exec. The program's exit
    is seen through a pidfd of this process (the exec keeps the pid), else by polling."""
    import fcntl
    import resource
    try:
        pidfd = os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        pidfd = -1
    try:
        r, w = os.pipe()
    except OSError:
        return -1
    pid = os.getpid()
    try:
        inter = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return -1
    if inter == 0:  # the intermediate
        try:
            if os.fork() == 0:
                _watch(pid, pidfd, r, w, name, outs)
        finally:
            os._exit(0)
    os.waitpid(inter, 0)
    os.close(r)
    if pidfd >= 0:
        os.close(pidfd)
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        high = fcntl.fcntl(w, fcntl.F_DUPFD, max(3, min(soft, 1 << 20) - 1))
        os.close(w)
        w = high
    except (OSError, ValueError):
        pass
    os.set_inheritable(w, True)
    return w


def _watch(pid, pidfd, r, w, name, outs):
    import select
    import time
    try:
        os.setsid()
    except OSError:
        pass
    os.close(w)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    keep = sorted({0, 1, 2, r} | ({pidfd} if pidfd >= 0 else set()))
    lo = 0
    for k in keep:
        if lo < k:  # never an empty range: os.closerange(0, 0) can become close_range(0, ~0), closing all
            os.closerange(lo, k)
        lo = k + 1
    os.closerange(lo, 1 << 16)
    got = b""
    reading = True
    poller = select.poll()
    poller.register(r, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    while True:
        events = poller.poll(None if pidfd >= 0 else 100)
        exited = False
        for fd, ev in events:
            if fd == r:
                data = os.read(r, 64)
                if data:
                    got += data
                else:  # every write end closed: stop watching the pipe
                    poller.unregister(r)
                    reading = False
            elif fd == pidfd:
                exited = True
        if pidfd < 0:
            exited = not _alive(pid)
        if exited:
            break
        if not reading and pidfd < 0:
            time.sleep(0.1)
    if reading:
        os.set_blocking(r, False)
        try:
            got += os.read(r, 64) or b""
        except OSError:
            pass
    if b"D" in got:
        return
    where = ", ".join("standard output" if o == "/dev/stdout" else o for o in outs)
    if b"S" not in got:
        why = (f"{name} did not start spprof: it is not a Python program (or it ended before Python's start-up "
               "finished)")
    else:
        why = ("the program ended where no code of it could run (SIGKILL, the OOM killer, or a crash that "
               "skipped the exit handlers)")
    try:
        os.write(2, f"spprof record: no profile written: {why}; nothing written to {where}\n".encode("utf-8", "replace"))
    except OSError:
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def default_output(cmd):
    """spprof-PROGRAM-YYYYMMDD-HHMMSS.svg (as py-spy names its default): PROGRAM is the script's or module's
    name when cmd runs a python, else the command's."""
    import time
    prog = os.path.basename(cmd[0])
    if PY_NAME.match(prog):
        args = iter(cmd[1:])
        for a in args:
            if a == "-m":
                prog = next(args, prog)
                break
            if a.startswith("-m") and len(a) > 2:
                prog = a[2:]
                break
            if a in ("-c", "-"):
                prog = "python"
                break
            if a.startswith("-"):
                if a in ("-W", "-X", "--check-hash-based-pycs"):
                    next(args, None)
                continue
            prog = os.path.basename(a)
            break
    prog = re.sub(r"\.pyw?$", "", prog)
    prog = re.sub(r"[^A-Za-z0-9_.-]+", "_", prog).strip("._") or "python"
    return f"spprof-{prog}-{time.strftime('%Y%m%d-%H%M%S')}.svg"


def program_and_package(parser, tool, cmd):
    """What `record` and `top` check before running COMMAND: python options that would skip the bootstrap
    (a usage error), the program (exit 127 if not found), the package, its bootstrap, and a build of it for
    the program's interpreter (exit 2). Returns (exe, pkgdir), or the exit status after saying why."""
    bad = python_options_that_skip_bootstrap(cmd)
    if bad:
        fail(parser, f"python option(s) {' '.join(sorted(set(bad)))} would skip spprof's start-up hook "
                     "(site/PYTHONPATH); run without them")
    exe = shutil.which(cmd[0]) if os.sep not in cmd[0] else cmd[0]
    if exe is None or not os.path.exists(exe):
        print(f"spprof {tool}: command not found: {cmd[0]}", file=sys.stderr)
        return 127
    pkgdir = find_package_dir()
    if pkgdir is None:
        print(f"spprof {tool}: cannot find the spprof package (build it with `make`, or set "
              "SPPROF_PACKAGE_DIR to the directory that contains spprof/)", file=sys.stderr)
        return 2
    if not os.path.isfile(os.path.join(BOOTSTRAP_DIR, "sitecustomize.py")):
        print(f"spprof {tool}: bootstrap missing: {BOOTSTRAP_DIR}/sitecustomize.py", file=sys.stderr)
        return 2
    problem = interpreter_mismatch(exe, pkgdir)
    if problem:
        print(f"spprof {tool}: {problem}", file=sys.stderr)
        return 2
    return exe, pkgdir


def fail(parser, msg):
    parser.error(msg)  # prints usage + message, exits 2


def main(argv=None):
    """Runs the command line with argv (default sys.argv[1:]); returns the exit status (`record` execs the
    program instead of returning, when it can run it)."""
    if argv is None:
        argv = sys.argv[1:]
    parser, rec = make_parser()
    if argv[:1] == ["top"]:
        return top_main(parser, argv)
    if argv[:1] == ["record"] and "--" in argv:
        i = argv.index("--")
        opts, cmd = argv[:i], argv[i + 1:]
        args = parser.parse_args(opts)
        if args.cmd:
            fail(rec, f"unexpected arguments before '--': {' '.join(args.cmd)}")
        args.cmd = cmd
    else:
        args = parser.parse_args(argv)
        if args.cmd and args.cmd[0] == "--":
            args.cmd = args.cmd[1:]
    if not args.cmd:
        fail(rec, "no command given: spprof record [-o OUT] -- python3 script.py [args]")
    if not args.output:
        args.output = [default_output(args.cmd)]
    if args.memory:
        given = [name for name, v in (("-r/--rate", args.rate), ("--mode", args.mode), ("--source", args.source),
                                      ("--native", args.native or None), ("--threads", args.threads or None),
                                      ("--memory-limit", args.memory_limit)) if v is not None]
        if given:
            fail(rec, f"{', '.join(given)} {'do' if len(given) > 1 else 'does'} not apply to --memory (a memory "
                      "profile samples allocations, by --memory-rate-kb)")
    elif args.memory_rate_kb is not None:
        fail(rec, "--memory-rate-kb applies only with --memory")
    elif args.live_at_exit:
        fail(rec, "--live-at-exit applies only with --memory")
    if args.subprocesses and os.name == "nt":
        fail(rec, "--subprocesses needs a POSIX system")
    args.rate = 100.0 if args.rate is None else args.rate
    args.mode = args.mode or "cpu"
    args.source = args.source or "auto"
    args.memory_limit = 100.0 if args.memory_limit is None else args.memory_limit
    args.memory_rate_kb = 512.0 if args.memory_rate_kb is None else args.memory_rate_kb
    if args.mode == "wall" and args.source in ("perf", "perf-user"):
        fail(rec, f"--source {args.source} counts CPU time: it needs --mode cpu")
    for o in args.output:
        if o == "" or o.endswith(os.sep) or os.path.isdir(o):
            fail(rec, f"-o: not a file name: {o!r}")
    if not (1.0 / 1024 <= args.memory_rate_kb <= 2**30):
        fail(rec, f"--memory-rate-kb must be between 1/1024 and 2^30, got {args.memory_rate_kb:g}")
    found = program_and_package(rec, "record", args.cmd)
    if isinstance(found, int):
        return found
    exe, pkgdir = found

    # the program may chdir; "-" is standard output (written in place, as every device and FIFO)
    outs = ["/dev/stdout" if o == "-" else os.path.abspath(o) for o in args.output]
    for out in outs:
        try:
            os.makedirs(os.path.dirname(out), exist_ok=True)
        except OSError:
            pass  # reported at exit, when the profile goes to a temporary file instead

    env = dict(os.environ)
    old_pp = env.get("PYTHONPATH")
    env[ENV + "HAD_PYTHONPATH"] = "1" if old_pp is not None else "0"
    env[ENV + "PYTHONPATH"] = old_pp or ""
    env["PYTHONPATH"] = BOOTSTRAP_DIR + (os.pathsep + old_pp if old_pp else "")
    env[ENV + "PID"] = str(os.getpid())  # exec keeps the pid: only this process records
    env[ENV + "PKGDIR"] = pkgdir
    env[ENV + "OUTPUTS"] = json.dumps(outs)
    env[ENV + "FORMAT"] = args.format or ""
    env[ENV + "INTERVAL_MS"] = repr(1000.0 / args.rate)
    env[ENV + "MODE"] = args.mode
    env[ENV + "SOURCE"] = args.source
    env[ENV + "NATIVE"] = "1" if args.native else "0"
    env[ENV + "MEMORY_LIMIT_MB"] = repr(args.memory_limit)
    env[ENV + "THREADS"] = "1" if args.threads else "0"
    env[ENV + "QUIET"] = "1" if args.quiet else "0"
    env[ENV + "NOLINENO"] = "1" if args.nolineno else "0"
    if args.serve:
        env[ENV + "SERVE"] = json.dumps(list(args.serve))
    env[ENV + "MEMORY_AT_EXIT"] = "1" if args.live_at_exit else "0"
    if args.subprocesses:
        import tempfile
        env[ENV + "SUBPROCESSES"] = "1"
        if not any("{pid}" in o for o in outs):  # the children's profiles wait here for the program's end
            env[ENV + "PARTS"] = tempfile.mkdtemp(prefix="spprof-parts-")
    if args.memory and os.name == "nt":  # no preloaded library: the PyMem hooks, from the bootstrap on
        env[ENV + "MEMORY"] = "1"
        env[ENV + "MEMORY_RATE_KB"] = repr(args.memory_rate_kb)
    elif args.memory:
        shim = os.path.join(pkgdir, "spprof", "libspprof_alloc.so")
        if not os.path.isfile(shim):
            print(f"spprof record: --memory needs {shim} (build it with `make`)", file=sys.stderr)
            return 2
        env[ENV + "MEMORY"] = "1"
        env[ENV + "MEMORY_RATE_KB"] = repr(args.memory_rate_kb)
        env["SPPROF_MEM_RATE"] = str(max(1, int(round(args.memory_rate_kb * 1024))))
        env["LD_PRELOAD"] = shim + (" " + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")

    # Python ignores SIGPIPE and SIGXFSZ; the program gets the default dispositions, as from a shell.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":
        # Windows has no exec: the program runs as a child (spprof/_record.py run_child), its exit status is
        # returned as this process's
        if pkgdir not in sys.path:
            sys.path.insert(0, pkgdir)
        from spprof import _record
        return _record.run_child(exe, args.cmd, env)
    report_fd = start_watcher(args.cmd[0], outs)
    if report_fd >= 0:
        env[ENV + "REPORT_FD"] = str(report_fd)
    try:
        os.execve(exe, args.cmd, env)
    except OSError as e:
        print(f"spprof record: cannot run {args.cmd[0]}: {e.strerror}", file=sys.stderr)
        return 126 if e.errno in (13, 8) else 127  # EACCES, ENOEXEC
    return 0  # not reached


def top_main(parser, argv):
    """`spprof top`: forks the program (it streams to this process, see spprof/_top.py) and shows it."""
    top = parser.top_parser
    if "--" in argv:
        i = argv.index("--")
        args = parser.parse_args(argv[:i])
        if args.cmd:
            fail(top, f"unexpected arguments before '--': {' '.join(args.cmd)}")
        args.cmd = argv[i + 1:]
    else:
        args = parser.parse_args(argv)
    if not args.cmd:
        fail(top, "no command given: spprof top -- python3 script.py [args]")
    if os.name == "nt":
        fail(top, "top needs a POSIX system (fork, a pseudo-terminal)")
    if args.mode == "wall" and args.source in ("perf", "perf-user"):
        fail(top, f"--source {args.source} counts CPU time: it needs --mode cpu")
    found = program_and_package(top, "top", args.cmd)
    if isinstance(found, int):
        return found
    exe, pkgdir = found
    spec = importlib.util.spec_from_file_location("spprof_top_view", os.path.join(HERE, "_top.py"))
    view = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(view)

    import fcntl
    import socket
    env = dict(os.environ)
    old_pp = env.get("PYTHONPATH")
    env[ENV + "HAD_PYTHONPATH"] = "1" if old_pp is not None else "0"
    env[ENV + "PYTHONPATH"] = old_pp or ""
    env["PYTHONPATH"] = BOOTSTRAP_DIR + (os.pathsep + old_pp if old_pp else "")
    env[ENV + "PKGDIR"] = pkgdir
    env[ENV + "OUTPUTS"] = "[]"
    env[ENV + "INTERVAL_MS"] = repr(1000.0 / args.rate)
    env[ENV + "MODE"] = args.mode
    env[ENV + "SOURCE"] = args.source
    env[ENV + "NATIVE"] = "1" if args.native else "0"
    env[ENV + "QUIET"] = "1"
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:  # the program's descriptors stay numbered as without spprof: ours goes high
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        high = fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD, max(3, min(soft, 1 << 20) - 1))
    except (OSError, ValueError):
        high = os.dup(theirs.fileno())
    theirs.close()
    env[ENV + "TOP_FD"] = str(high)
    listener = None
    if args.subprocesses:  # every process connects by path; the directory is this user's only (0700)
        import tempfile
        sock_dir = tempfile.mkdtemp(prefix="spprof-top-")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(os.path.join(sock_dir, "s"))
        listener.listen(64)
        env[ENV + "TOP_SOCK"] = os.path.join(sock_dir, "s")
        env[ENV + "SUBPROCESSES"] = "1"
        env.pop(ENV + "TOP_FD")
    interactive = sys.stdout.isatty()
    if interactive:
        try:
            os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
        except OSError:
            interactive = False
    master = slave = -1
    if interactive and (os.isatty(1) or os.isatty(2)):
        master, slave = os.openpty()
        try:
            import termios
            winsz = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, winsz)
        except (OSError, ImportError):
            pass
    command = " ".join(args.cmd)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            mine.close()
            if slave >= 0:
                for fd in (1, 2):
                    if os.isatty(fd):
                        os.dup2(slave, fd)
                os.close(slave)
                os.close(master)
            os.set_inheritable(high, True)
            env[ENV + "PID"] = str(os.getpid())
            for name in ("SIGPIPE", "SIGXFSZ"):
                if hasattr(signal, name):
                    signal.signal(getattr(signal, name), signal.SIG_DFL)
            os.execve(exe, args.cmd, env)
        except OSError as e:
            os.write(2, f"spprof top: cannot run {args.cmd[0]}: {e.strerror}\n".encode())
            os._exit(126 if e.errno in (13, 8) else 127)
        finally:
            os._exit(127)
    os.close(high)
    if slave >= 0:
        os.close(slave)
    try:
        status, data = view.run(pid, None if listener is not None else mine, command, master,
                                None if interactive else sys.stdout, listener)
    finally:
        if listener is not None:
            listener.close()
            try:
                os.unlink(env[ENV + "TOP_SOCK"])
                os.rmdir(os.path.dirname(env[ENV + "TOP_SOCK"]))
            except OSError:
                pass
    view.summary(data, command)
    if status is None:
        return 1
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        except (OSError, ValueError):
            pass
        return 128 + sig
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
