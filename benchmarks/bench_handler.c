/* bench_handler.c - cost of one sample inside spprof's signal handler, and of one real signal round trip.

   Part 1 (direct calls): recurse until the sampler would see a stack of exactly D frames (D = 10, 50, 120),
   take a real ucontext with getcontext() in the innermost frame, and call spprof__handler(SIGPROF, &si, &uc)
   in a timed loop exactly as the kernel would: si_code = SI_TIMER, si_value = the cookie that
   spprof__create_timer() put into this thread's timer (COOKIE << 48 | gen << 32 | slot index). The profiler is
   started with a 60 s interval and SIGPROF is blocked on this thread, so no real timer interferes. The ring is
   drained (spprof_flush) between batches, outside the timed region. Reported: median over batches of ns per
   call, frames per sample (checked against D), plus a breakdown (walker alone, gettid, clock_gettime).

   Part 2 (round trip): the main thread spins on a fixed amount of work; profiled runs use a wall-clock 50 us
   timer. (thread CPU time profiled - unprofiled) / samples = cost of one timer expiry + signal delivery +
   handler + sigreturn, as the sampled thread pays it. Runs alternate; medians.

   Build: cc -O2 -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -fno-omit-frame-pointer -mno-omit-leaf-frame-pointer
          benchmarks/bench_handler.c -o build/bench_handler -pthread -ldl -lrt
   Usage: bench_handler [BATCHES] [CALLS] [ROUNDTRIP_REPS]   (prints markdown) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#define NOINLINE __attribute__((noinline))
#define MAXB 101

static volatile uint64_t g_sink;
static volatile double g_dsink;

static uint64_t clk_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static uint64_t wall_ns(void) { return clk_ns(CLOCK_MONOTONIC); }

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double quantile(const double *v, int n, double q) {
    double tmp[MAXB > 64 ? MAXB : 64];
    double pos;
    int i, lo;
    if (n <= 0) return 0;
    for (i = 0; i < n; i++) tmp[i] = v[i];
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    pos = q * (n - 1);
    lo = (int)pos;
    if (lo + 1 >= n) return tmp[n - 1];
    return tmp[lo] + (pos - lo) * (tmp[lo + 1] - tmp[lo]);
}
static double median(const double *v, int n) { return quantile(v, n, 0.5); }

/* ---- part 1: direct handler calls ------------------------------------------------------------------- */
typedef struct hjob {
    int batches, calls;
    void *cookie;
    /* results */
    double ns[MAXB];        /* handler: ns per call, per batch */
    double walk_ns[MAXB];   /* spprof_walk_native alone */
    int frames_first, frames_last, frames_walk;
    uint64_t captured, dropped, truncated, stale, ignored;
    int ok;
    char err[160];
} hjob;

static int g_probe_only;  /* 1: only report the frame count (used to calibrate the recursion) */

static int peek_nframes(uint64_t which) {  /* nframes of ring cell at position `which` (not yet drained) */
    int n;
    pthread_mutex_lock(&spprof__prof_lock);
    n = spprof__ring_cell(&spprof__g.ring, which)->nframes;
    pthread_mutex_unlock(&spprof__prof_lock);
    return n;
}

static NOINLINE void measure_here(hjob *j) {
    ucontext_t uc;
    siginfo_t si;
    spprof_frame fbuf[SPPROF_MAX_DEPTH_LIMIT];
    spprof_walk_ctx ctx;
    spprof__slot *slot;
    int b, i;

    getcontext(&uc);
    memset(&si, 0, sizeof si);
    si.si_signo = SIGPROF;
    si.si_code = SI_TIMER;
    si.si_value.sival_ptr = j->cookie;

    /* First call finds the stack mapping (/proc/self/maps) and caches it in the slot: not part of the
       steady-state cost, so it is done once before timing. */
    spprof_flush();
    {
        uint64_t pos = SPPROF__LOADR(&spprof__g.ring.enq);
        spprof__handler(SIGPROF, &si, &uc);
        if (SPPROF__LOADR(&spprof__g.ring.enq) != pos + 1) {
            snprintf(j->err, sizeof j->err, "handler did not write a sample (stale=%llu ignored=%llu)",
                     (unsigned long long)spprof__g.c.stale, (unsigned long long)spprof__g.c.ignored);
            return;
        }
        j->frames_first = peek_nframes(pos);
        spprof_flush();
    }
    if (g_probe_only) { j->ok = 1; return; }

    for (b = 0; b < j->batches; b++) {
        uint64_t c0, t0, t1, e0;
        spprof_flush();
        c0 = SPPROF__LOADR(&spprof__g.c.captured);
        e0 = SPPROF__LOADR(&spprof__g.ring.enq);
        t0 = wall_ns();
        for (i = 0; i < j->calls; i++) spprof__handler(SIGPROF, &si, &uc);
        t1 = wall_ns();
        if (SPPROF__LOADR(&spprof__g.c.captured) - c0 != (uint64_t)j->calls) {
            snprintf(j->err, sizeof j->err, "batch %d: %llu of %d calls captured (dropped=%llu)", b,
                     (unsigned long long)(SPPROF__LOADR(&spprof__g.c.captured) - c0), j->calls,
                     (unsigned long long)spprof__g.c.dropped);
            return;
        }
        j->ns[b] = (double)(t1 - t0) / j->calls;
        j->frames_first = peek_nframes(e0);
        j->frames_last = peek_nframes(e0 + (uint64_t)j->calls - 1);
    }
    spprof_flush();

    /* Breakdown: the walker alone on the same context and stack bounds the handler uses. */
    slot = NULL;
    {
        uint32_t idx = (uint32_t)((uintptr_t)j->cookie & 0xffffffffu);
        slot = spprof__slot_at(idx);
    }
    memset(&ctx, 0, sizeof ctx);
    ctx.os_context = &uc;
    ctx.pc = (uintptr_t)uc.uc_mcontext.gregs[REG_RIP];
    ctx.sp = (uintptr_t)uc.uc_mcontext.gregs[REG_RSP];
    ctx.fp = (uintptr_t)uc.uc_mcontext.gregs[REG_RBP];
    ctx.stack_lo = slot->stack_lo;
    ctx.stack_hi = slot->stack_hi;
    ctx.tid = spprof_gettid();
    for (b = 0; b < j->batches; b++) {
        uint64_t t0, t1;
        int n = 0;
        t0 = wall_ns();
        for (i = 0; i < j->calls; i++) {
            n = spprof_walk_native(&ctx, fbuf, spprof__g.max_depth);
            __asm__ volatile("" : : "r"(fbuf) : "memory");
        }
        t1 = wall_ns();
        j->walk_ns[b] = (double)(t1 - t0) / j->calls;
        j->frames_walk = n;
    }
    j->ok = 1;
}

/* k frames of descend() (k >= 1), then measure_here(). */
static NOINLINE void descend(int k, hjob *j) {
    if (k <= 1) measure_here(j);
    else descend(k - 1, j);
    g_sink += (uint64_t)k;  /* not a tail call: every level keeps its frame */
}

static void *find_cookie(void) {
    int tid = spprof_gettid();
    uint32_t i;
    void *cookie = NULL;
    pthread_mutex_lock(&spprof__reg_lock);
    for (i = 0; spprof__g.dir && i < spprof__g.nslots_used; i++) {
        spprof__slot *s = &spprof__g.dir->chunks[i / SPPROF__CHUNK][i % SPPROF__CHUNK];
        if (s->tid == tid) {
            cookie = (void *)(uintptr_t)(((uint64_t)SPPROF__COOKIE << 48) |
                                         ((uint64_t)(spprof__g.gen & 0xffffu) << 32) | i);
            break;
        }
    }
    pthread_mutex_unlock(&spprof__reg_lock);
    return cookie;
}

/* ---- part 2: real signal round trip ------------------------------------------------------------------- */
static NOINLINE double spin(long iters) {
    double x = 1.0;
    long i;
    for (i = 0; i < iters; i++) x = x * 1.0000001 + 1e-9;
    return x;
}
static NOINLINE void busy(long iters) {
    long done = 0;
    while (done < iters) {
        long k = iters - done < 100000 ? iters - done : 100000;
        g_dsink += spin(k);
        done += k;
    }
}

/* Baseline for part 2: the same timer and signal, but an empty handler of our own (what any signal-based
   sampler pays before it does any work). */
static volatile long g_empty_hits;
static void empty_handler(int signo, siginfo_t *si, void *uc) { (void)signo; (void)si; (void)uc; g_empty_hits++; }

static int empty_timer(int on, timer_t *t, struct sigaction *saved) {
    if (on) {
        struct sigaction sa;
        struct sigevent sev;
        struct itimerspec its;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = empty_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGPROF, &sa, saved) != 0) return 0;
        memset(&sev, 0, sizeof sev);
        sev.sigev_notify = SIGEV_THREAD_ID;
        sev.sigev_signo = SIGPROF;
        sev.sigev_notify_thread_id = spprof_gettid();
        if (timer_create(CLOCK_MONOTONIC, &sev, t) != 0) return 0;
        memset(&its, 0, sizeof its);
        its.it_interval.tv_nsec = 50000;
        its.it_value = its.it_interval;
        g_empty_hits = 0;
        return timer_settime(*t, 0, &its, NULL) == 0;
    } else {
        sigset_t set, old;
        struct timespec zero = {0, 0};
        timer_delete(*t);
        sigemptyset(&set);
        sigaddset(&set, SIGPROF);
        pthread_sigmask(SIG_BLOCK, &set, &old);
        while (sigtimedwait(&set, NULL, &zero) > 0) {}
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        sigaction(SIGPROF, saved, NULL);  /* give spprof its handler back */
        return 1;
    }
}

static long calibrate_spin(double seconds) {
    long iters = 1000000;
    double best = 1e30;
    int r;
    busy(iters);
    for (r = 0; r < 3; r++) {
        uint64_t t0 = clk_ns(CLOCK_THREAD_CPUTIME_ID);
        busy(iters * 10);
        {
            double dt = (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e9;
            if (dt < best) best = dt;
        }
    }
    return (long)(seconds * (double)(iters * 10) / best);
}

int main(int argc, char **argv) {
    static const int depths[] = {10, 50, 120};
    int batches = argc > 1 ? atoi(argv[1]) : 21;
    int calls = argc > 2 ? atoi(argv[2]) : 2000;
    int reps = argc > 3 ? atoi(argv[3]) : 7;
    spprof_config cfg = spprof_config_default();
    sigset_t prof_set, old_set;
    hjob *j;
    int base_frames, d, fail = 0;
    double gettid_ns, clock_ns;

    if (batches < 1) batches = 1;
    if (batches > MAXB) batches = MAXB;
    if (calls < 1 || calls > 2000) calls = 2000;  /* a batch must fit in half the 4096-slot ring */
    if (reps < 1) reps = 1;
    if (reps > MAXB) reps = MAXB;

    /* Part 1 */
    cfg.interval_ns = 60000000000ll;  /* 60 s of CPU: the real timer never fires during the run */
    cfg.drain_interval_ms = 10000;     /* the collector sleeps: only spprof_flush() drains */
    cfg.scan_interval_ms = 10000;
    sigemptyset(&prof_set);
    sigaddset(&prof_set, SIGPROF);
    pthread_sigmask(SIG_BLOCK, &prof_set, &old_set);  /* belt and braces: no real SIGPROF on this thread */
    if (spprof_start(&cfg) != SPPROF_OK) { fprintf(stderr, "spprof_start: %s\n", spprof_last_error()); return 1; }
    {   /* and the session's own signal (a free real-time one by default) */
        spprof_stats st;
        spprof_get_stats(&st);
        sigaddset(&prof_set, st.signo);
        pthread_sigmask(SIG_BLOCK, &prof_set, NULL);
    }

    j = (hjob *)calloc(1, sizeof *j);
    j->cookie = find_cookie();
    if (!j->cookie) { fprintf(stderr, "bench_handler: main thread not found in the registry\n"); return 1; }
    j->batches = batches;
    j->calls = calls;

    /* Calibrate: how many frames does the sampler see with one descend() level? */
    g_probe_only = 1;
    descend(1, j);
    if (!j->ok) { fprintf(stderr, "bench_handler: %s\n", j->err); return 1; }
    base_frames = j->frames_first;  /* = 1 descend frame + measure_here + frames above (main, ...) */
    g_probe_only = 0;

    {   /* component costs */
        int i, n = 200000;
        uint64_t t0 = wall_ns();
        for (i = 0; i < n; i++) g_sink += (uint64_t)spprof_gettid();
        gettid_ns = (double)(wall_ns() - t0) / n;
        t0 = wall_ns();
        for (i = 0; i < n; i++) g_sink += spprof__now_ns();
        clock_ns = (double)(wall_ns() - t0) / n;
    }

    printf("### Handler cost per sample (direct calls, %d batches x %d calls, median)\n\n", batches, calls);
    printf("Stack depth D = frames in each sample (leaf + callers up to main and above). "
           "Besides the recursion, each sample holds the leaf frame (the function that took the context) and %d "
           "frame(s) above it (main, libc start); checked: frames captured == D.\n\n", base_frames - 2);
    printf("| depth D | frames captured | handler ns/sample (median) | min | p90 | walker alone ns (median) | handler - walker ns |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|\n");
    for (d = 0; d < (int)(sizeof depths / sizeof depths[0]); d++) {
        int D = depths[d];
        int k = D - (base_frames - 1);  /* descend levels so that the sample has D frames */
        double med, wmed;
        memset(j->ns, 0, sizeof j->ns);
        j->ok = 0; j->err[0] = 0;
        if (k < 1) { printf("| %d | (too shallow) | | | | | |\n", D); continue; }
        descend(k, j);
        if (!j->ok) { printf("| %d | ERROR: %s | | | | | |\n", D, j->err); fail = 1; continue; }
        med = median(j->ns, batches);
        wmed = median(j->walk_ns, batches);
        printf("| %d | %d%s | **%.0f** | %.0f | %.0f | %.0f | %.0f |\n", D, j->frames_last,
               (j->frames_first == D && j->frames_last == D && j->frames_walk == D) ? "" : " (MISMATCH)",
               med, quantile(j->ns, batches, 0.0), quantile(j->ns, batches, 0.9), wmed, med - wmed);
        if (j->frames_last != D) fail = 1;
    }
    {
        spprof_stats st;
        spprof_get_stats(&st);
        printf("\nComponents: `syscall(SYS_gettid)` %.0f ns, `clock_gettime(CLOCK_MONOTONIC)` %.0f ns "
               "(both are called once per sample by the handler). Session counters: captured %llu, dropped %llu, "
               "truncated %llu, stale %llu, ignored %llu.\n\n", gettid_ns, clock_ns,
               (unsigned long long)st.samples_captured, (unsigned long long)st.samples_dropped,
               (unsigned long long)st.walk_truncated, (unsigned long long)st.samples_stale,
               (unsigned long long)st.signals_ignored);
    }
    spprof_stop();
    pthread_sigmask(SIG_SETMASK, &old_set, NULL);

    /* Part 2: real signals. Three kinds of run, rotated: unprofiled, spprof (wall 50 us), empty handler. */
    {
        long iters = calibrate_spin(0.4);
        double u_cpu[MAXB], u_wall[MAXB], u_pcpu[MAXB];
        double p_cpu[MAXB], p_wall[MAXB], p_pcpu[MAXB], samples[MAXB], overruns[MAXB];
        double e_cpu[MAXB], e_hits[MAXB];
        double per_cpu[MAXB], per_wall[MAXB], per_pcpu[MAXB], per_empty[MAXB];
        int r, pass;
        spprof_config w = spprof_config_default();
        w.mode = SPPROF_MODE_WALL;
        w.interval_ns = 50000;
        for (r = 0; r < reps; r++) {
            for (pass = 0; pass < 3; pass++) {
                int kind = (pass + r) % 3;  /* 0 unprofiled, 1 spprof, 2 empty handler */
                uint64_t c0, c1, t0, t1, pc0, pc1;
                spprof_stats st;
                timer_t et;
                struct sigaction saved;
                if (kind == 1 && spprof_start(&w) != SPPROF_OK) {
                    fprintf(stderr, "spprof_start: %s\n", spprof_last_error()); return 1;
                }
                if (kind == 2 && !empty_timer(1, &et, &saved)) { perror("empty timer"); return 1; }
                t0 = wall_ns(); c0 = clk_ns(CLOCK_THREAD_CPUTIME_ID); pc0 = clk_ns(CLOCK_PROCESS_CPUTIME_ID);
                busy(iters);
                t1 = wall_ns(); c1 = clk_ns(CLOCK_THREAD_CPUTIME_ID); pc1 = clk_ns(CLOCK_PROCESS_CPUTIME_ID);
                if (kind == 1) {
                    spprof_stop();
                    spprof_get_stats(&st);
                    p_cpu[r] = (double)(c1 - c0); p_wall[r] = (double)(t1 - t0); p_pcpu[r] = (double)(pc1 - pc0);
                    samples[r] = (double)st.samples_captured;
                    overruns[r] = (double)st.timer_overruns;
                } else if (kind == 2) {
                    e_hits[r] = (double)g_empty_hits;
                    empty_timer(0, &et, &saved);
                    e_cpu[r] = (double)(c1 - c0);
                } else {
                    u_cpu[r] = (double)(c1 - c0); u_wall[r] = (double)(t1 - t0); u_pcpu[r] = (double)(pc1 - pc0);
                }
            }
        }
        for (r = 0; r < reps; r++) {
            /* each signalled run against the median unprofiled run */
            per_cpu[r] = (p_cpu[r] - median(u_cpu, reps)) / (samples[r] > 0 ? samples[r] : 1);
            per_wall[r] = (p_wall[r] - median(u_wall, reps)) / (samples[r] > 0 ? samples[r] : 1);
            per_pcpu[r] = (p_pcpu[r] - median(u_pcpu, reps)) / (samples[r] > 0 ? samples[r] : 1);
            per_empty[r] = (e_cpu[r] - median(u_cpu, reps)) / (e_hits[r] > 0 ? e_hits[r] : 1);
        }
        printf("### Real signal round trip (wall-clock timer every 50 us on a busy thread, %d rotated runs of each kind)\n\n", reps);
        printf("Cost per delivered signal = (CPU time with signals - median unprofiled CPU time) / signals handled. "
               "It covers the timer interrupt, signal delivery, the handler and sigreturn on the sampled thread. "
               "\"process\" adds the collector thread's draining. The empty-handler row is the same timer and "
               "signal with a handler that only counts: the floor that no signal-based sampler can go below "
               "on this machine.\n\n");
        printf("| run | busy work CPU s (median) | signals/run (median) | overruns/run | thread CPU ns/signal | wall ns/signal | process CPU ns/signal |\n");
        printf("|---|---:|---:|---:|---:|---:|---:|\n");
        printf("| unprofiled | %.3f | 0 | | | | |\n", median(u_cpu, reps) / 1e9);
        printf("| spprof, wall 50 us | %.3f | %.0f | %.0f | **%.0f** | %.0f | %.0f |\n", median(p_cpu, reps) / 1e9,
               median(samples, reps), median(overruns, reps), median(per_cpu, reps), median(per_wall, reps),
               median(per_pcpu, reps));
        printf("| empty handler, same timer | %.3f | %.0f | | %.0f | | |\n\n", median(e_cpu, reps) / 1e9,
               median(e_hits, reps), median(per_empty, reps));
        {
            double share[MAXB];
            for (r = 0; r < reps; r++) share[r] = per_cpu[r] - per_empty[r];  /* same rotation: adjacent runs */
            printf("spprof's own share of the round trip: %.0f ns per signal (median over rotations of spprof - "
                   "empty handler, thread CPU; a difference of two noisy figures, so expect a few hundred ns of "
                   "scatter when the machine is busy).\n\n", median(share, reps));
        }
    }
    free(j);
    return fail;
}
