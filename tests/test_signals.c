/* test_signals.c - the profiling signal belongs to spprof only while the program lets it (issue 11, "the
   host's signals are the host's"): the default signal is a free real-time one, so the program's own
   SIGPROF (its handler, setitimer, save/restore) is untouched; a program that takes spprof's signal over
   wins, and spprof stops, says so once on stderr and in the stats; a thread that blocks the signal never
   has more than one of our (queueing) real-time signals pending, also under the perf source and across
   pause/resume. */
#include "testutil.h"
#include <signal.h>
#include <sys/time.h>
#include <fcntl.h>

/* ---- helpers ------------------------------------------------------------------------------------------ */
static int g_prof_calls, g_prof_ours;  /* the program's SIGPROF handler: calls, and calls that were spprof's */
static void program_prof_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)uc;
    __atomic_fetch_add(&g_prof_calls, 1, __ATOMIC_SEQ_CST);
    if (si && si->si_code != SI_KERNEL && si->si_code != SI_USER && si->si_code != SI_TKILL)
        __atomic_fetch_add(&g_prof_ours, 1, __ATOMIC_SEQ_CST);  /* SI_TIMER or POLL_*: a timer/perf event */
}
static int g_taker_calls;  /* a handler the program installs for spprof's signal */
static void taker_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    __atomic_fetch_add(&g_taker_calls, 1, __ATOMIC_SEQ_CST);
}
static int g_other_calls;  /* "another copy of spprof" that holds SIGRTMAX already */
static void other_copy_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig; (void)si; (void)uc;
    __atomic_fetch_add(&g_other_calls, 1, __ATOMIC_SEQ_CST);
}
static void install(int sig, void (*fn)(int, siginfo_t *, void *), struct sigaction *prev) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fn;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, prev);
}
static int handler_is(int sig, void (*fn)(int, siginfo_t *, void *)) {
    struct sigaction cur;
    return sigaction(sig, NULL, &cur) == 0 && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == fn;
}

typedef struct burner { pthread_t th; int stop; int tid; } burner;
static void *burner_main(void *arg) {
    burner *b = (burner *)arg;
    __atomic_store_n(&b->tid, spprof_gettid(), __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&b->stop, __ATOMIC_SEQ_CST)) t_burn_ns(2000000);
    return NULL;
}
static void burner_start(burner *b) {
    memset(b, 0, sizeof *b);
    pthread_create(&b->th, NULL, burner_main, b);
    while (!__atomic_load_n(&b->tid, __ATOMIC_SEQ_CST)) sched_yield();
}
static void burner_stop(burner *b) {
    __atomic_store_n(&b->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(b->th, NULL);
}

/* stderr (fd 2) into a pipe while `on`; returns what was written meanwhile on the way back. */
static int g_saved_err = -1, g_pipe[2];
static void capture_stderr(void) {
    fflush(stderr);
    if (pipe(g_pipe) != 0) return;
    fcntl(g_pipe[0], F_SETFL, O_NONBLOCK);
    g_saved_err = dup(2);
    dup2(g_pipe[1], 2);
}
static void release_stderr(char *out, size_t n) {
    ssize_t k;
    fflush(stderr);
    dup2(g_saved_err, 2);
    close(g_saved_err);
    close(g_pipe[1]);
    k = read(g_pipe[0], out, n - 1);
    out[k > 0 ? k : 0] = 0;
    close(g_pipe[0]);
}
static int count_lines_with(const char *text, const char *needle) {
    int n = 0;
    const char *p = text;
    while ((p = strstr(p, needle)) != NULL) { n++; p += strlen(needle); }
    return n;
}

/* ---- 1. the default signal is a free real-time one; the program's SIGPROF is the program's ------------- */
static void test_auto_signal(void) {
    spprof_config cfg = t_config(1000000);
    struct sigaction prof_prev, other_prev, saved;
    struct itimerval it;
    spprof_stats st;
    burner b;
    int prof_calls;
    uint64_t cpu0;
    double cpu_ms;
    printf("default signal: a free real-time signal, SIGPROF left to the program\n");
    install(SIGPROF, program_prof_handler, &prof_prev);
    install(SIGRTMAX, other_copy_handler, &other_prev);  /* taken: as by another copy of spprof */
    burner_start(&b);
    cpu0 = t_process_cpu_ns();
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start with the default signo (0): %s", spprof_last_error());
    st = t_stats();
    CHECK(st.signo >= SIGRTMIN && st.signo < SIGRTMAX, "a real-time signal below the taken SIGRTMAX (%d; SIGRTMIN %d, SIGRTMAX %d)",
          st.signo, SIGRTMIN, SIGRTMAX);
    CHECK(handler_is(SIGPROF, program_prof_handler) && handler_is(SIGRTMAX, other_copy_handler),
          "the handlers of SIGPROF and of the taken SIGRTMAX are untouched");
    /* The program's own use of SIGPROF: a profiling itimer of its own (100 Hz), and a save/restore of its
       handler through SIG_IGN (what Python's signal.signal does): both as if spprof were not there. */
    memset(&it, 0, sizeof it);
    it.it_interval.tv_usec = 10000;
    it.it_value.tv_usec = 10000;
    setitimer(ITIMER_PROF, &it, NULL);
    t_burn_ns(300000000);
    {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigaction(SIGPROF, &ign, &saved);
        sigaction(SIGPROF, &saved, NULL);
    }
    t_burn_ns(200000000);
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_PROF, &it, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    burner_stop(&b);
    st = t_stats();
    prof_calls = __atomic_load_n(&g_prof_calls, __ATOMIC_SEQ_CST);
    printf("  signal %d: %llu samples; the program's SIGPROF handler: %d calls from its own itimer, %d from spprof; "
           "the other copy's SIGRTMAX handler: %d calls\n", st.signo, (unsigned long long)st.samples_in_profile,
           prof_calls, __atomic_load_n(&g_prof_ours, __ATOMIC_SEQ_CST), __atomic_load_n(&g_other_calls, __ATOMIC_SEQ_CST));
    /* t_burn_ns burns wall time: on a busy machine the two threads get less CPU than that, so the samples are
       compared with the CPU the process really used (1 kHz of CPU per thread: one sample per ms of it). TSan
       holds async signals until its next interception point and loses more of them. */
    cpu_ms = (double)(t_process_cpu_ns() - cpu0) / 1e6;
    CHECK((double)st.samples_in_profile >= (T_TSAN_ON ? 0.2 : 0.5) * cpu_ms,
          "spprof sampled (%llu samples for %.0f ms of process CPU at 1 kHz)", (unsigned long long)st.samples_in_profile, cpu_ms);
    CHECK(prof_calls >= 5, "the program's own SIGPROF itimer reached its handler (%d calls in 0.5 s of CPU at 100 Hz)", prof_calls);
    CHECK(__atomic_load_n(&g_prof_ours, __ATOMIC_SEQ_CST) == 0, "none of spprof's signals reached the program's SIGPROF handler");
    CHECK(__atomic_load_n(&g_other_calls, __ATOMIC_SEQ_CST) == 0, "none reached the other copy's SIGRTMAX handler");
    CHECK(st.handler_replaced == 0, "stats: handler not replaced");
    sigaction(SIGPROF, &prof_prev, NULL);
    sigaction(SIGRTMAX, &other_prev, NULL);
}

/* ---- 2. the program takes spprof's signal over: spprof stops, says so, keeps the profile ---------------- */
static void test_handler_replaced(int signo, const char *what) {
    spprof_config cfg = t_config(1000000);
    struct sigaction prev;
    spprof_stats st, st1, st2;
    burner b;
    char err[2048], needle[80];
    int i, calls_at_detection, calls_after, sig;
    uint64_t t0, detect_ms;
    printf("the program installs its own handler for spprof's signal (%s)\n", what);
    cfg.signo = signo;
    burner_start(&b);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: start: %s", what, spprof_last_error());
    sig = t_stats().signo;
    for (i = 0; i < 2000 && t_stats().samples_captured < 50; i++) t_burn_ns(1000000);
    capture_stderr();
    __atomic_store_n(&g_taker_calls, 0, __ATOMIC_SEQ_CST);
    install(sig, taker_handler, &prev);
    t0 = t_now_ns();
    for (i = 0; i < 3000 && !t_stats().handler_replaced; i++) t_burn_ns(1000000);
    detect_ms = (t_now_ns() - t0) / 1000000u;
    calls_at_detection = __atomic_load_n(&g_taker_calls, __ATOMIC_SEQ_CST);
    t_sleep_ms(100);  /* what was queued or in flight at detection arrives now (one per perf event at most) */
    st1 = t_stats();
    __atomic_store_n(&g_taker_calls, 0, __ATOMIC_SEQ_CST);
    t_burn_ns(300000000);  /* this thread and the burner keep running */
    calls_after = __atomic_load_n(&g_taker_calls, __ATOMIC_SEQ_CST);
    st2 = t_stats();
    release_stderr(err, sizeof err);
    printf("  signal %d: detected after %llu ms (%d calls of the program's handler until then); then %d calls in "
           "300 ms; samples %llu -> %llu; stderr: %s", sig, (unsigned long long)detect_ms, calls_at_detection,
           calls_after, (unsigned long long)st1.samples_captured, (unsigned long long)st2.samples_captured, err);
    CHECK(st1.handler_replaced == 1, "%s: stats.handler_replaced within %llu ms", what, (unsigned long long)detect_ms);
    CHECK(calls_after == 0, "%s: the program's handler receives none of spprof's signals once it was seen (%d)", what, calls_after);
    CHECK(st2.samples_captured == st1.samples_captured, "%s: no sample after that (%llu -> %llu)", what,
          (unsigned long long)st1.samples_captured, (unsigned long long)st2.samples_captured);
    snprintf(needle, sizeof needle, "installed its own handler for signal %d", sig);
    CHECK(count_lines_with(err, needle) == 1 && strstr(err, "profiling stopped") != NULL,
          "%s: one line on stderr says so", what);
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop works as usual", what);
    burner_stop(&b);
    st = t_stats();
    CHECK(st.samples_in_profile >= 50 && st.handler_replaced == 1, "%s: the profile so far is kept (%llu samples)", what,
          (unsigned long long)st.samples_in_profile);
    CHECK(t_count_timers() == 0, "%s: no timer or perf event left after stop (%d)", what, t_count_timers());
    CHECK(handler_is(sig, taker_handler), "%s: the program's handler is still installed after stop", what);
    /* A new session leaves the program's handler alone (the default takes another free signal). */
    cfg.signo = 0;
    burner_start(&b);
    CHECK(spprof_start(&cfg) == SPPROF_OK, "%s: a new session starts: %s", what, spprof_last_error());
    st = t_stats();
    CHECK(st.signo != sig && handler_is(sig, taker_handler), "%s: on another signal (%d), the program's handler kept", what, st.signo);
    for (i = 0; i < 2000 && t_stats().samples_captured < 20; i++) t_burn_ns(1000000);
    CHECK(spprof_stop() == SPPROF_OK, "%s: stop", what);
    burner_stop(&b);
    st = t_stats();
    CHECK(st.samples_in_profile >= 20 && !st.handler_replaced, "%s: and samples (%llu)", what, (unsigned long long)st.samples_in_profile);
    signal(sig, SIG_DFL);  /* (prev is spprof's handler of that earlier session: not put back) */
}

/* ---- 3. real-time signals queue: a thread that blocks ours has at most one pending ---------------------- */
typedef struct blocker {
    pthread_t th;
    int signo, phase, tid;
    int pending;      /* our signals dequeued with sigtimedwait after the blocked burn */
    int sigq_max;     /* SigQ of /proc/self/status seen during the burn (this user's queued signals) */
} blocker;
static int read_sigq(void) {
    char buf[4096], *p;
    int fd = open("/proc/self/status", O_RDONLY), n;
    ssize_t k;
    if (fd < 0) return -1;
    k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0) return -1;
    buf[k] = 0;
    p = strstr(buf, "\nSigQ:");
    n = p ? atoi(p + 6) : -1;
    return n;
}
static void *blocker_main(void *arg) {
    blocker *b = (blocker *)arg;
    sigset_t all, one;
    struct timespec zero = {0, 0};
    uint64_t end;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);  /* as worker threads of many C libraries do */
    __atomic_store_n(&b->tid, spprof_gettid(), __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&b->phase, __ATOMIC_SEQ_CST) == 0) sched_yield();  /* sampled from now on */
    end = t_now_ns() + 600000000u;
    while (t_now_ns() < end) {
        int q;
        t_burn_ns(20000000);
        q = read_sigq();
        if (q > b->sigq_max) b->sigq_max = q;
    }
    sigemptyset(&one);
    sigaddset(&one, b->signo);
    b->pending = 0;
    while (b->pending < 100000 && sigtimedwait(&one, NULL, &zero) == b->signo) b->pending++;
    __atomic_store_n(&b->phase, 2, __ATOMIC_SEQ_CST);
    return NULL;
}

static void test_rt_queue(void) {
    spprof_config cfg = t_config(100000);  /* 10 kHz: a free-running event would queue ~6,000 in 0.6 s */
    spprof_stats st;
    blocker b;
    int sigq0, cycles = 0;
    printf("a thread that blocks the (real-time) profiling signal under the perf source\n");
    cfg.source = SPPROF_SOURCE_PERF_USER;
    if (spprof_start(&cfg) != SPPROF_OK) { printf("  skip: perf source unavailable: %s\n", spprof_last_error()); return; }
    CHECK(spprof_stop() == SPPROF_OK, "probe stop");
    memset(&b, 0, sizeof b);
    pthread_create(&b.th, NULL, blocker_main, &b);
    while (!__atomic_load_n(&b.tid, __ATOMIC_SEQ_CST)) sched_yield();
    sigq0 = read_sigq();
    CHECK(spprof_start(&cfg) == SPPROF_OK, "start (perf, user mode, 10 kHz): %s", spprof_last_error());
    st = t_stats();
    b.signo = st.signo;
    CHECK(st.signo >= SIGRTMIN, "the signal is a real-time one (%d)", st.signo);
    CHECK(st.threads_perf >= 2, "both threads have a perf event (%llu)", (unsigned long long)st.threads_perf);
    __atomic_store_n(&b.phase, 1, __ATOMIC_SEQ_CST);
    /* Pause and resume meanwhile: a resume must not give an event a second overflow in hand. */
    while (__atomic_load_n(&b.phase, __ATOMIC_SEQ_CST) == 1) {
        t_burn_ns(10000000);
        if (cycles < 20) { spprof_pause(); t_burn_ns(2000000); spprof_resume(); cycles++; }
    }
    pthread_join(b.th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    st = t_stats();
    printf("  blocker: %d of our signals pending after 0.6 s of CPU at 10 kHz (%d pause/resume cycles); SigQ %d before, "
           "%d at most during; %llu samples of the other thread\n", b.pending, cycles, sigq0, b.sigq_max,
           (unsigned long long)st.samples_in_profile);
    CHECK(b.pending <= 1, "at most one signal of ours pending on the blocking thread (%d)", b.pending);
    CHECK(sigq0 >= 0 && b.sigq_max - sigq0 < 50, "this user's queued signals stayed small (SigQ %d -> at most %d)", sigq0, b.sigq_max);
    CHECK(st.samples_in_profile >= 100, "the main thread was sampled throughout (%llu)", (unsigned long long)st.samples_in_profile);
}

/* ---- 4. one-shot perf events keep sampling: a thread that blocked the signal for a while, then not ----- */
static void *late_unblocker(void *arg) {
    int *tid = (int *)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    __atomic_store_n(tid, spprof_gettid(), __ATOMIC_SEQ_CST);
    t_burn_ns(200000000);
    pthread_sigmask(SIG_UNBLOCK, &all, NULL);
    t_burn_ns(300000000);
    return NULL;
}
typedef struct tid_count { int tid; uint64_t n; } tid_count;
static int count_tid(const spprof_sample_view *v, void *user) {
    tid_count *c = (tid_count *)user;
    if (v->tid == c->tid) c->n += v->count;
    return 0;
}
static void test_rearm_after_unblock(void) {
    spprof_config cfg = t_config(1000000);
    pthread_t th;
    tid_count c;
    int tid = 0;
    printf("a thread that unblocks the signal is sampled again (one-shot events are re-armed)\n");
    cfg.source = SPPROF_SOURCE_PERF_USER;
    if (spprof_start(&cfg) != SPPROF_OK) { printf("  skip: perf source unavailable: %s\n", spprof_last_error()); return; }
    pthread_create(&th, NULL, late_unblocker, &tid);
    pthread_join(th, NULL);
    CHECK(spprof_stop() == SPPROF_OK, "stop");
    c.tid = tid;
    c.n = 0;
    spprof_foreach_sample(count_tid, &c);
    printf("  thread %d: %llu samples in its 300 ms of CPU after unblocking (1 kHz)\n", tid, (unsigned long long)c.n);
    CHECK(c.n >= 60, "it was sampled after unblocking (%llu of ~300)", (unsigned long long)c.n);
}

int main(void) {
    uint64_t t0 = t_now_ns();
    test_auto_signal();
    test_handler_replaced(0, "default signal");
    test_handler_replaced(SIGPROF, "SIGPROF, chosen explicitly");
    test_rt_queue();
    test_rearm_after_unblock();
    printf("total %.2f s\n", (double)(t_now_ns() - t0) / 1e9);
    return TEST_DONE();
}
