"""The in-process half of `tools/spprof record` (the command-line half is tools/spprof).

tools/spprof record sets SPPROF_RECORD_* variables, puts its bootstrap directory (a sitecustomize.py) first on
PYTHONPATH and execs the command, so the program keeps its pid, arguments, standard streams and exit status.
The interpreter imports that sitecustomize at start-up, before the program's first line; it calls begin()
here, which starts the profiler and arranges for the profile to be written at exit:

- normal exit, sys.exit(n), an uncaught exception, KeyboardInterrupt (SIGINT): atexit handler;
- SIGTERM / SIGHUP (when the program left them at their default): a handler writes the profile, then the
  signal is raised again with its default action, so the process still dies of it.

Not covered: os._exit() (no exit handlers run) and SIGKILL.

`spprof top` starts the program the same way, with SPPROF_RECORD_TOP_FD (a socket) and no outputs: begin()
starts spprof/_top.py's Streamer on it, finish() sends the last part.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
import threading
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
        "memory_at_exit": env.get(ENV_PREFIX + "MEMORY_AT_EXIT") == "1",
        "serve": json.loads(env.get(ENV_PREFIX + "SERVE", "null")),
        "nolineno": env.get(ENV_PREFIX + "NOLINENO") == "1",
        "top_fd": int(env.get(ENV_PREFIX + "TOP_FD", "-1") or "-1"),
        "subprocesses": env.get(ENV_PREFIX + "SUBPROCESSES") == "1",
        "parts_dir": env.get(ENV_PREFIX + "PARTS", ""),
        "top_sock": env.get(ENV_PREFIX + "TOP_SOCK", ""),
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


EXIT_SIGNALS = ("SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT")  # default action: terminate


def _report(fd: int, what: bytes) -> None:
    if fd >= 0:
        try:
            os.write(fd, what)
        except OSError:
            pass


def _command() -> str:
    """This process's command line, short (the name of its process in a merged profile)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            parts = [p.decode("utf-8", "replace") for p in f.read().split(b"\0") if p]
    except OSError:
        parts = []
    if not parts:
        parts = [sys.executable] + list(sys.argv)
    parts = [os.path.basename(p) if os.path.isabs(p) else p for p in parts]  # "python3 app.py ..."
    text = " ".join(parts)
    return text if len(text) <= 60 else text[:57] + "..."


class Recorder:
    def __init__(self, cfg: Dict[str, Any], report_fd: int = -1, root: bool = True):
        self.cfg = cfg
        # record --subprocesses: the root is the process `record` exec'd; the others (forked, or Python
        # programs it started) write a part into cfg["parts_dir"] that the root merges at its exit, or their
        # own files when the outputs hold {pid}
        self.root = root
        self.pid = os.getpid()
        self.done = False
        self.lock = threading.Lock()
        self.report_fd = report_fd
        self.streamer = None  # `spprof top`: the live feed (spprof/_top.py)
        self.listener: Any = None  # --subprocesses, a child: the root's flush requests (see _listen)
        self.partial_sent = False  # a partial part was given to the root (it exited before this process)
        self.running_note = ""  # the root: what the summary says of processes still running at its exit

    def begin(self) -> None:
        self._start_sampling()
        c = self.cfg
        if c.get("serve") and self.root:
            self._serve(c["serve"])
        if c.get("top_fd", -1) >= 0 and self.root:
            from spprof import _top
            os.set_inheritable(c["top_fd"], False)  # not passed on to programs this one execs
            self.streamer = _top.Streamer(c["top_fd"], c["interval_ms"], c["mode"], restart=self._start_sampling)
            self.streamer.start()
        elif c.get("top_sock"):
            self._stream_to_top()
        atexit.register(self.finish)
        self._arm_signals()
        self._wrap_os_exit()
        if c.get("subprocesses") and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        if not self.root:
            self._listen()
        _report(self.report_fd, b"S")

    def _start_sampling(self) -> None:
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

    def _stream_to_top(self) -> None:
        """top --subprocesses: this process's own connection to the front end."""
        from spprof import _top
        c = self.cfg
        try:
            self.streamer = _top.Streamer(-1, c["interval_ms"], c["mode"], path=c["top_sock"],
                                          restart=self._start_sampling)
            self.streamer.start()
        except OSError as e:
            self.streamer = None
            _say(f"pid {os.getpid()}: not shown by spprof top ({e})")

    def _arm_signals(self) -> None:
        signos = [getattr(signal, n) for n in EXIT_SIGNALS if hasattr(signal, n)]
        try:
            spprof._spprof.exit_signals_arm(self._on_signal, signos)
        except (AttributeError, OSError, spprof.Error) as e:
            _say(f"the profile will not be written on SIGTERM/SIGHUP/... ({e})")

    def _after_fork(self) -> None:
        """--subprocesses, in a forked child (os.fork, multiprocessing's fork and forkserver workers): the
        child's own session with the same settings (spprof's own at-fork handler, registered before this one,
        has already forgotten the parent's), its exit signals armed again (the parent's thread is not here)."""
        if self.done or os.getpid() == self.pid:
            return  # forked after the parent's profile was written (from an exit handler): nothing to do
        self.pid = os.getpid()
        self.root = False
        self.lock = threading.Lock()
        self.report_fd = -1
        if self.streamer is not None:  # the parent's connection: its thread is not here
            try:
                self.streamer.sock.close()
            except OSError:
                pass
        self.streamer = None
        if self.listener is not None:  # the parent's socket (its thread is not here)
            try:
                self.listener.close()
            except OSError:
                pass
            self.listener = None
        self.partial_sent = False
        try:
            self._start_sampling()
            if spprof._session is not None:  # before 3.12 the main thread keeps the parent's native_id
                spprof._session.names[threading.get_native_id()] = threading.current_thread().name
        except Exception as e:
            self.done = True
            _say(f"pid {self.pid}: this forked child is not profiled ({type(e).__name__}: {e})")
            return
        self._arm_signals()
        self._listen()
        if self.cfg.get("top_sock"):
            self._stream_to_top()

    def _listen(self) -> None:
        """--subprocesses, a child that writes a part for the root: a Unix socket live-PID.sock in the parts
        directory (0700, this user's) on which the root, when it exits before this process, asks for the samples
        so far ("F"); the answer is "D<n>" once a partial part of n samples is written (0: nothing to add), or
        "E" when this process has written its final part already. Served by a thread of its own that blocks
        every signal (the program's signals go to its own threads as before, and no sampler takes it: in wall
        mode a thread that blocks the profiling signal is not sampled) and is not a threading.Thread (not in
        threading.enumerate(), not joined at exit)."""
        parts_dir = self.cfg.get("parts_dir", "")
        if not parts_dir or not self.cfg.get("subprocesses") or self.cfg.get("top_sock"):
            return
        import socket
        import _thread
        path = os.path.join(parts_dir, f"live-{os.getpid()}.sock")
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError:
            return
        try:
            sock.bind(path)
            sock.listen(8)
        except OSError as e:  # (a path too long for a Unix socket: TMPDIR deep down)
            sock.close()
            _say(f"pid {os.getpid()}: if it outlives the program, its samples will not be in the profile "
                 f"(cannot listen on {path}: {e})")
            return
        self.listener = sock
        blocked = None
        try:
            if hasattr(signal, "pthread_sigmask"):
                blocked = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
            _thread.start_new_thread(self._serve_flush, (sock, os.getpid()))
        except (OSError, RuntimeError, ValueError):
            self.listener = None
            sock.close()
        finally:
            if blocked is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def _serve_flush(self, sock: Any, pid: int) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # closed: this process wrote its final part, or forked (the child closed its copy)
            if os.getpid() != pid:
                return
            try:
                conn.settimeout(10)
                if conn.recv(1) == b"F":
                    conn.sendall(self._flush_partial())
            except OSError:
                pass
            finally:
                conn.close()

    def _flush_partial(self) -> bytes:
        """The root is exiting while this process runs: its samples so far as a part (marked partial, so that
        a final part of the same process, if it comes in time, wins). Under the lock, so never alongside
        finish(): after it, the final part is there ("E")."""
        with self.lock:
            if self.done:
                return b"E\n"
            parts_dir = self.cfg.get("parts_dir", "")
            mem_enter = mem_leave = None
            if self.cfg.get("memory"):  # this thread's own allocations are not the program's
                mem_enter, mem_leave = spprof._spprof.mem_enter, spprof._spprof.mem_leave
            try:
                if mem_enter is not None:
                    mem_enter()
                part = self._partial_part()
                n = 0 if part is None else _samples_of(part)
                if n:
                    _write_part(parts_dir, part, partial=True)
                    self.partial_sent = True
            except Exception as e:  # never disturb the program: the root says it got nothing
                _say(f"pid {os.getpid()}: cannot give its samples so far: {type(e).__name__}: {e}")
                return b"X\n"
            finally:
                if mem_leave is not None:
                    mem_leave()
            return b"D%d\n" % n

    def _partial_part(self) -> Optional[Any]:
        """This process's profile so far, its session running on (the part _finish_tree/_finish_memory_tree
        would write now)."""
        if self.cfg.get("memory"):
            import spprof.memprof as memprof
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                snap = memprof.get_snapshot()
            if self.cfg.get("nolineno"):
                snap = snap.by_function()
            view = snap if self.cfg.get("memory_at_exit") else snap.at_peak()
            return _heap_of_process(snap, view, os.getpid(), _command())
        import time
        sess = spprof._session
        if sess is None:
            return None
        names = dict(sess.names)
        spprof._note_live_threads(names)
        raw = spprof._spprof.samples()
        prof = spprof._build_profile(raw, names, sess, time.monotonic_ns(), dict(spprof._spprof.stats()))
        if self.cfg.get("nolineno"):
            prof = prof.by_function()
        cmd = _command()
        prof.processes = {tid: (os.getpid(), cmd) for tid in prof.threads()}
        return prof

    def _unlisten(self) -> None:
        """Once the final part is written: the root finds it (no socket), or gets "E" meanwhile."""
        if self.listener is None:
            return
        try:
            os.unlink(os.path.join(self.cfg.get("parts_dir", ""), f"live-{os.getpid()}.sock"))
        except OSError:
            pass
        try:
            self.listener.close()  # (the thread's accept() returns an error and it ends)
        except OSError:
            pass
        self.listener = None

    def _serve(self, where: Any) -> None:
        """--serve: the scrape endpoint for the program's lifetime; its address goes to stderr (also with -q:
        with port 0 nothing else tells it). A failure to bind is said, and the program runs on."""
        try:
            host, port = spprof.serve(str(where[0]), int(where[1]))
        except (OSError, ValueError, TypeError) as e:
            _say(f"cannot serve on {where[0]}:{where[1]}: {e} (the program runs without it)")
            return
        shown = f"[{host}]" if ":" in host else host
        _say(f"serving http://{shown}:{port}/debug/pprof/ (profile?seconds=N{', heap' if self.cfg.get('memory') else ''})")

    def _wrap_os_exit(self) -> None:
        real_exit = os._exit
        rec = self

        def _exit(status: int) -> None:  # noqa: D401 - same signature as os._exit
            if os.getpid() == rec.pid:  # fork children (pool workers) end this way: their exit is theirs
                rec.finish(reason="os._exit")
            real_exit(status)

        _exit.__name__ = real_exit.__name__
        _exit.__qualname__ = getattr(real_exit, "__qualname__", "_exit")
        _exit.__doc__ = real_exit.__doc__
        _exit.__module__ = getattr(real_exit, "__module__", "posix")
        os._exit = _exit

    def _on_signal(self, signo: int) -> None:
        """Called by _spprof's exit-signal thread (GIL held); the C side then re-raises signo."""
        try:
            name = signal.Signals(signo).name
        except ValueError:
            name = f"signal {signo}"
        self.finish(reason=name)

    def finish(self, reason: Optional[str] = None) -> None:
        if os.getpid() != self.pid:  # never in a forked child
            return
        with self.lock:  # a signal during the atexit write waits for it, then the process dies
            if self.done:
                return
            self.done = True
            # --subprocesses: a pool worker ends by itself while its pool SIGTERMs it (Pool.terminate()); with
            # the default action back it would die in the middle of writing its part. So there the handler
            # stays until the part is written: a signal meanwhile waits for this lock, then the process dies
            # of it, as it would have.
            tree = bool(self.cfg.get("subprocesses"))
            pending = 0
            if not tree:
                pending = _disarm()
            try:
                if self.streamer is not None:
                    self.streamer.send(final=True)  # the last part, before the session stops
                if self.cfg.get("subprocesses") and not self.cfg.get("memory"):
                    self._finish_tree(reason)
                elif self.cfg.get("memory"):
                    self._finish_memory(reason)
                else:
                    self._finish_cpu(reason)
            finally:
                if tree:
                    pending = _disarm()
                _report(self.report_fd, b"D")
            # An exit signal that came while the program was ending (its last statement, say) found the GIL
            # taken by the exit path: the thread that would act on it never ran. The program would have died
            # of it: so does it now, the profile written (the default action is back since _disarm).
            if pending and (reason is None or reason == "os._exit"):
                os.kill(os.getpid(), pending)

    def _kept(self, nsamples: int) -> list:
        """With nothing profiled, existing outputs stay as they were (a failed run must not replace a good
        profile); returns the outputs to write."""
        if nsamples > 0:
            return list(self.cfg["outputs"])
        keep = [o for o in self.cfg["outputs"] if os.path.lexists(o) and not _is_special(o)]
        if keep:
            _say(f"nothing was profiled (0 samples): {', '.join(keep)} left as {'they were' if len(keep) > 1 else 'it was'}")
        return [o for o in self.cfg["outputs"] if o not in keep]

    def _finish_cpu(self, reason: Optional[str]) -> None:
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
        if c.get("nolineno"):
            prof = prof.by_function()
        for out in self._kept(prof.sample_count):
            w = self._save(prof, out)
            if w:
                written.append(w)
        if written and (not c["quiet"] or any("could not write" in w for w in written)):
            st = prof.stats
            dropped = int(st.get("samples_dropped", 0)) + int(st.get("samples_dropped_memory", 0))
            why = f", at {reason}" if reason else ""
            nthreads = len(prof.threads())
            hint = ("" if prof.sample_count else
                    f" (no samples: raise the rate with -r, or profile a longer run{'' if prof.mode == 'wall' else '; --mode wall also counts time the program waits'})")
            _say(f"{prof.sample_count} samples ({prof.total_time:.2f} s of {prof.mode} time) in "
                 f"{nthreads} thread{'s' if nthreads != 1 else ''}, {dropped} dropped{why}{hint} -> {', '.join(written)}")

    def _own_profile(self) -> Optional[Any]:
        try:
            prof = spprof.stop()
        except spprof.Error as e:
            _say(f"pid {os.getpid()}: no profile written: the profiler was not running at exit ({e})")
            return None
        if self.cfg.get("nolineno"):
            prof = prof.by_function()
        cmd = _command()
        prof.processes = {tid: (os.getpid(), cmd) for tid in prof.threads()}
        return prof

    def _finish_tree(self, reason: Optional[str]) -> None:
        """--subprocesses: a part for the root to merge, or (outputs with {pid}) this process's own files."""
        per_process = any("{pid}" in o for o in self.cfg["outputs"])
        prof = self._own_profile()
        if prof is None:
            return
        if per_process:
            outs = [o.replace("{pid}", str(os.getpid())) for o in self.cfg["outputs"]]
            self._write_tree(prof, outs, [prof], reason)
            return
        parts_dir = self.cfg.get("parts_dir", "")
        if not self.root:
            if parts_dir and prof.sample_count:  # (an idle helper, such as multiprocessing's resource
                _write_part(parts_dir, prof, quiet=self.partial_sent)  # tracker, adds nothing, says nothing)
            self._unlisten()
            return
        parts = [prof] + self._children_parts(parts_dir)
        merged = _merge(parts)
        self._write_tree(merged, list(self.cfg["outputs"]), parts, reason)

    def _children_parts(self, parts_dir: str) -> list:
        """The root, at its exit: the children's parts; those still running are asked for their samples so far
        first (partial parts), for at most FLUSH_TIMEOUT_S; self.running_note says what the summary adds."""
        _, silent = _flush_running(parts_dir, FLUSH_TIMEOUT_S)
        parts = _read_parts(parts_dir)
        final = {getattr(p, "part_pid", None) for p in parts if not getattr(p, "part_partial", False)}
        parts = [p for p in parts if not (getattr(p, "part_partial", False) and p.part_pid in final)]
        partial = len({p.part_pid for p in parts if getattr(p, "part_partial", False)})
        notes = []
        if partial:
            notes.append(f"{partial} process{'es' if partial != 1 else ''} still running at the program's exit: "
                         "samples so far (partial)")
        if silent:
            notes.append(f"{silent} still running did not answer within {FLUSH_TIMEOUT_S:g} s: left out")
        self.running_note = "; ".join(notes)
        return parts

    def _write_tree(self, prof: Any, outs: list, parts: list, reason: Optional[str]) -> None:
        c = self.cfg
        if prof.sample_count == 0:
            keep = [o for o in outs if os.path.lexists(o) and not _is_special(o)]
            outs = [o for o in outs if o not in keep]
            if keep and self.root:
                _say(f"nothing was profiled (0 samples): {', '.join(keep)} left as it was")
        written = [w for w in (self._save(prof, o) for o in outs) if w]
        if written and (not c["quiet"] or any("could not write" in w for w in written)):
            why = f", at {reason}" if reason else ""
            nthreads = len(prof.threads())
            nproc = len({p[0] for p in prof.processes.values()}) or 1
            who = "" if self.root else f"pid {os.getpid()}: "
            running = f" ({self.running_note})" if self.running_note else ""
            _say(f"{who}{prof.sample_count} samples ({prof.total_time:.2f} s of {prof.mode} time) in {nproc} "
                 f"process{'es' if nproc != 1 else ''}, {nthreads} thread{'s' if nthreads != 1 else ''}{why}"
                 f"{running} -> {', '.join(written)}")

    def _finish_memory(self, reason: Optional[str]) -> None:
        import spprof.memprof as memprof
        try:
            import warnings
            with warnings.catch_warnings():  # the truncated native stacks are told in the summary line instead
                warnings.simplefilter("ignore", RuntimeWarning)
                snap = memprof.get_snapshot()
            memprof.stop()
        except spprof.Error as e:
            who = f"pid {os.getpid()}: " if not self.root else ""
            _say(f"{who}no memory profile written: {e}")
            return
        if self.cfg.get("nolineno"):
            snap = snap.by_function()
        # like memray, the heap at its high-water mark by default: a program that frees its memory before it
        # exits shows what it held at most (--live-at-exit: what is still live at exit)
        view = snap if self.cfg.get("memory_at_exit") else snap.at_peak()
        if self.cfg.get("subprocesses"):
            self._finish_memory_tree(snap, view, reason)
            return
        outs = self._kept(int(snap.stats.get("samples", 0)))
        written = [w for w in (self._save(view, out) for out in outs) if w]
        if written and (not self.cfg["quiet"] or any("could not write" in w for w in written)):
            st = snap.stats
            why = f", at {reason}" if reason else ""
            what = ("the heap live at exit" if view is snap else
                    "the heap at its peak" + ("" if snap.peak_complete else
                                              " (incomplete: the freed log overflowed)") + "; --live-at-exit for exit")
            walks, cut = int(st.get("native_walks", 0)), int(st.get("native_walks_truncated", 0))
            if walks >= 20 and cut * 2 > walks:
                what += f"; {cut} of {walks} native stacks cut short by code without frame pointers"
            _say(f"{st['samples']} allocation samples, ~{snap.peak_bytes / 2**20:.1f} MiB at peak, "
                 f"~{snap.total_bytes / 2**20:.1f} MiB live at exit, "
                 f"~{st['estimated_allocated_bytes'] / 2**20:.1f} MiB allocated{why} -> {', '.join(written)} ({what})")

    def _finish_memory_tree(self, snap: Any, view: Any, reason: Optional[str]) -> None:
        """--memory --subprocesses: this process's view (peak, or live at exit) with the process as the first
        frame of every stack, as a part for the root, as this process's own files ({pid}), or merged (root)."""
        part = _heap_of_process(snap, view, os.getpid(), _command())
        if any("{pid}" in o for o in self.cfg["outputs"]):
            outs = [o.replace("{pid}", str(os.getpid())) for o in self.cfg["outputs"]]
            self._write_heap_tree(part, outs, [part], reason)
            return
        parts_dir = self.cfg.get("parts_dir", "")
        if not self.root:
            if parts_dir and int(part.stats.get("samples", 0)):  # (an idle helper adds nothing)
                _write_part(parts_dir, part, quiet=self.partial_sent)
            self._unlisten()
            return
        parts = [part] + self._children_parts(parts_dir)
        self._write_heap_tree(_merge_heaps(parts), list(self.cfg["outputs"]), parts, reason)

    def _write_heap_tree(self, heap: Any, outs: list, parts: list, reason: Optional[str]) -> None:
        nsamples = int(heap.stats.get("samples", 0))
        if nsamples == 0:
            keep = [o for o in outs if os.path.lexists(o) and not _is_special(o)]
            outs = [o for o in outs if o not in keep]
            if keep and self.root:
                _say(f"nothing was profiled (0 samples): {', '.join(keep)} left as it was")
        written = [w for w in (self._save(heap, o) for o in outs) if w]
        if written and (not self.cfg["quiet"] or any("could not write" in w for w in written)):
            why = f", at {reason}" if reason else ""
            n = len(parts)
            who = "" if self.root else f"pid {os.getpid()}: "
            peak = sum(float(p.stats.get("peak_estimated_bytes", 0)) for p in parts)
            live = sum(float(p.stats.get("live_at_exit_bytes", 0)) for p in parts)
            alloc = sum(float(p.stats.get("estimated_allocated_bytes", 0)) for p in parts)
            what = ("the heap live at exit" if heap.view != "peak" else
                    ("the heap at its peak" if n == 1 else "each process's heap at its own peak") +
                    ("" if all(int(p.stats.get("freed_dropped", 0)) == 0 for p in parts) else
                     " (incomplete: a freed log overflowed)") + "; --live-at-exit for exit")
            if self.running_note:
                what += "; " + self.running_note
            _say(f"{who}{nsamples} allocation samples in {n} process{'es' if n != 1 else ''}, "
                 f"~{peak / 2**20:.1f} MiB at peak{'s (summed)' if n != 1 else ''}, ~{live / 2**20:.1f} MiB live at "
                 f"exit, ~{alloc / 2**20:.1f} MiB allocated{why} -> {', '.join(written)} ({what})")

    def _save(self, prof: Any, out: str) -> Optional[str]:
        """Saves to out, else to a temporary file; returns what to tell the user (None: nothing written)."""
        c = self.cfg
        fmt = spprof._format_for(out, c["format"])
        kw = {} if c.get("memory") else {"threads": c["threads"]}
        try:
            return prof.save(out, fmt, **kw)
        except OSError as e:
            try:
                import tempfile  # only here: it costs ~3 ms of every profiled program's start-up
                fd, alt = tempfile.mkstemp(prefix="spprof-", suffix=_SUFFIXES.get(fmt, "." + fmt))
                os.close(fd)
                prof.save(alt, fmt, **kw)
                return f"{alt} (could not write {out}: {os.strerror(e.errno) if e.errno else e})"
            except Exception as e2:
                _say(f"no profile written for {out}: could not write it ({e}) nor a temporary file ({e2})")
                return None


_SUFFIXES = {"speedscope": ".json", "pprof": ".pb.gz"}  # of the temporary file when OUT cannot be written


def _disarm() -> int:
    """SIG_DFL back for the exit signals; returns one that arrived and was not acted on yet (or 0)."""
    try:
        return int(spprof._spprof.exit_signals_disarm() or 0)
    except AttributeError:
        return 0


def _samples_of(part: Any) -> int:
    return int(part.stats.get("samples", 0)) if hasattr(part, "allocations") else int(part.sample_count)


FLUSH_TIMEOUT_S = 1.5  # how long the exiting root waits for its still-running children's samples so far


def _flush_running(parts_dir: str, timeout: float) -> tuple:
    """Asks every child still listening in parts_dir (live-PID.sock: running, not finished) for its samples
    so far, all at once, and waits for the answers at most `timeout` seconds. Returns (answered, silent):
    the numbers of processes that gave a partial part and of those that did not answer (a child that holds
    the GIL in a long C call cannot). A socket nobody listens on any more (a child killed by SIGKILL) is
    removed; so are the others once asked (the directory is removed after the parts are read)."""
    import select
    import socket
    import time
    if not parts_dir:
        return 0, 0
    try:
        names = [n for n in os.listdir(parts_dir) if n.startswith("live-") and n.endswith(".sock")]
    except OSError:
        return 0, 0
    waiting: Dict[Any, bytes] = {}
    silent = 0
    for n in names:
        path = os.path.join(parts_dir, n)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(0.2)  # a full backlog (a child that never accepts) must not hold the root here
            s.connect(path)
            s.sendall(b"F")
            s.setblocking(False)
            waiting[s] = b""
        except OSError as e:  # refused or gone: that child has died (SIGKILL) and wrote no part
            s.close()
            if isinstance(e, (socket.timeout, BlockingIOError)):  # alive, but not answering
                silent += 1
        try:
            os.unlink(path)
        except OSError:
            pass
    answered = 0
    end = time.monotonic() + timeout
    while waiting:
        left = end - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(list(waiting), [], [], left)
        for s in ready:
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            waiting[s] += data
            if data and not waiting[s].endswith(b"\n"):
                continue
            if waiting[s].startswith(b"D") and waiting[s][1:].strip() not in (b"", b"0"):
                answered += 1
            elif not waiting[s].startswith((b"D", b"E")):  # it failed to give them (said on its stderr)
                silent += 1
            del waiting[s]
            s.close()
    silent += len(waiting)
    for s in waiting:
        s.close()
    return answered, silent


def _write_part(parts_dir: str, prof: Any, partial: bool = False, quiet: bool = False) -> None:
    """A child's profile for the root (pickled; written beside, then renamed: the root never reads half).
    partial: the samples so far of a process still running (its final part, if it comes in time, wins)."""
    import pickle
    final = os.path.join(parts_dir, f"part-{os.getpid()}-{time_ns()}{'-partial' if partial else ''}.pickle")
    tmp = final + ".tmp"
    try:
        with open(tmp, "wb") as f:
            pickle.dump(prof, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.rename(tmp, final)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if quiet:  # its samples up to the program's exit are in the profile, and the summary said so
            return
        if not os.path.isdir(parts_dir):  # the root has written the profile already
            _say(f"pid {os.getpid()} ({_command()}) ended after the profiled program: its samples are not in "
                 "the profile")
        else:
            _say(f"pid {os.getpid()}: its samples are lost: cannot write them to {parts_dir} ({e})")


def time_ns() -> int:
    import time
    return time.monotonic_ns()


def _read_parts(parts_dir: str) -> list:
    """The children's profiles (each file removed once read), then the directory when it is empty."""
    import pickle
    out = []
    if not parts_dir:
        return out
    try:
        names = sorted(os.listdir(parts_dir))
    except OSError:
        return out
    for n in names:
        path = os.path.join(parts_dir, n)
        if not n.endswith(".pickle"):
            continue
        try:
            with open(path, "rb") as f:
                part = pickle.load(f)
            m = n.split("-")  # part-PID-TIME[-partial].pickle
            part.part_pid = int(m[1]) if len(m) > 2 and m[1].isdigit() else None
            part.part_partial = n.endswith("-partial.pickle")
            out.append(part)
            os.unlink(path)
        except Exception as e:
            _say(f"cannot read a child's profile {path}: {type(e).__name__}: {e}")
    try:
        os.rmdir(parts_dir)  # a child still running keeps its part to itself (said in the docs)
    except OSError:
        pass
    return out


def _merge(parts: list) -> Any:
    """One Profile from several processes' (each with .processes set): samples together, the earliest start."""
    start = min(p.start_time for p in parts)
    end = max(p.start_time + p.duration for p in parts)
    stats: Dict[str, int] = {}
    for p in parts:
        for k, v in p.stats.items():
            if isinstance(v, int):
                stats[k] = stats.get(k, 0) + v
    samples = [s for p in parts for s in p.samples]
    merged = spprof.Profile(samples, parts[0].interval_ms, parts[0].mode, start, end - start, stats)
    for p in parts:
        merged.processes.update(p.processes)
    return merged


def _heap_of_process(snap: Any, view: Any, pid: int, cmd: str) -> Any:
    """view (a HeapSnapshot: the peak, or live at exit) with "pid N (command)" as the first frame of every
    stack (as the CPU profile's process level), without its freed log (not needed once the view is taken);
    stats gain live_at_exit_bytes (snap's) for the summary line."""
    from spprof.memprof import HeapSnapshot
    proc = spprof.Frame(f"pid {pid} ({cmd})", "", 0)
    cache: Dict[tuple, tuple] = {}

    def fr(frames: tuple) -> tuple:
        r = cache.get(frames)
        if r is None:
            r = cache[frames] = (proc,) + tuple(frames)
        return r
    stats = dict(view.stats)
    stats["live_at_exit_bytes"] = int(snap.total_bytes)
    return HeapSnapshot([s._replace(frames=fr(s.frames)) for s in view.samples], [],
                        [a._replace(frames=fr(a.frames)) for a in view.allocations], stats, view.timestamp,
                        view=view.view, has_freed=False)


# counters that add up over processes (the others, such as sampling_rate, are the root's)
_HEAP_SUMMED = ("samples", "frees_seen", "live_samples", "dropped_map_full", "dropped_stacks_full", "freed_dropped",
                "estimated_live_bytes", "estimated_allocated_bytes", "footprint_bytes", "peak_estimated_bytes",
                "native_walks", "native_walks_rooted", "native_walks_truncated", "live_at_exit_bytes")


def _merge_heaps(parts: list) -> Any:
    """One HeapSnapshot of several processes' views (each from _heap_of_process): their samples and per-stack
    totals side by side (each stack starts with its process). Each process's view is its own: with the peak,
    each process's heap at its own peak (the peaks need not be at the same time)."""
    from spprof.memprof import HeapSnapshot
    stats = dict(parts[0].stats)
    for k in _HEAP_SUMMED:
        stats[k] = sum(int(p.stats.get(k, 0)) for p in parts)
    return HeapSnapshot([s for p in parts for s in p.samples], [], [a for p in parts for a in p.allocations], stats,
                        max(p.timestamp for p in parts), view=parts[0].view, has_freed=False)


def _is_special(path: str) -> bool:
    """A device, FIFO or /dev/stdout-style path (written in place, never kept or replaced)."""
    if path.startswith(("/dev/", "/proc/self/fd/")):
        return True
    try:
        import stat as _stat
        return not _stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _drop_preload() -> None:
    pre = os.environ.get("LD_PRELOAD", "")
    rest = " ".join(p for p in pre.replace(":", " ").split() if not p.endswith("libspprof_alloc.so"))
    if rest:
        os.environ["LD_PRELOAD"] = rest
    else:
        os.environ.pop("LD_PRELOAD", None)


_recorder: Optional[Recorder] = None


def run_child(exe: str, argv: list, env: Dict[str, str]) -> int:
    """The launcher's half on Windows, where there is no exec: runs the program as a child of the `record`
    process with env (the bootstrap there starts the recorder in the process whose parent is this one:
    SPPROF_RECORD_PARENT_PID), the standard handles inherited, and returns its exit status, which the launcher
    exits with. Ctrl+C reaches both (one console): the child decides what it does, this process waits."""
    import subprocess

    env = dict(env)
    env.pop(ENV_PREFIX + "PID", None)
    env[ENV_PREFIX + "PARENT_PID"] = str(os.getpid())
    try:
        proc = subprocess.Popen([exe] + list(argv[1:]), env=env)
    except OSError as e:
        sys.stderr.write(f"spprof record: cannot run {argv[0]}: {e.strerror or e}\n")
        return 126 if isinstance(e, PermissionError) else 127
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue


def begin() -> Optional[Recorder]:
    """Start recording as configured by SPPROF_RECORD_* (called by the bootstrap sitecustomize)."""
    global _recorder
    if _recorder is not None:
        return _recorder
    cfg = config_from_env()
    root = os.environ.get(ENV_PREFIX + "PID", "") == str(os.getpid()) or not cfg["subprocesses"]
    try:
        fd = int(os.environ.get(ENV_PREFIX + "REPORT_FD", "-1")) if root else -1
        if fd >= 0:
            os.set_inheritable(fd, False)  # not passed on to programs this one execs
    except (ValueError, OSError):
        fd = -1
    if not root:  # the root's descriptors (REPORT_FD, TOP_FD) and port mean nothing here
        cfg["top_fd"] = -1
        cfg["serve"] = None
    rec = Recorder(cfg, fd, root)
    try:
        rec.begin()
    except BaseException:
        _report(fd, b"D")  # the bootstrap says on stderr why the program runs unprofiled
        raise
    _recorder = rec
    return rec
