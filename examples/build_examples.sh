#!/bin/sh
# build_examples.sh OUTDIR PYTHON - builds the Python examples for interpreter PYTHON (headers, extension
# suffix and libpython from its own sysconfig):
#   OUTDIR/myext<EXT_SUFFIX>   examples/extension/myext.c: an extension module with spprof built in
#   OUTDIR/embed_demo          examples/embed_demo.c: a program that embeds Python and profiles itself
# Skips (exit 0, with a message) what cannot be built: no interpreter or no Python.h -> nothing; no
# libpython to embed -> no embed_demo. Rebuilds only when a source or header is newer than the target.
# Run from anywhere; CC and CFLAGS (default -O2 -g) are honoured.
set -e
[ $# -eq 2 ] || { echo "usage: $0 OUTDIR PYTHON" >&2; exit 2; }
out=$1; py=$2
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
cflags=${CFLAGS:--O2 -g}
# Frame pointers everywhere, leaf functions included: that is what the native walker follows.
fp="-fno-omit-frame-pointer"
$cc -mno-omit-leaf-frame-pointer -E -x c /dev/null >/dev/null 2>&1 && fp="$fp -mno-omit-leaf-frame-pointer"
warn="-Wall -Wextra -Werror -fno-strict-aliasing"

command -v "$py" >/dev/null 2>&1 || { echo "build_examples: $py not found, skipped"; exit 0; }
cfg() { "$py" -c "import sysconfig, sys; v = sysconfig.get_config_var(sys.argv[1]); print('' if v is None else v)" "$1"; }
inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -f "$inc/Python.h" ] || { echo "build_examples: no Python.h for $py ($inc), skipped"; exit 0; }
mkdir -p "$out"

stale() { # target deps... : true if target is missing or older than a dependency
  t=$1; shift
  [ ! -f "$t" ] && return 0
  [ -n "$(find "$@" -newer "$t")" ]
}

# 1. The extension module.
ext="$out/myext$(cfg EXT_SUFFIX)"
if stale "$ext" "$root/examples/extension/myext.c" "$root/spprof.h" "$root/spprof_python.h"; then
  echo "build_examples: $py -> $ext"
  $cc -std=c99 $warn $fp $cflags -fPIC -shared -I"$root" -I"$inc" \
    "$root/examples/extension/myext.c" -o "$ext" -pthread
fi

# With libunwind-dev installed (and SPPROF_LIBUNWIND not 0), `embed_demo OUT SECONDS --native` unwinds through
# libpython with DWARF; otherwise with frame pointers only.
unwind_cflags=""; unwind_libs=""
if CC=$cc sh "$root/tools/have-libunwind.sh"; then
  unwind_cflags="-DSPPROF_USE_LIBUNWIND"; unwind_libs="-lunwind"
fi

# 2. The embedding program, linked against the interpreter's libpython (as `python3-config --embed --ldflags`).
libdir=$(cfg LIBDIR); libpl=$(cfg LIBPL)
pylib="-lpython$(cfg VERSION)$(cfg ABIFLAGS)"
if [ "$(cfg Py_ENABLE_SHARED)" = "1" ]; then
  lib="$libdir/$(cfg LDLIBRARY)"
  ldflags="-L$libdir $pylib -Wl,-rpath,$libdir"
else
  lib="$libpl/$(cfg LIBRARY)"
  [ -f "$lib" ] || lib="$libdir/$(cfg LIBRARY)"
  ldflags="-L$libpl -L$libdir $pylib -Wl,--export-dynamic"  # extension modules need libpython's symbols
fi
if [ ! -f "$lib" ]; then
  echo "build_examples: no libpython to embed for $py ($lib), embed_demo skipped"
  exit 0
fi
exe="$out/embed_demo"
# embed_demo.libpython records which libpython the program was linked with (rebuild for another one).
if stale "$exe" "$root/examples/embed_demo.c" "$root/spprof.h" "$root/spprof_python.h" "$lib" ||
   [ "$(cat "$exe.libpython" 2>/dev/null)" != "$lib" ]; then
  echo "build_examples: $py -> $exe"
  # $ldflags, LIBS and SYSLIBS are split into words on purpose.
  $cc -std=c99 $warn $fp $cflags -I"$root" -I"$inc" $unwind_cflags "$root/examples/embed_demo.c" -o "$exe" \
    $ldflags $(cfg LIBS) $(cfg SYSLIBS) -pthread $unwind_libs
  echo "$lib" >"$exe.libpython"
fi
