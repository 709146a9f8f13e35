"""Reads pprof files back with the real client, `go tool pprof` (Debian's golang-go), for the tests.

raw(path) parses `go tool pprof -raw` into plain data: sample types, period, samples (values, location ids
leaf first, labels), locations (address, mapping, function, file, line) and mappings."""
import os
import re
import shutil
import subprocess

import pytest

GO = shutil.which("go")


def need_go():
    if GO is None:
        pytest.skip("go (Debian's golang-go) not installed: `make deps` installs it")


def go_pprof(*args, timeout=120, tmpdir=None):
    """Runs go tool pprof; over HTTP it saves a copy of what it fetched in tmpdir (default: a temporary one)."""
    need_go()
    import tempfile
    env = dict(os.environ)
    env.setdefault("HOME", "/tmp")
    env.setdefault("GOCACHE", "/tmp/spprof-gocache")
    if tmpdir is None:
        with tempfile.TemporaryDirectory(prefix="spprof-pprof-") as d:
            return go_pprof(*args, timeout=timeout, tmpdir=d)
    env["PPROF_TMPDIR"] = str(tmpdir)
    proc = subprocess.run([GO, "tool", "pprof", *args], capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"go tool pprof {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc.stdout


LOC = re.compile(r"^\s+(\d+): 0x([0-9a-f]+) (?:M=(\d+) )?(.*) (\S*):(-?\d+) s=\d+(\(.*\))?$")
LOC_MORE = re.compile(r"^\s+(.*) (\S*):(-?\d+) s=\d+(\(.*\))?$")
MAP = re.compile(r"^(\d+): 0x([0-9a-f]+)/0x([0-9a-f]+)/0x([0-9a-f]+) (.*?)\s*(\[.*\])?$")


def raw(path_or_url, *extra, tmpdir=None):
    text = go_pprof("-raw", *extra, path_or_url, tmpdir=tmpdir)
    out = {"header": {}, "types": [], "samples": [], "locations": {}, "mappings": {}}
    section = "header"
    loc = None
    for line in text.splitlines():
        if line == "Samples:":
            section = "types"
            continue
        if line == "Locations":
            section = "locations"
            continue
        if line == "Mappings":
            section = "mappings"
            continue
        if section == "header":
            k, _, v = line.partition(": ")
            out["header"][k] = v
        elif section == "types":
            out["types"] = [t.replace("[dflt]", "") for t in line.split()]
            out["default"] = next((t.replace("[dflt]", "") for t in line.split() if "[dflt]" in t), None)
            section = "samples"
        elif section == "samples":
            if ":" in line and not line.strip().endswith("]"):
                vals, _, locs = line.partition(":")
                out["samples"].append({"values": [int(v) for v in vals.split()],
                                       "locs": [int(x) for x in locs.split()], "labels": {}})
            elif line.strip():
                k, _, v = line.strip().partition(":")
                out["samples"][-1]["labels"][k] = v.strip("[]")
        elif section == "locations":
            m = LOC.match(line)
            if m:
                loc = {"addr": int(m.group(2), 16), "mapping": int(m.group(3) or 0),
                       "lines": [(m.group(4), m.group(5), int(m.group(6)))]}
                out["locations"][int(m.group(1))] = loc
            elif line.strip():  # inlined lines of the same location
                m2 = LOC_MORE.match(line)
                assert m2 and loc is not None, f"unparsed location line: {line!r}"
                loc["lines"].append((m2.group(1), m2.group(2), int(m2.group(3))))
        elif section == "mappings":
            m = MAP.match(line)
            if m:
                out["mappings"][int(m.group(1))] = {"start": int(m.group(2), 16), "limit": int(m.group(3), 16),
                                                    "offset": int(m.group(4), 16), "file": m.group(5).strip()}
    return out


def py_frame(name, file, line):
    """A frame as spprof.Frame prints it (and the collapsed writer writes it)."""
    if file and line > 0:
        return f"{name} ({file}:{line})"
    return f"{name} ({file})" if file else name


def stacks(prof, value_index, fmt=lambda name, file, line: name, thread=True):
    """{"thread (tid N);root;...;leaf": value} (root first, as collapsed stacks), summed."""
    acc = {}
    for s in prof["samples"]:
        names = [fmt(*prof["locations"][i]["lines"][0]) for i in reversed(s["locs"])]
        key = ";".join(names)
        if thread and "thread" in s["labels"]:
            key = f"{s['labels']['thread']} (tid {s['labels']['thread_id']});" + key
        acc[key] = acc.get(key, 0) + s["values"][value_index]
    return acc


def collapsed(path):
    acc = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            acc[stack] = acc.get(stack, 0) + int(n)
    return acc
