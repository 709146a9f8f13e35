/* test_lifecycle.c - configuration checks, the state machine, pause, stats, timer overruns and weights,
   chaining to a previously installed handler, wall vs CPU mode (and SA_RESTART), the memory limit and
   walker errors. */
#include "testutil.h"
#include <fcntl.h>
#include <errno.h>
#include <signal.h>
/* TSan (GCC defines __SANITIZE_THREAD__, Clang has __has_feature) */

/* ---- helpers ---- */

/* Sleep that neither ends early on EINTR (the profiling signal interrupts nanosleep in wall mode) nor
   drifts. */
static void sleep_ms_full(int ms) {
    struct timespec ts;
    uint64_t end = t_now_ns() + (uint64_t)ms * 1000000u;
    ts.tv_sec = (time_t)(end / 1000000000u);
    ts.tv_nsec = (long)(end % 1000000000u);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {}
}
static __attribute__((noinline)) void busy_work(uint64_t ns) { t_burn_ns(ns); t_sink += 1; }
/* Burn until this thread has used `ms` of CPU (sample counts in CPU mode depend on CPU time, which a loaded
   machine hands out slowly), but at most 20 s of wall time. */
static void burn_cpu_ms(int ms) {
    uint64_t c0 = t_thread_cpu_ns(), end = t_now_ns() + 20000000000u;
    while (t_thread_cpu_ns() - c0 < (uint64_t)ms * 1000000u && t_now_ns() < end) t_burn_ns(1000000);
}

typedef struct busy_thread {
    pthread_t th;
    int stop;           /* atomic */
    int tid;            /* atomic */
    int do_register;    /* call spprof_thread_register() first (auto_threads = 0 sessions) */
} busy_thread;
static void *busy_main(void *arg) {
    busy_thread *b = (busy_thread *)arg;
    if (b->do_register) spprof_thread_register();
    __atomic_store_n(&b->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&b->stop, __ATOMIC_ACQUIRE)) busy_work(2000000);
    return NULL;
}
static void busy_start(busy_thread *b, int do_register) {
    memset(b, 0, sizeof *b);
    b->do_register = do_register;
    pthread_create(&b->th, NULL, busy_main, b);
    while (!__atomic_load_n(&b->tid, __ATOMIC_ACQUIRE)) sched_yield();
}
static void busy_stop(busy_thread *b) {
    __atomic_store_n(&b->stop, 1, __ATOMIC_RELEASE);
    pthread_join(b->th, NULL);
}

typedef struct tid_sum { int tid; uint64_t runs, count, weight; } tid_sum;
static int tid_sum_cb(const spprof_sample_view *v, void *user) {
    tid_sum *s = (tid_sum *)user;
    if (v->tid == s->tid) { s->runs++; s->count += v->count; s->weight += v->weight; }
    return 0;
}
static tid_sum samples_of(int tid) {
    tid_sum s;
    memset(&s, 0, sizeof s);
    s.tid = tid;
    spprof_foreach_sample(tid_sum_cb, &s);
    return s;
}
typedef struct all_sum { uint64_t count, weight; } all_sum;
static int all_sum_cb(const spprof_sample_view *v, void *user) {
    all_sum *s = (all_sum *)user;
    s->count += v->count; s->weight += v->weight;
    return 0;
}
static spprof_stats stats_now(void) { spprof_stats st; spprof_flush(); spprof_get_stats(&st); return st; }
/* Burn CPU on this thread until the profile holds more than `target` samples, for at most max_ms of wall
   time. Needed in CPU mode: when threads compete for the CPUs, Linux CPU-clock timers of a thread can fire
   far less often than once per tick (seen here: 0..8 signals for 300 ms of CPU instead of ~75). */
static spprof_stats burn_until_samples(uint64_t target, int max_ms) {
    uint64_t end = t_now_ns() + (uint64_t)max_ms * 1000000u;
    spprof_stats st = stats_now();
    while (st.samples_in_profile <= target && t_now_ns() < end) { t_burn_ns(5000000); st = stats_now(); }
    return st;
}
/* Wait (up to max_ms) until thread `tid` has samples in the profile. */
static tid_sum wait_samples_of(int tid, int max_ms) {
    uint64_t end = t_now_ns() + (uint64_t)max_ms * 1000000u;
    tid_sum ts;
    for (;;) {
        spprof_flush();
        ts = samples_of(tid);
        if (ts.count > 0 || t_now_ns() >= end) return ts;
        sleep_ms_full(20);
    }
}
static void clear_error(void) { spprof__errbuf[0] = 0; }

/* ==== handler chaining ==== */
static int g_user_calls, g_user_timer_calls, g_user_bad, g_user_last_code;
static void user_siginfo_handler(int sig, siginfo_t *si, void *uc) {
    __atomic_fetch_add(&g_user_calls, 1, __ATOMIC_SEQ_CST);
    if (sig != SIGPROF || !si || !uc) __atomic_fetch_add(&g_user_bad, 1, __ATOMIC_SEQ_CST);
    else {
        if (si->si_code == SI_TIMER) __atomic_fetch_add(&g_user_timer_calls, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&g_user_last_code, si->si_code, __ATOMIC_SEQ_CST);
    }
}
static int g_plain_sig;
static void user_plain_handler(int sig) {
    __atomic_fetch_add(&g_user_calls, 1, __ATOMIC_SEQ_CST);
    if (sig != __atomic_load_n(&g_plain_sig, __ATOMIC_SEQ_CST)) __atomic_fetch_add(&g_user_bad, 1, __ATOMIC_SEQ_CST);
}
static int wait_calls(int target) {  /* wait up to 2 s (a loaded machine) for the user handler to have run `target` times */
    int i;
    for (i = 0; i < 2000 && __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) < target; i++) sleep_ms_full(1);
    return __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) >= target;
}

typedef struct idler { pthread_t th; int stop, tid; } idler;  /* not sampled (auto_threads = 0) */
static void *idler_main(void *arg) {
    idler *d = (idler *)arg;
    __atomic_store_n(&d->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) sleep_ms_full(5);
    return NULL;
}

/* Sends foreign signals of every kind while profiling; each must reach the user's handler exactly once.
   Returns how many were sent. The sampled thread `busy` may have a timer signal pending at the instant a
   pthread_kill arrives; the kernel then merges the two (one pending standard signal per thread), which is
   not spprof's doing, so a signal lost that way is re-sent (and counted). */
static void send_foreign(int sig, busy_thread *busy, idler *idl, int with_siginfo, const char *what) {
    int n0 = __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST), sent = 0, resent = 0, i, ok;
    union sigval v;
    /* kill(): process-directed, SI_USER */
    for (i = 0; i < 5; i++) {
        kill(getpid(), sig); sent++;
        ok = wait_calls(n0 + sent);
        CHECK(ok && (!with_siginfo || __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST) == SI_USER),
              "%s: kill() #%d reached the previous handler (si_code %d)", what, i, __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST));
    }
    /* raise(): this (unsampled) thread, SI_TKILL; delivered before raise returns */
    for (i = 0; i < 5; i++) {
        raise(sig); sent++;
        ok = __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) == n0 + sent;
        CHECK(ok && (!with_siginfo || __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST) == SI_TKILL),
              "%s: raise() #%d reached the previous handler synchronously", what, i);
    }
    /* pthread_kill() to an unsampled thread */
    for (i = 0; i < 5; i++) {
        pthread_kill(idl->th, sig); sent++;
        ok = wait_calls(n0 + sent);
        CHECK(ok && (!with_siginfo || __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST) == SI_TKILL),
              "%s: pthread_kill(idle thread) #%d reached the previous handler", what, i);
    }
    /* sigqueue(): SI_QUEUE carrying a value that looks like spprof's cookie: still foreign */
    v.sival_ptr = (void *)(uintptr_t)(((uint64_t)SPPROF__COOKIE << 48) | ((uint64_t)(spprof__g.gen & 0xffffu) << 32));
    sigqueue(getpid(), sig, v); sent++;
    ok = wait_calls(n0 + sent);
    CHECK(ok && (!with_siginfo || __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST) == SI_QUEUE),
          "%s: sigqueue() with a cookie-like value is forwarded, not taken for a timer", what);
    /* pthread_kill() to the sampled, busy thread */
    for (i = 0; i < 10; i++) {
        pthread_kill(busy->th, sig); sent++;
        ok = wait_calls(n0 + sent);
        /* A standard signal merges with one already pending: the busy thread often has our own timer's
           SIGPROF pending (more so on a loaded machine), and the merged delivery is ours. Send again. */
        while (!ok && resent < 30) { resent++; pthread_kill(busy->th, sig); ok = wait_calls(n0 + sent); }
        CHECK(ok && (!with_siginfo || __atomic_load_n(&g_user_last_code, __ATOMIC_SEQ_CST) == SI_TKILL),
              "%s: pthread_kill(sampled thread) #%d reached the previous handler", what, i);
    }
    sleep_ms_full(20);
    CHECK(__atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) == n0 + sent, "%s: previous handler ran exactly %d times (%d; %d re-sent after a kernel merge)",
          what, sent, __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) - n0, resent);
}

static void test_chaining(void) {
    struct sigaction sa, cur;
    spprof_config cfg = t_config(1000000);
    busy_thread busy;
    idler idl;
    spprof_stats st;
    tid_sum ts;
    printf("handler chaining\n");
    memset(&idl, 0, sizeof idl);
    pthread_create(&idl.th, NULL, idler_main, &idl);
    while (!__atomic_load_n(&idl.tid, __ATOMIC_ACQUIRE)) sched_yield();

    /* A: SA_SIGINFO handler on SIGPROF installed before the first start */
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = user_siginfo_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPROF, &sa, NULL);
    busy_start(&busy, 1);   /* the only sampled thread */
    cfg.auto_threads = 0;
    cfg.signo = SIGPROF;    /* shared with the program's handler on purpose (the default takes a free signal) */
    { spprof_result r_ = spprof_start(&cfg); CHECK(r_ == SPPROF_OK, "A: start (SIGPROF) with a user SA_SIGINFO handler installed: %s", r_ ? spprof_last_error() : "ok"); }
    sleep_ms_full(100);
    send_foreign(SIGPROF, &busy, &idl, 1, "A (SA_SIGINFO)");
    wait_samples_of(busy.tid, 10000);
    CHECK(__atomic_load_n(&g_user_timer_calls, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&g_user_bad, __ATOMIC_SEQ_CST) == 0,
          "A: spprof's own timer signals are never passed on (%d), handler saw right arguments (%d bad)", __atomic_load_n(&g_user_timer_calls, __ATOMIC_SEQ_CST), __atomic_load_n(&g_user_bad, __ATOMIC_SEQ_CST));
    CHECK(spprof_stop() == SPPROF_OK, "A: stop");
    st = stats_now();
    ts = samples_of(busy.tid);
    CHECK(st.samples_in_profile > 0 && ts.count > 0, "A: profiling still produced samples (%llu, %llu from the busy thread)",
          (unsigned long long)st.samples_in_profile, (unsigned long long)ts.count);
    {   /* after stop the handler stays installed and still forwards */
        int n0 = __atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST);
        raise(SIGPROF);
        CHECK(__atomic_load_n(&g_user_calls, __ATOMIC_SEQ_CST) == n0 + 1, "A: after stop, a foreign SIGPROF still reaches the user handler");
    }
    busy_stop(&busy);

    /* B: plain sa_handler on another signal; switching signals gives SIGPROF's old handler back */
    __atomic_store_n(&g_plain_sig, SIGUSR2, __ATOMIC_SEQ_CST);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = user_plain_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
    busy_start(&busy, 1);
    cfg.signo = SIGUSR2;
    { spprof_result r_ = spprof_start(&cfg); CHECK(r_ == SPPROF_OK, "B: start (SIGUSR2) with a plain user handler installed: %s", r_ ? spprof_last_error() : "ok"); }
    sigaction(SIGPROF, NULL, &cur);
    CHECK((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == user_siginfo_handler,
          "B: moving to another signal restored the user's SIGPROF handler");
    sleep_ms_full(100);
    send_foreign(SIGUSR2, &busy, &idl, 0, "B (plain, SIGUSR2)");
    wait_samples_of(busy.tid, 10000);
    CHECK(spprof_stop() == SPPROF_OK, "B: stop");
    ts = samples_of(busy.tid);
    CHECK(ts.count > 0, "B: profiling on SIGUSR2 produced samples (%llu)", (unsigned long long)ts.count);
    CHECK(__atomic_load_n(&g_user_bad, __ATOMIC_SEQ_CST) == 0, "B: plain handler got the right signal number");
    busy_stop(&busy);

    /* C: plain sa_handler on SIGPROF */
    __atomic_store_n(&g_plain_sig, SIGPROF, __ATOMIC_SEQ_CST);
    sigaction(SIGPROF, &sa, NULL);
    busy_start(&busy, 1);
    cfg.signo = SIGPROF;
    { spprof_result r_ = spprof_start(&cfg); CHECK(r_ == SPPROF_OK, "C: start (SIGPROF) with a plain user handler installed: %s", r_ ? spprof_last_error() : "ok"); }
    sleep_ms_full(100);
    send_foreign(SIGPROF, &busy, &idl, 0, "C (plain, SIGPROF)");
    wait_samples_of(busy.tid, 10000);
    CHECK(spprof_stop() == SPPROF_OK, "C: stop");
    ts = samples_of(busy.tid);
    CHECK(ts.count > 0 && __atomic_load_n(&g_user_bad, __ATOMIC_SEQ_CST) == 0, "C: profiling produced samples (%llu)", (unsigned long long)ts.count);
    busy_stop(&busy);
    __atomic_store_n(&idl.stop, 1, __ATOMIC_RELEASE);
    pthread_join(idl.th, NULL);
}

/* ==== configuration ==== */
typedef struct bad_case { const char *what, *field; spprof_config cfg; } bad_case;

static void test_bad_config(void) {
    bad_case c[32];
    int n = 0, i;
    spprof_config d = spprof_config_default();
    printf("invalid configurations\n");
#define BAD(desc, fieldname, stmt) do { c[n].what = desc; c[n].field = fieldname; c[n].cfg = d; { spprof_config *x = &c[n].cfg; stmt; } n++; } while (0)
    BAD("interval_ns 0", "interval_ns", x->interval_ns = 0);
    BAD("interval_ns -1000000", "interval_ns", x->interval_ns = -1000000);
    BAD("interval_ns 49999", "interval_ns", x->interval_ns = 49999);
    BAD("interval_ns 60 s + 1 ns", "interval_ns", x->interval_ns = 60000000001ll);
    BAD("interval_ns INT64_MIN", "interval_ns", x->interval_ns = INT64_MIN);
    BAD("max_depth 0", "max_depth", x->max_depth = 0);
    BAD("max_depth -1", "max_depth", x->max_depth = -1);
    BAD("max_depth 1025", "max_depth", x->max_depth = 1025);
    BAD("ring_slots 1000 (not a power of two)", "ring_slots", x->ring_slots = 1000);
    BAD("ring_slots 8 (too small)", "ring_slots", x->ring_slots = 8);
    BAD("ring_slots 0", "ring_slots", x->ring_slots = 0);
    BAD("ring_slots 2^21", "ring_slots", x->ring_slots = 1u << 21);
    BAD("ring_slots 2^20 with max_depth 1024 (16 GiB ring)", "ring_slots", (x->ring_slots = 1u << 20, x->max_depth = 1024));
    BAD("memory_limit 4096", "memory_limit", x->memory_limit = 4096);
    BAD("memory_limit 1 MiB - 1", "memory_limit", x->memory_limit = (1u << 20) - 1);
    BAD("mode 7", "mode", x->mode = (spprof_mode)7);
    BAD("source 7", "source", x->source = (spprof_source)7);
    BAD("source PERF in wall mode", "source", (x->source = SPPROF_SOURCE_PERF, x->mode = SPPROF_MODE_WALL));
    BAD("signo -1", "signo", x->signo = -1);
    BAD("signo SIGKILL", "signo", x->signo = SIGKILL);
    BAD("signo SIGSTOP", "signo", x->signo = SIGSTOP);
    BAD("signo SIGRTMAX+1", "signo", x->signo = SIGRTMAX + 1);
    BAD("signo -5", "signo", x->signo = -5);
    BAD("auto_threads 2", "auto_threads", x->auto_threads = 2);
    BAD("auto_threads -1", "auto_threads", x->auto_threads = -1);
    BAD("scan_interval_ms 0", "scan_interval_ms", x->scan_interval_ms = 0);
    BAD("drain_interval_ms 10001", "drain_interval_ms", x->drain_interval_ms = 10001);
#undef BAD
    for (i = 0; i < n; i++) {
        spprof_result r;
        clear_error();
        r = spprof_start(&c[i].cfg);
        CHECK(r == SPPROF_ERR_INVALID_CONFIG && strstr(spprof_last_error(), c[i].field) != NULL,
              "%s -> INVALID_CONFIG (%d), error names %s: \"%s\"", c[i].what, (int)r, c[i].field, spprof_last_error());
        CHECK(!spprof_is_active() && spprof_get_state() == SPPROF_STATE_STOPPED, "%s: profiler stays stopped", c[i].what);
        if (r == SPPROF_OK) spprof_stop();
    }
    /* boundaries are accepted */
    {
        /* (not max_depth 1024 together with ring_slots 2^20: that ring alone is 16 GiB) */
        spprof_config ok[7];
        const char *what[7] = { "interval_ns 50000, max_depth 1", "interval_ns 60 s", "max_depth 1024",
                                "ring_slots 2^20, max_depth 1", "ring_slots 16, memory_limit 1 MiB",
                                "mode WALL, signo: the highest a timer can send", "auto_threads 0" };
        for (i = 0; i < 7; i++) ok[i] = d;
        ok[0].interval_ns = 50000; ok[0].max_depth = 1;
        ok[1].interval_ns = 60000000000ll;
        ok[2].max_depth = 1024;
        ok[3].ring_slots = 1u << 20; ok[3].max_depth = 1;
        ok[4].ring_slots = 16; ok[4].memory_limit = 1u << 20;
        ok[5].mode = SPPROF_MODE_WALL; ok[5].signo = SIGRTMAX;
        while (ok[5].signo > SIGRTMIN && !spprof__signal_timer_ok(ok[5].signo)) ok[5].signo--;  /* qemu-user: 62 */
        ok[6].auto_threads = 0;
        for (i = 0; i < 7; i++) {
            spprof_result r = spprof_start(&ok[i]);
            CHECK(r == SPPROF_OK && spprof_is_active(), "boundary config accepted: %s (%s)", what[i], r ? spprof_last_error() : "ok");
            if (r == SPPROF_OK) CHECK(spprof_stop() == SPPROF_OK, "  and stops");
        }
    }
    CHECK(spprof_start(NULL) == SPPROF_OK, "after all that, start with defaults works");
    t_burn_ns(50000000);
    CHECK(spprof_stop() == SPPROF_OK, "  and stop");
}

/* ==== state machine ==== */
static void test_states(void) {
    spprof_config cfg = t_config(1000000), other = t_config(500000000);
    spprof_stats a, b;
    busy_thread busy;
    int r;
    printf("state machine\n");
    clear_error();
    CHECK(spprof_stop() == SPPROF_ERR_NOT_STARTED && spprof_last_error()[0], "stop without start -> NOT_STARTED (\"%s\")", spprof_last_error());
    clear_error();
    CHECK(spprof_pause() == SPPROF_ERR_NOT_STARTED && spprof_last_error()[0], "pause when stopped -> NOT_STARTED");
    clear_error();
    CHECK(spprof_resume() == SPPROF_ERR_NOT_STARTED && spprof_last_error()[0], "resume when stopped -> NOT_STARTED");
    CHECK(spprof_clear() == SPPROF_OK, "clear when stopped -> OK");
    busy_start(&busy, 0);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    CHECK(spprof_get_state() == SPPROF_STATE_RUNNING && spprof_is_active(), "state RUNNING, active");
    clear_error();
    r = spprof_start(&other);
    CHECK(r == SPPROF_ERR_ALREADY_STARTED && spprof_last_error()[0], "double start -> ALREADY_STARTED (%d, \"%s\")", r, spprof_last_error());
    CHECK(spprof_get_state() == SPPROF_STATE_RUNNING && spprof__g.cfg.interval_ns == 1000000,
          "first session keeps running with its own config");
    burn_cpu_ms(20);
    a = stats_now();
    b = burn_until_samples(a.samples_in_profile + 10, 10000);
    CHECK(b.samples_in_profile > a.samples_in_profile + 10, "first session keeps sampling (%llu -> %llu)",
          (unsigned long long)a.samples_in_profile, (unsigned long long)b.samples_in_profile);
    clear_error();
    CHECK(spprof_resume() == SPPROF_ERR_BAD_STATE && spprof_last_error()[0], "resume while running -> BAD_STATE");
    clear_error();
    CHECK(spprof_clear() == SPPROF_ERR_BAD_STATE && spprof_last_error()[0], "clear while running -> BAD_STATE");
    CHECK(spprof_pause() == SPPROF_OK && spprof_get_state() == SPPROF_STATE_PAUSED && spprof_is_active(), "pause -> PAUSED, still active");
    clear_error();
    CHECK(spprof_pause() == SPPROF_ERR_BAD_STATE && spprof_last_error()[0], "pause twice -> BAD_STATE");
    CHECK(spprof_clear() == SPPROF_ERR_BAD_STATE, "clear while paused -> BAD_STATE");
    CHECK(spprof_start(&cfg) == SPPROF_ERR_ALREADY_STARTED, "start while paused -> ALREADY_STARTED");
    CHECK(spprof_resume() == SPPROF_OK && spprof_get_state() == SPPROF_STATE_RUNNING, "resume -> RUNNING");
    CHECK(spprof_pause() == SPPROF_OK, "pause again");
    CHECK(spprof_stop() == SPPROF_OK && !spprof_is_active() && spprof_get_state() == SPPROF_STATE_STOPPED, "stop while paused -> STOPPED");
    CHECK(spprof_stop() == SPPROF_ERR_NOT_STARTED, "second stop -> NOT_STARTED");
    a = stats_now();
    CHECK(a.samples_in_profile >= b.samples_in_profile, "profile stays readable after stop (%llu samples)", (unsigned long long)a.samples_in_profile);
    CHECK(spprof_clear() == SPPROF_OK && stats_now().samples_in_profile == 0 && stats_now().unique_stacks == 0,
          "clear after stop empties the profile");
    busy_stop(&busy);
    {
        int k, distinct = 1;
        const char *s[9];
        for (k = 0; k <= 8; k++) {
            s[k] = spprof_result_string((spprof_result)k);
            CHECK(s[k] && s[k][0], "result_string(%d) = \"%s\"", k, s[k] ? s[k] : "(null)");
        }
        for (k = 0; k <= 8; k++) { int j; for (j = 0; j < k; j++) if (!strcmp(s[j], s[k])) distinct = 0; }
        CHECK(distinct, "result strings are distinct");
        CHECK(spprof_result_string((spprof_result)99)[0] != 0, "result_string(99) is non-empty too");
    }
}

/* ==== pause: no samples while paused ==== */
static void test_pause(spprof_mode mode) {
    spprof_config cfg = t_config(1000000);
    spprof_stats s1, s2, s3, s4;
    busy_thread busy;
    const char *m = mode == SPPROF_MODE_WALL ? "wall" : "cpu";
    printf("pause (%s mode)\n", m);
    cfg.mode = mode;
    busy_start(&busy, 0);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: start (1 kHz)", m);
    burn_until_samples(20, 10000);
    CHECK(spprof_pause() == SPPROF_OK, "%s: pause", m);
    sleep_ms_full(50);  /* a handler that saw RUNNING just before the pause may still be finishing */
    s1 = stats_now();
    t_burn_ns(300000000);  /* this thread and the busy thread burn CPU while paused */
    s2 = stats_now();
    CHECK(s1.samples_captured > 0, "%s: samples before the pause (%llu)", m, (unsigned long long)s1.samples_captured);
    CHECK(s2.samples_captured == s1.samples_captured && s2.samples_in_profile == s1.samples_in_profile,
          "%s: no sample while paused (captured %llu -> %llu, in profile %llu -> %llu)", m,
          (unsigned long long)s1.samples_captured, (unsigned long long)s2.samples_captured,
          (unsigned long long)s1.samples_in_profile, (unsigned long long)s2.samples_in_profile);
    CHECK(s2.signals_ignored - s1.signals_ignored <= 2, "%s: timers are disarmed while paused (%llu timer signals arrived)", m,
          (unsigned long long)(s2.signals_ignored - s1.signals_ignored));
    CHECK(spprof_resume() == SPPROF_OK, "%s: resume", m);
    s3 = burn_until_samples(s2.samples_in_profile + 10, 10000);
    CHECK(s3.samples_captured > s2.samples_captured + 10, "%s: samples again after resume (%llu -> %llu)", m,
          (unsigned long long)s2.samples_captured, (unsigned long long)s3.samples_captured);
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop", m);
    busy_stop(&busy);

    /* stats of that session */
    s4 = stats_now();
    {
        all_sum sum;
        memset(&sum, 0, sizeof sum);
        spprof_foreach_sample(all_sum_cb, &sum);
        printf("  %s stats: captured %llu, in profile %llu, dropped %llu, threads sampled %llu, unique stacks %llu, frames %llu, bytes %llu, ignored %llu\n",
               m, (unsigned long long)s4.samples_captured, (unsigned long long)s4.samples_in_profile, (unsigned long long)s4.samples_dropped,
               (unsigned long long)s4.threads_sampled, (unsigned long long)s4.unique_stacks, (unsigned long long)s4.unique_frames,
               (unsigned long long)s4.profile_bytes, (unsigned long long)s4.signals_ignored);
        CHECK(s4.samples_captured >= s4.samples_in_profile && s4.samples_in_profile > 0, "stats: captured >= in profile > 0");
        CHECK(s4.samples_in_profile == sum.count, "stats: samples_in_profile (%llu) == sum of run counts (%llu)",
              (unsigned long long)s4.samples_in_profile, (unsigned long long)sum.count);
        /* wall mode samples every thread; in CPU mode a thread may (rarely, on a loaded machine) get no timer signal */
        CHECK(s4.threads_sampled >= (mode == SPPROF_MODE_WALL ? 2u : 1u) && s4.threads_registered >= 2,
              "stats: threads_sampled %llu (main + busy), registered %llu",
              (unsigned long long)s4.threads_sampled, (unsigned long long)s4.threads_registered);
        CHECK(s4.unique_stacks >= 1 && s4.unique_frames >= 1 && s4.profile_bytes > 0, "stats: unique stacks, frames, bytes > 0");
        CHECK(s4.walk_errors == 0 && s4.samples_dropped_memory == 0, "stats: no walk errors, no memory drops");
        CHECK(s4.threads_live == 0, "stats: no live threads after stop (%llu)", (unsigned long long)s4.threads_live);
    }
}

/* ==== weights: POSIX timer overruns, perf task-clock rate and CPU-time weights ==== */
typedef struct measured { int tid; int go; int kernel; uint64_t cpu_ns, wall_ns, burn_ns; } measured;
static int g_pipe_go[2];
static void *measured_main(void *arg) {
    measured *m = (measured *)arg;
    char ch;
    uint64_t c0;
    __atomic_store_n(&m->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (read(g_pipe_go[0], &ch, 1) < 0 && errno == EINTR) {}  /* blocked (no CPU) until the session runs */
    c0 = t_thread_cpu_ns();
    m->wall_ns = t_now_ns();
    if (!m->kernel) busy_work(m->burn_ns);
    else {  /* about half of the CPU time in the kernel: copying from /dev/zero, between user-mode bursts */
        static char buf[256 << 10];
        int fd = open("/dev/zero", O_RDONLY);
        while (t_thread_cpu_ns() - c0 < m->burn_ns) {
            busy_work(200000);
            if (fd >= 0 && read(fd, buf, sizeof buf) < 0) break;
        }
        if (fd >= 0) close(fd);
    }
    m->cpu_ns = t_thread_cpu_ns() - c0;
    m->wall_ns = t_now_ns() - m->wall_ns;
    return NULL;
}

static const char *source_name(spprof_source s) {
    return s == SPPROF_SOURCE_POSIX ? "POSIX timers" : s == SPPROF_SOURCE_PERF ? "perf task-clock" : "perf task-clock, user mode only";
}

/* One busy thread at 100 us (far below the kernel tick). POSIX timers: signals at most at HZ, the rest comes
   as overrun weight. perf: the full rate (count close to CPU time / interval). Both: the weights add up to
   the thread's CPU time. `kernel`: half of that time in system calls (perf user-only must still count it). */
static void test_weights(spprof_source source, int kernel) {
    spprof_config cfg = t_config(100000);
    measured m;
    pthread_t th;
    spprof_stats st, mid;
    tid_sum ts;
    double expect, ratio;
    spprof_result r;
    int perf_fds;
    printf("weights: %s, 100 us, %s\n", source_name(source), kernel ? "half of the time in the kernel" : "user-mode loop");
    cfg.source = source;
    memset(&m, 0, sizeof m);
    m.burn_ns = 1000000000u;
    m.kernel = kernel;
    if (pipe(g_pipe_go) != 0) { CHECK(0, "pipe"); return; }
    pthread_create(&th, NULL, measured_main, &m);
    while (!__atomic_load_n(&m.tid, __ATOMIC_ACQUIRE)) sched_yield();
    r = spprof_start(&cfg);
    if (r == SPPROF_ERR_UNSUPPORTED && source != SPPROF_SOURCE_POSIX) {
        printf("  SKIP %s: %s\n", source_name(source), spprof_last_error());
        if (write(g_pipe_go[1], "g", 1) != 1) CHECK(0, "write");
        pthread_join(th, NULL);
        close(g_pipe_go[0]); close(g_pipe_go[1]);
        return;
    }
    CHECK(r == SPPROF_OK, "start (%s)", spprof_last_error());
    spprof_get_stats(&mid);
    perf_fds = t_count_perf_fds();
    if (write(g_pipe_go[1], "g", 1) != 1) CHECK(0, "write");
    pthread_join(th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    close(g_pipe_go[0]); close(g_pipe_go[1]);
    spprof_get_stats(&st);
    ts = samples_of(m.tid);
    expect = (double)m.cpu_ns / 100000.0;
    ratio = ts.weight / (expect > 0 ? expect : 1);
    printf("  thread CPU %.1f ms, %llu samples, weight %llu, expected weight %.0f, overruns %llu, perf threads %llu, perf fds %d\n",
           m.cpu_ns / 1e6, (unsigned long long)ts.count, (unsigned long long)ts.weight, expect,
           (unsigned long long)st.timer_overruns, (unsigned long long)mid.threads_perf, perf_fds);
    if (source == SPPROF_SOURCE_POSIX) {
        CHECK(mid.threads_perf == 0 && perf_fds == 0, "POSIX source: no perf events (%llu threads, %d fds)", (unsigned long long)mid.threads_perf, perf_fds);
        CHECK(st.timer_overruns > 0, "timer_overruns > 0 (%llu)", (unsigned long long)st.timer_overruns);
    } else {
        CHECK(mid.threads_perf >= 2 && mid.threads_perf == mid.threads_live, "every live thread has a perf event (%llu of %llu)",
              (unsigned long long)mid.threads_perf, (unsigned long long)mid.threads_live);
        CHECK(perf_fds < 0 || perf_fds == (int)mid.threads_perf, "one perf fd per thread (%d fds)", perf_fds);
        CHECK(t_count_perf_fds() <= 0, "no perf fd left after stop (%d)", t_count_perf_fds());
    }
    if ((double)m.cpu_ns < 0.8 * (double)m.wall_ns) {
        /* The thread competed for a CPU: Linux then checks its CPU-clock timer far less often than every
           tick, and a signal may come late or not at all (kernel behaviour, reproduced without spprof), so
           the weight sum cannot be compared with the CPU time. */
        printf("  (machine busy: the thread got %.0f%% of a CPU; weight checks skipped)\n", 100.0 * (double)m.cpu_ns / (double)m.wall_ns);
        return;
    }
    if (source == SPPROF_SOURCE_POSIX)
        CHECK(ts.weight > ts.count, "samples carry overrun weight (weight %llu > count %llu)", (unsigned long long)ts.weight, (unsigned long long)ts.count);
    else if (source == SPPROF_SOURCE_PERF || !kernel)
        CHECK(ts.count > 0.6 * expect, "perf delivers the full rate: %llu samples for %.0f intervals", (unsigned long long)ts.count, expect);
    CHECK(ratio > 0.75 && ratio < 1.25, "sum of weights ~ CPU time / interval (ratio %.3f)", ratio);
}

/* ==== wall vs CPU mode, SA_RESTART ==== */
typedef struct sleeper { int tid, stop, interrupted_sleeps; } sleeper;
static void *sleeper_main(void *arg) {  /* nanosleeps of 1 s (resumed after each EINTR) until told to stop */
    sleeper *s = (sleeper *)arg;
    __atomic_store_n(&s->tid, spprof_gettid(), __ATOMIC_RELEASE);
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {1, 0};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) s->interrupted_sleeps++;
    }
    return NULL;
}

static void run_mode(spprof_mode mode, tid_sum *sleep_out, tid_sum *busy_out, int *interrupted) {
    spprof_config cfg = t_config(1000000);
    sleeper sl;
    pthread_t th;
    busy_thread busy;
    memset(&sl, 0, sizeof sl);
    pthread_create(&th, NULL, sleeper_main, &sl);  /* sleeps through the whole session */
    while (!__atomic_load_n(&sl.tid, __ATOMIC_ACQUIRE)) sched_yield();
    busy_start(&busy, 0);
    cfg.mode = mode;
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: start", mode == SPPROF_MODE_WALL ? "wall" : "cpu");
    sleep_ms_full(500);
    if (mode == SPPROF_MODE_CPU) wait_samples_of(busy.tid, 10000);  /* a loaded machine may delay CPU-timer signals */
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop", mode == SPPROF_MODE_WALL ? "wall" : "cpu");
    busy_stop(&busy);
    __atomic_store_n(&sl.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    *sleep_out = samples_of(sl.tid);
    *busy_out = samples_of(busy.tid);
    *interrupted = sl.interrupted_sleeps;
}

typedef struct reader { int fd, tid; ssize_t ret; int err; char buf[8]; } reader;
static void *reader_main(void *arg) {
    reader *r = (reader *)arg;
    __atomic_store_n(&r->tid, spprof_gettid(), __ATOMIC_RELEASE);
    r->ret = read(r->fd, r->buf, sizeof r->buf);   /* no retry loop: EINTR would be returned */
    r->err = r->ret < 0 ? errno : 0;
    return NULL;
}

static void test_modes(void) {
    tid_sum sw, bw, sc, bc;
    int iw, ic;
    printf("wall vs CPU mode\n");
    run_mode(SPPROF_MODE_WALL, &sw, &bw, &iw);
    run_mode(SPPROF_MODE_CPU, &sc, &bc, &ic);
    printf("  wall: sleeper %llu samples / weight %llu (%d interrupted sleeps), busy %llu / %llu; cpu: sleeper %llu, busy %llu / %llu\n",
           (unsigned long long)sw.count, (unsigned long long)sw.weight, iw, (unsigned long long)bw.count, (unsigned long long)bw.weight,
           (unsigned long long)sc.count, (unsigned long long)bc.count, (unsigned long long)bc.weight);
    /* weights, not counts: on a loaded machine a woken thread may run late and several expirations merge */
    CHECK(sw.count > 0 && sw.weight >= 200, "wall mode: the sleeping thread is sampled (%llu samples, weight %llu of ~500)",
          (unsigned long long)sw.count, (unsigned long long)sw.weight);
    CHECK(bw.count > 0 && bw.weight >= 200, "wall mode: the busy thread is sampled (weight %llu of ~500)", (unsigned long long)bw.weight);
    CHECK(iw == 0, "wall mode: no sleep of the sleeping thread was interrupted (%d)", iw);
    CHECK(sc.count == 0, "cpu mode: the sleeping thread has no samples (%llu)", (unsigned long long)sc.count);
    CHECK(bc.count > 0 && bc.weight >= 5, "cpu mode: the busy thread is sampled (weight %llu)", (unsigned long long)bc.weight);

    {   /* read() on a pipe, blocked through a wall-mode session: never interrupted (wall mode signals running
           threads only), and its blocked time is in the profile (the collector's off-CPU accounting) */
        spprof_config cfg = t_config(1000000);
        int fds[2];
        reader rd;
        pthread_t th;
        tid_sum rs;
        if (pipe(fds) != 0) { CHECK(0, "pipe"); return; }
        memset(&rd, 0, sizeof rd);
        rd.fd = fds[0];
        pthread_create(&th, NULL, reader_main, &rd);
        while (!__atomic_load_n(&rd.tid, __ATOMIC_ACQUIRE)) sched_yield();
        cfg.mode = SPPROF_MODE_WALL;
        CHECK(spprof_start(&cfg) == SPPROF_OK, "SA_RESTART: start (wall, 1 kHz)");
        sleep_ms_full(300);
        if (write(fds[1], "data", 4) != 4) CHECK(0, "write");
        pthread_join(th, NULL);
        CHECK(spprof_stop() == SPPROF_OK, "SA_RESTART: stop");
        rs = samples_of(rd.tid);
        CHECK(rd.ret == 4 && memcmp(rd.buf, "data", 4) == 0, "read() returned the data after 300 ms (ret %zd, errno %d %s)",
              rd.ret, rd.err, rd.err ? strerror(rd.err) : "");
        CHECK(rs.count >= 1 && rs.weight >= 150, "  the reader's blocked time is in the profile (%llu samples, weight %llu of ~300)",
              (unsigned long long)rs.count, (unsigned long long)rs.weight);
        close(fds[0]); close(fds[1]);
    }
}

/* ==== memory limit ==== */
typedef struct rand_walker { uint64_t counter; int bad_ctx; } rand_walker;
static uint64_t splitmix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static int random_walker(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    rand_walker *w = (rand_walker *)ctx->user;
    uint64_t base = __atomic_fetch_add(&w->counter, 1, __ATOMIC_RELAXED);
    int k, n = max_frames - 1;  /* not counted as truncated */
    if (!ctx->os_context || !ctx->pc || !ctx->sp || ctx->tid != spprof_gettid()) __atomic_fetch_add(&w->bad_ctx, 1, __ATOMIC_RELAXED);
    for (k = 0; k < n; k++) {
        frames[k].addr = splitmix(base * 1024 + (uint64_t)k);
        frames[k].aux = 0;
        frames[k].kind = SPPROF_FRAME_USER;
    }
    return n;
}

static void test_memory_limit(void) {
    spprof_config cfg = t_config(500000);
    rand_walker w;
    busy_thread busy;
    spprof_stats st;
    char path[64];
    printf("memory limit (1 MiB, every sample a new stack)\n");
    memset(&w, 0, sizeof w);
    cfg.mode = SPPROF_MODE_CPU;    /* the busy thread, 2 kHz (every sample goes through random_walker) */
    cfg.memory_limit = 1u << 20;
    cfg.max_depth = 256;
    cfg.walker = random_walker;
    cfg.walker_user = &w;
    busy_start(&busy, 0);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    {   /* ~1 s; longer only if a loaded machine delays the handlers so much that the limit is not reached yet */
        int k;
        sleep_ms_full(1000);
        for (k = 0; k < 90 && stats_now().samples_dropped_memory == 0; k++) sleep_ms_full(100);
    }
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    busy_stop(&busy);
    spprof_get_stats(&st);
    printf("  captured %llu, in profile %llu, dropped (memory) %llu, dropped (ring) %llu, bytes %llu, stacks %llu, frames %llu\n",
           (unsigned long long)st.samples_captured, (unsigned long long)st.samples_in_profile,
           (unsigned long long)st.samples_dropped_memory, (unsigned long long)st.samples_dropped,
           (unsigned long long)st.profile_bytes, (unsigned long long)st.unique_stacks, (unsigned long long)st.unique_frames);
    CHECK(st.samples_dropped_memory > 0, "samples_dropped_memory > 0 (%llu)", (unsigned long long)st.samples_dropped_memory);
    CHECK(st.samples_in_profile > 0, "the profile kept samples up to the limit (%llu)", (unsigned long long)st.samples_in_profile);
    CHECK(st.profile_bytes <= (1u << 20), "profile_bytes %llu <= the 1 MiB limit (the limit is strict)", (unsigned long long)st.profile_bytes);
    CHECK(st.profile_bytes > (1u << 19), "profile_bytes %llu reached the limit's order (> 512 KiB)", (unsigned long long)st.profile_bytes);
    CHECK(st.samples_captured == st.samples_in_profile + st.samples_dropped_memory,
          "every captured sample is either in the profile or counted as dropped for memory");
    CHECK(__atomic_load_n(&w.bad_ctx, __ATOMIC_SEQ_CST) == 0 && __atomic_load_n(&w.counter, __ATOMIC_SEQ_CST) >= st.samples_captured,
          "walker got a valid context (os_context, pc, sp, own tid) every time (%d bad)", __atomic_load_n(&w.bad_ctx, __ATOMIC_SEQ_CST));
    snprintf(path, sizeof path, "/tmp/spprof-lifecycle-%d.collapsed", (int)getpid());
    {
        spprof_result r = spprof_write_collapsed(path, SPPROF_COLLAPSED_THREADS);
        CHECK(r == SPPROF_OK, "the memory-limited profile can be written (%s)", r ? spprof_last_error() : "ok");
    }
    unlink(path);
}

/* ==== walker errors ==== */
static int g_failing_calls;
static int failing_walker(const spprof_walk_ctx *ctx, spprof_frame *frames, int max_frames) {
    (void)ctx; (void)frames; (void)max_frames;
    __atomic_fetch_add(&g_failing_calls, 1, __ATOMIC_RELAXED);
    return -1;
}
static void test_walker_errors(void) {
    spprof_config cfg = t_config(1000000);
    busy_thread busy;
    spprof_stats st;
    printf("walker returning -1\n");
    cfg.walker = failing_walker;
    busy_start(&busy, 0);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start");
    {
        uint64_t end = t_now_ns() + 10000000000u;
        burn_cpu_ms(50);
        while ((spprof_get_stats(&st), st.walk_errors) < 5 && t_now_ns() < end) t_burn_ns(5000000);
    }
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    busy_stop(&busy);
    spprof_get_stats(&st);
    {
        int calls = __atomic_load_n(&g_failing_calls, __ATOMIC_SEQ_CST);
        CHECK(st.walk_errors > 0 && st.walk_errors == (uint64_t)calls, "walk_errors %llu == walker calls %d > 0",
              (unsigned long long)st.walk_errors, calls);
    }
    CHECK(st.samples_in_profile == 0 && st.samples_captured == 0 && st.threads_sampled == 0 && st.unique_stacks == 0,
          "no samples in the profile (in profile %llu, captured %llu)", (unsigned long long)st.samples_in_profile,
          (unsigned long long)st.samples_captured);
}

int main(void) {
    uint64_t t0 = t_now_ns(), t;
    setvbuf(stdout, NULL, _IOLBF, 0);
#define STEP(f) do { t = t_now_ns(); f(); printf("  (%.2f s)\n", (double)(t_now_ns() - t) / 1e9); } while (0)
    STEP(test_chaining);   /* first: needs SIGPROF without spprof's handler installed */
    STEP(test_bad_config);
    STEP(test_states);
    t = t_now_ns(); test_pause(SPPROF_MODE_CPU); test_pause(SPPROF_MODE_WALL); printf("  (%.2f s)\n", (double)(t_now_ns() - t) / 1e9);
    t = t_now_ns();
    test_weights(SPPROF_SOURCE_POSIX, 0);
    test_weights(SPPROF_SOURCE_PERF, 0);
    test_weights(SPPROF_SOURCE_PERF, 1);
    test_weights(SPPROF_SOURCE_PERF_USER, 1);
    printf("  (%.2f s)\n", (double)(t_now_ns() - t) / 1e9);
    STEP(test_modes);
    STEP(test_memory_limit);
    STEP(test_walker_errors);
    printf("total %.2f s\n", (double)(t_now_ns() - t0) / 1e9);
    return TEST_DONE();
}
