/* testutil.h - tiny helpers shared by the C tests. Each test is one program: it includes the spprof
   implementation (so it may also poke internals such as spprof__ring_*), runs its checks, prints one
   "ok"/"FAIL" line per check and exits non-zero if any check failed. */
#ifndef SPPROF_TESTUTIL_H
#define SPPROF_TESTUTIL_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int t_failures, t_checks;
#define CHECK(cond, ...) do { t_checks++; if (cond) { printf("  ok   "); } else { t_failures++; printf("  FAIL %s:%d: ", __FILE__, __LINE__); } \
    printf(__VA_ARGS__); printf("\n"); fflush(stdout); } while (0)
#define TEST_DONE() (printf("%s: %d checks, %d failed\n", __FILE__, t_checks, t_failures), t_failures ? 1 : 0)

/* Sanitizer builds run 5-20x slower: tests scale their loop counts down (never their assertions). */
static inline int t_scaled(int n, int sanitizer_n) {
    const char *s = getenv("SPPROF_TEST_SCALE");
    return (s && !strcmp(s, "sanitizer")) ? sanitizer_n : n;
}
static inline uint64_t t_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* Sleeps the full time even when profiling signals interrupt it (wall mode). */
static inline void t_sleep_ms(int ms) {
    struct timespec ts;
    ts.tv_sec = ms / 1000; ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0) {}
}
static __thread volatile double t_sink;  /* per thread: no data race between burners */
static __attribute__((noinline, unused)) void t_burn_ns(uint64_t ns) {  /* burn CPU for about ns of wall time */
    uint64_t end = t_now_ns() + ns;
    double x = 1.0;
    while (t_now_ns() < end) { int i; for (i = 0; i < 1000; i++) x = x * 1.0000001 + 1e-9; }
    t_sink += x;
}
static inline spprof_config t_config(int64_t interval_ns) {
    spprof_config c = spprof_config_default();
    c.interval_ns = interval_ns;
    return c;
}
#endif
