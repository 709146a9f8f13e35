#!/bin/sh
# run_windows.sh EXE... - runs Windows test programs under wine, in a WINEPREFIX of their own under build/wine
# (created on first use, ~10 s), quietly (WINEDEBUG=-all); fails if any of them fails.
WINEPREFIX="$(pwd)/build/wine/prefix"; export WINEPREFIX
WINEDEBUG=-all; export WINEDEBUG
mkdir -p "$WINEPREFIX"
fails=0
for exe in "$@"; do
  echo "windows: $exe (wine $(wine --version 2>/dev/null))"
  if ! timeout 600 wine "$exe" </dev/null; then echo "windows: $exe FAILED"; fails=$((fails + 1)); fi
done
[ "$fails" -eq 0 ]
