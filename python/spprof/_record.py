"""The in-process half of `tools/spprof record` (the command-line half is tools/spprof).

tools/spprof record sets SPPROF_RECORD_* variables, puts its bootstrap directory (a sitecustomize.py) first on
PYTHONPATH and execs the command, so the program keeps its pid, arguments, standard streams and exit status.
The interpreter imports that sitecustomize at start-up, before the program's first line; it calls begin()
here, which starts the profiler and arranges for the profile to be written at exit:

- normal exit, sys.exit(n), an uncaught exception, KeyboardInterrupt (SIGINT): atexit handler;
- SIGTERM / SIGHUP (when the program left them at their default): a handler writes the profile, then the
  signal is raised again with its default action, so the process still dies of it.

Not covered: os._exit() (no exit handlers run) and SIGKILL.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import tempfile
from typing import Any, Dict, Optional

import spprof

ENV_PREFIX = "SPPROF_RECORD_"


def config_from_env(env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    env = os.environ if env is None else env
    return {
        "outputs": json.loads(env.get(ENV_PREFIX + "OUTPUTS", '["spprof-profile.json"]')),
        "format": env.get(ENV_PREFIX + "FORMAT") or None,
        "interval_ms": float(env.get(ENV_PREFIX + "INTERVAL_MS", "10")),
        "mode": env.get(ENV_PREFIX + "MODE", "cpu"),
        "source": env.get(ENV_PREFIX + "SOURCE", "auto"),
        "native": env.get(ENV_PREFIX + "NATIVE") == "1",
        "memory_limit_mb": float(env.get(ENV_PREFIX + "MEMORY_LIMIT_MB", "100")),
        "threads": env.get(ENV_PREFIX + "THREADS") == "1",
        "quiet": env.get(ENV_PREFIX + "QUIET") == "1",
        "memory": env.get(ENV_PREFIX + "MEMORY") == "1",
        "memory_rate_kb": float(env.get(ENV_PREFIX + "MEMORY_RATE_KB", "512")),
    }


def _say(msg: str) -> None:
    try:
        sys.stderr.write(f"spprof record: {msg}\n")
        sys.stderr.flush()
    except Exception:
        try:
            os.write(2, f"spprof record: {msg}\n".encode("utf-8", "replace"))
        except OSError:
            pass


class Recorder:
    def __init__(self, cfg: Dict[str, Any]):
        self.cfg = cfg
        self.pid = os.getpid()
        self.done = False

    def begin(self) -> None:
        c = self.cfg
        if c.get("memory"):
            import spprof.memprof as memprof
            # The preloaded library has sampled since process start; this gives it Python stacks. Programs
            # this one starts do not inherit the library.
            _drop_preload()
            memprof.start(c["memory_rate_kb"])
        else:
            spprof.start(interval_ms=c["interval_ms"], mode=c["mode"], memory_limit_mb=c["memory_limit_mb"],
                         source=c.get("source", "auto"), native=c.get("native", False))
        atexit.register(self.finish)
        for name in ("SIGTERM", "SIGHUP"):
            signo = getattr(signal, name, None)
            if signo is None:
                continue
            try:
                if signal.getsignal(signo) == signal.SIG_DFL:  # the program's own choice wins
                    signal.signal(signo, self._on_signal)
            except (ValueError, OSError):
                pass

    def _on_signal(self, signo: int, frame: Any) -> None:
        self.finish(reason=signal.Signals(signo).name)
        # die of the same signal, as the program would have without us
        signal.signal(signo, signal.SIG_DFL)
        os.kill(os.getpid(), signo)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signo])
        os._exit(128 + signo)  # not reached: the default action of signo is to terminate

    def finish(self, reason: Optional[str] = None) -> None:
        if self.done or os.getpid() != self.pid:  # once; never in a forked child
            return
        self.done = True
        if self.cfg.get("memory"):
            self._finish_memory(reason)
            return
        try:
            prof = spprof.stop()
        except spprof.Error as e:
            _say(f"no profile written: the profiler was not running at exit ({e})")
            return
        except Exception as e:  # pragma: no cover - defensive
            _say(f"no profile written: {type(e).__name__}: {e}")
            return
        c = self.cfg
        written = []
        for out in c["outputs"]:
            w = self._save(prof, out)
            if w:
                written.append(w)
        if written and (not c["quiet"] or any("could not write" in w for w in written)):
            st = prof.stats
            dropped = int(st.get("samples_dropped", 0)) + int(st.get("samples_dropped_memory", 0))
            why = f", at {reason}" if reason else ""
            nthreads = len(prof.threads())
            _say(f"{prof.sample_count} samples ({prof.total_time:.2f} s of {prof.mode} time) in "
                 f"{nthreads} thread{'s' if nthreads != 1 else ''}, {dropped} dropped{why} -> {', '.join(written)}")

    def _finish_memory(self, reason: Optional[str]) -> None:
        import spprof.memprof as memprof
        try:
            snap = memprof.get_snapshot()
            memprof.stop()
        except spprof.Error as e:
            _say(f"no memory profile written: {e}")
            return
        written = [w for w in (self._save(snap, out) for out in self.cfg["outputs"]) if w]
        if written and (not self.cfg["quiet"] or any("could not write" in w for w in written)):
            st = snap.stats
            why = f", at {reason}" if reason else ""
            _say(f"{st['samples']} allocation samples, ~{snap.total_bytes / 2**20:.1f} MiB live at exit, "
                 f"~{st['estimated_allocated_bytes'] / 2**20:.1f} MiB allocated{why} -> {', '.join(written)}")

    def _save(self, prof: Any, out: str) -> Optional[str]:
        """Saves to out, else to a temporary file; returns what to tell the user (None: nothing written)."""
        c = self.cfg
        fmt = c["format"] or ("speedscope" if out.lower().endswith(".json") else "collapsed")
        kw = {} if c.get("memory") else {"threads": c["threads"]}
        try:
            return prof.save(out, fmt, **kw)
        except OSError as e:
            try:
                fd, alt = tempfile.mkstemp(prefix="spprof-", suffix=".json" if fmt == "speedscope" else ".collapsed")
                os.close(fd)
                prof.save(alt, fmt, **kw)
                return f"{alt} (could not write {out}: {os.strerror(e.errno) if e.errno else e})"
            except Exception as e2:
                _say(f"no profile written for {out}: could not write it ({e}) nor a temporary file ({e2})")
                return None


def _drop_preload() -> None:
    pre = os.environ.get("LD_PRELOAD", "")
    rest = " ".join(p for p in pre.replace(":", " ").split() if not p.endswith("libspprof_alloc.so"))
    if rest:
        os.environ["LD_PRELOAD"] = rest
    else:
        os.environ.pop("LD_PRELOAD", None)


_recorder: Optional[Recorder] = None


def begin() -> Optional[Recorder]:
    """Start recording as configured by SPPROF_RECORD_* (called by the bootstrap sitecustomize)."""
    global _recorder
    if _recorder is not None:
        return _recorder
    rec = Recorder(config_from_env())
    rec.begin()
    _recorder = rec
    return rec
