/* lockdown_native.c - the C sampler's workload for tests/test_lockdown.py: two threads call part_a, part_b
   and part_c, which run the same loop for 3 : 2 : 1 units of iterations (CPU shares 50 / 33.3 / 16.7 % by
   construction; one unit lasts 4-10 ms, longer than a kernel tick), under spprof at 1 kHz of CPU time with the given sample source.
   Usage: lockdown_native SOURCE(auto|posix|perf) OUT.collapsed CPU_SECONDS_PER_THREAD
   Exit 0 with the profile written; 2 with spprof's error on stderr if spprof_start fails. */
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

static volatile double sink;
static double g_seconds;

static __attribute__((noinline)) double spin(long iters) {
    double x = 1.0;
    long i;
    for (i = 0; i < iters; i++) x = x * 1.0000001 + 1e-9;
    return x;
}
static __attribute__((noinline)) void part_a(void) { sink += spin(3 * 2000000); }
static __attribute__((noinline)) void part_b(void) { sink += spin(2 * 2000000); }
static __attribute__((noinline)) void part_c(void) { sink += spin(1 * 2000000); }

/* This thread's CPU time: each thread runs for SECONDS of its own CPU, so the number of samples does not depend
   on how loaded the machine is (POSIX CPU timers fire on kernel ticks: at HZ=250, 250 samples per CPU second,
   each weighted 4 intervals; the spread of a share is that of ~500 samples per thread). */
static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *worker(void *arg) {
    (void)arg;
    while (cpu_s() < g_seconds) {
        part_a();
        part_b();
        part_c();
    }
    return NULL;
}

int main(int argc, char **argv) {
    spprof_config cfg = spprof_config_default();
    pthread_t th[2];
    int i;
    if (argc != 4) {
        fprintf(stderr, "usage: lockdown_native auto|posix|perf OUT.collapsed SECONDS\n");
        return 2;
    }
    if (!strcmp(argv[1], "posix")) cfg.source = SPPROF_SOURCE_POSIX;
    else if (!strcmp(argv[1], "perf")) cfg.source = SPPROF_SOURCE_PERF;
    else cfg.source = SPPROF_SOURCE_AUTO;
    g_seconds = atof(argv[3]);
    cfg.interval_ns = 1000000;
    if (spprof_start(&cfg) != SPPROF_OK) {
        fprintf(stderr, "lockdown_native: spprof_start: %s\n", spprof_last_error());
        return 2;
    }
    for (i = 0; i < 2; i++) pthread_create(&th[i], NULL, worker, NULL);
    for (i = 0; i < 2; i++) pthread_join(th[i], NULL);
    spprof_stop();
    if (spprof_write_collapsed(argv[2], 0) != SPPROF_OK) {
        fprintf(stderr, "lockdown_native: %s\n", spprof_last_error());
        return 1;
    }
    return 0;
}
