#!/bin/sh
# run_macos.sh PYTHON OUTDIR - the macOS build checks (`make test-macos`). No Mac is available: for arm64 and
# x86-64 macOS, zig cc (PyPI's ziglang in the venv: macOS headers and libSystem stubs) compiles spprof.h
# with the implementation as C99 and C++11, and compiles and links examples/native_demo.c,
# tests/macos_sampler.c and the C tests that build for macOS into Mach-O executables (-Wall -Wextra
# -Wpedantic -Werror); tests/macho_imports.py checks that they import the Mach calls the sampler is made of;
# python/_spprof.c is compiled (not linked) against a CPython 3.13 include tree: a syntax and type check
# only (that tree's pyconfig.h is Linux's). NOTHING HERE RUNS ON macOS. tests/macos_sampler.c is also built
# and run on this Linux machine, so that its own checks are known to work.
py=$1; out=${2:-build/macos}
if ! "$py" -m ziglang version >/dev/null 2>&1; then
  echo "test-macos: skipped (ziglang not installed in the venv; make deps installs it)"; exit 0
fi
mkdir -p "$out"
pass=0; fails=0
ok() { echo "  ok   $1"; pass=$((pass + 1)); }
bad() { echo "  FAIL $1"; sed 's/^/       /' "$out/err" | head -20; fails=$((fails + 1)); }
zig() { "$py" -m ziglang "$@"; }
WARN="-Wall -Wextra -Wpedantic -Werror"
FP="-fno-omit-frame-pointer -mno-omit-leaf-frame-pointer"
printf '#define SPPROF_IMPLEMENTATION\n#include "spprof.h"\n#include "spprof.h"\nint main(void) { return spprof_is_active(); }\n' > "$out/impl.c"
# What the sampler is made of: a binary without these imports cannot be the Mach sampler.
SAMPLER_IMPORTS="_thread_suspend _thread_get_state _thread_resume _task_threads _thread_info _mach_wait_until
  _mach_absolute_time _pthread_introspection_hook_install _pthread_get_stackaddr_np _pthread_get_stacksize_np
  _mach_port_mod_refs _mach_port_deallocate __dyld_image_count __dyld_get_image_header
  __dyld_register_func_for_add_image _dladdr _malloc_logger"
# The C tests that build for macOS (the others use Linux-only interfaces: signals' si_fd, perf events,
# epoll, RLIMIT_SIGPENDING, /proc); written for Linux, their checks were never run on macOS.
CTESTS="test_ring test_memprof test_fork test_cycles"
for t in aarch64-macos x86_64-macos; do
  echo "test-macos: $t"
  # spprof.h itself as the compiled file (zig cc's -fsyntax-only passes -c to clang, which -Werror then
  # refuses as unused, and fails to rename its output: an object is compiled instead)
  if zig cc -target $t -std=c99 $WARN -x c -DSPPROF_IMPLEMENTATION -c spprof.h -o "$out/h-$t.o" 2>"$out/err"; then
    ok "$t: spprof.h alone (implementation) compiled"; else bad "$t: spprof.h alone"; fi
  if zig cc -target $t -std=c99 $WARN -I. "$out/impl.c" -o "$out/impl-$t" 2>"$out/err"; then ok "$t: spprof.h C99 implementation, linked"; else bad "$t: spprof.h C99"; fi
  if zig c++ -target $t -std=c++11 $WARN -I. -x c++ "$out/impl.c" -o "$out/implxx-$t" 2>"$out/err"; then ok "$t: spprof.h C++11 implementation, linked"; else bad "$t: spprof.h C++11"; fi
  for prog in examples/native_demo.c tests/macos_sampler.c; do
    bin="$out/$(basename $prog .c)-$t"
    if zig cc -target $t -std=c99 -D_GNU_SOURCE $WARN $FP -O1 -g -I. $prog -o "$bin" 2>"$out/err"; then
      ok "$t: $prog linked"
      if "$py" tests/macho_imports.py "$bin" $SAMPLER_IMPORTS >"$out/err" 2>&1; then ok "$t: $(basename $bin) imports the Mach sampler's calls"; else bad "$t: $(basename $bin) imports"; fi
    else bad "$t: $prog"; fi
  done
  for c in $CTESTS; do
    if zig cc -target $t -std=c99 -D_GNU_SOURCE $WARN $FP -O1 -I. tests/$c.c -o "$out/$c-$t" 2>"$out/err"; then ok "$t: tests/$c.c linked"; else bad "$t: tests/$c.c"; fi
  done
  # the Python module: needs the external-sampler path of spprof_python.h (spprof__os_read_mem) and 3.13
  inc=""
  for d in $(python3.13 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null) \
           "$HOME"/.pyenv/versions/3.13*/include/python3.13 /opt/cpython/3.13/include/python3.13; do
    [ -f "$d/Python.h" ] && { inc=$d; break; }
  done
  if ! grep -q spprof__os_read_mem spprof_python.h; then
    echo "  skip $t: python/_spprof.c: spprof_python.h has no external-sampler path (spprof__os_read_mem) yet"
  elif [ -z "$inc" ]; then
    echo "  skip $t: python/_spprof.c: no CPython 3.13 include tree found"
  elif zig cc -target $t -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-strict-aliasing -fPIC -c -I"$inc" python/_spprof.c \
        -o "$out/_spprof-$t.o" 2>"$out/err" && "$py" tests/macho_imports.py "$out/_spprof-$t.o" _vm_read_overwrite _thread_suspend >"$out/err" 2>&1; then
    ok "$t: python/_spprof.c compiles against $inc (syntax/type check only) and reads memory with vm_read_overwrite"
  else bad "$t: python/_spprof.c"; fi
done
# The test program itself, on Linux (the signal sampler): its checks must pass where they can run.
echo "test-macos: tests/macos_sampler.c on Linux (so that the program's own checks are known to work)"
if ${CC:-cc} -std=c99 -D_GNU_SOURCE $WARN $FP -O1 -g -I. tests/macos_sampler.c -o "$out/macos_sampler-linux" -pthread -ldl -lrt 2>"$out/err" &&
   timeout 120 "$out/macos_sampler-linux" >"$out/err" 2>&1; then
  ok "$(tail -n 1 "$out/err")"
else bad "tests/macos_sampler.c on Linux"; fi
echo "test-macos: $pass passed, $fails failed (macOS: built and linked, never run)"
[ "$fails" -eq 0 ]
