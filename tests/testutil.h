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
#include <dirent.h>

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
/* Sleeps until the deadline even when profiling signals interrupt it (wall mode sends them constantly). */
static inline void t_sleep_ms(int ms) {
    struct timespec ts;
    uint64_t end = t_now_ns() + (uint64_t)ms * 1000000u;
#ifdef __APPLE__  /* no clock_nanosleep: relative sleeps until the deadline */
    uint64_t now;
    while ((now = t_now_ns()) < end) {
        ts.tv_sec = (time_t)((end - now) / 1000000000u);
        ts.tv_nsec = (long)((end - now) % 1000000000u);
        nanosleep(&ts, NULL);
    }
#else
    ts.tv_sec = (time_t)(end / 1000000000u);
    ts.tv_nsec = (long)(end % 1000000000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0) {}
#endif
}
static __thread volatile double t_sink;  /* per thread: no data race between burners */
static __attribute__((noinline, unused)) void t_burn_ns(uint64_t ns) {  /* burn CPU for about ns of wall time */
    uint64_t end = t_now_ns() + ns;
    double x = 1.0;
    while (t_now_ns() < end) { int i; for (i = 0; i < 1000; i++) x = x * 1.0000001 + 1e-9; }
    t_sink += x;
}
/* The default configuration at another interval. SPPROF_TEST_SOURCE=posix|perf|perf-user picks the sample
   source (default: AUTO, i.e. perf task-clock where the kernel allows it); make test-c runs both. */
static inline spprof_config t_config(int64_t interval_ns) {
    spprof_config c = spprof_config_default();
    const char *src = getenv("SPPROF_TEST_SOURCE");
    c.interval_ns = interval_ns;
    if (src && !strcmp(src, "posix")) c.source = SPPROF_SOURCE_POSIX;
    else if (src && !strcmp(src, "perf")) c.source = SPPROF_SOURCE_PERF;
    else if (src && !strcmp(src, "perf-user")) c.source = SPPROF_SOURCE_PERF_USER;
    return c;
}
/* perf_event fds of this process (links to anon_inode:[perf_event] in /proc/self/fd); -1 if unreadable. */
static inline int t_count_perf_fds(void) {
    char path[300], target[64];
    int n = 0;
    struct dirent *de;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while ((de = readdir(d)) != NULL) {
        ssize_t k;
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        k = readlink(path, target, sizeof target - 1);
        if (k > 0) { target[k] = 0; if (strstr(target, "perf_event")) n++; }
    }
    closedir(d);
    return n;
}
/* Sample sources of this process: POSIX timers (lines "ID: n" in /proc/self/timers) plus perf event fds;
   -1 if unreadable. */
static inline int t_count_timers(void) {
    char line[256];
    int n = 0;
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) if (!strncmp(line, "ID:", 3)) n++;
    fclose(f);
    return n + (t_count_perf_fds() > 0 ? t_count_perf_fds() : 0);
}
/* Threads of this process (entries of /proc/self/task); -1 if unreadable. */
static inline int t_count_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    int n = 0;
    if (!d) return -1;
    while ((de = readdir(d)) != NULL) if (de->d_name[0] != '.') n++;
    closedir(d);
    return n;
}
static inline int t_flag_get(const int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void t_flag_set(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

static inline uint64_t t_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline uint64_t t_process_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline spprof_stats t_stats(void) { spprof_stats s; memset(&s, 0, sizeof s); spprof_get_stats(&s); return s; }

/* T_TSAN: built with ThreadSanitizer (gcc or clang). */
#if defined(__SANITIZE_THREAD__)
#  define T_TSAN 1
#elif defined(__has_feature)
#  if __has_feature(thread_sanitizer)
#    define T_TSAN 1
#  endif
#endif
#ifdef T_TSAN
#  define T_TSAN_ON 1
#else
#  define T_TSAN_ON 0
#endif
#endif
