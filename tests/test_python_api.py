"""The Python API: start/stop, Profiler, @profile, arguments, lifecycle errors, pause/resume, saving, atexit,
fork. Every test runs its program in a subprocess under each interpreter (see conftest.py)."""
import json
import os
import sys

from conftest import functions_in, leaf, samples, self_shares, validate_speedscope

STAT_KEYS = {
    "samples_captured", "samples_dropped", "samples_dropped_memory", "samples_stale", "samples_in_profile",
    "timer_overruns", "timer_create_failures", "timer_create_retries", "threads_registered", "threads_live",
    "threads_sampled", "walk_errors", "walk_truncated", "unique_stacks", "unique_frames", "profile_bytes",
    "signals_ignored", "faults_recovered", "threads_perf", "threads_posix", "perf_fd_fallbacks",
    "ticks_late", "suspensions", "threads_skipped", "suspend_ns_total", "suspend_ns_max",
}

def test_start_stop(run):
    r = run("""
    assert not spprof.is_active() and spprof.state() == "stopped"
    spprof.start(interval_ms=1)
    active, st = spprof.is_active(), spprof.state()
    running_stats = spprof.stats()
    burn(0.3)
    p = spprof.stop()
    assert isinstance(p, spprof.Profile)
    s0 = p.samples[0]
    emit({"active": active, "state": st, "after": [spprof.is_active(), spprof.state()],
          "stats_keys": sorted(running_stats), "main": threading.get_native_id(),
          "types": [type(s0).__name__, type(s0.frames).__name__, type(s0.frames[0]).__name__],
          "leaf_prop": list(s0.leaf) == list(s0.frames[-1]), "repr": repr(p), "dump": dump(p)})
    """).ok()
    res = r.result
    d = res["dump"]
    assert res["active"] is True and res["state"] == "running"
    assert res["after"] == [False, "stopped"]
    assert set(res["stats_keys"]) >= STAT_KEYS
    assert set(d["stats"]) >= STAT_KEYS
    if sys.platform == "linux":  # every thread samples itself: no sampler thread suspends anything
        assert [d["stats"][k] for k in ("suspensions", "suspend_ns_max")] == [0, 0], d["stats"]
    assert res["types"] == ["Sample", "tuple", "Frame"] and res["leaf_prop"]
    assert d["interval_ms"] == 1 and d["mode"] == "cpu" and 0.3 <= d["duration"] < 10
    main = samples(d, tid=res["main"])
    assert main, d["threads"]
    assert d["threads"][str(res["main"])] == "MainThread"
    # root first: <module> at the root, burn at the leaf
    assert all(s[5][0][0] == "<module>" for s in main)
    assert self_shares(main).get("burn", 0) > 0.9
    # timestamps are time.monotonic() seconds within the session
    assert all(d["start_time"] - 0.01 <= s[2] <= s[6] <= d["start_time"] + d["duration"] + 0.01 for s in main)
    assert 0.2 <= sum(s[4] for s in main) * 1e-3 <= 0.6  # ~0.3 CPU seconds by weight x interval
    assert "spprof.Profile" in res["repr"]


def test_context_manager(run):
    r = run("""
    with spprof.Profiler(interval_ms=1, mode="cpu") as prof:
        assert spprof.is_active()
        burn(0.2)
    ok = dump(prof.profile)
    try:
        with spprof.Profiler(interval_ms=2, mode="wall") as prof2:
            burn(0.1)
            raise KeyError("boom")
    except KeyError as e:
        raised = str(e)
    emit({"ok": ok, "active": spprof.is_active(), "raised": raised, "second": dump(prof2.profile)})
    """).ok()
    res = r.result
    assert res["active"] is False and res["raised"] == "'boom'"
    assert self_shares(res["ok"]["samples"]).get("burn", 0) > 0.8
    assert res["second"]["mode"] == "wall" and res["second"]["interval_ms"] == 2
    assert "burn" in functions_in(res["second"]["samples"])


def test_decorator(run):
    out = run.tmp_path / "deco.json"
    r = run("""
    @spprof.profile
    def plain(n):
        burn(0.15)
        return n * 2

    @spprof.profile(interval_ms=1, mode="cpu", output=sys.argv[1])
    def with_output():
        burn(0.15)
        return "done"

    @spprof.profile(interval_ms=1)
    def fails():
        burn(0.05)
        raise ValueError("inner failure")

    @spprof.profile(interval_ms=1)
    def recursive(n):
        burn(0.02)
        return n if n == 0 else recursive(n - 1)

    assert plain.last_profile is None and plain.__name__ == "plain"
    res = {"plain": plain(21), "plain_prof": dump(plain.last_profile), "out": with_output(),
           "rec": recursive(3), "rec_prof": dump(recursive.last_profile)}
    try:
        fails()
    except ValueError as e:
        res["raised"] = str(e)
    res["fails_prof"] = dump(fails.last_profile)
    res["active"] = spprof.is_active()
    emit(res)
    """, str(out)).ok()
    res = r.result
    assert res["plain"] == 42 and res["out"] == "done" and res["rec"] == 0
    assert res["plain_prof"]["interval_ms"] == 10
    assert res["raised"] == "inner failure" and res["active"] is False
    assert "fails" in functions_in(res["fails_prof"]["samples"])
    rec_funcs = [f[0] for s in res["rec_prof"]["samples"] for f in s[5]]
    assert rec_funcs.count("recursive") >= 1
    with open(out) as f:
        doc = json.load(f)
    validate_speedscope(doc)
    assert any(fr["name"] == "with_output" for fr in doc["shared"]["frames"])


def test_bad_arguments_raise_clear_exceptions(run):
    r = run("""
    cases = [
        ("start", dict(interval_ms="10"), "TypeError", "interval_ms"),
        ("start", dict(interval_ms=True), "TypeError", "interval_ms"),
        ("start", dict(interval_ms=None), "TypeError", "interval_ms"),
        ("start", dict(interval_ms=0.01), "ValueError", "interval_ms"),
        ("start", dict(interval_ms=0), "ValueError", "interval_ms"),
        ("start", dict(interval_ms=-5), "ValueError", "interval_ms"),
        ("start", dict(interval_ms=60001), "ValueError", "interval_ms"),
        ("start", dict(interval_ms=float("nan")), "ValueError", "interval_ms"),
        ("start", dict(interval_ms=float("inf")), "ValueError", "interval_ms"),
        ("start", dict(mode="gpu"), "ValueError", "mode"),
        ("start", dict(mode=1), "TypeError", "mode"),
        ("start", dict(native="yes"), "TypeError", "native"),
        ("start", dict(memory_limit_mb=0), "ValueError", "memory_limit_mb"),
        ("start", dict(memory_limit_mb="1"), "TypeError", "memory_limit_mb"),
        ("start", dict(max_depth=0), "ValueError", "max_depth"),
        ("start", dict(max_depth=2.5), "TypeError", "max_depth"),
        ("start", dict(bogus=1), "TypeError", "bogus"),
        ("start", dict(source="hpet"), "ValueError", "source"),
        ("start", dict(source="perf", mode="wall"), "ValueError", "needs mode='cpu'"),
        ("Profiler", dict(interval_ms=-1), "ValueError", "interval_ms"),
        ("Profiler", dict(mode="both"), "ValueError", "mode"),
        ("Profiler", dict(output="x.json", format="png"), "ValueError", "format"),
        ("profile", dict(interval_ms=100000), "ValueError", "interval_ms"),
    ]
    out = []
    for fn, kwargs, exc, needle in cases:
        try:
            getattr(spprof, fn)(**kwargs)
            out.append([fn, repr(kwargs), "no exception", "", needle])
        except Exception as e:
            out.append([fn, repr(kwargs), type(e).__name__, str(e), needle])
        out[-1].append(exc)
        assert not spprof.is_active()
    p = spprof.Profile([], 1, "cpu", 0, 0)
    for fmt in ("png", 3):
        try:
            p.save("x.out", format=fmt)
            out.append(["save", repr(fmt), "no exception", "", "format", "ValueError"])
        except Exception as e:
            out.append(["save", repr(fmt), type(e).__name__, str(e), "format", "ValueError"])
    emit(out)
    """).ok()
    bad = [c for c in r.result if c[2] != c[5] or c[4] not in c[3]]
    assert not bad, "\n".join(f"{c[0]}({c[1]}): expected {c[5]} mentioning {c[4]!r}, got {c[2]}: {c[3]}" for c in bad)


def test_sample_sources(run):
    """source="posix" uses POSIX timers only; "perf" a task-clock event per thread, at the full rate
    (skipped where the kernel refuses perf events); both give the same CPU time."""
    r = run("""
    out = {}
    for source in ("posix", "perf", "auto"):
        try:
            spprof.start(interval_ms=0.5, source=source)
        except spprof.Error as e:
            out[source] = {"error": str(e)}
            continue
        burn(0.05)
        st = spprof.stats()
        burn(0.4)
        p = spprof.stop()
        main = [s for s in p.samples if s.thread_id == threading.get_native_id()]
        out[source] = {"perf": st["threads_perf"], "live": st["threads_live"], "count": sum(s.count for s in main),
                       "weight": sum(s.weight for s in main)}
    emit(out)
    """).ok()
    res = r.result
    posix, perf = res["posix"], res["perf"]
    assert posix["perf"] == 0 and posix["live"] >= 1
    assert 0.3 / 0.0005 <= posix["weight"] * 1.0 <= 0.6 / 0.0005, posix
    if "error" in perf:
        assert "perf_event_open" in perf["error"]
        assert res["auto"]["perf"] == 0  # auto falls back to POSIX timers
        return
    assert perf["perf"] == perf["live"] >= 1, perf
    assert 0.3 / 0.0005 <= perf["weight"] <= 0.6 / 0.0005, perf
    assert perf["count"] >= 0.7 * perf["weight"], perf  # full rate: about one signal per interval
    assert res["auto"]["perf"] >= 1


def test_start_twice_and_lifecycle_errors(run):
    r = run("""
    res = {}
    def attempt(key, fn):
        try:
            fn()
            res[key] = "ok"
        except Exception as e:
            res[key] = [type(e).__name__, isinstance(e, spprof.Error), isinstance(e, RuntimeError), str(e)]
    attempt("stop_before", spprof.stop)
    attempt("pause_before", spprof.pause)
    attempt("resume_before", spprof.resume)
    spprof.start(interval_ms=1)
    attempt("start_again", lambda: spprof.start(interval_ms=1))
    attempt("start_again_ctx", lambda: spprof.Profiler(interval_ms=1).__enter__())
    res["still_active"] = spprof.is_active()
    attempt("resume_running", spprof.resume)
    burn(0.1)
    spprof.pause()
    res["paused_state"] = spprof.state()
    attempt("pause_paused", spprof.pause)
    def paused_work():
        burn(0.25)
    paused_work()
    spprof.resume()
    res["resumed_state"] = spprof.state()
    burn(0.1)
    p = spprof.stop()
    attempt("stop_after", spprof.stop)
    res["dump"] = dump(p)
    emit(res)
    """).ok()
    res = r.result
    for key in ("stop_before", "pause_before", "resume_before", "start_again", "start_again_ctx",
                "resume_running", "pause_paused", "stop_after"):
        name, is_err, is_rt, msg = res[key]
        assert is_err and is_rt and msg, (key, res[key])
    assert res["still_active"] and res["paused_state"] == "paused" and res["resumed_state"] == "running"
    ss = res["dump"]["samples"]
    assert "burn" in functions_in(ss)
    paused = sum(s[4] for s in ss if "paused_work" in [f[0] for f in s[5]])
    assert paused <= 8, f"{paused} intervals sampled while paused"


def test_save_unwritable_then_good_and_old_profile(run):
    r = run("""
    import errno
    spprof.start(interval_ms=1)
    burn(0.2)
    p = spprof.stop()
    before = dump(p)
    res = {}
    blocker = os.path.join(os.getcwd(), "a_file")
    open(blocker, "w").close()
    for bad in ("/nonexistent-spprof-dir/x.json", os.path.join(blocker, "x.json"), os.path.join(blocker, "x.collapsed")):
        try:
            p.save(bad)
            res[bad] = "saved?"
        except OSError as e:
            res[bad] = [type(e).__name__, str(e), e.errno is not None, e.filename]
    res["leftovers"] = [f for f in os.listdir(os.getcwd()) if ".tmp." in f]
    res["same_after_failure"] = dump(p) == before
    good = os.path.join(os.getcwd(), "good.json")
    res["good"] = p.save(good)
    # a new session must not change an old Profile, which is saved from its own data
    def second_session_only():
        burn(0.2)
    spprof.start(interval_ms=1)
    second_session_only()
    p.save(os.path.join(os.getcwd(), "old-during-new.collapsed"))
    p2 = spprof.stop()
    p.save(os.path.join(os.getcwd(), "old-after-new.json"))
    res["p2_funcs"] = sorted({f.function for s in p2.samples for f in s.frames})
    emit(res)
    """).ok()
    res = r.result
    for bad in ("/nonexistent-spprof-dir/x.json",):
        name, msg, has_errno, filename = res[bad]
        assert bad in msg and has_errno and filename == bad, res[bad]
    others = [v for k, v in res.items() if k.endswith(("a_file/x.json", "a_file/x.collapsed"))]
    assert len(others) == 2 and all(isinstance(v, list) and "a_file" in v[1] for v in others), res
    assert res["leftovers"] == [] and res["same_after_failure"]
    tmp = run.tmp_path
    with open(tmp / "good.json") as f:
        validate_speedscope(json.load(f))
    for name in ("old-during-new.collapsed", "old-after-new.json"):
        text = (tmp / name).read_text()
        assert "burn" in text and "second_session_only" not in text, name
    assert "second_session_only" in res["p2_funcs"]


def test_atexit_stops_running_session(run):
    r = run("""
    def spinner():
        while True:
            burn(0.01)
    threading.Thread(target=spinner, daemon=True, name="daemon-spinner").start()
    spprof.start(interval_ms=0.5, mode="wall")
    burn(0.1)
    print("exiting with the profiler running")
    """).ok()
    assert "exiting" in r.stdout and "Traceback" not in r.stderr


def test_fork_child_starts_clean(run):
    """fork() while a session runs: the parent's goes on and holds only its own samples; the child is not
    sampled, stop() there raises naming the fork, a Profiler block begun in the parent ends quietly there (no
    output file), and the child's own session works and holds only its own samples."""
    r = run("""
    def in_parent(sec): burn(sec)
    def in_child(sec): burn(sec)
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"spprof-fork-{os.getpid()}.json")
    pr = spprof.Profiler(interval_ms=1, output=out)
    pr.start()
    in_parent(0.05)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        watchdog(5)  # a hang in the child: its stacks on stderr, exit 1
        res = {"stage": "forked"}
        try:
            res["state"] = [spprof.is_active(), spprof.state()]
            in_child(0.1)
            try:
                spprof.stop()
                res["stop"] = "no error"
            except spprof.Error as e:
                res["stop"] = str(e)
            pr.__exit__(None, None, None)           # the block begun in the parent ends here: quietly
            res["profiler"] = [pr.profile is None, os.path.exists(out)]
            spprof.start(interval_ms=1)
            res["stage"] = "started"
            in_child(0.1)
            res["stage"] = "stopping"
            cp = spprof.stop()
            res["stage"] = "stopped"
            fns = {f.function for s in cp.samples for f in s.frames}
            res["child_samples"] = cp.sample_count
            res["child_fns"] = ["in_child" in fns, "in_parent" in fns]
            res["child_tids"] = sorted(cp.threads())
        except BaseException as e:
            res["error"] = repr(e)
        os.write(wfd, json.dumps(res).encode())
        os._exit(0)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    data = os.read(rfd, 65536)
    in_parent(0.05)
    p = pr.stop()
    fns = {f.function for s in p.samples for f in s.frames}
    emit({"child": json.loads(data) if data else "no report (hung?)", "status": status, "child_pid": pid,
          "parent_samples": p.sample_count, "parent_fns": ["in_parent" in fns, "in_child" in fns],
          "parent_tids": sorted(p.threads()), "written": os.path.exists(out)})
    os.unlink(out)
    """).ok()
    res = r.result
    assert res["status"] == 0, "forked child did not finish:\n" + r.stderr[-3000:]
    c = res["child"]
    assert c.get("state") == [False, "stopped"], res
    assert "forked" in c["stop"] and "parent" in c["stop"], res
    assert c["profiler"] == [True, False], res            # nothing written by the child
    assert c["child_samples"] > 0 and c["child_fns"] == [True, False], res
    assert c["child_tids"] == [res["child_pid"]], res     # the child's own main thread only
    assert res["parent_samples"] > 0 and res["parent_fns"] == [True, False], res
    assert res["child_pid"] not in res["parent_tids"] and res["written"], res


def test_fork_inside_profiled_function(run):
    """@spprof.profile on a function that forks: the child returns from it as the function returns (no error,
    its last_profile None, no output written by it); the parent's call gets its profile and writes it once."""
    r = run("""
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"spprof-forkdeco-{os.getpid()}.collapsed")
    rfd, wfd = os.pipe()
    child = {}
    @spprof.profile(interval_ms=1, output=out)
    def work():
        burn(0.05)
        pid = os.fork()
        if pid:  # the parent's call ends only after the child has returned from its copy and looked
            os.close(wfd)  # (a child that died: EOF, not a hang)
            child.update(json.loads(os.read(rfd, 65536) or b"{}"))
        return pid
    pid = work()
    if pid == 0:
        watchdog(5)
        os.write(wfd, json.dumps({"returned": True, "last_profile": repr(work.last_profile),
                                  "exists": os.path.exists(out)}).encode())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    emit({"child": child, "status": status, "parent_samples": work.last_profile.sample_count,
          "written": os.path.exists(out)})
    os.unlink(out)
    """).ok()
    res = r.result
    assert res["status"] == 0 and res["child"] == {"returned": True, "last_profile": "None", "exists": False}, res
    assert res["parent_samples"] > 0 and res["written"], res
