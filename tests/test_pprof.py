"""pprof output (gzip-compressed profile.proto, written without a protobuf or zlib library), read back with
the real client, `go tool pprof -raw` / `-top`, and compared with the profile's own numbers: the collapsed
stacks written from the same profile, or allocations whose truth is known exactly."""
import gzip
import json
import os
import subprocess

from pprof_read import collapsed, go_pprof, py_frame, raw, stacks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "build", "native_demo")
MEM_WRITER = os.path.join(ROOT, "build", "tests", "pprof_writer")


def test_c_cpu_pprof_matches_collapsed(tmp_path):
    """spprof_write_pprof: three C threads; every stack, thread label and weight equals the collapsed file of
    the same profile; sample types, period and the executable's mapping are right."""
    subprocess.run([DEMO, str(tmp_path), "1"], check=True, capture_output=True, timeout=120)
    path = str(tmp_path / "native.pb.gz")
    with gzip.open(path) as f:  # a valid gzip member (CRC and length checked by the reader)
        assert len(f.read()) > 100
    p = raw(path)
    assert p["types"] == ["samples/count", "cpu/nanoseconds"] and p["default"] == "cpu/nanoseconds"
    assert p["header"]["PeriodType"] == "cpu nanoseconds" and p["header"]["Period"] == "1000000"
    assert 0.5 < float(p["header"]["Duration"]) < 60
    want = collapsed(str(tmp_path / "native.collapsed"))
    got = stacks(p, 1)
    assert {k: v // 1000000 for k, v in got.items()} == want
    assert all(v % 1000000 == 0 for v in got.values())
    assert sum(s["values"][0] for s in p["samples"]) <= sum(want.values())  # samples <= intervals
    threads = {s["labels"]["thread"] for s in p["samples"]}
    assert threads == {"worker-0", "worker-1", "worker-2"}, threads
    exe = [m for m in p["mappings"].values() if m["file"] == os.path.realpath(DEMO)]
    assert exe, p["mappings"]
    debug_syms = os.path.isdir("/usr/lib/debug/.build-id")  # libc6-dbg: libc's local symbols (start_thread)
    for loc in p["locations"].values():  # the executable by its path, not /proc/self/exe; libc's thread start named
        assert loc["lines"][0][1] != "/proc/self/exe", loc
        assert not (debug_syms and loc["lines"][0][0].startswith("libc.so.6+")), loc
    names = {loc["lines"][0][0]: loc for loc in p["locations"].values()}
    for fn in ("hot_loop_a", "hot_loop_b", "cold_loop", "dispatch", "worker"):
        loc = names[fn]
        m = p["mappings"][loc["mapping"]]
        assert m["file"] == os.path.realpath(DEMO) and m["start"] <= loc["addr"] < m["limit"], (fn, loc, m)
    top = go_pprof("-top", path)
    assert "Type: cpu" in top and "hot_loop_a" in top


def test_c_memory_pprof_exact(tmp_path):
    """spprof_mem_write_pprof: alloc_objects/alloc_space/inuse_objects/inuse_space per allocating function,
    exactly the known allocations (every allocation sampled); inuse_space is the default; period = rate."""
    out = subprocess.run([MEM_WRITER, str(tmp_path)], check=True, capture_output=True, text=True, timeout=60)
    truth = {line.split()[0]: [int(x) for x in line.split()[1:]] for line in out.stdout.splitlines()}
    assert not (tmp_path / "none.pb.gz").exists()
    p = raw(str(tmp_path / "mem.pb.gz"))
    assert p["types"] == ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"]
    assert p["default"] == "inuse_space/bytes"
    assert p["header"]["PeriodType"] == "space bytes" and p["header"]["Period"] == "1"
    got = {}
    for s in p["samples"]:
        leaf = p["locations"][s["locs"][0]]["lines"][0][0]
        got[leaf] = [a + b for a, b in zip(got.get(leaf, [0, 0, 0, 0]), s["values"])]
    assert got == truth
    # the collapsed writer aggregates too: one line per allocating stack, its live bytes
    lines = (tmp_path / "mem.collapsed").read_text().splitlines()
    assert sorted(l.rsplit(";", 1)[1] for l in lines) == ["alloc_large 15000", "alloc_small 6000"], lines
    top = go_pprof("-top", "-sample_index=alloc_space", str(tmp_path / "mem.pb.gz"))
    assert "Type: alloc_space" in top and "alloc_large" in top
    wall = raw(str(tmp_path / "wall.pb.gz"))  # wall mode: the sleeping main thread, in wall time
    assert wall["types"] == ["samples/count", "wall/nanoseconds"] and wall["header"]["Period"] == "2000000"
    slept = sum(s["values"][1] for s in wall["samples"]
                if any("sleep" in wall["locations"][i]["lines"][0][0] for i in s["locs"]))
    assert 0.1e9 <= slept <= 0.4e9, slept
    # spprof's own frames at the leaf are left out by every C writer; the samples stay, on the caller
    own = collapsed(str(tmp_path / "own.collapsed"))
    assert list(own) == ["own_caller"] and own["own_caller"] > 0, own
    doc = json.loads((tmp_path / "own.json").read_text())
    used = {i for p in doc["profiles"] for st in p["samples"] for i in st}
    assert {doc["shared"]["frames"][i]["name"] for i in used} == {"own_caller"}
    op = raw(str(tmp_path / "own.pb.gz"))
    assert {op["locations"][i]["lines"][0][0] for s in op["samples"] for i in s["locs"]} == {"own_caller"}
    assert sum(s["values"][1] for s in op["samples"]) == own["own_caller"] * 1000000
    empty = raw(str(tmp_path / "empty.pb.gz"))
    assert empty["samples"] == [] and empty["types"] == ["samples/count", "cpu/nanoseconds"]


def test_python_profile_pprof(run):
    """Profile.save(..pb.gz / .pprof / format="pprof"): read back by go tool pprof, every thread's stacks and
    times equal the collapsed stacks of the same Profile; labels, sample types, period, duration."""
    r = run("""
    def work():
        burn(0.2)
    spprof.start(interval_ms=1, mode="cpu")
    ts = [threading.Thread(target=work, name=f"worker-{i}") for i in range(2)]
    for t in ts: t.start()
    for t in ts: t.join()
    p = spprof.stop()
    p.save("p.pb.gz")
    p.save("p.pprof")
    p.save("p.out", format="pprof")
    p.save("p.collapsed", threads=True)
    emit({"count": p.sample_count, "weight": p.total_weight, "duration": p.duration,
          "ids": {t.name: t.native_id for t in ts}})
    """, timeout=60).ok()
    res, tmp = r.result, run.tmp_path
    p = raw(str(tmp / "p.pb.gz"))
    for other in ("p.pprof", "p.out"):  # the same profile by extension and by format= (the time may differ)
        o = raw(str(tmp / other))
        assert (o["samples"], o["locations"], o["types"]) == (p["samples"], p["locations"], p["types"])
    assert p["types"] == ["samples/count", "cpu/nanoseconds"] and p["default"] == "cpu/nanoseconds"
    assert p["header"]["Period"] == "1000000"
    assert sum(s["values"][0] for s in p["samples"]) == res["count"]
    assert sum(s["values"][1] for s in p["samples"]) == res["weight"] * 1000000
    got = {k: v // 1000000 for k, v in stacks(p, 1, fmt=py_frame).items()}
    assert got == collapsed(str(tmp / "p.collapsed"))
    for name, tid in res["ids"].items():
        assert any(s["labels"] == {"thread": name, "thread_id": str(tid)} for s in p["samples"]), name
    burn = [loc for loc in p["locations"].values() if loc["lines"][0][0] == "burn"]
    assert burn and all(loc["lines"][0][2] > 0 and loc["lines"][0][1].endswith(".py") for loc in burn)
    top = go_pprof("-top", str(tmp / "p.pb.gz"))
    assert "Type: cpu" in top and " burn" in top, top


def test_python_heap_pprof(run):
    """HeapSnapshot.save(.pb.gz): per stack, alloc_objects/alloc_space/inuse_objects/inuse_space equal the
    snapshot's own estimates (allocations and live samples), and the totals its totals."""
    r = run("""
    import spprof.memprof as memprof
    def keep():
        return [bytearray(4000) for _ in range(3000)]
    def churn():
        for _ in range(3000):
            bytearray(4000)
    memprof.start(sampling_rate_kb=32)
    kept = keep()
    churn()
    snap = memprof.get_snapshot()
    memprof.stop()
    snap.save("heap.pb.gz")
    def key(frames):
        return ";".join(str(f) for f in frames)
    acc = {}
    for a in snap.allocations:
        v = acc.setdefault(key(a.frames), [0.0] * 4)
        v[0] += a.estimated_count; v[1] += a.estimated_bytes
    for s in snap.samples:
        v = acc.setdefault(key(s.frames), [0.0] * 4)
        v[2] += s.estimated_count; v[3] += s.estimated_bytes
    emit({"stacks": {k: [round(x) for x in v] for k, v in acc.items()}, "live": snap.total_bytes,
          "rate": snap.sampling_rate})
    """, timeout=60).ok()
    res = r.result
    p = raw(str(run.tmp_path / "heap.pb.gz"))
    assert p["types"] == ["alloc_objects/count", "alloc_space/bytes", "inuse_objects/count", "inuse_space/bytes"]
    assert p["default"] == "inuse_space/bytes" and p["header"]["Period"] == str(res["rate"])
    got = {}
    for s in p["samples"]:
        k = ";".join(py_frame(*p["locations"][i]["lines"][0]) for i in reversed(s["locs"]))
        got[k] = [a + b for a, b in zip(got.get(k, [0] * 4), s["values"])]
    assert got == res["stacks"]
    assert abs(sum(v[3] for v in got.values()) - res["live"]) <= len(got)
    keep = sum(v[3] for k, v in got.items() if "keep" in k)
    assert keep > 0.5 * 12e6, keep  # 3000 x 4000 bytes live in keep()
    churn = sum(v[1] for k, v in got.items() if "churn" in k)
    assert churn > 0.5 * 12e6 and sum(v[3] for k, v in got.items() if "churn" in k) < 0.2 * churn
    top = go_pprof("-top", "-sample_index=inuse_space", str(run.tmp_path / "heap.pb.gz"))
    assert "keep" in top, top


def test_deflate_round_trip(tmp_path):
    """The header's own deflate encoder (fixed Huffman codes, LZ77) gives back every input through zlib:
    empty and tiny inputs, random bytes, long runs, text, and a real profile; repetitive data shrinks."""
    import random
    import zlib
    rnd = random.Random(17)
    cases = {
        "empty": b"", "one": b"x", "three": b"abc",
        "random": bytes(rnd.getrandbits(8) for _ in range(100000)),
        "zeros": bytes(1 << 20),
        "text": open(os.path.join(ROOT, "spprof.h"), "rb").read(),
        "mixed": b"".join(bytes(rnd.choice([b"abc", b"\x00\x01", b"stack;frame;", bytes([rnd.getrandbits(8)])]))
                          for _ in range(50000)),
    }
    for name, data in cases.items():
        src, dst = tmp_path / name, tmp_path / (name + ".z")
        src.write_bytes(data)
        subprocess.run([MEM_WRITER, "--deflate", str(src), str(dst)], check=True, timeout=60)
        z = dst.read_bytes()
        assert zlib.decompress(z, -15) == data, name
        if name in ("zeros", "text"):
            assert len(z) < 0.5 * len(data), (name, len(z), len(data))
