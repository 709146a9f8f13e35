"""Threads: every thread is sampled with its native id and Python name, including threads started after
start(), threads that end during profiling, a main thread blocked in join/sleep, and CPU vs wall mode."""
from conftest import functions_in, leaf, samples, self_shares, weight


def test_five_threads_present_with_ids_and_names(run):
    r = run("""
    ids = {}
    def work(i):
        ids[threading.current_thread().name] = threading.get_native_id()
        burn(0.25)
    spprof.start(interval_ms=1)
    threads = [threading.Thread(target=work, args=(i,), name=f"worker-{i}") for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    p = spprof.stop()
    emit({"ids": ids, "native_ids": {t.name: t.native_id for t in threads}, "dump": dump(p),
          "main": threading.get_native_id()})
    """, timeout=60).ok()
    res = r.result
    d = res["dump"]
    assert res["ids"] == res["native_ids"]
    for name, tid in res["ids"].items():
        assert d["threads"].get(str(tid)) == name, (name, tid, d["threads"])
        ss = samples(d, tid=tid)
        assert all(s[1] == name for s in ss)
        assert "work" in functions_in(ss) and self_shares(ss).get("burn", 0) > 0.8, name
        # root first: a thread's stack starts in threading's bootstrap, our start-up hook is not shown
        # (a thread's first and last instants run no Python: such samples show native frames, no line)
        roots = {s[5][0][0] for s in ss if any(f[2] > 0 for f in s[5])}
        assert roots <= {"Thread._bootstrap", "_bootstrap"} and roots, roots  # 3.9/3.10: no co_qualname
        assert "_bootstrap_inner_hook" not in functions_in(ss)
        assert 0.1 <= weight(ss) * 1e-3 <= 0.5, (name, weight(ss))
    assert len(set(res["ids"].values())) == 5


def test_threads_starting_and_ending_during_profiling(run):
    r = run("""
    ids = {}
    def work(seconds, rename=None):
        if rename:
            threading.current_thread().name = rename   # a thread may rename itself
        ids[threading.current_thread().name] = threading.get_native_id()
        burn(seconds)

    early = threading.Thread(target=work, args=(0.3,), name="early-ends-during")
    early.start()                                  # started before start(), ends during profiling
    time.sleep(0.05)
    spprof.start(interval_ms=1)
    late = threading.Thread(target=work, args=(0.2,), name="late-ends-during")
    late.start(); late.join()                      # started and ended during profiling
    short = threading.Thread(target=work, args=(0.03,), name="short-lived")
    short.start(); short.join()                    # shorter than the 20 ms thread scan of the C core
    renamed = threading.Thread(target=work, args=(0.1, "renamed-inside"), name="before-rename")
    renamed.start(); renamed.join()
    running = threading.Thread(target=work, args=(0.4,), name="still-running")
    running.start()
    early.join()
    burn(0.05)
    p = spprof.stop()
    running.join()
    emit({"ids": ids, "dump": dump(p)})
    """, timeout=60).ok()
    res = r.result
    d = res["dump"]
    names_by_tid = {int(k): v for k, v in d["threads"].items()}
    for name in ("early-ends-during", "late-ends-during", "short-lived", "renamed-inside", "still-running"):
        tid = res["ids"][name]
        assert names_by_tid.get(tid) == name, (name, tid, names_by_tid)
        assert "work" in functions_in(samples(d, tid=tid)), name
    assert "MainThread" in names_by_tid.values()


def test_main_thread_blocked_while_others_are_sampled(run):
    r = run("""
    ids = []
    def work():
        ids.append(threading.get_native_id())
        burn(0.3)
    def wait_for_workers(threads):
        for t in threads:
            t.join()
    out = {}
    for mode in ("wall", "cpu"):
        spprof.start(interval_ms=1, mode=mode)
        threads = [threading.Thread(target=work, name=f"{mode}-worker-{i}") for i in range(2)]
        for t in threads:
            t.start()
        wait_for_workers(threads)
        time.sleep(0.1)   # blocked again, in sleep
        out[mode] = dump(spprof.stop())
    emit({"out": out, "main": threading.get_native_id(), "ids": ids})
    """, timeout=60).ok()
    res = r.result
    main = res["main"]
    wall, cpu = res["out"]["wall"], res["out"]["cpu"]
    for d, mode in ((wall, "wall"), (cpu, "cpu")):
        workers = [s for s in d["samples"] if s[1].startswith(f"{mode}-worker-")]
        assert len({s[0] for s in workers}) == 2, mode
        assert self_shares(workers).get("burn", 0) > 0.8, mode
    # wall mode: the blocked main thread is sampled, in join (under wait_for_workers) and in sleep
    mw = samples(wall, tid=main)
    assert all(s[1] == "MainThread" for s in mw)
    in_wait = weight([s for s in mw if "wait_for_workers" in [f[0] for f in s[5]]])
    in_sleep = weight([s for s in mw if leaf(s) and leaf(s)[0] == "<module>"])
    assert in_wait * 1e-3 > 0.1, in_wait          # ~0.3 s (2 threads x 0.3 s CPU on 2 cores, one GIL)
    assert 0.05 <= in_sleep * 1e-3 <= 0.3, in_sleep  # ~0.1 s
    # cpu mode: the blocked main thread costs (almost) nothing
    mc = weight(samples(cpu, tid=main))
    wc = weight([s for s in cpu["samples"] if s[1].startswith("cpu-worker-")])
    assert mc < 0.1 * wc, (mc, wc)


def test_cpu_vs_wall_mode_sleeping_thread(run):
    r = run("""
    stop = threading.Event()
    def sleeper():
        while not stop.is_set():
            time.sleep(0.005)
    def busy():
        burn(0.4)
    out = {}
    for mode in ("cpu", "wall"):
        stop.clear()
        spprof.start(interval_ms=1, mode=mode)
        s = threading.Thread(target=sleeper, name="sleeper")
        b = threading.Thread(target=busy, name="busy")
        s.start(); b.start(); b.join()
        stop.set(); s.join()
        out[mode] = dump(spprof.stop())
    emit(out)
    """, timeout=60).ok()
    cpu, wall = r.result["cpu"], r.result["wall"]
    busy_cpu, busy_wall = weight(samples(cpu, name="busy")), weight(samples(wall, name="busy"))
    sleep_cpu, sleep_wall = weight(samples(cpu, name="sleeper")), weight(samples(wall, name="sleeper"))
    assert busy_cpu * 1e-3 > 0.25 and busy_wall * 1e-3 > 0.25, (busy_cpu, busy_wall)
    # the sleeper uses (almost) no CPU: (almost) absent in cpu mode, present for its whole life in wall mode
    assert sleep_cpu <= 0.02 * busy_cpu, (sleep_cpu, busy_cpu)
    assert sleep_wall >= 0.5 * busy_wall, (sleep_wall, busy_wall)
    sw = samples(wall, name="sleeper")
    assert self_shares(sw).get("sleeper", 0) > 0.8  # time.sleep is C: the leaf Python frame is sleeper()
