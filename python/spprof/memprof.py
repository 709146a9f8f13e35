"""spprof.memprof: sampling memory profiler (which code holds memory, which code churns it).

    import spprof.memprof as memprof
    memprof.start(sampling_rate_kb=512)      # one sample per 512 KiB allocated, on average
    run()
    snap = memprof.get_snapshot()            # live sampled allocations, with unbiased estimates
    for frame, nbytes, count in snap.top_allocators(5):
        print(f"{nbytes / 2**20:8.1f} MiB  {frame}")
    snap.save("heap.json")                   # Speedscope; "heap.collapsed" for flame graphs
    snap.save("heap.pb.gz")                  # pprof: alloc_/inuse_ objects and space (go tool pprof)
    peak = snap.at_peak()                    # the heap at its high-water mark (snap.peak_bytes)
    peak.save("peak.svg")
    memprof.stop()                           # no new samples; frees are still tracked
    memprof.shutdown()                       # one-way: hooks removed, samples forgotten

    with memprof.MemoryProfiler(sampling_rate_kb=64) as mp:
        build_index()
    mp.snapshot.top_allocators()

Allocations are sampled as a Poisson process over the bytes: an allocation of `size` bytes is sampled with
probability 1 - exp(-size / rate) and then stands for size / p bytes and 1 / p allocations, so totals are
unbiased. Seen: Python's allocators (PyMem / PyObject, every domain), and malloc, calloc, realloc, free,
posix_memalign, aligned_alloc, memalign, valloc, pvalloc called from any loaded library (NumPy's buffers, C
extensions), including libraries loaded later. Not seen: memory a library gets with mmap directly, and
allocations inside libc itself (strdup, fopen buffers...). `tools/spprof record --memory` preloads
libspprof_alloc.so instead, which sees malloc from process start.

fork(): the session stays the parent's. In a forked child the state is "off": nothing is sampled,
get_snapshot() and stop() raise spprof.Error naming the fork (the parent's samples are not the child's), and
start() begins the child's own session, clean.
"""
from __future__ import annotations

import gc
import os
import time
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Tuple

from . import Error, Frame, _api_error, _check_number, _collapsed_name, _save, _speedscope_document, _SpeedscopeFrames
from . import _spprof as _C

__all__ = ["Error", "start", "stop", "shutdown", "get_snapshot", "get_peak_snapshot", "get_stats", "state",
           "is_active", "HeapSnapshot", "MemorySample", "MemoryProfiler"]

DEFAULT_SAMPLING_RATE_KB = 512

# The pid whose start() began the current session: a forked child has none of its own (see _forked_hint).
_start_pid: List[Optional[int]] = [None]


def _forked_hint() -> str:
    """Said when a forked child (state "off") uses its parent's session: fork() does not carry it over."""
    pid = _start_pid[0]
    if pid is None or pid == os.getpid():
        return ""
    return (f": this process was forked from pid {pid}, whose memory session stays the parent's (a forked child "
            "is not sampled and has none of its samples); call memprof.start() here for a session of its own")


class MemorySample(NamedTuple):
    """One sampled allocation.

    size: bytes requested. estimated_bytes / estimated_count: what this sample stands for (unbiased).
    frames: tuple of Frame, ROOT FIRST (frames[-1] is the code that allocated).
    alloc_time / free_time: time.monotonic() seconds; free_time is None while the allocation is live."""
    size: int
    estimated_bytes: float
    estimated_count: float
    thread_id: int
    frames: Tuple[Frame, ...]
    alloc_time: float
    free_time: Optional[float]

    @property
    def leaf(self) -> Optional[Frame]:
        return self.frames[-1] if self.frames else None

    @property
    def lifetime(self) -> Optional[float]:
        """Seconds from allocation to free (None while live)."""
        return None if self.free_time is None else max(0.0, self.free_time - self.alloc_time)


class StackTotal(NamedTuple):
    """Everything one stack allocated during the session (live and freed): churn."""
    frames: Tuple[Frame, ...]
    samples: int
    estimated_bytes: float
    estimated_count: float


def _frames(raw: Iterable[Tuple[str, str, int]], cache: Dict[tuple, Tuple[Frame, ...]]) -> Tuple[Frame, ...]:
    key = tuple(raw)
    fr = cache.get(key)
    if fr is None:
        fr = cache[key] = tuple(Frame(n, f, ln) for n, f, ln in reversed(key))
    return fr


class HeapSnapshot:
    """The sampled heap at one moment: `samples` (live), `freed` (logged freed samples, with lifetimes),
    `allocations` (per-stack totals of the whole session), `stats`, `peak_bytes` / `peak_time` (the sampled
    heap's high-water mark this session, and when). Independent of the C core once taken.
    `view` is "live" (the heap when the snapshot was taken) or "peak" (at_peak(): the heap at its high-water
    mark; `samples` are then the samples live at that moment, and timestamp is peak_time)."""

    def __init__(self, samples: List[MemorySample], freed: List[MemorySample], allocations: List[StackTotal],
                 stats: Dict[str, Any], timestamp: float, view: str = "live", has_freed: bool = True):
        self.samples = samples
        self.freed = freed
        self.allocations = allocations
        self.stats = stats
        self.timestamp = timestamp
        self.sampling_rate = int(stats.get("sampling_rate", 0))
        self.view = view
        self._has_freed = has_freed

    def __repr__(self) -> str:
        if self.view == "peak":
            return f"<HeapSnapshot at peak: {len(self.samples)} samples, ~{self.total_bytes / 2**20:.1f} MiB>"
        return (f"<HeapSnapshot {len(self.samples)} live samples, ~{self.total_bytes / 2**20:.1f} MiB live, "
                f"{len(self.freed)} freed, peak ~{self.peak_bytes / 2**20:.1f} MiB>")

    @property
    def peak_bytes(self) -> float:
        """The sampled heap's high-water mark this session, in estimated bytes, as the allocation hooks kept
        it (the sum of the live samples' estimates at its highest)."""
        return float(self.stats.get("peak_estimated_bytes", 0))

    @property
    def peak_time(self) -> Optional[float]:
        """When the high-water mark was reached (time.monotonic() seconds), None before the first sample."""
        t = int(self.stats.get("peak_time_ns", 0))
        return t / 1e9 if t else None

    @property
    def peak_complete(self) -> bool:
        """False when the freed log overflowed (stats["freed_dropped"]): at_peak() then lacks samples that
        were freed after the peak and are not in the log (raise freed_capacity)."""
        return int(self.stats.get("freed_dropped", 0)) == 0

    def at_peak(self) -> "HeapSnapshot":
        """The heap at its high-water mark: the samples live at peak_time (the live ones allocated by then, and
        the freed ones freed after it), as a snapshot of its own (view "peak") that top_allocators, save and
        the other methods treat as its live heap; `allocations` (the session's totals) are this snapshot's.
        Its total_bytes is peak_bytes (exactly when allocations on several threads did not race the peak, and
        the freed log is complete: see peak_complete). Needs a snapshot taken with freed=True."""
        if self.view == "peak":
            return self
        if not self._has_freed:
            raise ValueError("HeapSnapshot.at_peak(): this snapshot has no freed samples (taken with freed=False); "
                             "take it with memprof.get_snapshot() or use memprof.get_peak_snapshot()")
        t = self.peak_time
        if t is None:
            at = []
        else:
            at = [s for s in self.samples if s.alloc_time <= t]
            at += [s for s in self.freed if s.alloc_time <= t and s.free_time is not None and s.free_time > t]
        return HeapSnapshot(at, [], self.allocations, self.stats, t if t is not None else self.timestamp, view="peak")

    @property
    def total_bytes(self) -> float:
        """Estimated live bytes (sum over live samples)."""
        return sum(s.estimated_bytes for s in self.samples)

    @property
    def total_count(self) -> float:
        """Estimated number of live allocations."""
        return sum(s.estimated_count for s in self.samples)

    def top_allocators(self, n: int = 10, by: str = "bytes", live: bool = True,
                       inclusive: bool = False) -> List[Tuple[Frame, float, float]]:
        """The n frames holding the most memory: [(frame, estimated_bytes, estimated_count)], largest first.

        by: "bytes" or "count". live=False ranks by everything allocated in the session (churn) instead of
        what is live now. inclusive=False credits the allocating frame (the leaf); True credits every frame
        on the stack once (a function and everything it called)."""
        if by not in ("bytes", "count"):
            raise ValueError(f"by must be 'bytes' or 'count', got {by!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        acc: Dict[Frame, List[float]] = {}
        rows: Iterable[Tuple[Tuple[Frame, ...], float, float]]
        if live:
            rows = ((s.frames, s.estimated_bytes, s.estimated_count) for s in self.samples)
        else:
            rows = ((a.frames, a.estimated_bytes, a.estimated_count) for a in self.allocations)
        for frames, nbytes, count in rows:
            targets = set(frames) if inclusive else ([frames[-1]] if frames else [Frame("[no stack]", "", 0)])
            for f in targets:
                a = acc.setdefault(f, [0.0, 0.0])
                a[0] += nbytes
                a[1] += count
        key = 0 if by == "bytes" else 1
        top = sorted(acc.items(), key=lambda kv: -kv[1][key])[:n]
        return [(f, v[0], v[1]) for f, v in top]

    def _stacks(self, live: bool) -> List[Tuple[Tuple[Frame, ...], float]]:
        if live:
            return [(s.frames, s.estimated_bytes) for s in self.samples]
        return [(a.frames, a.estimated_bytes) for a in self.allocations]

    def to_collapsed(self, live: bool = True) -> str:
        """Collapsed stacks "root;...;leaf BYTES" of the live heap (live=False: of everything allocated)."""
        acc: Dict[str, float] = {}
        for frames, nbytes in self._stacks(live):
            key = ";".join(_collapsed_name(str(f)) for f in frames) or "[no stack]"
            acc[key] = acc.get(key, 0.0) + nbytes
        return "".join(f"{k} {int(round(v))}\n" for k, v in acc.items() if round(v) > 0)

    def to_speedscope(self) -> Dict[str, Any]:
        """Speedscope document with two profiles, weighted in bytes: the live heap, and everything the
        session allocated (per stack)."""
        frames = _SpeedscopeFrames()
        profiles = []
        heap = "heap at its peak" if self.view == "peak" else "live heap"
        for what, live in ((heap, True), ("allocated during the session", False)):
            rows = [(fr, int(round(nbytes))) for fr, nbytes in self._stacks(live)]
            stacks = [frames.stack(fr) for fr, w in rows if w > 0]
            weights = [w for fr, w in rows if w > 0]
            name = f"{what}: {_fmt_bytes(sum(weights))} (estimated bytes)"
            profiles.append({"type": "sampled", "name": name, "unit": "bytes", "startValue": 0,
                             "endValue": sum(weights), "samples": stacks, "weights": weights})
        return _speedscope_document(f"spprof memory profile: heap snapshot, 1 sample per "
                                    f"{_fmt_bytes(self.sampling_rate)} allocated", frames, profiles)

    def by_function(self) -> "HeapSnapshot":
        """A copy whose frames are keyed by function and file, without the line (see Profile.by_function)."""
        from . import _without_lines
        cache: Dict[tuple, Tuple[Frame, ...]] = {}

        def fr(frames: Tuple[Frame, ...]) -> Tuple[Frame, ...]:
            r = cache.get(frames)
            if r is None:
                r = cache[frames] = _without_lines(frames)
            return r
        return HeapSnapshot([s._replace(frames=fr(s.frames)) for s in self.samples],
                            [s._replace(frames=fr(s.frames)) for s in self.freed],
                            [a._replace(frames=fr(a.frames)) for a in self.allocations], self.stats, self.timestamp,
                            view=self.view, has_freed=self._has_freed)

    def to_pprof(self) -> bytes:
        """gzip-compressed pprof with Go's heap sample types: alloc_objects, alloc_space (everything the
        session sampled), inuse_objects, inuse_space (live now; the default), per stack; period = the
        sampling rate in bytes."""
        from ._pprof import heap_pprof
        return heap_pprof(self)

    def to_svg(self, live: bool = True, title: Optional[str] = None) -> str:
        """An interactive SVG flame graph in bytes of the live heap (live=False: of everything allocated)."""
        from ._flame import heap_svg
        return heap_svg(self, live, title)

    def save(self, path: "os.PathLike[str] | str", format: Optional[str] = None, live: bool = True,
             title: Optional[str] = None) -> str:
        """Write the snapshot: "speedscope" (JSON, both views), "collapsed" or "svg" (flame graph; live heap,
        live=False: all allocations) or "pprof" (gzip-compressed; allocated and live, objects and bytes);
        None picks by extension (.json -> speedscope, .pb.gz / .pprof -> pprof, .svg -> svg, else
        collapsed). title: svg, default this process's command line. Written as Profile.save
        writes (a regular file atomically, a device or FIFO in place); on failure OSError says why and the
        snapshot is unchanged (save it elsewhere)."""
        return _save(path, format, "HeapSnapshot.save", self.to_speedscope, lambda: self.to_collapsed(live=live),
                     pprof=self.to_pprof, svg=lambda: self.to_svg(live, title))


def _fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} bytes"


def start(sampling_rate_kb: float = DEFAULT_SAMPLING_RATE_KB, *, native_hooks: bool = True, max_depth: int = 64,
          heap_map_capacity: int = 1 << 18, max_stacks: int = 1 << 16, max_frames: int = 1 << 20,
          freed_capacity: int = 1 << 16) -> None:
    """Start sampling allocations: on average one sample per `sampling_rate_kb` KiB allocated (fractions
    allowed; 1/1024 samples every allocation). A new session: samples of a previous one are dropped.

    native_hooks: also sample malloc & co. called from loaded libraries (default). heap_map_capacity: live
    samples tracked (power of two); when full, further samples are counted in stats ("dropped_map_full"),
    never a crash. Raises spprof.Error if already sampling or after shutdown(), ValueError/TypeError on bad
    arguments."""
    rate_kb = _check_number("sampling_rate_kb", sampling_rate_kb, 1.0 / 1024, float(1 << 30), " KiB")
    for name, v in (("max_depth", max_depth), ("heap_map_capacity", heap_map_capacity), ("max_stacks", max_stacks),
                    ("max_frames", max_frames), ("freed_capacity", freed_capacity)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {type(v).__name__} ({v!r})")
    try:
        _C.mem_start(sampling_rate=max(1, int(round(rate_kb * 1024))), heap_map_capacity=heap_map_capacity,
                     max_stacks=max_stacks, max_frames=max_frames, freed_capacity=freed_capacity,
                     max_depth=max_depth, native_hooks=bool(native_hooks))
    except Error as e:
        st = _C.mem_state()
        hint = ("call memprof.stop() first" if st == "sampling" else
                "shutdown() is one-way: start the memory profiler once per process" if st == "shutdown" else "")
        raise _api_error(e, "memprof.start()", hint) from None
    _start_pid[0] = os.getpid()


def stop() -> None:
    """Stop sampling new allocations. Frees of sampled allocations are still tracked, so later snapshots
    stay true. Raises spprof.Error when not sampling."""
    st = _C.mem_state()
    if st != "sampling":
        raise Error("memprof.stop(): the memory profiler is not sampling: " +
                    ("it is already stopped" if st == "stopped" else
                     "it was shut down" if st == "shutdown" else
                     ("not started in this process" + _forked_hint()) if _forked_hint() else
                     "call memprof.start() first"))
    _C.mem_stop()


def shutdown() -> None:
    """One-way: stop, remove the hooks, forget every sample. Safe with frees still arriving."""
    _C.mem_shutdown()


def state() -> str:
    """'off', 'sampling', 'stopped' (frees still tracked) or 'shutdown'."""
    return _C.mem_state()


def is_active() -> bool:
    return _C.mem_state() == "sampling"


_warned_truncated = [False]


def _stats() -> Dict[str, Any]:
    """_C.mem_stats() plus native_stack_confidence; warns once per process when most native stacks were cut
    short."""
    st = _C.mem_stats()
    walks = int(st.get("native_walks", 0))
    st["native_stack_confidence"] = int(st.get("native_walks_rooted", 0)) / walks if walks else None
    cut = int(st.get("native_walks_truncated", 0))
    if walks >= 20 and cut * 2 > walks and not _warned_truncated[0]:
        _warned_truncated[0] = True
        import warnings
        warnings.warn(f"spprof.memprof: {cut} of {walks} sampled native stacks were cut short by code built without "
                      "frame pointers: their allocations are attributed to the last native frame reached (and to the "
                      "calling Python code, where there is one); build with -fno-omit-frame-pointer for whole native "
                      "stacks", RuntimeWarning, stacklevel=3)
    return st


def get_stats() -> Dict[str, Any]:
    """Counters: samples, frees_seen, live_samples, heap_map_capacity/heap_map_used (load), collisions,
    dropped_map_full, dropped_stacks_full, freed_dropped, estimated_live_bytes, estimated_allocated_bytes,
    footprint_bytes (the profiler's own memory: its tables as mapped), footprint_resident_bytes (of them, what
    is resident: mincore), peak_estimated_bytes / peak_time_ns (the high-water mark),
    and frame-pointer health: native_walks (samples whose stack needed a native walk: threads running no
    Python, or C code called with the GIL released), native_walks_rooted (those that reached the outermost
    frame or the interpreter loop), native_walks_truncated (cut short by code without frame pointers),
    native_stack_confidence (rooted / walks, None without walks), pymalloc_forwarding (1: plain pymalloc, the
    sampled small objects are served from the raw domain and the MEM/OBJ frees are not hooked). Warns once
    (RuntimeWarning) when most native stacks were cut short."""
    return _stats()


def get_snapshot(freed: bool = True) -> HeapSnapshot:
    """The live sampled heap now (and the logged freed samples, with their lifetimes, unless freed=False).
    Works while sampling and after stop(); raises spprof.Error before the first start or after shutdown()."""
    st = _C.mem_state()
    if st == "off":
        raise Error("memprof.get_snapshot(): the memory profiler has not been started" +
                    (_forked_hint() or ": call memprof.start() first"))
    if st == "shutdown":
        raise Error("memprof.get_snapshot(): the memory profiler was shut down, which forgets every sample: take "
                    "snapshots before memprof.shutdown()")
    gc_was_on = gc.isenabled()
    gc.disable()            # frees are not looked at inside mem_enter/mem_leave: no collection meanwhile
    _C.mem_enter()          # the snapshot's own objects are not sampled
    try:
        ts = time.monotonic()
        stats = _stats()
        cache: Dict[tuple, Tuple[Frame, ...]] = {}
        raw = _C.mem_samples(3 if freed else 1)
        live: List[MemorySample] = []
        dead: List[MemorySample] = []
        for size, eb, ec, ta, tf, tid, fr in raw:
            s = MemorySample(size, eb, ec, tid, _frames(fr, cache), ta / 1e9, tf / 1e9 if tf else None)
            (dead if tf else live).append(s)
        allocs = [StackTotal(_frames(fr, cache), n, eb, ec) for fr, n, eb, ec in _C.mem_stacks()]
        del raw
        return HeapSnapshot(live, dead, allocs, stats, ts, has_freed=freed)
    finally:
        _C.mem_leave()
        if gc_was_on:
            gc.enable()


def get_peak_snapshot() -> HeapSnapshot:
    """The heap at its high-water mark this session (get_snapshot().at_peak()): what was live when the
    sampled heap was largest, e.g. 100 MB that a program allocated and freed before its end."""
    return get_snapshot(freed=True).at_peak()


class MemoryProfiler:
    """Context manager: samples allocations inside the block; on exit takes `snapshot` (what the block left
    live, what it freed, what it allocated) and stops sampling.

        with MemoryProfiler(sampling_rate_kb=64) as mp:
            work()
        print(mp.snapshot.top_allocators(5))"""

    def __init__(self, sampling_rate_kb: float = DEFAULT_SAMPLING_RATE_KB, native_hooks: bool = True,
                 output: Optional[str] = None, format: Optional[str] = None):
        _check_number("sampling_rate_kb", sampling_rate_kb, 1.0 / 1024, float(1 << 30), " KiB")
        self.sampling_rate_kb = sampling_rate_kb
        self.native_hooks = native_hooks
        self.output = output
        self.format = format
        self.snapshot: Optional[HeapSnapshot] = None

    def __enter__(self) -> "MemoryProfiler":
        start(self.sampling_rate_kb, native_hooks=self.native_hooks)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self.snapshot = get_snapshot()
        finally:
            if state() == "sampling":
                stop()
        if self.output is not None:
            self.snapshot.save(self.output, self.format)
        return False

