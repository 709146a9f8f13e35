/* native_demo.c - a C program that profiles itself with spprof.h.
   Three worker threads spend CPU in known functions: hot_loop_a (about 3 parts), hot_loop_b (2 parts),
   cold_loop (1 part), all called through dispatch(). Writes out/native.speedscope.json, out/native.collapsed
   and out/native.pb.gz (pprof).
   Build: cc -O1 -g -fno-omit-frame-pointer -pthread examples/native_demo.c -o native_demo
   Usage: native_demo [OUTDIR] [SECONDS] */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile double sink;

static __attribute__((noinline)) double spin(long iters) {
    double x = 1.0;
    long i;
    for (i = 0; i < iters; i++) x = x * 1.0000001 + 1e-9;
    return x;
}
static __attribute__((noinline)) void hot_loop_a(void) { sink += spin(3000000); }
static __attribute__((noinline)) void hot_loop_b(void) { sink += spin(2000000); }
static __attribute__((noinline)) void cold_loop(void) { sink += spin(1000000); }
/* The volatile access after the last call keeps GCC from turning it into a tail call (a tail call really
   removes dispatch from the stack, and the profile would rightly show worker -> cold_loop). */
static __attribute__((noinline)) void dispatch(void) { hot_loop_a(); hot_loop_b(); cold_loop(); sink += 0.0; }

static double g_seconds = 2.0;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *worker(void *arg) {
    uint64_t end = now_ns() + (uint64_t)(g_seconds * 1e9);
    char name[16];
    snprintf(name, sizeof name, "worker-%d", (int)(intptr_t)arg);
#ifdef __APPLE__
    pthread_setname_np(name);  /* macOS names the calling thread only */
#else
    pthread_setname_np(pthread_self(), name);
#endif
    while (now_ns() < end) dispatch();
    return NULL;
}

int main(int argc, char **argv) {
    const char *outdir = argc > 1 ? argv[1] : "out";
    char path[4096];
    pthread_t th[3];
    spprof_config cfg = spprof_config_default();
    spprof_stats st;
    int i;
    if (argc > 2) g_seconds = atof(argv[2]);
    cfg.interval_ns = 1000000; /* 1 kHz of CPU time per thread */
    if (spprof_start(&cfg) != SPPROF_OK) { fprintf(stderr, "spprof_start: %s\n", spprof_last_error()); return 1; }
    for (i = 0; i < 3; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
    for (i = 0; i < 3; i++) pthread_join(th[i], NULL);
    spprof_stop();
    spprof_get_stats(&st);
    printf("samples: %llu captured, %llu in profile, %llu dropped; threads sampled: %llu; overruns: %llu\n",
           (unsigned long long)st.samples_captured, (unsigned long long)st.samples_in_profile,
           (unsigned long long)st.samples_dropped, (unsigned long long)st.threads_sampled,
           (unsigned long long)st.timer_overruns);
    snprintf(path, sizeof path, "%s/native.speedscope.json", outdir);
    if (spprof_write_speedscope(path) != SPPROF_OK) { fprintf(stderr, "%s\n", spprof_last_error()); return 1; }
    printf("wrote %s\n", path);
    snprintf(path, sizeof path, "%s/native.collapsed", outdir);
    if (spprof_write_collapsed(path, SPPROF_COLLAPSED_THREADS) != SPPROF_OK) { fprintf(stderr, "%s\n", spprof_last_error()); return 1; }
    printf("wrote %s\n", path);
    snprintf(path, sizeof path, "%s/native.pb.gz", outdir);
    if (spprof_write_pprof(path) != SPPROF_OK) { fprintf(stderr, "%s\n", spprof_last_error()); return 1; }
    printf("wrote %s\n", path);
    return 0;
}
