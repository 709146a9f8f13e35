"""A self-contained interactive SVG flame graph (no external fonts, scripts or styles).

The frames are static SVG (a viewer without scripts still shows the graph, with a tooltip per frame); the
embedded script adds: hover details in the status line, click to zoom into a frame (click the bottom frame
or "Reset zoom", or press Escape, to zoom out), search (the "Search" button or Ctrl+F: a regular
expression; matching frames turn purple and the status line shows their share), and the same from the URL:
`file.svg#s=REGEX` searches, `#z=NAME` zooms into the widest frame named NAME (both: `#z=NAME&s=REGEX`).

Root at the bottom, callees above their callers, widths proportional to the weight (time or bytes); frames
narrower than 0.1 pixel are left out (their weight stays in their parent). Colours: Python frames warm
(yellow to orange), native frames red, memory profiles green to blue, all chosen by hashing the name so a
function keeps its colour across files.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

WIDTH = 1200
PAD = 10
ROW = 17           # pixels per frame row
TOP = 56           # title, subtitle, buttons
BOTTOM = 28        # status line
FONT = 12          # px, monospace: every character is 0.6 em wide
CHAR = FONT * 0.6
MIN_PX = 0.1

_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _esc(text: str) -> str:
    text = _XML_BAD.sub("?", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def format_value(v: float, unit: str) -> str:
    """v in the graph's unit as people read it: "1.23 s", "45.6 ms", "12.3 MiB", "512 B"."""
    if unit == "bytes":
        for name, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
            if abs(v) >= size:
                return f"{v / size:.3g} {name}"
        return f"{v:.0f} B"
    if unit == "seconds":
        if v >= 1:
            return f"{v:.3g} s"
        if v >= 1e-3:
            return f"{v * 1e3:.3g} ms"
        return f"{v * 1e6:.3g} us"
    return f"{v:g} {unit}"


class _Node:
    __slots__ = ("name", "detail", "kind", "value", "children")

    def __init__(self, name: str, detail: str, kind: str) -> None:
        self.name, self.detail, self.kind = name, detail, kind
        self.value = 0.0
        self.children: Dict[Any, "_Node"] = {}


def _colour(name: str, kind: str) -> str:
    h = 0
    for ch in name:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    a, b = (h & 0xFF) / 255.0, ((h >> 8) & 0xFF) / 255.0
    if kind == "mem":
        return f"rgb({int(50 + 60 * a)},{int(150 + 80 * b)},{int(170 + 60 * a)})"
    if kind == "native":
        return f"rgb({int(200 + 55 * a)},{int(70 + 70 * b)},{int(60 + 40 * b)})"
    if kind == "thread":
        return "rgb(180,180,200)"
    return f"rgb({int(225 + 30 * a)},{int(140 + 100 * b)},{int(40 + 40 * a)})"


TITLE_CHARS = int((WIDTH - 2 * PAD - 2 * 120) / (17 * 0.6))  # the title's line, between the two buttons


def _fit(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 2] + ".."


def _label(name: str, width: float) -> str:
    n = int((width - 6) / CHAR)
    if n < 3:
        return ""
    return name if len(name) <= n else name[: n - 2] + ".."


def flame_svg(stacks: Iterable[Tuple[Sequence[Any], float]], title: str, subtitle: str, unit: str,
              scale: float = 1.0, memory: bool = False) -> str:
    """stacks: (frames root first, weight); a frame is a spprof.Frame, or a str (a thread's name).
    A weight times `scale` is in `unit` ("seconds" or "bytes")."""
    root = _Node("all", "", "thread")
    for frames, w in stacks:
        if w <= 0:
            continue
        node = root
        node.value += w
        for f in frames:
            if isinstance(f, str):
                key: Any = ("thread", f)
                name, detail, kind = f, "", "thread"
            else:
                key = f
                name = f.function or "?"
                detail = f"{f.file}:{f.line}" if f.line > 0 else f.file
                native = f.line <= 0 and bool(f.file) and not f.file.endswith((".py", ".pyw", ".pyx"))
                kind = "mem" if memory else ("native" if native else "py")
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(name, detail, kind)
            child.value += w
            node = child
    total = root.value
    span = WIDTH - 2 * PAD
    px = span / total if total > 0 else 0.0
    rows: List[Tuple[int, float, _Node]] = []
    max_depth = 0
    todo: List[Tuple[_Node, int, float]] = [(root, 0, 0.0)]
    while todo:
        node, depth, x = todo.pop()
        rows.append((depth, x, node))
        max_depth = max(max_depth, depth)
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            if child.value * px >= MIN_PX:
                todo.append((child, depth + 1, cx))
            cx += child.value
    height = TOP + (max_depth + 1) * ROW + BOTTOM
    pct = (lambda v: 100.0 * v / total) if total > 0 else (lambda v: 0.0)
    out = [
        '<?xml version="1.0" encoding="UTF-8" standalone="no"?>\n',
        f'<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" data-total="{total!r}" data-scale="{scale!r}" data-unit="{unit}" '
        f'data-row="{ROW}" data-pad="{PAD}">\n',
        "<style>text{font-family:monospace;font-size:%dpx;fill:#000}#title{font-size:17px}"
        "#subtitle{fill:#555}.btn{cursor:pointer;fill:#0645ad}.f{cursor:pointer}.f:hover rect{stroke:#000;"
        "stroke-width:0.5}.f text{pointer-events:none}.parent{opacity:0.5}.hide{display:none}</style>\n" % FONT,
        f'<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="#fafaf7"/>\n',
        f'<text id="title" x="{WIDTH // 2}" y="22" text-anchor="middle"><title>{_esc(title)}</title>'
        f'{_esc(_fit(title, TITLE_CHARS))}</text>\n',
        f'<text id="subtitle" x="{WIDTH // 2}" y="42" text-anchor="middle">{_esc(subtitle)}</text>\n',
        f'<text id="reset" class="btn hide" x="{PAD}" y="22">Reset zoom</text>\n',
        f'<text id="search" class="btn" x="{WIDTH - PAD}" y="22" text-anchor="end">Search</text>\n',
        f'<text id="details" x="{PAD}" y="{height - 9}"> </text>\n',
        f'<text id="matched" x="{WIDTH - PAD}" y="{height - 9}" text-anchor="end"> </text>\n',
        '<g id="frames">\n',
    ]
    for depth, x, node in sorted(rows, key=lambda r: (r[0], r[1])):
        w = node.value * px
        y = height - BOTTOM - (depth + 1) * ROW
        tip = node.name + (f" ({node.detail})" if node.detail else "")
        info = f"{format_value(node.value * scale, unit)}, {pct(node.value):.2f}%"
        out.append(
            f'<g class="f" data-x="{x!r}" data-v="{node.value!r}" data-d="{depth}" data-n="{_esc(node.name)}">'
            f"<title>{_esc(tip)}\n{info}</title>"
            f'<rect x="{PAD + x * px:.2f}" y="{y}" width="{w:.2f}" height="{ROW - 1}" rx="2" '
            f'fill="{_colour(node.name, node.kind)}"/>'
            f'<text x="{PAD + x * px + 3:.2f}" y="{y + ROW - 5}">{_esc(_label(node.name, w))}</text></g>\n')
    out.append("</g>\n<script><![CDATA[\n" + _SCRIPT + "]]></script>\n</svg>\n")
    return "".join(out)


# The interactive part: plain ECMAScript 5, no library. Frame geometry comes from each frame's data-x
# (offset), data-v (weight) and data-d (depth), in weight units.
_SCRIPT = r"""
(function () {
  var svg = document.documentElement;
  var total = +svg.getAttribute('data-total'), scale = +svg.getAttribute('data-scale');
  var unit = svg.getAttribute('data-unit'), pad = +svg.getAttribute('data-pad');
  var width = +svg.getAttribute('width'), span = width - 2 * pad, charw = 7.2;
  var frames = Array.prototype.slice.call(document.querySelectorAll('g.f'));
  var details = document.getElementById('details'), matched = document.getElementById('matched');
  var reset = document.getElementById('reset'), searchBtn = document.getElementById('search');
  var current = null, term = '';
  function attr(g, k) { return g.getAttribute('data-' + k); }
  function fmt(v) {
    var u, i;
    if (unit === 'bytes') {
      u = [['GiB', 1073741824], ['MiB', 1048576], ['KiB', 1024]];
      for (i = 0; i < u.length; i++) if (Math.abs(v) >= u[i][1]) return (v / u[i][1]).toPrecision(3) + ' ' + u[i][0];
      return Math.round(v) + ' B';
    }
    if (v >= 1) return v.toPrecision(3) + ' s';
    if (v >= 1e-3) return (v * 1e3).toPrecision(3) + ' ms';
    return (v * 1e6).toPrecision(3) + ' us';
  }
  function label(name, w) {
    var n = Math.floor((w - 6) / charw);
    if (n < 3) return '';
    return name.length <= n ? name : name.substring(0, n - 2) + '..';
  }
  function place(g, x, w, parent) {
    var r = g.querySelector('rect'), t = g.querySelector('text');
    r.setAttribute('x', (pad + x).toFixed(2));
    r.setAttribute('width', w.toFixed(2));
    t.setAttribute('x', (pad + x + 3).toFixed(2));
    t.textContent = label(attr(g, 'n'), w);
    g.classList.remove('hide');
    if (parent) g.classList.add('parent'); else g.classList.remove('parent');
  }
  function zoom(target) {
    var x0 = +attr(target, 'x'), v0 = +attr(target, 'v'), d0 = +attr(target, 'd'), k = span / v0, eps = v0 * 1e-9;
    current = +attr(target, 'd') === 0 ? null : target;
    frames.forEach(function (g) {
      var x = +attr(g, 'x'), v = +attr(g, 'v'), d = +attr(g, 'd');
      if (d < d0 && x <= x0 + eps && x + v >= x0 + v0 - eps) place(g, 0, span, true);
      else if (d >= d0 && x >= x0 - eps && x + v <= x0 + v0 + eps && v * k >= 0.1) place(g, (x - x0) * k, v * k, false);
      else g.classList.add('hide');
    });
    if (current) reset.classList.remove('hide'); else reset.classList.add('hide');
  }
  function unzoom() { zoom(frames[0]); }
  function search(re) {
    var rx = null, ranges = [], sum = 0, end = -1;
    term = re || '';
    if (term) {
      try { rx = new RegExp(term); } catch (e) { rx = new RegExp(term.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')); }
    }
    frames.forEach(function (g) {
      var r = g.querySelector('rect');
      if (!r.hasAttribute('data-fill')) r.setAttribute('data-fill', r.getAttribute('fill'));
      if (rx && rx.test(attr(g, 'n'))) {
        r.setAttribute('fill', 'rgb(230,0,230)');
        g.setAttribute('data-match', '1');
        ranges.push([+attr(g, 'x'), +attr(g, 'x') + +attr(g, 'v')]);
      } else {
        r.setAttribute('fill', r.getAttribute('data-fill'));
        g.removeAttribute('data-match');
      }
    });
    ranges.sort(function (a, b) { return a[0] - b[0]; });
    ranges.forEach(function (r) {  /* nested matches count once */
      if (r[0] >= end) { sum += r[1] - r[0]; end = r[1]; }
      else if (r[1] > end) { sum += r[1] - end; end = r[1]; }
    });
    matched.textContent = term ? 'Matched: ' + (total > 0 ? (100 * sum / total).toFixed(1) : '0.0') + '% (' + fmt(sum * scale) + ')' : ' ';
    matched.setAttribute('data-share', total > 0 ? String(sum / total) : '0');
    searchBtn.textContent = term ? 'Clear search' : 'Search';
  }
  function ask() {
    if (term) { search(''); return; }
    var t = window.prompt('Search frames (regular expression):', '');
    if (t) search(t);
  }
  frames.forEach(function (g) {
    g.addEventListener('click', function () { zoom(g); });
    g.addEventListener('mouseover', function () {
      var v = +attr(g, 'v');
      details.textContent = attr(g, 'n') + ': ' + fmt(v * scale) + ' (' + (total > 0 ? (100 * v / total).toFixed(2) : '0') + '%)';
    });
    g.addEventListener('mouseout', function () { details.textContent = ' '; });
  });
  reset.addEventListener('click', unzoom);
  searchBtn.addEventListener('click', ask);
  window.addEventListener('keydown', function (e) {
    if ((e.ctrlKey || e.metaKey) && e.keyCode === 70) { e.preventDefault(); ask(); }
    else if (e.keyCode === 27) { unzoom(); search(''); }
  });
  (location.hash || '').replace(/^#/, '').split('&').forEach(function (kv) {
    var i = kv.indexOf('='), k = kv.substring(0, i), v = decodeURIComponent(kv.substring(i + 1));
    var best = null;
    if (k === 'z') {
      frames.forEach(function (g) { if (attr(g, 'n') === v && (!best || +attr(g, 'v') > +attr(best, 'v'))) best = g; });
      if (best) zoom(best);
    } else if (k === 's' && v) search(v);
  });
  svg.setAttribute('data-ready', '1');
})();
"""


def command_line() -> str:
    """This process's command line, as the title of a graph written at its exit."""
    import sys

    argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv
    return " ".join(argv)


def profile_svg(prof: Any, title: Optional[str] = None, threads: bool = False) -> str:
    nthreads = len(prof.threads())
    stacks: List[Tuple[Sequence[Any], float]] = []
    for s in prof.samples:
        frames: Sequence[Any] = s.frames
        if threads:
            frames = (f"{s.thread_name or 'thread'} (tid {s.thread_id})",) + tuple(s.frames)
        proc = prof.processes.get(s.thread_id) if getattr(prof, "processes", None) else None
        if proc is not None:  # record --subprocesses: a level for the process
            frames = (f"pid {proc[0]} ({proc[1]})",) + tuple(frames)
        stacks.append((frames, s.weight))
    hz = 1000.0 / prof.interval_ms if prof.interval_ms > 0 else 0
    sub = (f"{prof.mode} time: {format_value(prof.total_time, 'seconds')} sampled in {nthreads} "
           f"thread{'s' if nthreads != 1 else ''}, {prof.sample_count} samples at {hz:g} Hz; width = {prof.mode} time")
    if not prof.samples:
        sub = ("no samples: raise the rate (-r / interval_ms) or profile a longer run; "
               f"{prof.mode} mode sees only {'running' if prof.mode == 'cpu' else 'existing'} threads")
    return flame_svg(stacks, title or command_line(), sub, "seconds", prof.interval_ms / 1000.0)


def heap_svg(snap: Any, live: bool = True, title: Optional[str] = None) -> str:
    if live:
        stacks = [(s.frames, s.estimated_bytes) for s in snap.samples]
        what = "heap at its peak" if getattr(snap, "view", "live") == "peak" else "live heap"
    else:
        stacks = [(a.frames, a.estimated_bytes) for a in snap.allocations]
        what = "allocated during the session"
    total = sum(w for _, w in stacks)
    sub = (f"{what}: {format_value(total, 'bytes')} estimated from {len(stacks)} samples "
           f"(1 per {format_value(snap.sampling_rate, 'bytes')} allocated); width = bytes")
    if not stacks:
        sub = f"{what}: no samples (lower sampling_rate_kb / --memory-rate-kb to see smaller heaps)"
    return flame_svg(stacks, title or command_line(), sub, "bytes", 1.0, memory=True)
