"""spprof.serve(): a scrape endpoint compatible with Go's net/http/pprof, for fleet engines (Grafana Alloy's
pyroscope.scrape, Parca's scraper, `go tool pprof http://HOST:PORT/debug/pprof/profile?seconds=30`).

Endpoints, and no others (anything else is a 404; a bad parameter a 400):
  /debug/pprof/                    an index page
  /debug/pprof/profile?seconds=N   a CPU profile of the next N seconds (default 30, at most 3600), pprof
  /debug/pprof/heap[?gc=1]         the memory profiler's snapshot now (alloc_/inuse_ objects and space), pprof
                                   (gc=1: garbage collected first, as Go's); 404 when the memory profiler does
                                   not run (spprof.memprof.start())

/profile: when no profiling session runs, the request starts one (CPU time, 100 Hz, as Go's), waits N seconds
and stops it; a second request meanwhile gets 409. When a session already runs (the program's own, or
`record`'s), the request waits N seconds and answers with that session's samples of the window; a run of
identical samples that straddles the window's edges is counted in proportion to its overlap.

The server is a ThreadingHTTPServer in daemon threads: it never keeps the program alive at exit. It binds
to 127.0.0.1 unless told otherwise; binding to another address exposes the program's stacks (function and
file names) to whoever reaches it.
"""
from __future__ import annotations

import html
import http.server
import math
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

import spprof

MAX_SECONDS = 3600.0
DEFAULT_SECONDS = 30.0
OWN_INTERVAL_MS = 10.0  # 100 Hz, Go's default CPU profiling rate

_own_lock = threading.Lock()
_own_running = False  # a request's own session runs (set and cleared under _own_lock)
_servers: List[http.server.ThreadingHTTPServer] = []


class _BadRequest(Exception):
    pass


class _Conflict(Exception):
    pass


def _seconds(query: Dict[str, List[str]]) -> float:
    unknown = sorted(set(query) - {"seconds"})
    if unknown:
        raise _BadRequest(f"unknown parameter(s): {', '.join(unknown)} (only seconds=N)")
    vals = query.get("seconds", [])
    if not vals:
        return DEFAULT_SECONDS
    if len(vals) > 1:
        raise _BadRequest("seconds given more than once")
    try:
        s = float(vals[0])
    except ValueError:
        raise _BadRequest(f"seconds must be a number, got {vals[0]!r}")
    if not math.isfinite(s) or not 0 < s <= MAX_SECONDS:
        raise _BadRequest(f"seconds must be > 0 and <= {MAX_SECONDS:g}, got {vals[0]!r}")
    return s


def _window_profile(t0_ns: int, t1_ns: int) -> "spprof.Profile":
    """The running session's samples between t0_ns and t1_ns (time.monotonic_ns) as a Profile."""
    from . import _spprof, _build_profile, _Session, _note_live_threads
    sess = spprof._session
    interval = sess.interval_ms if sess is not None else OWN_INTERVAL_MS
    mode = sess.mode if sess is not None else "cpu"
    names: Dict[int, str] = dict(sess.names) if sess is not None else {}
    _note_live_threads(names)
    raw = []
    for tid, cname, t_first, t_last, count, weight, frames in _spprof.samples():
        lo, hi = max(t_first, t0_ns), min(t_last, t1_ns)
        if hi < lo:
            continue
        if t_last > t_first:
            f = (hi - lo) / (t_last - t_first)
            if f < 1.0:
                count, weight = int(round(count * f)), int(round(weight * f))
        if weight <= 0:
            continue
        raw.append((tid, cname, max(t_first, t0_ns), min(t_last, t1_ns), max(count, 1), weight, frames))
    window = _Session(interval, mode)
    window.start_ns = t0_ns
    return _build_profile(raw, names, window, t1_ns, dict(_spprof.stats()))


def cpu_profile(seconds: float, stop_event: Optional[threading.Event] = None) -> bytes:
    """pprof of the next `seconds` of CPU (see the module docstring). Raises _Conflict."""
    global _own_running
    wait = stop_event.wait if stop_event is not None else time.sleep
    if _own_running:  # its window would end with the other request's session
        raise _Conflict("a profile is being taken by another request; try again when it is done")
    if not spprof.is_active():
        if not _own_lock.acquire(blocking=False):
            raise _Conflict("a profile is being taken by another request; try again when it is done")
        try:
            try:
                spprof.start(interval_ms=OWN_INTERVAL_MS)
            except spprof.Error:
                pass  # someone else started a session just now: answer from theirs, below
            else:
                _own_running = True
                try:
                    wait(seconds)
                finally:
                    _own_running = False
                    prof = spprof.stop()
                return prof.to_pprof()
        finally:
            _own_lock.release()
    t0 = time.monotonic_ns()
    wait(seconds)
    return _window_profile(t0, time.monotonic_ns()).to_pprof()


def _heap_params(query: Dict[str, List[str]]) -> bool:
    """heap's parameters, as Go's: gc=1 collects garbage first; debug=0 (pprof) is the only format here."""
    unknown = sorted(set(query) - {"gc", "debug"})
    if unknown:
        raise _BadRequest(f"unknown parameter(s): {', '.join(unknown)} (heap takes gc=0|1)")
    if any(len(v) > 1 for v in query.values()):
        raise _BadRequest("a parameter is given more than once")
    if query.get("debug", ["0"])[0] != "0":
        raise _BadRequest("only debug=0 (pprof) is served; read it with go tool pprof")
    gc = query.get("gc", ["0"])[0]
    if gc not in ("0", "1"):
        raise _BadRequest(f"gc must be 0 or 1, got {gc!r}")
    return gc == "1"


def heap_profile(gc_first: bool = False) -> Optional[bytes]:
    import spprof.memprof as memprof
    if memprof.state() not in ("sampling", "stopped"):
        return None
    if gc_first:
        import gc
        gc.collect()
    return memprof.get_snapshot(freed=False).to_pprof()


INDEX = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>/debug/pprof/</title></head><body>
<h1>/debug/pprof/</h1>
<p>spprof {version}, process {pid}. Profiles in pprof format (gzip-compressed profile.proto), for
<code>go tool pprof</code>, Grafana Pyroscope and Parca.</p>
<table>
<tr><td><a href="profile?seconds=30">profile</a></td><td>CPU profile of the next <code>seconds</code> (default 30)</td></tr>
<tr><td><a href="heap">heap</a></td><td>memory profiler snapshot: alloc_objects, alloc_space, inuse_objects,
inuse_space ({heap})</td></tr>
</table>
<p>Example: <code>go tool pprof http://{host}/debug/pprof/profile?seconds=10</code></p>
</body></html>
"""


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "spprof"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the program's stderr is its own

    def _send(self, code: int, body: bytes, ctype: str, extra: Tuple[Tuple[str, str], ...] = ()) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, code: int, msg: str) -> None:
        self._send(code, (msg + "\n").encode("utf-8"), "text/plain; charset=utf-8")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=bool(url.query))
        except ValueError:
            return self._error(400, f"malformed query string: {url.query!r}")
        path = url.path
        try:
            if path in ("/debug/pprof", "/debug/pprof/"):
                if query:
                    raise _BadRequest("the index takes no parameters")
                import os
                import spprof.memprof as memprof
                state = memprof.state()
                body = INDEX.format(version=html.escape(spprof.__version__), pid=os.getpid(),
                                    host=html.escape(self.headers.get("Host") or "HOST:PORT"),
                                    heap="memory profiler: " + html.escape(state))
                return self._send(200, body.encode("utf-8"), "text/html; charset=utf-8")
            if path == "/debug/pprof/profile":
                data = cpu_profile(_seconds(query), self.server.stopping)  # type: ignore[attr-defined]
                return self._send(200, data, "application/octet-stream",
                                  (("Content-Disposition", 'attachment; filename="profile"'),))
            if path == "/debug/pprof/heap":
                gc_first = _heap_params(query)
                data = heap_profile(gc_first)
                if data is None:
                    return self._error(404, "the memory profiler is not running: call spprof.memprof.start() in "
                                            "the program (or run it with `spprof record --memory --serve ...`)")
                return self._send(200, data, "application/octet-stream",
                                  (("Content-Disposition", 'attachment; filename="heap"'),))
        except _BadRequest as e:
            return self._error(400, str(e))
        except _Conflict as e:
            return self._error(409, str(e))
        except Exception as e:  # never kill the server thread; say what went wrong
            return self._error(500, f"{type(e).__name__}: {e}")
        return self._error(404, f"not found: {path} (endpoints: /debug/pprof/, /debug/pprof/profile?seconds=N, "
                                "/debug/pprof/heap)")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: Tuple[str, int]) -> None:
        import socket
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.stopping = threading.Event()
        super().__init__(addr, _Handler)


def serve(host: str = "127.0.0.1", port: int = 0) -> Tuple[str, int]:
    """Start the scrape endpoint in a daemon thread; returns the (host, port) it listens on (port=0: a free
    one). Loopback by default: another host (e.g. "0.0.0.0") must be given explicitly. Raises TypeError /
    ValueError for bad arguments, OSError when the address cannot be bound (in use, not local)."""
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a non-empty str, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, got {type(port).__name__} ({port!r})")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, got {port}")
    server = _Server((host.strip("[]"), port))
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="spprof-serve",
                         daemon=True)
    t.start()
    _servers.append(server)
    addr = server.server_address
    return str(addr[0]), int(addr[1])


def stop_serving() -> None:
    """Stop every server serve() started (requests still waiting are answered with what they have)."""
    while _servers:
        s = _servers.pop()
        s.stopping.set()
        s.shutdown()
        s.server_close()
