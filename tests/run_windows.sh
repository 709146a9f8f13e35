#!/bin/sh
# run_windows.sh EXE... - runs Windows test programs under wine, in a WINEPREFIX of their own under build/wine
# (created on first use, ~10 s), quietly (WINEDEBUG=-all); fails if any of them fails. native_demo.exe is run
# as the demo is (3 s, outputs into build/windows/out) and its collapsed output is checked: every sample of
# the known split under worker -> dispatch, each of the three functions present, shares printed.
WINEPREFIX="$(pwd)/build/wine/prefix"; export WINEPREFIX
WINEDEBUG=-all; export WINEDEBUG
mkdir -p "$WINEPREFIX"
fails=0
for exe in "$@"; do
  echo "windows: $exe (wine $(wine --version 2>/dev/null))"
  case "$exe" in
    *native_demo.exe)
      out="$(dirname "$exe")/out"
      rm -rf "$out"
      mkdir -p "$out"
      if ! timeout 300 wine "$exe" "$out" 3 </dev/null || ! python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
json.load(open(out + "/native.speedscope.json"))
w = {"hot_loop_a": 0, "hot_loop_b": 0, "cold_loop": 0}
total = 0
for line in open(out + "/native.collapsed"):
    stack, n = line.rsplit(" ", 1)
    frames = stack.split(";")
    total += int(n)
    for f in w:
        if f in frames and frames[frames.index(f) - 1] == "dispatch" and "worker" in frames:
            w[f] += int(n)
split = sum(w.values())
print("  native_demo: weight %d, of it under worker;dispatch: %s (truth 50/33.3/16.7)" % (
    total, ", ".join("%s %.1f%%" % (f, 100.0 * v / max(split, 1)) for f, v in w.items())))
sys.exit(0 if all(w.values()) and split >= 0.9 * total else 1)
PY
      then echo "windows: $exe FAILED"; fails=$((fails + 1)); fi ;;
    *)
      if ! timeout 600 wine "$exe" </dev/null; then echo "windows: $exe FAILED"; fails=$((fails + 1)); fi ;;
  esac
done
[ "$fails" -eq 0 ]
