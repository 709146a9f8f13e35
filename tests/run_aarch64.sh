#!/bin/sh
# run_aarch64.sh OUTDIR - aarch64 Linux, run for real under emulation (`make test-aarch64`): the C tests and
# examples/native_demo.c cross-built with aarch64-linux-gnu-gcc and run under qemu-aarch64-static (user-mode
# emulation: aarch64 code, the host's kernel). POSIX timers and signals work there; perf events do not
# (perf_event_open is not emulated: ENOSYS), so the AUTO source must fall back to POSIX timers. Left out,
# with the reason: test_wall_syscalls (its stack checks read /proc/self/task/TID/syscall, which shows the
# emulator's own host registers, not the guest's). qemu-user emulates at most 32 POSIX timers per process
# (test_threads' many-threads case runs with 24 threads here), and reserves guest signals 63 and 64.
out=${1:-build/aarch64}
CC=aarch64-linux-gnu-gcc
QEMU=qemu-aarch64-static
for tool in $CC $QEMU; do
  command -v $tool >/dev/null 2>&1 || { echo "test-aarch64: skipped ($tool missing; make deps installs gcc-aarch64-linux-gnu and qemu-user-static)"; exit 0; }
done
QEMU_LD_PREFIX=/usr/aarch64-linux-gnu; export QEMU_LD_PREFIX
SPPROF_TEST_MANY_THREADS=24; export SPPROF_TEST_MANY_THREADS
mkdir -p "$out/out"
FLAGS="-std=c99 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer -O2 -g -I."
TESTS="test_ring test_stacks test_threads test_lifecycle test_signals test_cycles test_memprof test_fork test_guard
  test_outputs test_review test_timer_eagain test_fds"
pass=0; fails=0
for t in $TESTS native_demo; do
  src=tests/$t.c; [ $t = native_demo ] && src=examples/native_demo.c
  if ! $CC $FLAGS $src -o "$out/$t" -pthread -ldl -lrt 2>"$out/$t.log"; then
    echo "test-aarch64: $t FAILED to build"; cat "$out/$t.log"; fails=$((fails + 1)); continue
  fi
  [ $t = native_demo ] && continue
  if timeout 300 $QEMU "$out/$t" >"$out/$t.log" 2>&1; then
    pass=$((pass + 1)); echo "test-aarch64: $(tail -n 1 "$out/$t.log")"
  else
    rc=$?; fails=$((fails + 1)); echo "test-aarch64: $t FAILED (exit $rc):"; cat "$out/$t.log"
  fi
done
# The native demo (3 threads, hot_loop_a / hot_loop_b / cold_loop = 3:2:1 by construction, AUTO source):
# shares within 5 points, each under dispatch (6 s: ~1,000 samples, ~1.6 points of standard error).
echo "test-aarch64: examples/native_demo.c (AUTO source: perf events are refused here, POSIX timers take over)"
if [ -x "$out/native_demo" ] && timeout 120 $QEMU "$out/native_demo" "$out/out" 6 >"$out/native_demo.log" 2>&1 &&
   grep -q 'threads sampled: 3;' "$out/native_demo.log" && echo "  ok   $(head -n 1 "$out/native_demo.log")" &&
   python3 tests/check_shares.py "$out/out/native.collapsed" "hot_loop_a<dispatch=50" "hot_loop_b<dispatch=33.3" \
     "cold_loop<dispatch=16.7"; then
  pass=$((pass + 1))
else
  fails=$((fails + 1)); echo "test-aarch64: native_demo FAILED:"; cat "$out/native_demo.log"
fi
echo "test-aarch64 (qemu-user): $pass passed, $fails failed"
[ "$fails" -eq 0 ]
