"""`spprof top -- COMMAND`: a live view of a running program (both halves).

The program half (Streamer) runs in the profiled process, started by spprof/_record.py when `spprof top`
exec'd it with SPPROF_RECORD_TOP_FD: a daemon thread reads the running session every second
(_spprof.samples()), turns what is new since the last second into per-thread, per-function own and total
weights, and sends that as one JSON line over a Unix socket the front end owns (send with MSG_NOSIGNAL: a
front end that died never kills the program with SIGPIPE). The channel carries a few KiB per second,
whatever the sampling rate. At the program's exit the last part is sent by Recorder.finish.

The front end half (View, plain_tables) runs in the `spprof top` process, which forked the program and
waits for it. It is loaded by its path from spprof/_cli.py, so nothing here imports the spprof package at
module level (the front end's interpreter may have no build of the extension).

Wire format, one JSON object per line:
  {"pid": P, "t": seconds since start, "mode": "cpu"|"wall", "hz": rate,
   "fn": {id: [function, file, native 0|1]} (functions first seen in this message),
   "th": {tid: thread name}, "rows": [[tid, id, own_w, total_w, own_n, total_n,
   py_own_w, py_total_w, py_own_n, py_total_n], ...], "w": weight, "n": samples, "final": 0|1}
weights are nanoseconds of CPU (wall) time, _n sample counts; py_* are the same with native frames left out
(the own time of a native frame goes to the Python frame that called it).
"""
import json
import os
import re
import select
import signal
import socket
import sys
import threading
import time

PERIOD_S = 1.0
MAX_ROWS = 3000  # per message: the rows with the most total weight (a program with huge stacks stays in KiB)
# The session keeps every run of samples, and reading it costs time in proportion: past this many runs the
# streamer sends what it has, then stops and starts the session again (a gap of about a millisecond), so a
# program watched for hours costs as little as in its first minute. (SPPROF_RECORD_TOP_MAX_RUNS: for tests.)
MAX_RUNS = int(os.environ.get("SPPROF_RECORD_TOP_MAX_RUNS", "") or 20000)


# ---- program half -----------------------------------------------------------------------------------------

class Streamer:
    def __init__(self, fd, interval_ms, mode, period=PERIOD_S, path=None, restart=None):
        if path:  # top --subprocesses: every process connects to the front end's socket
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(path)
        else:
            self.sock = socket.socket(fileno=fd)
        self.sock.settimeout(10.0)
        self.restart = restart  # starts the session again with the same settings (Recorder._start_sampling)
        self.interval_ms = interval_ms
        self.mode = mode
        self.period = period
        self.t0 = time.monotonic()
        self.open = {}  # (tid, t_first, frames) -> (count, weight) already sent, of runs that may still grow
        self.tick_ns = 0  # runs that ended before this were sent whole
        self.fids = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.broken = False
        self.my_tid = None
        self.thread = threading.Thread(target=self._run, name="spprof-top", daemon=True)

    def start(self):
        self.thread.start()

    def _run(self):
        try:
            from spprof import _spprof
            self.my_tid = _spprof.gettid()
        except Exception:
            self.my_tid = threading.get_native_id()
        while not self.stop.wait(self.period):
            self.send(final=False)

    def send(self, final):
        """Sends what is new since the last message (final: the last one, at exit)."""
        with self.lock:
            if self.broken:
                return
            if final:
                self.stop.set()
            try:
                msg = self._collect(final)
            except Exception as e:  # the session ended under us (stopped elsewhere): say it, stop streaming
                msg = {"pid": os.getpid(), "t": time.monotonic() - self.t0, "error": f"{type(e).__name__}: {e}",
                       "final": 1}
                self.broken = True
            try:
                self.sock.sendall((json.dumps(msg, separators=(",", ":")) + "\n").encode(),
                                  getattr(socket, "MSG_NOSIGNAL", 0))
            except OSError:
                self.broken = True  # the front end is gone: the program runs on
            if final or self.broken:
                try:
                    self.sock.close()
                except OSError:
                    pass

    def _collect(self, final):
        import spprof
        from spprof import _spprof
        hook = spprof._bootstrap_inner_hook
        hook_key = (hook.__qualname__, hook.__code__.co_filename)
        sess = spprof._session
        names = dict(sess.names) if sess is not None else {}
        spprof._note_live_threads(names)
        now_ns = time.monotonic_ns()
        deltas = {}  # (tid, frames) -> [count, weight]
        still_open = {}
        tick = self.tick_ns
        raw = _spprof.samples()
        for tid, cname, t_first, t_last, count, weight, frames in raw:
            if tid == self.my_tid or t_last < tick:
                continue
            key = (tid, t_first, frames)
            seen = self.open.get(key)
            if seen is not None:
                dc, dw = count - seen[0], weight - seen[1]
            else:
                dc, dw = count, weight
            still_open[key] = (count, weight)
            names.setdefault(tid, cname)
            if dc <= 0 and dw <= 0:
                continue
            d = deltas.setdefault((tid, frames), [0, 0])
            d[0] += dc
            d[1] += dw
        restarted = False
        if len(raw) > MAX_RUNS and self.restart is not None and not final:
            try:
                spprof.stop()  # the runs are in `raw`; what is taken between the two calls is lost (~ms)
                self.restart()
                restarted = True
            except Exception:
                self.restart = None  # keep the session as it is
        if restarted:  # every run of the new session is new
            self.open = {}
            self.tick_ns = 0
        else:  # a run that ended before (now - 2 periods) will not grow: forget it (keeps `open` small)
            self.open = still_open
            self.tick_ns = max(tick, now_ns - int(2 * self.period * 1e9))
        rows = {}
        new_fns = {}
        tot_w = tot_n = 0
        for (tid, frames), (dc, dw) in deltas.items():
            fr = [f for f in frames if (f[0], f[1]) != hook_key and not (f[2] <= 0 and f[0].startswith("spprof_"))]
            if not fr:
                continue
            tot_w += dw
            tot_n += dc
            py = [f for f in fr if f[2] > 0] or fr
            for which, stack in ((0, fr), (4, py)):
                seen = set()
                for i, f in enumerate(stack):
                    k = (f[0], f[1])
                    fid = self.fids.get(k)
                    if fid is None:
                        fid = self.fids[k] = len(self.fids)
                        new_fns[fid] = [f[0], f[1], 1 if f[2] <= 0 else 0]
                    r = rows.get((tid, fid))
                    if r is None:
                        r = rows[(tid, fid)] = [0] * 8
                    if i == 0:
                        r[which] += dw
                        r[which + 2] += dc
                    if fid not in seen:
                        seen.add(fid)
                        r[which + 1] += dw
                        r[which + 3] += dc
        out = sorted(rows.items(), key=lambda kv: -(kv[1][1] + kv[1][5]))[:MAX_ROWS]
        used = {tid for (tid, _), _ in out}
        return {"pid": os.getpid(), "t": round(time.monotonic() - self.t0, 3), "mode": self.mode,
                "hz": round(1000.0 / self.interval_ms, 3) if self.interval_ms else 0,
                "fn": {str(k): v for k, v in new_fns.items()},
                "th": {str(t): names.get(t, str(t)) for t in used},
                "rows": [[tid, fid] + r for (tid, fid), r in out], "w": tot_w, "n": tot_n,
                "final": 1 if final else 0}


# ---- front end: the data -----------------------------------------------------------------------------------

class Data:
    """What the front end knows: the last interval and everything since start, per (pid, tid, function)."""

    def __init__(self):
        self.fns = {}  # (pid, fid) -> (function, file, native)
        self.threads = {}  # (pid, tid) -> name
        self.last_by_pid = {}  # pid -> (time received, {(pid, tid, fid): row (8 numbers)}, weight, samples)
        self.cum = {}
        self.cum_w = self.cum_n = 0
        self.t = 0.0
        self.mode = "cpu"
        self.hz = 0.0
        self.messages = 0
        self.errors = []
        self.pids = set()

    def add(self, msg):
        pid = msg.get("pid", 0)
        self.pids.add(pid)
        if "error" in msg:
            self.errors.append(f"pid {pid}: {msg['error']}")
            return
        self.messages += 1
        self.t = max(self.t, msg.get("t", 0.0))
        self.mode = msg.get("mode", self.mode)
        self.hz = msg.get("hz", self.hz)
        for k, v in msg.get("fn", {}).items():
            self.fns[(pid, int(k))] = tuple(v)
        for k, v in msg.get("th", {}).items():
            self.threads[(pid, int(k))] = v
        last = {}
        for row in msg.get("rows", ()):
            key = (pid, row[0], row[1])
            vals = row[2:10]
            last[key] = vals
            c = self.cum.get(key)
            if c is None:
                self.cum[key] = list(vals)
            else:
                for i in range(8):
                    c[i] += vals[i]
        self.last_by_pid[pid] = (time.monotonic(), last, msg.get("w", 0), msg.get("n", 0))
        self.cum_w += msg.get("w", 0)
        self.cum_n += msg.get("n", 0)

    def _recent(self):
        """The last message of each process that sent one in the last 1.5 periods (the last second)."""
        now = time.monotonic()
        return [v for v in self.last_by_pid.values() if now - v[0] < 1.5 * PERIOD_S]

    @property
    def last(self):
        out = {}
        for v in self._recent():
            out.update(v[1])
        return out

    @property
    def last_w(self):
        return sum(v[2] for v in self._recent())

    @property
    def last_n(self):
        return sum(v[3] for v in self._recent())

    def table(self, sort="own", since_start=False, per_thread=False, native=True):
        """Rows [(own%, total%, cum own%, cum total%, own and total samples since start, thread or None,
        function, file)],
        sorted; % of all the weight in that period."""
        off = 0 if native else 4
        agg = {}
        for src, which in ((self.last, 0), (self.cum, 1)):
            for (pid, tid, fid), r in src.items():
                fn = self.fns.get((pid, fid), ("?", "", 0))
                if not native and fn[2] and r[off + 1] == 0:
                    continue
                key = ((pid, tid) if per_thread else None, fn[0], fn[1])
                a = agg.get(key)
                if a is None:
                    a = agg[key] = [0, 0, 0, 0, 0, 0]
                a[2 * which] += r[off]
                a[2 * which + 1] += r[off + 1]
                if which:
                    a[4] += r[off + 2]
                    a[5] += r[off + 3]
        lw = self.last_w or 1
        cw = self.cum_w or 1
        rows = []
        for (th, func, file), a in agg.items():
            if a[1] == 0 and a[3] == 0:
                continue
            rows.append((100.0 * a[0] / lw, 100.0 * a[1] / lw, 100.0 * a[2] / cw, 100.0 * a[3] / cw, a[4], a[5],
                         th, func, file))
        col = {"own": 0, "total": 1}[sort] + (2 if since_start else 0)
        rows.sort(key=lambda r: (-r[col], -r[col ^ 1], r[7]))
        return rows

    def thread_name(self, th):
        pid, tid = th
        name = self.threads.get(th, str(tid))
        return f"{name}" if len(self.pids) <= 1 else f"{pid}:{name}"


def short_file(path):
    base = os.path.basename(path)
    return base or path


def fmt_function(func, file, width):
    text = f"{func} ({short_file(file)})" if file else func
    if len(text) > width:
        text = text[:max(0, width - 1)] + "~"
    return text


HEADER = "  OWN%  TOTAL%   OWN%  TOTAL%    OWN  TOTAL  "


def table_lines(data, width, nrows, sort="own", since_start=False, per_thread=False, native=True):
    lines = []
    head = HEADER + ("THREAD        " if per_thread else "") + "FUNCTION (FILE)"
    lines.append(head[:width])
    rows = data.table(sort, since_start, per_thread, native)
    for r in rows[:max(0, nrows)]:
        s = f"{r[0]:6.1f}  {r[1]:6.1f}  {r[2]:5.1f}  {r[3]:6.1f}  {r[4]:5d}  {r[5]:5d}  "
        if per_thread:
            s += f"{data.thread_name(r[6])[:12]:<12}  "
        s += fmt_function(r[7], r[8], max(8, width - len(s)))
        lines.append(s[:width])
    return lines


def status_line(data, command, paused=False):
    nth = len(data.threads)
    procs = len(data.pids)
    what = f"{procs} processes, " if procs > 1 else ""
    return (f"spprof top{'  PAUSED' if paused else ''}  {data.t:.0f} s  {data.mode} {data.hz:g} Hz  "
            f"{data.last_n} samples in the last second, {data.cum_n} since start  {what}{nth} "
            f"thread{'s' if nth != 1 else ''}  {command}")


# ---- front end: the terminal view ------------------------------------------------------------------------

CSI = "\x1b["
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x08\x0b-\x1f\x7f]")


class View:
    """The live view on a terminal (fd tty): alternate screen, cbreak input, redrawn every second and on a key."""
    KEYS = "keys: o/t sort by own/total (O/T since start)  h threads  n native  space pause  q quit"

    def __init__(self, tty, command):
        import termios
        self.tty = tty
        self.command = command
        self.sort = "own"
        self.since_start = False
        self.per_thread = False
        self.native = True
        self.paused = False
        self.out_lines = [""]  # the program's output (through the pty), its last lines shown under the table
        self.saved = termios.tcgetattr(tty)
        self.active = False

    def enter(self):
        import termios
        import tty as ttymod
        ttymod.setcbreak(self.tty, termios.TCSANOW)  # keys one by one, no echo; Ctrl-C still signals
        self._write(CSI + "?1049h" + CSI + "?25l")
        self.active = True

    def leave(self):
        import termios
        if not self.active:
            return
        self.active = False
        self._write(CSI + "?25h" + CSI + "?1049l")
        try:
            termios.tcsetattr(self.tty, termios.TCSADRAIN, self.saved)
        except OSError:
            pass

    def _write(self, s):
        data = s.encode("utf-8", "replace")
        while data:
            try:
                n = os.write(self.tty, data)
            except InterruptedError:
                continue
            except OSError:
                return
            data = data[n:]

    def program_output(self, chunk):
        text = chunk.decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        parts = text.split("\n")
        self.out_lines[-1] += parts[0]
        self.out_lines.extend(parts[1:])
        del self.out_lines[:-50]

    def key(self, ch):
        """Applies a key; returns False for q."""
        if ch in ("q", "Q"):
            return False
        if ch == "o":
            self.sort, self.since_start = "own", False
        elif ch == "t":
            self.sort, self.since_start = "total", False
        elif ch == "O":
            self.sort, self.since_start = "own", True
        elif ch == "T":
            self.sort, self.since_start = "total", True
        elif ch == "h":
            self.per_thread = not self.per_thread
        elif ch == "n":
            self.native = not self.native
        elif ch == " ":
            self.paused = not self.paused
        return True

    def draw(self, data, force=False):
        if self.paused and not force:
            return
        try:
            cols, rows = os.get_terminal_size(self.tty)
        except OSError:
            cols, rows = 80, 24
        cols = max(20, cols)
        rows = max(6, rows)
        out = [s for s in self.out_lines if s.strip()] if self.out_lines else []
        pane = min(len(out), max(0, rows // 5))
        lines = [status_line(data, self.command, self.paused)]
        lines.append((f"sort: {self.sort}{' since start' if self.since_start else ' last second'}  view: "
                      f"{'per thread' if self.per_thread else 'all threads'}  native frames: "
                      f"{'shown' if self.native else 'hidden'}"))
        lines.append(self.KEYS)
        lines.append("  last second    | since start   | samples since start")
        nrows = rows - len(lines) - 1 - (pane + 1 if pane else 0)
        lines += table_lines(data, cols, nrows, self.sort, self.since_start, self.per_thread, self.native)
        for e in data.errors[-1:]:
            lines.append("! " + e)
        while len(lines) < rows - (pane + 1 if pane else 0):
            lines.append("")
        if pane:
            lines.append("-- program output " + "-" * max(0, cols - 18))
            lines += [_CONTROL.sub("", s) for s in out[-pane:]]
        buf = [CSI + "H"]
        for i, ln in enumerate(lines[:rows]):
            ln = _CONTROL.sub("", ln)[:cols]
            buf.append(ln + CSI + "K" + ("\r\n" if i < rows - 1 else ""))
        buf.append(CSI + "J")
        self._write("".join(buf))


def plain_table(data, command, out, nrows=25):
    """The degraded view (stdout not a terminal): one table per second."""
    lines = [status_line(data, command)] + table_lines(data, 200, nrows) + [""]
    try:
        out.write("\n".join(lines) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass


# ---- front end: the loop -------------------------------------------------------------------------------------

def run(pid, sock, command, pty_master=-1, plain_out=None, listener=None):
    """Shows the program (pid, already running) until it exits; returns its wait status.

    sock: the front end's end of the socket the program streams on; listener (top --subprocesses): a listening
    Unix socket every process of the tree connects to (then sock is None). pty_master >= 0: the program's stdout and
    stderr are this pty's slave (they were the terminal): shown under the table while the view is up, and
    written to this process's stdout, whole, when the view closes (q, or the program's end)."""
    data = Data()
    view = None
    tty = -1
    if plain_out is None:
        try:
            tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
            view = View(tty, command)
            view.enter()
        except (OSError, ImportError):
            view = None
    held = bytearray()  # the program's output while the view is up
    held_limit = 16 << 20
    held_dropped = 0
    conns = {sock: b""} if sock is not None else {}  # socket -> bytes of an unfinished line
    status = None
    prev_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the program's (it reaches it too)
    prev_winch = None
    if view is not None:
        prev_winch = signal.signal(signal.SIGWINCH, lambda *a: None)  # wakes select; redrawn at the new size

    def flush_held():
        nonlocal held, held_dropped
        if held_dropped:
            os.write(2, f"spprof top: {held_dropped} bytes of the program's output were left out (over "
                        f"{held_limit >> 20} MiB while the view was up)\n".encode())
        _write_all(1, bytes(held))
        held = bytearray()

    def close_view():
        nonlocal view
        if view is not None:
            view.leave()
            view = None
            flush_held()

    try:
        last_draw = 0.0
        while True:
            fds = list(conns)
            if listener is not None:
                fds.append(listener)
            if pty_master >= 0:
                fds.append(pty_master)
            if view is not None:
                fds.append(tty)
            try:
                ready = select.select(fds, [], [], 0.2)[0]
            except InterruptedError:
                ready = []
            dirty = False
            if listener is not None and listener in ready:
                try:
                    c, _ = listener.accept()
                    conns[c] = b""
                except OSError:
                    pass
            for c in [c for c in conns if c in ready]:
                try:
                    chunk = c.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    c.close()
                    del conns[c]
                    continue
                buf = conns[c] + chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        data.add(json.loads(line))
                    except ValueError:
                        continue
                    dirty = True
                    if plain_out is not None:
                        plain_table(data, command, plain_out)
                conns[c] = buf
            if pty_master >= 0 and pty_master in ready:
                try:
                    chunk = os.read(pty_master, 1 << 16)
                except OSError:  # EIO: every holder of the slave closed it
                    chunk = b""
                if not chunk:
                    os.close(pty_master)
                    pty_master = -1
                elif view is not None:
                    view.program_output(chunk)
                    if len(held) + len(chunk) <= held_limit:
                        held += chunk
                    else:
                        held_dropped += len(chunk)
                    dirty = True
                else:
                    _write_all(1, chunk)
            if view is not None and tty in ready:
                try:
                    keys = os.read(tty, 64).decode("utf-8", "replace")
                except OSError:
                    keys = ""
                for ch in keys:
                    if not view.key(ch):
                        close_view()
                        break
                    dirty = True
                    if view is not None:
                        view.draw(data, force=True)
                        dirty = False
            if status is None:
                try:
                    wpid, st = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    wpid, st = pid, 0
                if wpid == pid:
                    status = st
                    deadline = time.monotonic() + 2.0
            if view is not None and (dirty and time.monotonic() - last_draw > 0.05 or
                                     time.monotonic() - last_draw > 1.0):
                view.draw(data)
                last_draw = time.monotonic()
            if status is not None and ((not conns and pty_master < 0) or time.monotonic() > deadline):
                break
    finally:
        close_view()
        if view is None and tty >= 0:
            os.close(tty)
        signal.signal(signal.SIGINT, prev_int)
        if prev_winch is not None:
            signal.signal(signal.SIGWINCH, prev_winch)
    if pty_master >= 0:
        os.close(pty_master)
    for c in conns:
        c.close()
    return status, data


def _write_all(fd, data):
    while data:
        try:
            n = os.write(fd, data)
        except InterruptedError:
            continue
        except OSError:
            return
        data = data[n:]


def summary(data, command, out=None):
    """After the program's end: the table since start, on stderr."""
    out = sys.stderr if out is None else out
    nth = len(data.threads)
    if not data.messages:
        why = data.errors[-1] if data.errors else ("it did not start spprof: not a Python program, or it ended "
                                                   "before Python's start-up finished")
        lines = [f"spprof top: {command}: no profile data ({why})"]
    else:
        npr = len(data.pids)
        procs = f"{npr} processes, " if npr > 1 else ""
        lines = [f"spprof top: {command}: {data.cum_n} samples ({data.mode}, {data.t:.1f} s) in {procs}{nth} "
                 f"thread{'s' if nth != 1 else ''}; since start:"]
        lines.append("   OWN%  TOTAL%    OWN  TOTAL  FUNCTION (FILE)")
        for r in data.table("own", since_start=True)[:10]:
            lines.append(f"{r[2]:7.1f}  {r[3]:6.1f}  {r[4]:5d}  {r[5]:5d}  {fmt_function(r[7], r[8], 120)}")
    try:
        out.write("\n".join(lines) + "\n")
        out.flush()
    except (OSError, ValueError):
        pass
