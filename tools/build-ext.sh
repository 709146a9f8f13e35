#!/bin/sh
# build-ext.sh OUTDIR PYTHON... - builds the extension module _spprof for each interpreter that exists
# (headers and extension suffix from its own sysconfig), into OUTDIR/spprof/. Missing interpreters are skipped.
set -e
out=$1; shift
mkdir -p "$out/spprof"
# native=True unwinds with libunwind (DWARF: works through code without frame pointers, e.g. most distributions'
# libpython) when libunwind-dev is installed, unless SPPROF_LIBUNWIND=0; else with frame pointers only.
unwind_cflags=""; unwind_libs=""
if sh "$(dirname "$0")/have-libunwind.sh"; then
  unwind_cflags="-DSPPROF_USE_LIBUNWIND"; unwind_libs="-lunwind"
fi
for py in "$@"; do
  command -v "$py" >/dev/null 2>&1 || { echo "build-ext: $py not found, skipped"; continue; }
  inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  [ -f "$inc/Python.h" ] || { echo "build-ext: no Python.h for $py ($inc), skipped"; continue; }
  target="$out/spprof/_spprof$suffix"
  stamp="$out/spprof/.unwind$suffix"
  if [ ! -f "$target" ] || [ -n "$(find spprof.h spprof_python.h python/_spprof.c -newer "$target")" ] || \
     [ "$(cat "$stamp" 2>/dev/null)" != "$unwind_cflags" ]; then
    echo "build-ext: $py -> $target"
    ${CC:-cc} -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-strict-aliasing -fno-omit-frame-pointer \
      -O2 -g -fPIC -shared -I"$inc" $unwind_cflags python/_spprof.c -o "$target" -pthread $unwind_libs
    echo "$unwind_cflags" > "$stamp"
  fi
done
