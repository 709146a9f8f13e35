/* The macOS sampler's test program (spprof.h @os_macos). `make test-macos` builds it for arm64 and x86-64
   macOS with zig cc and links it into Mach-O executables, but no Mac is available here: on macOS it has
   NEVER RUN. The program itself is plain POSIX threads, so `make test-macos` also builds and runs it on
   Linux (the signal sampler), to know that its own checks work. Checks: bad config and lifecycle (and, on
   macOS, what @os_macos refuses), a workload with a known 3:1 split in CPU mode (shares within 5 points),
   wall vs CPU attribution of a sleeping thread, pause/resume, many threads with churn, stop time, the
   writers, the memory profiler with hook_native=1 (macOS: malloc_logger; Linux: GOT hooks), and on macOS the
   suspension figures. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SPPROF_IMPLEMENTATION
#include "spprof.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static uint64_t cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static void sleep_ms(int ms) {
    uint64_t end = wall_ns() + (uint64_t)ms * 1000000u;
    while (wall_ns() < end) {
        uint64_t left = end - wall_ns();
        struct timespec ts;
        ts.tv_sec = (time_t)(left / 1000000000u);
        ts.tv_nsec = (long)(left % 1000000000u);
        nanosleep(&ts, NULL);  /* EINTR (Linux wall mode signals): loop */
    }
}

#include "sampler_common.h"  /* CHECK, the workload (leaf_a/leaf_b under middle/outer), scan_cb, file_has */

typedef struct work { uint64_t cpu_target, cpu_used; int tid; } work;
static void *worker_main(void *arg) {
    work *w = (work *)arg;
    uint64_t c0 = cpu_ns();
    w->tid = spprof_gettid();
    while (cpu_ns() - c0 < w->cpu_target) outer(20000);
    w->cpu_used = cpu_ns() - c0;
    return NULL;
}
__attribute__((noinline)) static void *sleeper_main(void *arg) {
    int *tid = (int *)arg;
    if (tid) *tid = spprof_gettid();
    sleep_ms(1500);
    g_sink++;
    return NULL;
}

static void test_config(void) {
    spprof_config c = spprof_config_default();
    printf("bad config and lifecycle\n");
#if SPPROF__OS_MACOS
    c.source = SPPROF_SOURCE_POSIX;
    CHECK(spprof_start(&c) == SPPROF_ERR_INVALID_CONFIG, "source=POSIX refused: %s", spprof_last_error());
    c = spprof_config_default();
    c.guard_faults = 1;
    CHECK(spprof_start(&c) == SPPROF_ERR_INVALID_CONFIG, "guard_faults=1 refused: %s", spprof_last_error());
    c = spprof_config_default();
    c.interval_ns = 500000;
    CHECK(spprof_start(&c) == SPPROF_ERR_INVALID_CONFIG, "interval 0.5 ms refused (macOS: >= 1 ms): %s", spprof_last_error());
    c = spprof_config_default();
#endif
    c.interval_ns = 10;
    CHECK(spprof_start(&c) == SPPROF_ERR_INVALID_CONFIG, "interval 10 ns refused");
    CHECK(spprof_stop() == SPPROF_ERR_NOT_STARTED, "stop while stopped");
    CHECK(spprof_start(NULL) == SPPROF_OK, "start with defaults: %s", spprof_last_error());
    CHECK(spprof_start(NULL) == SPPROF_ERR_ALREADY_STARTED, "double start refused");
    CHECK(spprof_pause() == SPPROF_OK && spprof_pause() == SPPROF_ERR_BAD_STATE, "pause, pause again refused");
    CHECK(spprof_resume() == SPPROF_OK, "resume");
    CHECK(spprof_stop() == SPPROF_OK, "stop");
}

static void test_shares(void) {
    spprof_config c = spprof_config_default();
    work w;
    pthread_t th;
    scan s;
    spprof_stats st;
    uint64_t t0;
    double sa, sb, ta;
    printf("known split: outer -> middle -> leaf_a (3 parts) / leaf_b (1 part), CPU mode 1 kHz\n");
    c.interval_ns = 1000000;
    memset(&w, 0, sizeof w);
    w.cpu_target = 2000000000ull;
    CHECK(spprof_start(&c) == SPPROF_OK, "start");
    pthread_create(&th, NULL, worker_main, &w);
    pthread_join(th, NULL);
    t0 = wall_ns();
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    printf("  stop took %.1f ms\n", (double)(wall_ns() - t0) / 1e6);
    CHECK(wall_ns() - t0 < 500000000ull, "stop within 500 ms");
    spprof_get_stats(&st);
    memset(&s, 0, sizeof s);
    s.tid = w.tid;
    spprof_foreach_sample(scan_cb, &s);
    sa = s.a + s.b ? 100.0 * (double)s.a / (double)(s.a + s.b) : 0;
    sb = s.a + s.b ? 100.0 * (double)s.b / (double)(s.a + s.b) : 0;
    ta = 100.0 * (double)g_t_a / (double)(g_t_a + g_t_b);
    printf("  samples %llu, weight %llu, leaf_a %.1f%%, leaf_b %.1f%%, other %llu\n", (unsigned long long)st.samples_in_profile,
           (unsigned long long)s.total, sa, sb, (unsigned long long)s.other);
#if SPPROF__OS_MACOS
    printf("  ticks %llu (late %llu), suspensions %llu, mean %.1f us, max %.1f us, skipped %llu\n",
           (unsigned long long)spprof__g.mac.ticks, (unsigned long long)st.ticks_late,
           (unsigned long long)st.suspensions,
           st.suspensions ? (double)st.suspend_ns_total / (double)st.suspensions / 1e3 : 0.0,
           (double)st.suspend_ns_max / 1e3, (unsigned long long)st.threads_skipped);
    CHECK(st.suspensions > 0 && st.suspend_ns_total > 0 && st.suspend_ns_max > 0 &&
          st.suspend_ns_max <= st.suspend_ns_total, "threads were suspended and resumed; the stats say for how long");
#endif
    CHECK((double)s.total > 0.7 * (double)w.cpu_used / 1e6 && (double)s.total < 1.3 * (double)w.cpu_used / 1e6 + 20,
          "weight ~ the thread's CPU time / interval (%llu for %.0f ms)", (unsigned long long)s.total, (double)w.cpu_used / 1e6);
    CHECK(sa > ta - 5.0 && sa < ta + 5.0, "leaf_a's share %.1f%% (leaf_b %.1f%%) within 5 points of the truth %.1f%%", sa, sb, ta);
    CHECK(s.other * 10 < s.total, "under 10%% of the weight outside the leaves (%llu of %llu)", (unsigned long long)s.other,
          (unsigned long long)s.total);
    CHECK(s.bad_chain == 0, "every leaf sample has middle and outer above it (%llu bad)", (unsigned long long)s.bad_chain);
#if SPPROF__OS_LINUX
    CHECK(st.suspend_ns_total == 0 && st.threads_skipped == 0, "Linux: no thread is ever suspended (stats 0)");
#endif
}

static void test_wall_vs_cpu(int wall) {
    spprof_config c = spprof_config_default();
    scan s;
    pthread_t th;
    int tid = 0;
    c.interval_ns = 10000000;
    c.mode = wall ? SPPROF_MODE_WALL : SPPROF_MODE_CPU;
    printf("a thread sleeping 1.5 s, %s mode\n", wall ? "wall" : "CPU");
    CHECK(spprof_start(&c) == SPPROF_OK, "start");
    pthread_create(&th, NULL, sleeper_main, &tid);
    pthread_join(th, NULL);
    spprof_stop();
    memset(&s, 0, sizeof s);
    s.tid = tid;
    spprof_foreach_sample(scan_cb, &s);
    printf("  sleeper: weight %llu, with sleeper_main on the stack %llu\n", (unsigned long long)s.total, (unsigned long long)s.sleep_frames);
    if (wall) CHECK(s.sleep_frames > 100, "wall: its 1.5 s are in the profile, under sleeper_main (%llu x 10 ms)", (unsigned long long)s.sleep_frames);
    else CHECK(s.total < 10, "CPU: a sleeping thread has (almost) no weight (%llu)", (unsigned long long)s.total);
}

static void *short_main(void *arg) { (void)arg; outer(2000); sleep_ms(5); return NULL; }
static void test_threads(int n) {
    spprof_config c = spprof_config_default();
    pthread_t *th = (pthread_t *)calloc((size_t)n, sizeof(pthread_t));
    spprof_stats st;
    int i, k;
    uint64_t t0;
    c.interval_ns = 1000000;
    c.mode = SPPROF_MODE_WALL;
    printf("%d threads at once, then 3 x 50 short-lived ones, wall mode 1 kHz, pause/resume in between\n", n);
    CHECK(spprof_start(&c) == SPPROF_OK, "start");
    for (i = 0; i < n; i++) pthread_create(&th[i], NULL, sleeper_main, NULL);
    sleep_ms(300);
    spprof_get_stats(&st);
    CHECK(st.threads_live >= (uint64_t)n, "all %d threads registered (%llu live)", n, (unsigned long long)st.threads_live);
    CHECK(spprof_pause() == SPPROF_OK, "pause");
    sleep_ms(50);  /* a tick that began before the pause ends */
    spprof_flush();
    spprof_get_stats(&st);
    t0 = st.samples_captured;
    sleep_ms(200);
    spprof_get_stats(&st);
    CHECK(st.samples_captured == t0, "no sample while paused (%llu new)", (unsigned long long)(st.samples_captured - t0));
    CHECK(spprof_resume() == SPPROF_OK, "resume");
    for (k = 0; k < 3; k++) {
        pthread_t sh[50];
        for (i = 0; i < 50; i++) pthread_create(&sh[i], NULL, short_main, NULL);
        for (i = 0; i < 50; i++) pthread_join(sh[i], NULL);
    }
    for (i = 0; i < n; i++) pthread_join(th[i], NULL);
    t0 = wall_ns();
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    printf("  stop took %.1f ms\n", (double)(wall_ns() - t0) / 1e6);
    spprof_get_stats(&st);
    printf("  registered %llu, sampled %llu, samples %llu, dropped %llu, walk errors %llu\n", (unsigned long long)st.threads_registered,
           (unsigned long long)st.threads_sampled, (unsigned long long)st.samples_in_profile, (unsigned long long)st.samples_dropped,
           (unsigned long long)st.walk_errors);
    CHECK(st.threads_sampled >= (uint64_t)n, "at least the %d long threads sampled (%llu)", n, (unsigned long long)st.threads_sampled);
    CHECK(st.samples_in_profile > 0, "samples in the profile");
    free(th);
}

static void test_writers(void) {
    char sp[64], co[64];
    printf("writers (the last profile)\n");
    snprintf(sp, sizeof sp, "/tmp/spprof-mac-%d.speedscope.json", (int)getpid());
    snprintf(co, sizeof co, "/tmp/spprof-mac-%d.collapsed", (int)getpid());
    CHECK(spprof_write_speedscope(sp) == SPPROF_OK, "speedscope written");
    CHECK(file_has(sp, "\"name\":\"leaf_a\"") && file_has(sp, "\"name\":\"outer\""), "  it names our functions");
    CHECK(spprof_write_collapsed(co, 0) == SPPROF_OK, "collapsed written");
    CHECK(file_has(co, "outer;middle;leaf_a"), "  it has outer;middle;leaf_a");
    CHECK(spprof_write_collapsed("/dev/null", 0) == SPPROF_OK, "/dev/null (a device) written in place");
    CHECK(spprof_write_collapsed("/no_such_dir/x.txt", 0) == SPPROF_ERR_IO, "unwritable path: SPPROF_ERR_IO (%s)", spprof_last_error());
    unlink(sp);
    unlink(co);
}

/* hook_native=1: the program's own malloc calls reach the memory profiler without spprof_mem_record_* */
static void *g_live[4096];
__attribute__((noinline)) static void alloc_site(int n, size_t size) {
    int i;
    for (i = 0; i < n; i++) g_live[i] = malloc(size);
    g_sink++;
}
static int g_site_samples;
static int mem_cb(const spprof_mem_sample *s, void *u) {
    int k;
    (*(int *)u)++;
    for (k = 0; k < s->nframes; k++) if (is(&s->frames[k], "alloc_site")) { g_site_samples++; break; }
    return 0;
}
static void test_memprof(void) {
    spprof_mem_config c = spprof_mem_config_default();
    spprof_mem_stats st;
    int i, n = 0;
    printf("memory profiler, hook_native=1 (%s)\n", SPPROF__OS_MACOS ? "malloc_logger" : "GOT hooks");
    c.sampling_rate = 16384;
    CHECK(c.hook_native == 1, "hook_native is on by default here");
    CHECK(spprof_mem_start(&c) == SPPROF_OK, "start: %s", spprof_last_error());
    alloc_site(4096, 1024);  /* 4 MiB live */
    spprof_mem_get_stats(&st);
    spprof_mem_foreach_sample(SPPROF_MEM_LIVE, mem_cb, &n);
    printf("  samples %llu, live %llu, estimated live bytes %llu (truth 4194304), %d live samples under alloc_site\n",
           (unsigned long long)st.samples, (unsigned long long)st.live_samples, (unsigned long long)st.estimated_live_bytes,
           g_site_samples);
    CHECK(st.estimated_live_bytes > 4194304ull * 6 / 10 && st.estimated_live_bytes < 4194304ull * 16 / 10,
          "live bytes estimate near 4 MiB (%llu)", (unsigned long long)st.estimated_live_bytes);
    CHECK(g_site_samples * 10 >= n * 8 && n > 0, "most live samples were allocated under alloc_site (%d of %d)", g_site_samples, n);
    for (i = 0; i < 4096; i++) free(g_live[i]);
    spprof_mem_get_stats(&st);
    CHECK(st.live_samples * 10 <= (uint64_t)n, "after free(): the frees were seen (%llu live samples left of %d)",
          (unsigned long long)st.live_samples, n);
    CHECK(spprof_mem_shutdown() == SPPROF_OK, "shutdown (hooks removed)");
}

int main(void) {
    const char *nt = getenv("SPPROF_TEST_MANY_THREADS");
    setvbuf(stdout, NULL, _IONBF, 0);
    test_config();
    test_shares();
    test_writers();
    test_wall_vs_cpu(0);
    test_wall_vs_cpu(1);
    test_threads(nt ? atoi(nt) : 200);
    test_memprof();
    printf("tests/macos_sampler.c: %d checks, %d failed\n", g_checks, g_failed);
    return g_failed ? 1 : 0;
}
