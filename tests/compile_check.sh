#!/bin/sh
# The header compiles alone as C99 and C++11/17 with gcc and clang, -Wall -Wextra -Wpedantic -Werror:
# declarations only (strict C99, no feature macros), implementation, header included twice, SPPROF_STATIC,
# and spprof.h itself as the compiled file.
for cc in gcc clang g++ clang++; do command -v $cc >/dev/null || { echo "compile-check: $cc missing"; exit 1; }; done
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/api.c" <<'SRC'
#include "spprof.h"
int main(void) { spprof_config c = spprof_config_default(); return spprof_start(&c) == SPPROF_OK; }
SRC
cat > "$tmp/impl.c" <<'SRC'
#define SPPROF_IMPLEMENTATION
#include "spprof.h"
#include "spprof.h"
int main(void) { return spprof_is_active(); }
SRC
cat > "$tmp/static.c" <<'SRC'
#define SPPROF_STATIC
#define SPPROF_IMPLEMENTATION
#include "spprof.h"
int main(void) { return spprof_is_active(); }
SRC
pass=0; fails=0
check() { # label source compiler flags...
  label=$1; src=$2; shift 2
  if "$@" -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I. "$src" 2>"$tmp/err"; then
    echo "  ok   $label"; pass=$((pass + 1))
  else
    echo "  FAIL $label"; sed 's/^/       /' "$tmp/err" | head -20; fails=$((fails + 1))
  fi
}
for cc in gcc clang; do
  check "$cc c99 api (no feature macros)" "$tmp/api.c" $cc -std=c99 -x c
  check "$cc c99 impl" "$tmp/impl.c" $cc -std=c99 -D_GNU_SOURCE -x c
  check "$cc c99 static" "$tmp/static.c" $cc -std=c99 -D_GNU_SOURCE -x c
  check "$cc c99 impl, no perf events" "$tmp/impl.c" $cc -std=c99 -D_GNU_SOURCE -DSPPROF_NO_PERF_EVENTS -x c
  check "$cc c99 impl, libunwind" "$tmp/impl.c" $cc -std=c99 -D_GNU_SOURCE -DSPPROF_USE_LIBUNWIND -x c
  check "$cc c99 impl, LD_PRELOAD library" "$tmp/impl.c" $cc -std=c99 -D_GNU_SOURCE -DSPPROF_ALLOC_SHIM -fPIC -x c
done
# The header itself as the file compiled (as a quick check or an IDE does): nothing static in it may be unused
for cc in gcc clang; do
  check "$cc c99 spprof.h alone" spprof.h $cc -std=c99 -x c
  check "$cc c99 spprof.h alone, implementation" spprof.h $cc -std=c99 -D_GNU_SOURCE -DSPPROF_IMPLEMENTATION -x c
done
for cxx in g++ clang++; do
  check "$cxx c++11 api" "$tmp/api.c" $cxx -std=c++11 -x c++
  check "$cxx c++11 impl" "$tmp/impl.c" $cxx -std=c++11 -x c++
  check "$cxx c++17 impl" "$tmp/impl.c" $cxx -std=c++17 -x c++
done
# Windows (mingw-w64): the implementation as C99 and C++ (install-deps installs mingw-w64)
if command -v x86_64-w64-mingw32-gcc >/dev/null; then
  check "mingw gcc c99 impl" "$tmp/impl.c" x86_64-w64-mingw32-gcc -std=c99 -x c
  check "mingw gcc c99 static" "$tmp/static.c" x86_64-w64-mingw32-gcc -std=c99 -x c
  check "mingw g++ c++11 impl" "$tmp/impl.c" x86_64-w64-mingw32-g++ -std=c++11 -x c++
else
  echo "  skip mingw: x86_64-w64-mingw32-gcc not installed (make deps installs mingw-w64)"
fi
echo "compile-check: $pass passed, $fails failed"
[ "$fails" -eq 0 ]
