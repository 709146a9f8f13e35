#!/bin/sh
# have-libunwind.sh - exit 0 if builds should use the libunwind backend (SPPROF_USE_LIBUNWIND, -lunwind):
# libunwind-dev's header is found by $CC and SPPROF_LIBUNWIND is not 0. One answer for build-ext.sh,
# examples/build_examples.sh and the tests.
[ "${SPPROF_LIBUNWIND:-1}" != 0 ] && echo '#include <libunwind.h>' | ${CC:-cc} -E -x c - >/dev/null 2>&1
