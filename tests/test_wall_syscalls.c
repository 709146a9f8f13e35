/* test_wall_syscalls.c - wall mode must not change what the host's system calls return.
   A plain C thread (no retry loops, unlike Python's PEP 475) calls sleep(1), usleep(500000),
   poll(NULL, 0, 500) and epoll_wait(.., 500) while the profiler runs in wall mode at 1 kHz, next to a busy
   thread. Checked: each call returns its normal result after its full time (with a CLOCK_MONOTONIC timer per
   thread they returned after 0.02 s / 0.001 s: every sample interrupted them); the blocked time is in the
   profile, on the blocked thread, under the function that made the call (and its caller, from the
   recovered frame-pointer chain), about as much as the call lasted; the busy thread is still sampled. */
#include "testutil.h"
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>

/* Under ASan, poll and epoll_wait go through ASan's interceptors, which the stack recovery does not walk
   through (the recovered stack ends there: short, not wrong): their attribution is checked in plain and TSan
   builds only, their durations everywhere. */
#if defined(__SANITIZE_ADDRESS__)
#  define T_ASAN 1
#elif defined(__has_feature)
#  if __has_feature(address_sanitizer)
#    define T_ASAN 1
#  endif
#endif

#define N_CALLS 4
static const char *const call_fn[N_CALLS] = { "blk_sleep", "blk_usleep", "blk_poll", "blk_epoll" };
static const int call_ms[N_CALLS] = { 1000, 500, 500, 500 };

typedef struct waiter { int tid, ret[N_CALLS], err[N_CALLS], epfd; uint64_t ns[N_CALLS]; } waiter;

/* one noinline function per call, so that the profile can say which call the time was spent in */
static __attribute__((noinline)) int blk_sleep(void) { int r = (int)sleep(1); __asm__ volatile("" ::: "memory"); return r; }
static __attribute__((noinline)) int blk_usleep(void) { int r = usleep(500000); __asm__ volatile("" ::: "memory"); return r; }
static __attribute__((noinline)) int blk_poll(void) { int r = poll(NULL, 0, 500); __asm__ volatile("" ::: "memory"); return r; }
static __attribute__((noinline)) int blk_epoll(int epfd) {
    struct epoll_event ev;
    int r = epoll_wait(epfd, &ev, 1, 500);
    __asm__ volatile("" ::: "memory");
    return r;
}

static __attribute__((noinline)) void waiter_calls(waiter *w) {
    int i;
    for (i = 0; i < N_CALLS; i++) {
        uint64_t t0 = t_now_ns();
        errno = 0;
        switch (i) {
        case 0: w->ret[i] = blk_sleep(); break;
        case 1: w->ret[i] = blk_usleep(); break;
        case 2: w->ret[i] = blk_poll(); break;
        default: w->ret[i] = blk_epoll(w->epfd); break;
        }
        w->err[i] = errno;
        w->ns[i] = t_now_ns() - t0;
    }
}

static void *waiter_main(void *arg) {
    waiter *w = (waiter *)arg;
    t_flag_set(&w->tid, spprof_gettid());
    t_sleep_ms(100);  /* the profiler starts meanwhile (and finds this thread) */
    waiter_calls(w);
    return NULL;
}

/* A thread that blocks the profiling signal is not sampled (documented; spprof_python.h's pinning thread
   relies on it): in wall mode neither, although its blocked time would need no signal. It blocks every
   signal (the session's signal is chosen at start, after this thread exists), as worker threads of many C
   libraries do. */
typedef struct masked { int tid, stop; } masked;
static void *masked_main(void *arg) {
    masked *m = (masked *)arg;
    sigset_t set;
    sigfillset(&set);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    t_flag_set(&m->tid, spprof_gettid());
    while (!t_flag_get(&m->stop)) usleep(50000);
    return NULL;
}

typedef struct busy { int tid, stop; } busy;
static void *busy_main(void *arg) {
    busy *b = (busy *)arg;
    t_flag_set(&b->tid, spprof_gettid());
    while (!t_flag_get(&b->stop)) t_burn_ns(1000000);
    return NULL;
}

typedef struct tally { int tid; uint64_t fn_weight[N_CALLS], with_caller[N_CALLS], thread_weight, leaf_libc; } tally;
static int tally_cb(const spprof_sample_view *v, void *user) {
    tally *t = (tally *)user;
    int k, i, hit = -1, caller = 0;
    if (v->tid != t->tid) return 0;
    t->thread_weight += v->weight;
    for (k = 0; k < v->nframes; k++) {
        spprof_symbol s;
        if (!spprof_resolve(&v->frames[k], &s)) continue;
        for (i = 0; i < N_CALLS && hit < 0; i++) if (!strcmp(s.name, call_fn[i])) hit = i;
        if (hit >= 0 && !strcmp(s.name, "waiter_calls")) caller = 1;
        if (k == 0 && strstr(s.file, "libc")) t->leaf_libc += v->weight;
    }
    if (getenv("T_VERBOSE")) {  /* the stacks, for a look by hand */
        printf("    w %4u:", v->weight);
        for (k = 0; k < v->nframes; k++) {
            spprof_symbol s;
            printf(" %s", spprof_resolve(&v->frames[k], &s) ? s.name : "?");
        }
        printf("\n");
    }
    if (hit >= 0) {
        t->fn_weight[hit] += v->weight;
        if (caller) t->with_caller[hit] += v->weight;
    }
    return 0;
}

int main(void) {
    spprof_config cfg = t_config(1000000);
    const char *src = getenv("SPPROF_TEST_SOURCE");
    waiter w;
    busy b;
    masked mk;
    pthread_t tw, tb, tm;
    tally t;
    spprof_stats st;
    int i;
    printf("wall mode, 1 kHz: sleep / usleep / poll / epoll_wait on a plain C thread\n");
    if (src && strcmp(src, "posix")) cfg.source = SPPROF_SOURCE_AUTO;  /* explicit perf sources: CPU mode only */
    cfg.mode = SPPROF_MODE_WALL;
    memset(&w, 0, sizeof w);
    memset(&b, 0, sizeof b);
    memset(&mk, 0, sizeof mk);
    w.epfd = epoll_create1(EPOLL_CLOEXEC);
    CHECK(w.epfd >= 0, "epoll_create1");
    pthread_create(&tb, NULL, busy_main, &b);
    pthread_create(&tm, NULL, masked_main, &mk);
    pthread_create(&tw, NULL, waiter_main, &w);
    while (!t_flag_get(&w.tid) || !t_flag_get(&b.tid) || !t_flag_get(&mk.tid)) sched_yield();
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start (wall, 1 kHz)");
    pthread_join(tw, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    t_flag_set(&b.stop, 1);
    t_flag_set(&mk.stop, 1);
    pthread_join(tb, NULL);
    pthread_join(tm, NULL);
    close(w.epfd);

    for (i = 0; i < N_CALLS; i++) {
        double s = (double)w.ns[i] / 1e9, want = call_ms[i] / 1000.0;
        CHECK(w.ret[i] == 0 && s >= want - 0.005 && s < want + 0.5,
              "%s returned %d (errno %d %s) after %.3f s (full time: %.3f s)", call_fn[i] + 4, w.ret[i], w.err[i],
              w.ret[i] ? strerror(w.err[i]) : "", s, want);
    }

    memset(&t, 0, sizeof t);
    t.tid = w.tid;
    spprof_foreach_sample(tally_cb, &t);
    spprof_get_stats(&st);
    printf("  blocked thread: weight %llu; dropped %llu\n", (unsigned long long)t.thread_weight,
           (unsigned long long)st.samples_dropped);
    for (i = 0; i < N_CALLS; i++) {
#ifdef T_ASAN
        if (i >= 2) { printf("  (ASan: %llu ms in %s, not checked)\n", (unsigned long long)t.fn_weight[i], call_fn[i]); continue; }
#endif
        /* one weight unit = 1 ms; the first and last accounting periods may be cut: at least 60% of it */
        CHECK(t.fn_weight[i] >= (uint64_t)call_ms[i] * 6 / 10 && t.fn_weight[i] <= (uint64_t)call_ms[i] * 12 / 10,
              "profile: %llu ms in %s (it blocked %d ms)", (unsigned long long)t.fn_weight[i], call_fn[i], call_ms[i]);
        CHECK(t.with_caller[i] == t.fn_weight[i], "  and every one of them has its caller waiter_calls above it (%llu of %llu)",
              (unsigned long long)t.with_caller[i], (unsigned long long)t.fn_weight[i]);
    }
    CHECK(t.leaf_libc * 10 >= t.thread_weight * 9, "the leaf of the blocked thread's samples is in libc (the system call wrapper): %llu of %llu",
          (unsigned long long)t.leaf_libc, (unsigned long long)t.thread_weight);
    {
        tally tb2;
        memset(&tb2, 0, sizeof tb2);
        tb2.tid = b.tid;
        spprof_foreach_sample(tally_cb, &tb2);
        CHECK(tb2.thread_weight >= 300, "the busy thread is sampled too (weight %llu of ~2600)", (unsigned long long)tb2.thread_weight);
        memset(&tb2, 0, sizeof tb2);
        tb2.tid = mk.tid;
        spprof_foreach_sample(tally_cb, &tb2);
        CHECK(tb2.thread_weight == 0, "a thread that blocks the profiling signal has no samples (weight %llu)", (unsigned long long)tb2.thread_weight);
    }
    return TEST_DONE();
}
