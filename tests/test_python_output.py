"""Profile.save: Speedscope JSON valid against the published schema (also with zero samples), collapsed
stacks in the flamegraph format, both written from the Profile's own data."""
import json
import os
import re

from conftest import validate_speedscope

COLLAPSED_LINE = re.compile(r"^[^;\n]+(;[^;\n]+)* [1-9][0-9]*$")


def test_speedscope_valid_with_threads(run):
    r = run("""
    def work():
        burn(0.15)
    spprof.start(interval_ms=1)
    ts = [threading.Thread(target=work, name=f"worker-{i}") for i in range(3)]
    for t in ts: t.start()
    for t in ts: t.join()
    p = spprof.stop()
    p.save("py.json")
    p.save("py-explicit.out", format="speedscope")
    spprof._spprof.write_speedscope("c.json")   # the C writer, with the names spprof.stop() passed down
    emit({"ids": {t.name: t.native_id for t in ts}, "weights": {str(k): sum(s.weight for s in p.samples_of(k))
          for k in p.threads()}, "interval_ns": round(p.interval_ms * 1e6)})
    """, timeout=60).ok()
    res = r.result
    tmp = run.tmp_path
    doc = json.loads((tmp / "py.json").read_text())
    validate_speedscope(doc)
    assert json.loads((tmp / "py-explicit.out").read_text()) == doc
    assert all(p["unit"] == "nanoseconds" and p["type"] == "sampled" for p in doc["profiles"])
    names = [p["name"] for p in doc["profiles"]]
    for name, tid in res["ids"].items():
        assert f"{name} (tid {tid})" in names, names
    keys = [(f["name"], f.get("file"), f.get("line")) for f in doc["shared"]["frames"]]
    assert len(keys) == len(set(keys)), "frames not deduplicated"
    frames = doc["shared"]["frames"]
    for p in doc["profiles"]:
        tid = p["name"].rsplit("(tid ", 1)[1].rstrip(")")
        assert sum(p["weights"]) == res["weights"][tid] * res["interval_ns"]
    leaf_w = {}
    for p in doc["profiles"]:
        for st, w in zip(p["samples"], p["weights"]):
            leaf_w[frames[st[-1]]["name"]] = leaf_w.get(frames[st[-1]]["name"], 0) + w
    assert leaf_w.get("burn", 0) > 0.7 * sum(leaf_w.values()), leaf_w
    worker_profiles = [p for p in doc["profiles"] if p["name"].startswith("worker-")]
    # root first; a sample taken while a thread runs no Python at all (its first or last instants) shows its
    # native stack instead, so only stacks with Python frames (a line number) are checked
    roots = [frames[s[0]]["name"] for p in worker_profiles for s in p["samples"]
             if any(frames[i].get("line", 0) > 0 for i in s)]
    assert worker_profiles and roots and set(roots) <= {"Thread._bootstrap", "_bootstrap"}, roots  # 3.9/3.10: co_name
    burn = [f for f in frames if f["name"] == "burn"]
    assert burn and all(f["file"].endswith(".py") and f["line"] > 0 for f in burn)
    cdoc = json.loads((tmp / "c.json").read_text())
    validate_speedscope(cdoc)
    cnames = [p["name"] for p in cdoc["profiles"]]
    for name, tid in res["ids"].items():
        assert f"{name} (tid {tid})" in cnames, cnames


def test_speedscope_zero_samples_is_valid(run):
    r = run("""
    spprof.start(interval_ms=60000)
    p = spprof.stop()
    p.save("empty.json")
    p.save("empty.collapsed")
    emit({"n": len(p.samples), "threads": p.threads(), "shares": p.function_shares()})
    """).ok()
    assert r.result == {"n": 0, "threads": {}, "shares": {}}
    doc = json.loads((run.tmp_path / "empty.json").read_text())
    validate_speedscope(doc)
    assert len(doc["profiles"]) == 1 and doc["profiles"][0]["samples"] == []
    assert (run.tmp_path / "empty.collapsed").read_text() == ""


def test_collapsed_format(run):
    r = run("""
    code = compile("def odd_one():\\n    burn(0.1)\\n", "<generated;file>", "exec")
    ns = {"burn": burn}
    exec(code, ns)
    def work():
        burn(0.15)
    spprof.start(interval_ms=1)
    t = threading.Thread(target=work, name="worker;semi")
    t.start()
    ns["odd_one"]()
    t.join()
    p = spprof.stop()
    p.save("out.collapsed")
    p.save("threads.collapsed", threads=True)
    p.save("explicit.json", format="collapsed")
    emit({"total": p.total_weight, "tid": t.native_id, "main": threading.get_native_id()})
    """).ok()
    res = r.result
    tmp = run.tmp_path
    plain = (tmp / "out.collapsed").read_text().splitlines()
    assert (tmp / "explicit.json").read_text().splitlines() == plain
    assert plain
    total = 0
    for line in plain:
        assert COLLAPSED_LINE.match(line), line
        stack, count = line.rsplit(" ", 1)
        total += int(count)
        frames = stack.split(";")
        if all(not re.search(r":\d+\)$", f) for f in frames):
            # a thread that runs no Python (here faulthandler's watchdog, armed by the harness) is shown with
            # its native stack: native frames have no line number
            continue
        assert frames[0].startswith(("<module> (", "Thread._bootstrap (", "_bootstrap (")), line  # root first
        assert all(re.match(r"^.+ \(.*:\d+\)$", f) for f in frames), line  # function (file:line)
    assert total == res["total"]
    assert any(";odd_one (<generated:file>:2);burn (" in line for line in plain), plain  # ';' replaced
    threads = (tmp / "threads.collapsed").read_text().splitlines()
    assert sum(int(l.rsplit(" ", 1)[1]) for l in threads) == res["total"]
    heads = {l.split(";")[0] for l in threads if not all(not re.search(r":\d+\)$", f) for f in l.rsplit(" ", 1)[0].split(";")[1:])}
    assert heads <= {f"worker:semi (tid {res['tid']})", f"MainThread (tid {res['main']})"}, heads
    assert f"worker:semi (tid {res['tid']})" in heads
    for line in threads:
        assert COLLAPSED_LINE.match(line), line


def test_writers_on_a_synthetic_profile(run):
    # exact output from hand-made data: frames root first, weights x interval, thread titles, dedup
    r = run("""
    F, S = spprof.Frame, spprof.Sample
    m, a, b = F("<module>", "m.py", 1), F("a", "m.py", 5), F("b", "m.py", 9)
    n = F("[native code]", "", 0)
    p = spprof.Profile([S(11, "MainThread", 100.5, 2, 3, (m, a), 100.6),
                        S(11, "MainThread", 100.7, 1, 1, (m, a, b), 100.7),
                        S(12, "t2", 100.8, 1, 2, (n,), 100.8),
                        S(11, "MainThread", 100.9, 1, 1, (m, a), 100.9)],
                       interval_ms=2, mode="wall", start_time=100.0, duration=1.0)
    emit({"ss": p.to_speedscope(), "col": p.to_collapsed(), "colt": p.to_collapsed(threads=True),
          "shares": p.function_shares(), "incl": p.function_shares(inclusive=True),
          "t2": p.function_shares(thread="t2"), "threads": p.threads(), "total": p.total_time})
    """).ok()
    res = r.result
    ss = res["ss"]
    validate_speedscope(ss)
    assert ss["shared"]["frames"] == [{"name": "<module>", "file": "m.py", "line": 1},
                                      {"name": "a", "file": "m.py", "line": 5},
                                      {"name": "b", "file": "m.py", "line": 9},
                                      {"name": "[native code]"}]
    p11, p12 = ss["profiles"]
    assert p11["name"] == "MainThread (tid 11)" and p12["name"] == "t2 (tid 12)"
    assert p11["samples"] == [[0, 1], [0, 1, 2], [0, 1]] and p11["weights"] == [6000000, 2000000, 2000000]
    assert p11["startValue"] == 500000000 and p11["endValue"] == 510000000
    assert p12["samples"] == [[3]] and p12["weights"] == [4000000] and p12["startValue"] == 800000000
    assert res["col"] == "<module> (m.py:1);a (m.py:5) 4\n<module> (m.py:1);a (m.py:5);b (m.py:9) 1\n[native code] 2\n"
    assert res["colt"].splitlines()[0] == "MainThread (tid 11);<module> (m.py:1);a (m.py:5) 4"
    assert res["shares"] == {"a": 4 / 7, "[native code]": 2 / 7, "b": 1 / 7}
    assert res["incl"]["<module>"] == 5 / 7 and res["t2"] == {"[native code]": 1.0}
    assert res["threads"] == {"11": "MainThread", "12": "t2"} and abs(res["total"] - 0.014) < 1e-9


def test_save_output_policy(run, tmp_path):
    # One policy for Profile.save and HeapSnapshot.save (spprof._write_output): a symlink stays a symlink and
    # its target gets the profile (with its mode kept), a FIFO's reader gets it, a device node stays a device,
    # /dev/full is a clear error, /dev/fd/N writes at the descriptor's offset. Device nodes are mknod copies
    # (1,3 and 1,7) in tmp_path (root only), never the machine's own /dev/null or /dev/full.
    r = run("""
    import os, stat, threading
    import spprof.memprof as memprof
    F, S = spprof.Frame, spprof.Sample
    p = spprof.Profile([S(11, "MainThread", 100.5, 2, 3, (F("a", "m.py", 5),), 100.6)],
                       interval_ms=2, mode="cpu", start_time=100.0, duration=1.0)
    res = {}
    os.symlink("target.json", "link.json")
    p.save("link.json")
    os.chmod("target.json", 0o600)
    memprof.start(1)
    x = [bytearray(1000) for _ in range(100)]
    snap = memprof.get_snapshot()
    memprof.stop()
    snap.save("link.json")
    res["link"] = os.path.islink("link.json")
    res["target_mode"] = oct(stat.S_IMODE(os.stat("target.json").st_mode))
    res["target_schema"] = "$schema" in open("target.json").read()
    os.mkfifo("fifo")
    got = []
    t = threading.Thread(target=lambda: got.append(open("fifo").read()))
    t.start()
    p.save("fifo", "collapsed")
    t.join(10)
    res["fifo"] = [stat.S_ISFIFO(os.stat("fifo").st_mode), got]
    fd = os.open("viafd", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, b"before\\n")
    p.save(f"/dev/fd/{fd}", "collapsed")
    os.close(fd)
    res["viafd"] = open("viafd").read()
    res["devices"] = {}
    for name, minor in (("null", 3), ("full", 7)):  # Linux's mem devices: major 1
        try:
            os.mknod(name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        except PermissionError:
            continue
        try:
            p.save(name, "collapsed")
            err = None
        except OSError as e:
            err = str(e)
        st = os.stat(name)
        res["devices"][name] = [stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, minor), err]
    emit(res)
    """).ok()
    res = r.result
    assert res["link"] and res["target_schema"] and res["target_mode"] == "0o600", res
    assert res["fifo"] == [True, ["a (m.py:5) 3\n"]], res["fifo"]
    assert res["viafd"] == "before\na (m.py:5) 3\n", res["viafd"]
    if os.geteuid() == 0:
        assert res["devices"]["null"] == [True, None], res["devices"]
        ok, err = res["devices"]["full"]
        assert ok and err and "full" in err and "space" in err, res["devices"]
