"""Wall mode does not change what blocking calls do, and still puts blocked threads' time in the profile.

signal.pause() under wall mode must wait for its own signal (CPython's test_signal.test_itimer_real): with a
CLOCK_MONOTONIC timer per thread it returned on spprof's signal after 0.3 ms. time.sleep and select.select
retry after EINTR (PEP 475), so their durations hold either way; what is checked for them is that the
sleeping thread's time is in the profile, under the function that sleeps, in proportion to a busy thread's."""
from conftest import leaf, samples, self_shares, weight


def test_pause_sleep_select_take_their_full_time(run):
    r = run("""
    import select, signal
    fired = []
    signal.signal(signal.SIGALRM, lambda *a: fired.append(time.monotonic()))
    spprof.start(interval_ms=1, mode="wall")
    out = {}
    t0 = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    signal.pause()                      # returns when a handled signal arrives: SIGALRM after 1 s, not ours
    out["pause"] = time.monotonic() - t0
    out["fired"] = len(fired)
    t0 = time.monotonic(); time.sleep(0.5); out["sleep"] = time.monotonic() - t0
    t0 = time.monotonic(); select.select([], [], [], 0.5); out["select"] = time.monotonic() - t0
    p = spprof.stop()
    out["main_weight"] = sum(s.weight for s in p.samples if s.thread_id == threading.get_native_id())
    emit(out)
    """, timeout=60).ok()
    out = r.result
    assert out["fired"] == 1 and 0.99 <= out["pause"] < 1.5, out
    assert 0.495 <= out["sleep"] < 1.0 and 0.495 <= out["select"] < 1.0, out
    # the main thread was blocked ~2 s of the session: its time is in the wall profile (1 ms per unit)
    assert out["main_weight"] >= 1500, out


def test_sleeping_thread_vs_busy_thread_shares(run):
    r = run("""
    life = {}
    def timed(name, fn):
        t0 = time.monotonic(); fn(); life[name] = time.monotonic() - t0
    def sleeper_fn():
        time.sleep(0.8)
    def busy_fn():
        burn(0.8)
    spprof.start(interval_ms=1, mode="wall")
    s = threading.Thread(target=timed, args=("sleeper", sleeper_fn), name="sleeper")
    b = threading.Thread(target=timed, args=("busy", busy_fn), name="busy")
    s.start(); b.start(); s.join(); b.join()
    emit({"d": dump(spprof.stop()), "life": life})
    """, timeout=60).ok()
    d, life = r.result["d"], r.result["life"]
    ws, wb = weight(samples(d, name="sleeper")), weight(samples(d, name="busy"))
    # wall time: each thread's weight (1 ms units) is its lifetime: 0.8 s for the sleeper, 0.8 s or more
    # for the busy one (it needs 0.8 s of CPU: longer on a loaded machine, runnable time included)
    assert 0.75 <= ws / (life["sleeper"] * 1e3) <= 1.25, (ws, wb, life)
    assert 0.75 <= wb / (life["busy"] * 1e3) <= 1.25, (ws, wb, life)
    sh = self_shares(samples(d, name="sleeper"))
    # the blocked thread's Python frames are read from its thread state: its leaf is the function that
    # called time.sleep (C functions show no Python frame), with its callers above it
    assert sh.get("sleeper_fn", 0) > 0.9, sh
    ss = [s for s in samples(d, name="sleeper") if leaf(s) and leaf(s)[0] == "sleeper_fn"]
    assert all(any(f[0] in ("Thread.run", "run") for f in s[5]) for s in ss), ss[:3]
    assert "timed" in {f[0] for s in ss for f in s[5]}


def test_sleeping_thread_mixed_stack(run):
    # native=True: the blocked thread's recovered native frames (down to the system call) merged with its
    # Python frames, as in the signal handler's mixed walk
    r = run("""
    def sleeper_fn():
        time.sleep(0.6)
    spprof.start(interval_ms=1, mode="wall", native=True)
    s = threading.Thread(target=sleeper_fn, name="sleeper")
    s.start(); s.join()
    emit({"d": dump(spprof.stop())})
    """, timeout=60).ok()
    ss = samples(r.result["d"], name="sleeper")
    total = weight(ss)
    merged = weight([s for s in ss if any(f[0] == "sleeper_fn" for f in s[5]) and leaf(s)[0] != "sleeper_fn"])
    assert total >= 400 and merged >= 0.9 * total, (merged, total, ss[:3])
