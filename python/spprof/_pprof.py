"""pprof output (profile.proto, gzip-compressed) from a Profile or a HeapSnapshot, without a protobuf library.

Read by `go tool pprof`, Grafana Pyroscope, Parca and Google Cloud Profiler. The message is encoded here by
hand (field numbers of github.com/google/pprof/proto/profile.proto) and compressed with the standard
library's gzip. CPU/wall profiles: sample types samples/count and cpu (or wall)/nanoseconds, one sample per
thread and stack with labels "thread" (name) and "thread_id". Heap snapshots: Go's heap convention,
alloc_objects/count, alloc_space/bytes (everything the session sampled), inuse_objects/count,
inuse_space/bytes (live at the snapshot; the default). Native frames (native=True, or from libraries in a
memory profile) get a mapping named by their object file; Python's frames do not keep addresses, so the
mappings carry no address ranges (the C writer, spprof_write_pprof, has them); the first mapping, which pprof
takes for the main binary, is the interpreter that saves the profile.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple


def _varint(out: bytearray, v: int) -> None:
    if v < 0:
        v &= (1 << 64) - 1  # int64 as protobuf encodes it: two's complement, 10 bytes
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _int(out: bytearray, field: int, v: int) -> None:
    """A varint field; zero is the default and is left out."""
    if v:
        _varint(out, field << 3)
        _varint(out, v)


def _bytes(out: bytearray, field: int, data: bytes) -> None:
    _varint(out, (field << 3) | 2)
    _varint(out, len(data))
    out += data


def _packed(values: Iterable[int]) -> bytes:
    b = bytearray()
    for v in values:
        _varint(b, v)
    return bytes(b)


def _is_native(frame: Any) -> bool:
    """A native frame as spprof's resolvers give them: its object file, no line (Python frames have a line
    and a source file; special frames like "[native code]" have no file)."""
    return frame.line <= 0 and bool(frame.file) and not frame.file.endswith((".py", ".pyw", ".pyx"))


class _Builder:
    def __init__(self) -> None:
        self.out = bytearray()
        self.strings: Dict[str, int] = {"": 0}
        self.funcs: Dict[Tuple[str, str], int] = {}
        self.locs: Dict[Any, int] = {}
        self.maps: Dict[str, int] = {}

    def s(self, text: str) -> int:
        i = self.strings.get(text)
        if i is None:
            i = self.strings[text] = len(self.strings)
        return i

    def value_type(self, field: int, type_: str, unit: str) -> None:
        m = bytearray()
        _int(m, 1, self.s(type_))
        _int(m, 2, self.s(unit))
        _bytes(self.out, field, bytes(m))

    def mapping(self, path: str) -> int:
        mid = self.maps.get(path)
        if mid is None:
            mid = self.maps[path] = len(self.maps) + 1
            m = bytearray()
            _int(m, 1, mid)
            _int(m, 5, self.s(path))   # filename
            _int(m, 7, 1)              # has_functions: the names are in the profile
            _bytes(self.out, 3, bytes(m))
        return mid

    def location(self, frame: Any) -> int:
        lid = self.locs.get(frame)
        if lid is not None:
            return lid
        name = self.s(frame.function or "?")
        file = self.s(frame.file or "")
        fid = self.funcs.get((frame.function, frame.file))
        if fid is None:
            fid = self.funcs[(frame.function, frame.file)] = len(self.funcs) + 1
            f = bytearray()
            _int(f, 1, fid)
            _int(f, 2, name)   # name; no system_name: pprof would "demangle" an equal one ("<module>" -> "")
            _int(f, 4, file)   # filename
            _bytes(self.out, 5, bytes(f))
        lid = self.locs[frame] = len(self.locs) + 1
        line = bytearray()
        _int(line, 1, fid)
        _int(line, 2, max(0, frame.line))
        loc = bytearray()
        _int(loc, 1, lid)
        if _is_native(frame):
            if not self.maps:  # pprof takes the first mapping for the main binary: the interpreter
                import sys
                if sys.executable:
                    self.mapping(os.path.realpath(sys.executable))
            _int(loc, 2, self.mapping(frame.file))
        _bytes(loc, 4, bytes(line))
        _bytes(self.out, 4, bytes(loc))
        return lid

    def sample(self, frames: Sequence[Any], values: Sequence[int], labels: Sequence[Tuple[str, Any]] = ()) -> None:
        m = bytearray()
        locs = [self.location(f) for f in reversed(frames)]  # pprof wants the leaf first
        if locs:
            _bytes(m, 1, _packed(locs))
        _bytes(m, 2, _packed(values))
        for key, val in labels:
            lab = bytearray()
            _int(lab, 1, self.s(key))
            if isinstance(val, str):
                _int(lab, 2, self.s(val))
            else:
                _int(lab, 3, int(val))
            _bytes(m, 3, bytes(lab))
        _bytes(self.out, 2, bytes(m))

    def finish(self, comment: str, default_type: str, time_ns: int, duration_ns: int, period: int) -> bytes:
        import gzip  # here: every profiled program would pay for it at start-up

        _int(self.out, 9, time_ns)
        _int(self.out, 10, duration_ns)
        _int(self.out, 12, period)
        _int(self.out, 13, self.s(comment))
        _int(self.out, 14, self.s(default_type))
        for text in self.strings:  # dicts keep insertion order: index i is the i-th string
            _bytes(self.out, 6, text.encode("utf-8", "replace"))
        return gzip.compress(bytes(self.out), mtime=0)


def _wall_ns(monotonic_s: float) -> int:
    """time.time() nanoseconds of a time.monotonic() instant (pprof's time_nanos is wall-clock time)."""
    return max(0, int((time.time() - (time.monotonic() - monotonic_s)) * 1e9))


def profile_pprof(prof: Any) -> bytes:
    """A Profile as gzip-compressed pprof."""
    from . import __version__

    kind = "wall" if prof.mode == "wall" else "cpu"
    interval_ns = int(round(prof.interval_ms * 1e6))
    b = _Builder()
    b.value_type(1, "samples", "count")
    b.value_type(1, kind, "nanoseconds")
    b.value_type(11, kind, "nanoseconds")
    acc: Dict[Tuple[int, str, tuple], List[int]] = {}
    for s in prof.samples:
        a = acc.setdefault((s.thread_id, s.thread_name or "thread", s.frames), [0, 0])
        a[0] += s.count
        a[1] += s.weight
    for (tid, name, frames), (count, weight) in acc.items():
        labels: Tuple[Tuple[str, Any], ...] = (("thread", name), ("thread_id", tid))
        proc = prof.processes.get(tid) if getattr(prof, "processes", None) else None
        if proc is not None:  # record --subprocesses: which process
            labels += (("pid", proc[0]), ("process", proc[1]))
        b.sample(frames, (count, weight * interval_ns), labels)
    return b.finish(f"spprof {__version__}", kind, _wall_ns(prof.start_time), int(prof.duration * 1e9),
                    interval_ns)


def heap_pprof(snap: Any) -> bytes:
    """A HeapSnapshot as gzip-compressed pprof (Go's heap-profile sample types)."""
    from . import __version__

    b = _Builder()
    for t, u in (("alloc_objects", "count"), ("alloc_space", "bytes"), ("inuse_objects", "count"),
                 ("inuse_space", "bytes")):
        b.value_type(1, t, u)
    b.value_type(11, "space", "bytes")
    acc: Dict[tuple, List[float]] = {}
    for a in snap.allocations:
        v = acc.setdefault(a.frames, [0.0, 0.0, 0.0, 0.0])
        v[0] += a.estimated_count
        v[1] += a.estimated_bytes
    for s in snap.samples:
        v = acc.setdefault(s.frames, [0.0, 0.0, 0.0, 0.0])
        v[2] += s.estimated_count
        v[3] += s.estimated_bytes
    for frames, v in acc.items():
        b.sample(frames, [int(round(x)) for x in v])
    return b.finish(f"spprof {__version__}", "inuse_space", _wall_ns(snap.timestamp), 0,
                    int(snap.sampling_rate))
