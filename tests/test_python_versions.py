"""What differs between CPython versions: line numbers from each version's instruction offsets, the
3.13+ cross-check of the compiled-in frame layout against _PyRuntime.debug_offsets, and free-threaded
builds (3.13t+) keeping the GIL off while several threads run Python in parallel, each sampled as itself.
Runs under every interpreter (conftest.py)."""
import inspect

from conftest import samples


def test_line_numbers(run):
    """A function with a known line layout: the leaf's line is the loop (head or body, mostly body) and the
    caller's line is the call, on every version (3.9 byte offsets, 3.10 code units, 3.11/3.12 prev_instr,
    3.13+ instr_ptr)."""
    r = run('''
    def hot(n):                      # line 1 of hot
        s = 0                        # 2
        for i in range(n):           # 3
            s += i * i % 7           # 4
        return s                     # 5

    def caller():
        t_end = time.thread_time() + 0.6
        while time.thread_time() < t_end:
            hot(20000)                # the call line
        return 0

    import inspect
    first = hot.__code__.co_firstlineno
    call_line = caller.__code__.co_firstlineno + 3
    spprof.start(interval_ms=1)
    caller()
    p = spprof.stop()
    leaf_lines, caller_lines = {}, {}
    for s in p.samples:
        fr = s.frames
        if fr and fr[-1][0] == "hot" and len(fr) >= 2 and fr[-2][0] == "caller":
            leaf_lines[fr[-1][2] - first + 1] = leaf_lines.get(fr[-1][2] - first + 1, 0) + s.weight
            caller_lines[fr[-2][2] - call_line] = caller_lines.get(fr[-2][2] - call_line, 0) + s.weight
    emit({"leaf": {str(k): v for k, v in leaf_lines.items()}, "caller": {str(k): v for k, v in caller_lines.items()},
          "version": list(sys.version_info[:2])})
    ''').ok()
    res = r.result
    leaf = {int(k): v for k, v in res["leaf"].items()}
    caller = {int(k): v for k, v in res["caller"].items()}
    total = sum(leaf.values())
    assert total >= 200, res  # ~0.6 s at 1 ms
    # the loop (head, line 3; body, line 4) has nearly all the time; line 2 and 5 run once per call
    assert (leaf.get(3, 0) + leaf.get(4, 0)) >= 0.95 * total, res
    assert leaf.get(4, 0) > leaf.get(3, 0), res
    # line 1: the function's first instruction (RESUME, located on the def line since 3.11), rarely caught
    assert set(leaf) <= {1, 2, 3, 4, 5}, res
    # the caller is shown at its call line (offset 0 from call_line)
    assert caller.get(0, 0) >= 0.99 * sum(caller.values()), res


def test_layout_cross_check(run):
    """3.13+: the compiled-in offsets agree with the running interpreter's debug offsets, and a copy with
    any difference (cookie, version, an offset) is refused with a message that names it."""
    r = run('''
    import ctypes
    from spprof import _spprof
    size = _spprof.DEBUG_OFFSETS_SIZE
    out = {"size": size, "version": list(sys.version_info[:2])}
    try:  # bad input: a clear ValueError on every version
        _spprof._check_layout(b"x")
        out["short"] = None
    except ValueError as e:
        out["short"] = str(e)
    if size:
        out["live"] = _spprof._check_layout()
        addr = ctypes.addressof(ctypes.c_char.in_dll(ctypes.pythonapi, "_PyRuntime"))
        live = ctypes.string_at(addr, size)
        out["copy"] = _spprof._check_layout(live)
        errors = {}
        for what, pos, value in (("cookie", 0, b"ydebugpy"), ("version", 8, (0x03070000).to_bytes(8, "little")),
                                 ("ob_type", size - 8, (12345).to_bytes(8, "little"))):
            bad = bytearray(live)
            bad[pos:pos + len(value)] = value
            try:
                _spprof._check_layout(bytes(bad))
                errors[what] = None
            except _spprof.Error as e:
                errors[what] = str(e)
        out["errors"] = errors
    else:
        out["live"] = _spprof._check_layout()
    emit(out)
    ''').ok()
    res = r.result
    assert res["short"] and ("bytes" in res["short"] or "before CPython 3.13" in res["short"]), res
    if tuple(res["version"]) < (3, 13):
        assert res["size"] == 0 and res["live"] is False
        return
    assert res["size"] > 0 and res["live"] is True and res["copy"] is True, res
    e = res["errors"]
    assert e["cookie"] and "cookie" in e["cookie"], e
    assert e["version"] and "built for CPython" in e["version"] and "3.7" in e["version"], e
    assert e["ob_type"] and "PyObject.ob_type" in e["ob_type"] and "rebuild spprof" in e["ob_type"], e


def test_parallel_threads_free_threaded(run):
    """Four threads each run their own function; each thread's samples are in its own function only, and each
    thread's sampled time matches its CPU time. On free-threaded builds the GIL must still be off after spprof
    was imported and started, and the threads must have run in parallel at some point (more CPU than wall)."""
    r = run('''
    watchdog(60)
    gil = getattr(sys, "_is_gil_enabled", lambda: True)
    def make(k):
        src = "def work_%d(t_end):\\n    x = 0\\n    while time.thread_time() < t_end:\\n        x = (x * 31 + 7) & 0xFFFF\\n    return x\\n" % k
        ns = {"time": time}
        exec(compile(src, "work_%d.py" % k, "exec"), ns)
        return ns["work_%d" % k]
    funcs = [make(k) for k in range(4)]
    cpu = {}
    def body(k):
        cpu[k] = (threading.get_native_id(), time.thread_time())
        funcs[k](time.thread_time() + 0.5)
        cpu[k] = (cpu[k][0], time.thread_time() - cpu[k][1])
    spprof.start(interval_ms=1)
    gil_after_start = gil()
    w0, c0 = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=body, args=(k,)) for k in range(4)]
    for t in threads: t.start()
    for t in threads: t.join()
    wall, pcpu = time.perf_counter() - w0, time.process_time() - c0
    p = spprof.stop()
    per = {}
    for k, (tid, secs) in cpu.items():
        mine = [s for s in p.samples if s.thread_id == tid]
        names = {}
        for s in mine:
            names[s.frames[-1][0]] = names.get(s.frames[-1][0], 0) + s.weight
        per[k] = {"cpu": secs, "names": names, "weight": sum(s.weight for s in mine)}
    emit({"free_threaded": not gil(), "gil_after_start": gil_after_start, "wall": wall, "cpu": pcpu, "per": per,
          "load": os.getloadavg()[0], "ncpu": os.cpu_count()})
    ''').ok()
    res = r.result
    for k, v in res["per"].items():
        k = int(k)
        own = v["names"].get("work_%d" % k, 0)
        others = sum(w for n, w in v["names"].items() if n.startswith("work_") and n != "work_%d" % k)
        assert others == 0, (k, v)  # a thread's sample never shows another thread's function
        assert own >= 0.9 * v["weight"], (k, v)
        assert 0.75 <= v["weight"] * 1e-3 / v["cpu"] <= 1.25, (k, v)  # sampled time ~ thread CPU time
    if res["free_threaded"]:
        assert res["gil_after_start"] is False, res  # importing/starting spprof kept the GIL off
        if res["ncpu"] >= 2 and res["load"] < res["ncpu"]:  # a machine with a core to spare for the second thread
            assert res["cpu"] > 1.2 * res["wall"], res  # the four threads really overlapped
