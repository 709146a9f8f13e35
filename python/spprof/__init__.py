"""spprof - an in-process sampling profiler for CPython (3.9 to 3.14, free-threaded too) built on spprof.h.

    import spprof

    spprof.start(interval_ms=1, mode="cpu")      # or mode="wall": idle and blocked threads too
    work()
    profile = spprof.stop()                      # a Profile: samples, threads, stats
    profile.save("out.speedscope.json")          # https://www.speedscope.app
    profile.save("out.collapsed")                # flamegraph.pl / speedscope / tools/top.py
    profile.save("out.pb.gz")                    # pprof: go tool pprof, Pyroscope, Parca
    profile.save("out.svg")                      # interactive flame graph, opens in any browser
    spprof.serve(port=6060)                      # /debug/pprof/profile?seconds=N, /heap (go tool pprof, Alloy)

    with spprof.Profiler(interval_ms=1) as p:    # p.profile after the block
        work()

    @spprof.profile(interval_ms=1, output="work.json")   # or plain @spprof.profile
    def work(): ...                                       # work.last_profile after each call

Every thread of the process is sampled (threads started later too); each sample is taken by a POSIX timer
and a signal handler on the very thread whose time elapsed, so no thread has to hold the GIL for it.
mode="cpu" counts each thread's own CPU time (idle threads are not sampled); mode="wall" counts elapsed
time (sleeping, blocked and waiting threads too).

Sample.frames are ROOT FIRST: frames[0] is the outermost call (e.g. "<module>"), frames[-1] the leaf, the
function that was running. One sample may stand for several intervals (POSIX CPU-time timers fire on
kernel ticks; perf samples are weighted by the CPU time they cover): use Sample.weight (intervals), not
Sample.count (signals), for time.

native=True gives mixed stacks: native frames (C extensions, libraries, the interpreter's own C code) in call
order, each interpreter-loop frame replaced by the Python frames it runs. It needs frame pointers in the
native code it should see through (or a build with SPPROF_USE_LIBUNWIND); where the two walks disagree, the
stack ends with a "[mixed stack: ...]" marker frame instead of a guess.
fork(): a session stays with the process that started it; the parent's goes on and its profile holds only its
own samples. A forked child is not sampled and has no profile: is_active() is False, stop() raises
spprof.Error naming the fork (nothing is written), a Profiler block or @profile call begun in the parent ends
quietly in the child (its profile None, no output written); start() in the child begins a session of its own.
spprof.memprof likewise: in a forked child the memory profiler is "off" (get_snapshot()/stop() raise naming
the fork; none of the parent's samples), and memprof.start() there begins a clean session.
Before 3.11, functions are named by co_name only (no qualified name there).
"""
from __future__ import annotations

import atexit
import errno as _errno
import functools
import math
import numbers
import os
import stat
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Tuple

from . import _spprof

__all__ = [
    "start", "stop", "pause", "resume", "is_active", "state", "stats",
    "Profiler", "profile", "Profile", "Sample", "Frame", "Error", "serve",
    "MIN_INTERVAL_MS", "MAX_INTERVAL_MS",
]
__version__ = getattr(_spprof, "__version__", "0.1.0")

#: Raised for lifecycle errors: start while started, stop/pause/resume while stopped, pause while paused...
Error = _spprof.Error


def get_include() -> str:
    """The directory holding spprof.h and spprof_python.h (installed with the package, the same version as
    this module), for building a C extension that carries the profiler: include_dirs=[spprof.get_include()]."""
    here = os.path.dirname(os.path.abspath(__file__))
    inc = os.path.join(here, "include")
    root = os.path.dirname(os.path.dirname(here))  # an editable install runs python/spprof/ of the source
    if not os.path.isfile(os.path.join(inc, "spprof.h")) and os.path.isfile(os.path.join(root, "spprof.h")):
        return root
    return inc

MIN_INTERVAL_MS = 0.05
MAX_INTERVAL_MS = 60000.0
MAX_DEPTH_LIMIT = 1024
_MODES = {"cpu": 0, "wall": 1}
_SOURCES = {"auto": 0, "posix": 1, "perf": 2, "perf-user": 3}
_FORMATS = ("speedscope", "collapsed", "pprof", "svg")


# ---- data ---------------------------------------------------------------------------------------------

class Frame(NamedTuple):
    """One Python frame: qualified function name, file name, line being executed (0 when unknown).

    Special frames: ("<freed code object 0x...>", "", 0) when the code object died before it could be
    resolved, and ("[native code]", "", 0) for threads that were not running Python code."""
    function: str
    file: str
    line: int

    def __str__(self) -> str:
        if self.file and self.line > 0:
            return f"{self.function} ({self.file}:{self.line})"
        if self.file:  # native frames, and frames aggregated by function: no ":0"
            return f"{self.function} ({self.file})"
        return self.function


class Sample(NamedTuple):
    """A run of `count` identical consecutive samples of one thread.

    thread_id: the OS (native) thread id, as threading.get_native_id() / Thread.native_id.
    timestamp / end_timestamp: time.monotonic() seconds of the first / last sample of the run.
    weight: sampling intervals the run stands for (count plus timer overruns); time = weight * interval.
    frames: tuple of Frame, ROOT FIRST (frames[-1] is the leaf, the code that was running)."""
    thread_id: int
    thread_name: str
    timestamp: float
    count: int
    weight: int
    frames: Tuple[Frame, ...]
    end_timestamp: float

    @property
    def leaf(self) -> Optional[Frame]:
        """The frame that was running (frames[-1]), or None for an empty stack."""
        return self.frames[-1] if self.frames else None


class Profile:
    """The result of one profiling session; independent of the C core once built (save it any time)."""

    def __init__(self, samples: Iterable[Sample], interval_ms: float, mode: str, start_time: float,
                 duration: float, stats: Optional[Dict[str, int]] = None):
        self.samples: List[Sample] = list(samples)
        self.interval_ms = float(interval_ms)
        self.mode = mode
        self.start_time = float(start_time)      # time.monotonic() seconds when the session started
        self.duration = float(duration)          # seconds from start to stop (wall clock)
        self.stats: Dict[str, int] = dict(stats or {})
        # `record --subprocesses`: {thread id: (pid, command)} of a profile merged from several processes;
        # the writers then name each thread's process (empty: one process, nothing added)
        self.processes: Dict[int, Tuple[int, str]] = {}

    def process_of(self, tid: int) -> Optional[str]:
        """"pid N (command)" of a merged profile's thread, else None."""
        p = self.processes.get(tid)
        return f"pid {p[0]} ({p[1]})" if p is not None else None

    def __repr__(self) -> str:
        return (f"<spprof.Profile mode={self.mode!r} interval_ms={self.interval_ms:g} "
                f"duration={self.duration:.3f}s samples={self.sample_count} threads={len(self.threads())}>")

    @property
    def sample_count(self) -> int:
        """Number of samples taken (signals handled), summed over runs."""
        return sum(s.count for s in self.samples)

    @property
    def total_weight(self) -> int:
        """Sampling intervals covered by all samples (time = total_weight * interval_ms)."""
        return sum(s.weight for s in self.samples)

    @property
    def total_time(self) -> float:
        """Sampled time in seconds, summed over threads (CPU seconds in cpu mode)."""
        return self.total_weight * self.interval_ms / 1000.0

    def threads(self) -> Dict[int, str]:
        """{native thread id: thread name} of every thread with samples, in order of first appearance."""
        out: Dict[int, str] = {}
        for s in self.samples:
            if s.thread_id not in out:
                out[s.thread_id] = s.thread_name
        return out

    def samples_of(self, thread: Any) -> List[Sample]:
        """The samples of one thread, given by native id (int) or by name (str)."""
        if isinstance(thread, str):
            return [s for s in self.samples if s.thread_name == thread]
        return [s for s in self.samples if s.thread_id == thread]

    def function_shares(self, thread: Any = None, inclusive: bool = False) -> Dict[str, float]:
        """{function qualname: share of the sampled time} by weight, highest first.

        Self time (the leaf frame) by default; inclusive=True counts every function on the stack once.
        thread: restrict to one thread (native id or name)."""
        samples = self.samples if thread is None else self.samples_of(thread)
        total = sum(s.weight for s in samples)
        acc: Dict[str, int] = {}
        for s in samples:
            if not s.frames:
                acc["[empty]"] = acc.get("[empty]", 0) + s.weight
            elif inclusive:
                for fn in {f.function for f in s.frames}:
                    acc[fn] = acc.get(fn, 0) + s.weight
            else:
                fn = s.frames[-1].function
                acc[fn] = acc.get(fn, 0) + s.weight
        if not total:
            return {}
        return {k: v / total for k, v in sorted(acc.items(), key=lambda kv: (-kv[1], kv[0]))}

    def by_function(self) -> "Profile":
        """A copy whose frames are keyed by function and file, without the line (py-spy's --nolineno): a
        function is one frame (one row in Speedscope's sandwich view, one box per caller in a flame graph)
        whatever line it was on. Runs of one thread whose stacks become equal stay separate samples."""
        stacks: Dict[tuple, Tuple[Frame, ...]] = {}
        out = []
        for s in self.samples:
            st = stacks.get(s.frames)
            if st is None:
                st = stacks[s.frames] = _without_lines(s.frames)
            out.append(s._replace(frames=st))
        prof = Profile(out, self.interval_ms, self.mode, self.start_time, self.duration, self.stats)
        prof.processes = dict(self.processes)
        return prof

    # ---- writers (pure Python, from this object's own data) ----

    def to_speedscope(self) -> Dict[str, Any]:
        """The Speedscope document (https://www.speedscope.app/file-format-schema.json) as a dict."""
        interval_ns = int(round(self.interval_ms * 1e6))
        t0 = int(round(self.start_time * 1e9))
        frames = _SpeedscopeFrames()
        per_thread: Dict[int, List[Sample]] = {}
        for s in self.samples:
            per_thread.setdefault(s.thread_id, []).append(s)
        profiles = []
        for tid, runs in per_thread.items():
            stacks, weights = [], []
            for s in runs:
                stacks.append(frames.stack(s.frames))  # root first, as Speedscope wants
                weights.append(s.weight * interval_ns)
            start = max(0, int(round(runs[0].timestamp * 1e9)) - t0)
            profiles.append({
                "type": "sampled",
                "name": (f"{self.process_of(tid)}: " if tid in self.processes else "") +
                        f"{runs[0].thread_name or 'thread'} (tid {tid})",
                "unit": "nanoseconds",
                "startValue": start,
                "endValue": start + sum(weights),
                "samples": stacks,
                "weights": weights,
            })
        if not profiles:  # a valid file that viewers still open
            profiles.append({"type": "sampled", "name": "no samples (raise the rate or profile a longer run)",
                             "unit": "nanoseconds", "startValue": 0, "endValue": 0, "samples": [], "weights": []})
        # Speedscope opens the busiest thread (the first one, among equals), not whichever came first
        busiest = max(range(len(profiles)), key=lambda i: (sum(profiles[i]["weights"]), -i))
        return _speedscope_document(f"spprof profile ({self.mode} time, {self.interval_ms:g} ms)", frames, profiles,
                                    busiest)

    def to_collapsed(self, threads: bool = False) -> str:
        """Collapsed stacks: one "root;...;leaf COUNT" line per distinct stack, COUNT in sampling intervals
        (weight). Frames read "function (file:line)". threads=True: per thread, the first frame being
        "<thread name> (tid N)"."""
        acc: Dict[str, int] = {}
        # Runs of one stack share one frames tuple (_build_profile), so each distinct stack is formatted once:
        # the tuples are held by self.samples for the whole loop, so their ids stay theirs.
        joined: Dict[int, str] = {}
        for s in self.samples:
            text = joined.get(id(s.frames))
            if text is None:
                text = joined[id(s.frames)] = ";".join([_collapsed_name(str(f)) for f in s.frames]) or "[empty]"
            if threads:
                text = _collapsed_name(f"{s.thread_name or 'thread'} (tid {s.thread_id})") + ";" + text
            if s.thread_id in self.processes:  # merged from several processes: the process first
                text = _collapsed_name(self.process_of(s.thread_id) or "") + ";" + text
            acc[text] = acc.get(text, 0) + s.weight
        return "".join(f"{k} {v}\n" for k, v in acc.items() if v > 0)

    def to_pprof(self) -> bytes:
        """gzip-compressed pprof (profile.proto): go tool pprof, Pyroscope, Parca. Sample types samples/count
        and cpu (wall)/nanoseconds, one sample per thread and stack, labels "thread" and "thread_id"."""
        from ._pprof import profile_pprof
        return profile_pprof(self)

    def to_svg(self, title: Optional[str] = None, threads: bool = False) -> str:
        """A self-contained interactive SVG flame graph (hover, click to zoom, search; no external files),
        widths in time; title: default the command line of this process; threads: one tower per thread."""
        from ._flame import profile_svg
        return profile_svg(self, title, threads)

    def save(self, path: "os.PathLike[str] | str", format: Optional[str] = None, threads: bool = False,
             title: Optional[str] = None) -> str:
        """Write the profile to path and return the path written.

        format: "speedscope" (JSON), "collapsed", "pprof" (gzip-compressed profile.proto) or "svg" (an
        interactive flame graph); None picks by extension (.json -> speedscope, .pb.gz / .pprof -> pprof,
        .svg -> svg, anything else -> collapsed). threads: collapsed and svg, start each stack with its
        thread. title: svg, the graph's title (default: this process's command line).
        A regular file (or a symlink to one, which stays a symlink) is written beside its real target and
        renamed over it, so a failed save leaves no partial file; a device, FIFO or /dev/stdout-style path is
        written in place, never replaced. On failure it raises OSError with the reason and this Profile is
        unchanged (save it elsewhere)."""
        return _save(path, format, "Profile.save", self.to_speedscope, lambda: self.to_collapsed(threads=threads),
                     pprof=self.to_pprof, svg=lambda: self.to_svg(title, threads))


def _without_lines(frames: Tuple[Frame, ...]) -> Tuple[Frame, ...]:
    return tuple(f._replace(line=0) if f.line else f for f in frames)


class _SpeedscopeFrames:
    """The shared frame table of a Speedscope document: each distinct Frame once, stacks as indices."""

    def __init__(self) -> None:
        self.index: Dict[Frame, int] = {}
        self.frames: List[Dict[str, Any]] = []

    def stack(self, frames: Iterable[Frame]) -> List[int]:
        out = []
        for f in frames:
            i = self.index.get(f)
            if i is None:
                i = self.index[f] = len(self.frames)
                d: Dict[str, Any] = {"name": f.function or "?"}
                if f.file:
                    d["file"] = f.file
                if f.line > 0:
                    d["line"] = f.line
                self.frames.append(d)
            out.append(i)
        return out


def _speedscope_document(name: str, frames: _SpeedscopeFrames, profiles: List[Dict[str, Any]],
                         active: int = 0) -> Dict[str, Any]:
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "exporter": f"spprof {__version__} (python)",
        "name": name,
        "activeProfileIndex": active,
        "shared": {"frames": frames.frames},
        "profiles": profiles,
    }


def _save(path: "os.PathLike[str] | str", format: Optional[str], what: str,
          speedscope: Callable[[], Dict[str, Any]], collapsed: Callable[[], str],
          **others: Callable[[], "str | bytes"]) -> str:
    """Writes speedscope() as JSON, collapsed() as text, or others[format]() (pprof: bytes) to path (format,
    or by extension), atomically."""
    path = os.fspath(path)
    if not isinstance(path, str):
        path = os.fsdecode(path)
    if not path:
        raise ValueError(f"{what}: path is empty")
    fmt = _format_for(path, format)
    data: "str | bytes"
    if fmt == "speedscope":
        import json  # here, not at the top: every profiled program pays the module's imports at start-up
        data = json.dumps(speedscope(), separators=(",", ":"), ensure_ascii=False) + "\n"
    elif fmt == "collapsed":
        data = collapsed()
    else:
        data = others[fmt]()
    _write_output(path, data)
    return path


def _collapsed_name(s: str) -> str:
    return s.replace(";", ":").replace("\n", " ").replace("\r", " ")


_EXTENSIONS = ((".json", "speedscope"), (".pb.gz", "pprof"), (".pprof", "pprof"), (".svg", "svg"))


def _format_for(path: str, format: Optional[str]) -> str:
    if format is None:
        low = path.lower()
        return next((f for ext, f in _EXTENSIONS if low.endswith(ext)), "collapsed")
    if not isinstance(format, str) or format not in _FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, _FORMATS))} (or None: by extension), got {format!r}")
    return format


_FD_PREFIXES = ("/dev/fd/", "/proc/self/fd/")


def _fd_of_path(path: str) -> Optional[int]:
    """N for /dev/fd/N and /proc/self/fd/N (N all digits), else None. (No `re`: see the imports.)"""
    for pre in _FD_PREFIXES:
        if path.startswith(pre):
            n = path[len(pre):]
            return int(n) if n and n.isascii() and n.isdigit() else None
    return None
_STD_PATHS = {"/dev/stdin": 0, "/dev/stdout": 1, "/dev/stderr": 2}
# Flags that exist on one platform only: O_CLOEXEC/O_NOCTTY (POSIX); on Windows os.open already makes a
# non-inheritable descriptor, and O_BINARY keeps the C runtime from turning "\n" into "\r\n".
_O_OUT = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_O_NOCTTY = getattr(os, "O_NOCTTY", 0)


def _write_output(path: str, data: "str | bytes") -> None:
    """The one output policy of every Python writer (the C writers do the same, spprof.h @writers):
    - /dev/stdout, /dev/stderr, /dev/fd/N, /proc/self/fd/N: written to that descriptor as it is (its offset,
      its O_APPEND; reopening would start at offset 0 and a rename would replace what the shell opened);
    - an existing path that is not a regular file (character device, FIFO, socket): opened for writing in
      place, without O_CREAT / O_TRUNC, never renamed over (/dev/null stays a device, a FIFO's reader gets
      the profile, /dev/full gives ENOSPC);
    - otherwise (a regular file or nothing): symlinks resolved, "<real>.tmp.<pid>" written beside the real
      target with the target's permission bits (else 0666 & ~umask) and renamed over it: a symlink stays a
      symlink, a failed write leaves no partial file.
    Raises OSError naming path and the reason."""
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "replace")
    tmp = None
    try:
        fdno = _fd_of_path(path)
        if fdno is None:
            fdno = _STD_PATHS.get(path)
        if fdno is not None:
            _write_all(fdno, raw)
            return
        try:
            st: Optional[os.stat_result] = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(_errno.EISDIR, os.strerror(_errno.EISDIR))
            fd = os.open(path, os.O_WRONLY | _O_NOCTTY | _O_OUT)
            try:
                _write_all(fd, raw)
            finally:
                os.close(fd)
            return
        real = os.path.realpath(path)
        tmp = f"{real}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_OUT, 0o666)
        try:
            if st is not None:
                os.fchmod(fd, stat.S_IMODE(st.st_mode))  # keep the target's permissions (e.g. 0600)
            _write_all(fd, raw)
        finally:
            os.close(fd)
        os.replace(tmp, real)
        tmp = None
    except OSError as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        code = e.errno if e.errno is not None else _errno.EIO
        raise OSError(code, f"cannot write profile to {path!r}: {e.strerror or e} "
                            "(the profile is kept; save it elsewhere)", path) from e


def _write_all(fd: int, raw: bytes) -> None:
    view = memoryview(raw)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# ---- validation ---------------------------------------------------------------------------------------

def _api_error(e: BaseException, call: str, hint: str = "") -> Exception:
    """spprof.Error naming the Python call (not the C function behind it), with what to do."""
    msg = str(e)
    head, sep, rest = msg.partition(": ")
    if sep and head.startswith("spprof_") and " " not in head:
        msg = rest
    if "first" in msg or "one-way" in msg:  # the message already says what to do
        hint = ""
    return Error(f"{call}: {msg}" + (f": {hint}" if hint else ""))


def _check_number(name: str, value: Any, lo: float, hi: float, unit: str = "") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{name} must be between {lo:g} and {hi:g}{unit}, got {value!r}")
    return v


def _check_config(interval_ms: Any, mode: Any, native: Any, memory_limit_mb: Any, max_depth: Any,
                  source: Any = "auto") -> Tuple[int, int, int, int, int]:
    interval = _check_number("interval_ms", interval_ms, MIN_INTERVAL_MS, MAX_INTERVAL_MS, " ms")
    if not isinstance(mode, str):
        raise TypeError(f"mode must be 'cpu' or 'wall', got {type(mode).__name__} ({mode!r})")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'cpu' or 'wall', got {mode!r}")
    if not isinstance(native, bool):
        raise TypeError(f"native must be True or False, got {native!r}")
    mem = _check_number("memory_limit_mb", memory_limit_mb, 1, 1 << 20, " MiB")
    if isinstance(max_depth, bool) or not isinstance(max_depth, numbers.Integral):
        raise TypeError(f"max_depth must be an int, got {type(max_depth).__name__} ({max_depth!r})")
    if not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be between 1 and {MAX_DEPTH_LIMIT}, got {max_depth!r}")
    if not isinstance(source, str) or source not in _SOURCES:
        raise ValueError(f"source must be one of {', '.join(map(repr, _SOURCES))}, got {source!r}")
    if mode == "wall" and source in ("perf", "perf-user"):
        raise ValueError(f"source={source!r} counts CPU time: it needs mode='cpu'")
    return (max(1, int(round(interval * 1e6))), _MODES[mode], int(mem * (1 << 20)), int(max_depth),
            _SOURCES[source])


# ---- session: thread names, thread-start hook ------------------------------------------------------------

class _Session:
    def __init__(self, interval_ms: float, mode: str):
        self.interval_ms = interval_ms
        self.mode = mode
        self.start_ns = 0
        self.names: Dict[int, str] = {}   # native id -> Python thread name (latest known)
        self.pid = os.getpid()


_lock = threading.RLock()
_session: Optional[_Session] = None
_orig_bootstrap_inner: Optional[Callable[..., Any]] = None


def _note_live_threads(names: Dict[int, str]) -> None:
    for t in threading.enumerate():
        nid = getattr(t, "native_id", None)
        if nid is not None:
            names[nid] = t.name


def _bootstrap_inner_hook(self: threading.Thread) -> Any:
    """Replaces threading.Thread._bootstrap_inner while profiling: records native id -> name and has the
    new thread sampled at once (the C core would otherwise find it at its next /proc scan, <= 20 ms)."""
    orig = _hook_target
    sess = _session
    nid = None
    if sess is not None:
        try:
            nid = threading.get_native_id()
            sess.names[nid] = self.name
            _spprof.register_thread()
        except Exception:
            pass  # stopped meanwhile, or the thread is already known: the scan finds it anyway
    try:
        return orig(self)
    finally:
        if sess is not None and nid is not None:
            try:
                sess.names[nid] = self.name  # the name it ended with (threads may rename themselves)
            except Exception:
                pass


# What the hook calls: the method it replaced. Never cleared, so a thread that enters the hook just as it is
# being removed still runs the real thing.
_hook_target: Callable[..., Any] = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]


def _install_hook() -> None:
    global _orig_bootstrap_inner, _hook_target
    cur = threading.Thread.__dict__.get("_bootstrap_inner")
    if cur is None or cur is _bootstrap_inner_hook:
        return
    _orig_bootstrap_inner = _hook_target = cur
    threading.Thread._bootstrap_inner = _bootstrap_inner_hook  # type: ignore[attr-defined]


def _remove_hook() -> None:
    global _orig_bootstrap_inner
    if _orig_bootstrap_inner is not None and threading.Thread.__dict__.get("_bootstrap_inner") is _bootstrap_inner_hook:
        threading.Thread._bootstrap_inner = _orig_bootstrap_inner  # type: ignore[attr-defined]
    _orig_bootstrap_inner = None


def _after_fork_in_child() -> None:
    # The C core starts stopped and clean in a forked child (not sampled, no profile: stop() raises, naming the
    # fork); forget the parent's session. Profilers and @profile calls begun in the parent end quietly here.
    global _session
    _session = None
    _remove_hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---- public API -----------------------------------------------------------------------------------------

def start(interval_ms: float = 10, mode: str = "cpu", native: bool = False, memory_limit_mb: float = 100,
          max_depth: int = 128, source: str = "auto") -> None:
    """Start sampling every thread of the process.

    interval_ms: sampling interval, 0.05 .. 60000 ms. mode: "cpu" (each thread's CPU time) or "wall".
    native: mixed native + Python stacks (see the module docstring).
    memory_limit_mb: bound on the in-memory profile (samples beyond it are counted in stats, not kept).
    max_depth: deepest stack recorded (1 .. 1024 frames).
    source: where the sampling signals come from: "auto" (CPU mode: a perf_event task-clock per thread where
    the kernel allows it, which keeps the full rate; else POSIX timers), "posix" (POSIX timers, CPU clocks
    fire on kernel ticks: intervals shorter than the tick give fewer samples of larger weight), "perf" or
    "perf-user" (perf only, fails if the kernel refuses; -user counts user mode only).
    Raises TypeError / ValueError for bad arguments, spprof.Error if already started, OSError if the
    timers cannot be set up."""
    global _session
    interval_ns, mode_no, mem, depth, source_no = _check_config(interval_ms, mode, native, memory_limit_mb,
                                                                 max_depth, source)
    with _lock:
        if _session is not None and _session.pid != os.getpid():
            _session = None
        sess = _Session(interval_ns / 1e6, mode)
        _note_live_threads(sess.names)
        sess.start_ns = time.monotonic_ns()
        try:
            _spprof.start(interval_ns, mode_no, depth, mem, source_no, int(native))
        except Error as e:
            raise _api_error(e, "spprof.start()", "call spprof.stop() first" if _spprof.is_active() else "") from None
        _session = sess
        _install_hook()


def stop() -> Profile:
    """Stop sampling and return the Profile. Raises spprof.Error when not started."""
    global _session
    with _lock:
        sess = _session
        try:
            _spprof.stop()
        except Error as e:
            raise _api_error(e, "spprof.stop()", "call spprof.start() first") from None
        stop_ns = time.monotonic_ns()
        _remove_hook()
        _session = None
        if sess is None:  # started through _spprof directly
            sess = _Session(float("nan"), "?")
            sess.start_ns = stop_ns
        _note_live_threads(sess.names)
        names = sess.names
        main = threading.main_thread()
        if getattr(main, "native_id", None) is not None:
            names.setdefault(main.native_id, main.name)
        for nid, name in names.items():
            try:
                _spprof.set_thread_name(nid, name)  # for the C writers too
            except Exception:
                pass
        stats = _spprof.stats()
        raw = _spprof.samples()
        return _build_profile(raw, names, sess, stop_ns, stats)


def _build_profile(raw: List[tuple], names: Dict[int, str], sess: _Session, stop_ns: int,
                   stats: Dict[str, int]) -> Profile:
    frame_cache: Dict[tuple, Frame] = {}
    stack_cache: Dict[tuple, Tuple[Frame, ...]] = {}
    samples = []
    hook = (_bootstrap_inner_hook.__qualname__, _bootstrap_inner_hook.__code__.co_filename)
    for tid, cname, t_first, t_last, count, weight, frames in raw:
        stack = stack_cache.get(frames)
        if stack is None:
            fl = []
            for f in reversed(frames):  # C gives leaf first; Sample.frames is root first
                if (f[0], f[1]) == hook:
                    continue  # our thread-start hook: not the program's code
                if f[2] <= 0 and f[0].startswith("spprof_"):
                    continue  # the profiler's own C functions (a thread sampled while it unregisters at exit):
                    # the time stays with the caller that ran them
                fr = frame_cache.get(f)
                if fr is None:
                    fr = frame_cache[f] = Frame(f[0], f[1], f[2])
                fl.append(fr)
            stack = stack_cache[frames] = tuple(fl)
        samples.append(Sample(tid, names.get(tid, cname), t_first / 1e9, count, weight, stack, t_last / 1e9))
    interval = sess.interval_ms
    if interval != interval:  # unknown (session not started through this module)
        interval = 0.0
    return Profile(samples, interval, sess.mode, sess.start_ns / 1e9, (stop_ns - sess.start_ns) / 1e9, stats)


def pause() -> None:
    """Stop taking samples until resume() (the session and its profile stay)."""
    try:
        _spprof.pause()
    except Error as e:
        raise _api_error(e, "spprof.pause()", "" if _spprof.is_active() else "call spprof.start() first") from None


def resume() -> None:
    """Take samples again after pause()."""
    try:
        _spprof.resume()
    except Error as e:
        raise _api_error(e, "spprof.resume()", "" if _spprof.is_active() else "call spprof.start() first") from None


def is_active() -> bool:
    """True between start() and stop() (running or paused)."""
    return bool(_spprof.is_active())


def state() -> str:
    """"stopped", "running" or "paused"."""
    return _spprof.state()


def stats() -> Dict[str, int]:
    """Counters of the current (or last) session: samples_captured, samples_dropped (ring full),
    samples_dropped_memory, timer_overruns, threads_sampled, walk_errors, unique_stacks, profile_bytes...;
    signal: the profiling signal (a free real-time signal, so the program's SIGPROF stays its own);
    handler_replaced: 1 if the program installed its own handler for that signal (sampling stopped then,
    with one line on stderr; the profile so far is kept); pin_passes: times the pinning thread took the GIL
    (0 where the code-object death hook is installed); ticks_late, suspensions, threads_skipped,
    suspend_ns_total, suspend_ns_max: the suspend-and-sample sampler thread (Windows; 0 on Linux)."""
    return dict(_spprof.stats())


def serve(host: str = "127.0.0.1", port: int = 0) -> Tuple[str, int]:
    """Serve /debug/pprof/ (Go's net/http/pprof endpoints: profile?seconds=N, heap, the index) from a daemon
    thread, for go tool pprof, Grafana Alloy / Pyroscope and Parca; returns (host, port). Loopback unless
    another host is given. See spprof/_serve.py."""
    from ._serve import serve as _serve
    return _serve(host, port)


class Profiler:
    """Context manager: `with spprof.Profiler(interval_ms=1) as p: work()`; then p.profile.

    output: also save the profile there on exit (format by extension unless given)."""

    def __init__(self, interval_ms: float = 10, mode: str = "cpu", native: bool = False,
                 memory_limit_mb: float = 100, max_depth: int = 128, output: Optional[str] = None,
                 format: Optional[str] = None):
        _check_config(interval_ms, mode, native, memory_limit_mb, max_depth)  # fail early, before the block
        if output is not None:
            _format_for(os.fspath(output), format)
        self.interval_ms, self.mode, self.native = interval_ms, mode, native
        self.memory_limit_mb, self.max_depth = memory_limit_mb, max_depth
        self.output, self.format = output, format
        self.profile: Optional[Profile] = None
        self._running = False
        self._pid = 0

    def start(self) -> "Profiler":
        start(self.interval_ms, self.mode, self.native, self.memory_limit_mb, self.max_depth)
        self._running = True
        self._pid = os.getpid()
        return self

    def stop(self) -> Profile:
        if not self._running:
            raise Error("Profiler.stop: this profiler is not running")
        if self._pid != os.getpid():
            raise Error(f"Profiler.stop: this profiler was started in pid {self._pid}, before this process forked "
                        "from it: its session stays the parent's (a forked child is not sampled and has no "
                        "profile; nothing written)")
        self._running = False
        self.profile = stop()
        if self.output is not None:
            self.profile.save(self.output, self.format)
        return self.profile

    def __enter__(self) -> "Profiler":
        return self.start()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._running and self._pid == os.getpid():  # a forked child leaves the block quietly: no profile
            self.stop()
        return False


def profile(func: Optional[Callable[..., Any]] = None, *, interval_ms: float = 10, mode: str = "cpu",
            memory_limit_mb: float = 100, max_depth: int = 128, output: Optional[str] = None,
            format: Optional[str] = None) -> Any:
    """Decorator: profile every call of the function. `@spprof.profile` or
    `@spprof.profile(interval_ms=1, output="f.json")`. After a call (also one that raised),
    `func.last_profile` holds its Profile. Recursive calls are profiled by the outermost call only; a
    call while another session runs raises spprof.Error."""
    Profiler(interval_ms, mode, False, memory_limit_mb, max_depth, output, format)  # validate now
    if func is None:
        return lambda f: profile(f, interval_ms=interval_ms, mode=mode, memory_limit_mb=memory_limit_mb,
                                 max_depth=max_depth, output=output, format=format)
    if not callable(func):
        raise TypeError(f"spprof.profile decorates a callable, got {type(func).__name__}")
    active = threading.local()

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if getattr(active, "on", False):
            return func(*args, **kwargs)
        p = Profiler(interval_ms, mode, False, memory_limit_mb, max_depth, output, format)
        p.start()
        active.on = True
        try:
            return func(*args, **kwargs)
        finally:
            active.on = False
            try:
                if p._pid == os.getpid():  # a forked child returns quietly: no profile (the parent's session)
                    p.stop()
            finally:
                wrapper.last_profile = p.profile  # type: ignore[attr-defined]

    wrapper.last_profile = None  # type: ignore[attr-defined]
    return wrapper


@atexit.register
def _stop_at_exit() -> None:
    """A session still running at interpreter exit is stopped cleanly (its profile is discarded unless
    someone saves it: tools/spprof record does)."""
    try:
        if _session is not None and _session.pid == os.getpid() and _spprof.is_active():
            stop()
    except Exception:
        pass
