"""pprof output (gzip-compressed profile.proto, written without a protobuf or zlib library), read back with
the real client, `go tool pprof -raw` / `-top`, and compared with the profile's own numbers: the collapsed
stacks written from the same profile, or allocations whose truth is known exactly."""
import gzip
import os
import subprocess

from pprof_read import collapsed, go_pprof, raw, stacks

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
    top = go_pprof("-top", "-sample_index=alloc_space", str(tmp_path / "mem.pb.gz"))
    assert "Type: alloc_space" in top and "alloc_large" in top
