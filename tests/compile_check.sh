#!/bin/sh
# The header compiles alone as C99 and C++11 with gcc and clang, -Wall -Wextra -Wpedantic -Werror:
# declarations only, implementation, header included twice, and SPPROF_STATIC.
set -e
fails=0
for cc in gcc clang; do command -v $cc >/dev/null || { echo "compile-check: $cc missing"; exit 1; }; done
check() { # label compiler flags... (source on stdin)
  label=$1; shift
  if "$@" -Wall -Wextra -Wpedantic -Werror -fsyntax-only -I. - 2>/tmp/spprof_cc.$$; then echo "  ok   $label"
  else echo "  FAIL $label"; cat /tmp/spprof_cc.$$; fails=$((fails + 1)); fi
  rm -f /tmp/spprof_cc.$$
}
api='#include "spprof.h"
int main(void) { spprof_config c = spprof_config_default(); return spprof_start(&c) == SPPROF_OK; }'
impl='#define SPPROF_IMPLEMENTATION
#include "spprof.h"
#include "spprof.h"
int main(void) { return spprof_is_active(); }'
stat='#define SPPROF_STATIC
#define SPPROF_IMPLEMENTATION
#include "spprof.h"
int main(void) { return spprof_is_active(); }'
for cc in gcc clang; do
  printf '%s\n' "$api"  | check "$cc c99 api"  $cc -std=c99 -x c
  printf '%s\n' "$impl" | check "$cc c99 impl" $cc -std=c99 -D_GNU_SOURCE -x c
  printf '%s\n' "$stat" | check "$cc c99 static" $cc -std=c99 -D_GNU_SOURCE -x c
done
for cxx in g++ clang++; do
  printf '%s\n' "$api"  | check "$cxx c++11 api"  $cxx -std=c++11 -x c++
  printf '%s\n' "$impl" | check "$cxx c++11 impl" $cxx -std=c++11 -x c++
  printf '%s\n' "$impl" | check "$cxx c++17 impl" $cxx -std=c++17 -x c++
done
echo "compile-check: $((12 - fails)) passed, $fails failed"
[ $fails -eq 0 ]
