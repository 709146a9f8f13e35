"""End-to-end checks of what users open: the Speedscope file is valid against the published schema, the
collapsed file has the flamegraph format, and the shipped demo's profile matches its known CPU split."""
import json
import os
import re
import subprocess

import jsonschema
import pytest

from conftest import load_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "build", "native_demo")


def schema():
    return load_schema()  # skipped where absent, a failure under CI=true (conftest)


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([DEMO, str(out), "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return out


def test_speedscope_valid_against_schema(demo_out):
    with open(demo_out / "native.speedscope.json") as f:
        doc = json.load(f)
    jsonschema.validate(doc, schema())
    names = {p["name"] for p in doc["profiles"]}
    assert {n.split(" (tid")[0] for n in names} >= {"worker-0", "worker-1", "worker-2"}
    nframes = len(doc["shared"]["frames"])
    for p in doc["profiles"]:
        assert len(p["samples"]) == len(p["weights"]) > 0
        assert all(0 <= i < nframes for s in p["samples"] for i in s)
        assert p["endValue"] - p["startValue"] == sum(p["weights"])


def test_collapsed_format_and_known_split(demo_out):
    line_re = re.compile(r"^[^;\n]+(;[^;\n]+)* [1-9][0-9]*$")
    totals = {}
    with open(demo_out / "native.collapsed") as f:
        lines = f.read().splitlines()
    assert lines
    for line in lines:
        assert line_re.match(line), line
        stack, count = line.rsplit(" ", 1)
        frames = stack.split(";")
        assert frames[0].startswith("worker-")  # thread names first (SPPROF_COLLAPSED_THREADS)
        for fn in ("hot_loop_a", "hot_loop_b", "cold_loop"):
            if fn in frames:
                # true call order: dispatch calls fn, fn calls spin (or the sample caught fn itself, between
                # its calls of spin: a few instructions, about 1 sample in 10 runs)
                i = frames.index(fn)
                assert frames[i - 1] == "dispatch" and frames[i + 1 :] in (["spin"], []), line
                totals[fn] = totals.get(fn, 0) + int(count)
    total = sum(totals.values())
    # the demo does 3:2:1 iterations of the same loop in these three functions
    for fn, share in (("hot_loop_a", 3 / 6), ("hot_loop_b", 2 / 6), ("cold_loop", 1 / 6)):
        assert abs(totals.get(fn, 0) / total - share) < 0.05, (fn, totals)


def test_zero_sample_speedscope_is_valid(tmp_path):
    # a C program that starts and stops at once: one empty profile, still valid
    src = tmp_path / "zero.c"
    src.write_text(
        '#define _GNU_SOURCE\n#define SPPROF_IMPLEMENTATION\n#include "spprof.h"\n'
        "int main(int c, char **v) { spprof_config cfg = spprof_config_default(); (void)c;\n"
        "  cfg.interval_ns = 1000000000; if (spprof_start(&cfg) || spprof_stop()) return 1;\n"
        "  return spprof_write_speedscope(v[1]) != SPPROF_OK; }\n"
    )
    exe = tmp_path / "zero"
    subprocess.run(["cc", "-std=c99", "-I", ROOT, str(src), "-o", str(exe), "-pthread"], check=True)
    out = tmp_path / "zero.json"
    subprocess.run([str(exe), str(out)], check=True, timeout=30)
    with open(out) as f:
        doc = json.load(f)
    jsonschema.validate(doc, schema())
    assert len(doc["profiles"]) == 1 and doc["profiles"][0]["samples"] == []
