"""A service-like mix: parse log lines with regular expressions, build dataclasses, serialise to and
from JSON, aggregate with dicts and sort. Many small Python calls and moderately deep stacks; no
ground truth (overhead only).
"""
import dataclasses
import json
import random
import re

from _common import Phase, units

LINE = re.compile(r'(?P<ip>\d+\.\d+\.\d+\.\d+) - - \[(?P<ts>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) '
                  r'HTTP/1\.[01]" (?P<status>\d{3}) (?P<size>\d+)')


@dataclasses.dataclass
class Request:
    ip: str
    ts: str
    method: str
    path: str
    status: int
    size: int

    @property
    def ok(self):
        return self.status < 400


def make_lines(rng, n):
    paths = ["/api/v1/items/%d" % i for i in range(50)] + ["/static/app.js", "/login", "/"]
    return ['%d.%d.%d.%d - - [22/Nov/2026:00:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d' % (
        rng.randrange(256), rng.randrange(256), rng.randrange(256), rng.randrange(256),
        rng.randrange(60), rng.randrange(60), rng.choice(["GET", "GET", "POST", "PUT"]),
        rng.choice(paths), rng.choice([200, 200, 200, 304, 404, 500]), rng.randrange(100000))
        for _ in range(n)]


def parse(lines):
    out = []
    for line in lines:
        m = LINE.match(line)
        if m:
            d = m.groupdict()
            out.append(Request(d["ip"], d["ts"], d["method"], d["path"], int(d["status"]), int(d["size"])))
    return out


def roundtrip(reqs):
    text = json.dumps([dataclasses.asdict(r) for r in reqs])
    return [Request(**d) for d in json.loads(text)]


def summarise(reqs):
    by_path = {}
    for r in reqs:
        s = by_path.setdefault(r.path, {"n": 0, "bytes": 0, "errors": 0})
        s["n"] += 1
        s["bytes"] += r.size
        s["errors"] += not r.ok
    return sorted(by_path.items(), key=lambda kv: (-kv[1]["n"], kv[0]))[:10]


def main():
    rng = random.Random(4)
    lines = make_lines(rng, 2000)
    with Phase("realistic", truth_kind="none"):
        for _ in range(units(40)):
            summarise(roundtrip(parse(lines)))


if __name__ == "__main__":
    main()
