#!/bin/sh
# install-deps.sh VENV PYTHON - installs what `make test` needs, only what is missing:
# gcc, clang, make, libunwind-dev, mingw-w64(-tools) and wine (the Windows tests), golang-go and chromium
# (go tool pprof and a headless browser read the outputs back), python3.11-dbg +
# python3.11-dev (Debian's debug CPython, which every Python suite runs under besides python3) and a venv
# with pytest + jsonschema (PyPI).
venv=${1:-.venv}; py=${2:-python3}
need=""
for tool in gcc g++ clang clang++ make; do command -v $tool >/dev/null 2>&1 || need="$need $tool"; done
# libunwind-dev: the DWARF unwinder behind native=True (SPPROF_USE_LIBUNWIND) and tests/libunwind_check.c
echo '#include <libunwind.h>' | ${CC:-cc} -E -x c - >/dev/null 2>&1 || need="$need libunwind-dev"
command -v python3.11-dbg >/dev/null 2>&1 || need="$need python3.11-dbg"
# mingw-w64 + wine: the Windows sampler is built with mingw and its tests run under wine (make test-windows)
command -v x86_64-w64-mingw32-gcc >/dev/null 2>&1 || need="$need mingw-w64"
command -v wine >/dev/null 2>&1 || need="$need wine"
# mingw-w64-tools: gendef, for the import library of python313.dll (make windows)
command -v gendef >/dev/null 2>&1 || need="$need mingw-w64-tools"
# golang-go: `go tool pprof` reads the pprof output back (tests/test_pprof.py); chromium: the SVG flame graph
# and the Speedscope app are loaded in a headless browser (tests/test_browser.py)
command -v go >/dev/null 2>&1 || need="$need golang-go"
command -v chromium >/dev/null 2>&1 || need="$need chromium"
# libc6-dbg: libc's separate debug file, where the symbolizer finds local names such as start_thread
[ -d /usr/lib/debug/.build-id ] || need="$need libc6-dbg"
if [ -n "$need" ]; then
  echo "install-deps: installing Debian packages for:$need"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc g++ clang make libunwind-dev mingw-w64 mingw-w64-tools wine wine64 \
    python3.11-dbg python3.11-dev golang-go chromium libc6-dbg >/dev/null || exit 1
fi
# gcc-aarch64-linux-gnu + qemu-user-static: aarch64 Linux run under emulation (make test-aarch64)
if ! command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  echo "install-deps: installing Debian packages gcc-aarch64-linux-gnu qemu-user-static"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc-aarch64-linux-gnu \
    qemu-user-static >/dev/null || exit 1
fi
if ! "$venv/bin/python" -c "import pytest, jsonschema" 2>/dev/null; then
  echo "install-deps: creating $venv with pytest and jsonschema"
  "$py" -m venv "$venv" && "$venv/bin/pip" install -q pytest jsonschema || exit 1
fi
# ziglang (PyPI): zig cc with macOS headers and libSystem stubs builds the macOS targets (make test-macos)
if ! "$venv/bin/python" -c "import ziglang" 2>/dev/null; then
  echo "install-deps: installing ziglang into $venv"
  "$venv/bin/pip" install -q ziglang || exit 1
fi
