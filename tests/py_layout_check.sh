#!/bin/sh
# py_layout_check.sh PYTHON... - the frame mirror in spprof_python.h matches each interpreter's internal headers.
fails=0; n=0
for py in "$@"; do
  command -v "$py" >/dev/null 2>&1 || { echo "  skip $py (not installed)"; continue; }
  inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$inc/Python.h" ] || { echo "  skip $py (no headers in $inc)"; continue; }
  n=$((n + 1))
  if out=$(${CC:-cc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-local-typedefs -fsyntax-only -I"$inc" -I"$inc/internal" tests/py_layout_check.c 2>&1); then
    echo "  ok   frame layout matches $py ($inc)"
  else
    fails=$((fails + 1)); echo "  FAIL frame layout differs from $py:"; printf '%s\n' "$out" | head -20
  fi
done
echo "py-layout-check: $((n - fails)) passed, $fails failed"
[ $fails -eq 0 ]
