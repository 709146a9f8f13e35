/* bench_overhead.c - overhead of spprof on a CPU-bound multi-threaded workload: profiled / unprofiled.

   Workload: N threads (N = 1, 8, 64), created inside the timed region, each doing a FIXED number of iterations of a floating-point loop under a
   few frames of call stack. The total work is sized so that one unprofiled run takes about TARGET seconds of
   wall time on this machine: N = 1 gets TARGET seconds of work; N >= ncpu threads share ncpu * TARGET seconds
   of work equally (every thread does the same number of iterations).

   For every (rate, N): warm-up, then REPS unprofiled and REPS profiled runs, alternating (U P, P U, U P, ...)
   so that drift (frequency, neighbours on the host) hits both alike. A profiled run calls spprof_start()
   before the timed region and spprof_stop() after it; its workers call spprof_thread_register() first thing,
   so that they are sampled from the start instead of from the collector's next thread scan (up to 20 ms
   later). Measured: wall time from the first pthread_create to the last join, process CPU time (CLOCK_PROCESS_CPUTIME_ID,
   all threads including spprof's collector) over the same region. Reported: median of the per-pair ratios
   profiled/unprofiled, samples captured / overruns / dropped, and extra CPU ns per sample.

   Part 2 (per-thread cost): wall-clock mode with a per-thread interval of N * 100 us, so that the process
   receives about 10,000 signals per second whatever N is; extra CPU ns per sample must stay flat as N grows.
   Only the workers are sampled (auto_threads = 0; each worker calls spprof_thread_register()).

   Part 3 (fixed costs): the collector's idle CPU per second, one periodic thread scan, and the /proc/self/maps
   lookup of a thread's first sample, with 1, 8 and 64 extra threads alive.

   Usage: bench_overhead [REPS] [TARGET_SECONDS]   (prints markdown) */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define MAXREP 41
#define MAXTHREADS 64

static volatile double g_sink;
static volatile uint64_t g_isink;

static uint64_t clk_ns(clockid_t c) {
    struct timespec ts;
    clock_gettime(c, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(const double *v, int n) {
    double tmp[MAXREP];
    int i;
    if (n <= 0) return 0;
    for (i = 0; i < n; i++) tmp[i] = v[i];
    qsort(tmp, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? tmp[n / 2] : (tmp[n / 2 - 1] + tmp[n / 2]) / 2;
}

/* ---- workload ----------------------------------------------------------------------------------------- */
static NOINLINE double spin(long iters) {
    double x = 1.0;
    long i;
    for (i = 0; i < iters; i++) x = x * 1.0000001 + 1e-9;
    return x;
}
static NOINLINE void work_chunks(long iters) {
    long done = 0;
    while (done < iters) {
        long k = iters - done < 200000 ? iters - done : 200000;
        g_sink += spin(k);
        done += k;
    }
}
static NOINLINE void nest(int depth, long iters) {  /* a few real frames above the hot loop */
    if (depth <= 0) work_chunks(iters);
    else nest(depth - 1, iters);
    g_isink += (uint64_t)depth;
}

typedef struct run_ctx {
    long iters;
    int register_self;  /* profiled runs: the worker registers itself so it is sampled from its first instruction */
} run_ctx;

static void *worker(void *arg) {
    const run_ctx *rc = (const run_ctx *)arg;
    if (rc->register_self) spprof_thread_register();
    nest(6, rc->iters);
    return NULL;
}

typedef struct run_result {
    double wall_ns, cpu_ns;
    uint64_t captured, dropped, overruns, ignored, stale, in_profile, threads_sampled;
} run_result;

/* One run: N threads x iters. cfg == NULL: unprofiled. The timed region covers thread creation, the work and
   the joins (the same for both kinds of run); spprof_start/stop are outside it. */
static int one_run(int nthreads, long iters, const spprof_config *cfg, run_result *out) {
    pthread_t th[MAXTHREADS];
    run_ctx rc;
    uint64_t t0, t1, c0, c1;
    int i;
    memset(out, 0, sizeof *out);
    rc.iters = iters;
    rc.register_self = cfg != NULL;
    if (cfg && spprof_start(cfg) != SPPROF_OK) { fprintf(stderr, "spprof_start: %s\n", spprof_last_error()); exit(1); }
    t0 = clk_ns(CLOCK_MONOTONIC);
    c0 = clk_ns(CLOCK_PROCESS_CPUTIME_ID);
    for (i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, worker, &rc) != 0) { perror("pthread_create"); exit(1); }
    for (i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    t1 = clk_ns(CLOCK_MONOTONIC);
    c1 = clk_ns(CLOCK_PROCESS_CPUTIME_ID);
    out->wall_ns = (double)(t1 - t0);
    out->cpu_ns = (double)(c1 - c0);
    if (cfg) {
        spprof_stats st;
        spprof_stop();
        spprof_get_stats(&st);
        out->captured = st.samples_captured;
        out->dropped = st.samples_dropped;
        out->overruns = st.timer_overruns;
        out->ignored = st.signals_ignored;
        out->stale = st.samples_stale;
        out->in_profile = st.samples_in_profile;
        out->threads_sampled = st.threads_sampled;
    }
    return 0;
}

/* ---- fixed and per-thread costs of the machinery (not of a sample) ------------------------------------- */
typedef struct parked { pthread_mutex_t mu; pthread_cond_t cv; int release; } parked;
static void *park(void *arg) {
    parked *p = (parked *)arg;
    pthread_mutex_lock(&p->mu);
    while (!p->release) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Baseline for the collector's idle cost: what one poll() timeout wakeup costs on this machine, no spprof. */
static double bare_wakeup_us(int timeout_ms, int count) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    uint64_t c0 = clk_ns(CLOCK_THREAD_CPUTIME_ID);
    int i;
    for (i = 0; i < count; i++) {
        struct pollfd pfd;
        pfd.fd = fd; pfd.events = POLLIN; pfd.revents = 0;
        poll(&pfd, 1, timeout_ms);
    }
    close(fd);
    return (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - c0) / 1e3 / count;
}

/* A thread's own registration cost: spprof_thread_register() + spprof_thread_unregister(), on its CPU clock
   (thread record, slot, /proc/self/task/TID/comm, timer_create + arm; timer_delete). */
static void *reg_unreg(void *arg) {
    uint64_t a = clk_ns(CLOCK_THREAD_CPUTIME_ID);
    spprof_thread_register();
    spprof_thread_unregister();
    *(double *)arg = (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - a) / 1e3;
    return NULL;
}

static void fixed_costs(int nthreads, double *idle_us_per_s, double *scan_us, double *maps_us, double *reg_us) {
    pthread_t th[MAXTHREADS];
    parked p;
    spprof_config cfg = spprof_config_default();
    double v[MAXREP];
    uint64_t t0, c0;
    int i, r;
    struct timespec ts = {1, 0};
    pthread_mutex_init(&p.mu, NULL);
    pthread_cond_init(&p.cv, NULL);
    p.release = 0;
    for (i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, park, &p);
    cfg.interval_ns = 60000000000ll;  /* no samples: only the collector's periodic work remains */
    spprof_start(&cfg);
    t0 = clk_ns(CLOCK_MONOTONIC);
    c0 = clk_ns(CLOCK_PROCESS_CPUTIME_ID);
    nanosleep(&ts, NULL);
    *idle_us_per_s = (double)(clk_ns(CLOCK_PROCESS_CPUTIME_ID) - c0) / 1e3 / ((double)(clk_ns(CLOCK_MONOTONIC) - t0) / 1e9);
    for (r = 0; r < 21; r++) {  /* one periodic scan, as the collector does it every scan_interval_ms */
        uint64_t a;
        pthread_mutex_lock(&spprof__reg_lock);
        a = clk_ns(CLOCK_THREAD_CPUTIME_ID);
        spprof__sync_threads();
        spprof__refresh_xranges();
        v[r] = (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - a) / 1e3;
        pthread_mutex_unlock(&spprof__reg_lock);
    }
    *scan_us = median(v, 21);
    for (r = 0; r < 21; r++) {  /* a thread's first sample: find its stack mapping in /proc/self/maps */
        uintptr_t lo, hi, sp = (uintptr_t)&lo;
        uint64_t a = clk_ns(CLOCK_THREAD_CPUTIME_ID);
        spprof__find_mapping(sp, &lo, &hi);
        v[r] = (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - a) / 1e3;
    }
    *maps_us = median(v, 21);
    for (r = 0; r < 21; r++) {
        pthread_t t;
        pthread_create(&t, NULL, reg_unreg, &v[r]);
        pthread_join(t, NULL);
    }
    *reg_us = median(v, 21);
    spprof_stop();
    pthread_mutex_lock(&p.mu);
    p.release = 1;
    pthread_cond_broadcast(&p.cv);
    pthread_mutex_unlock(&p.mu);
    for (i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
}

typedef struct cell {
    double u_wall[MAXREP], p_wall[MAXREP], u_cpu[MAXREP], p_cpu[MAXREP];
    double wall_ratio[MAXREP], cpu_ratio[MAXREP], ns_per_sample[MAXREP];
    double captured[MAXREP], dropped[MAXREP], overruns[MAXREP], weight[MAXREP], threads_sampled[MAXREP];
} cell;

static void run_cell(int nthreads, long iters, const spprof_config *cfg, int reps, cell *c) {
    run_result u, p;
    int r;
    one_run(nthreads, iters, NULL, &u);  /* warm-up (thread stacks, page faults, frequency) */
    for (r = 0; r < reps; r++) {
        if (r % 2 == 0) { one_run(nthreads, iters, NULL, &u); one_run(nthreads, iters, cfg, &p); }
        else            { one_run(nthreads, iters, cfg, &p); one_run(nthreads, iters, NULL, &u); }
        c->u_wall[r] = u.wall_ns; c->p_wall[r] = p.wall_ns;
        c->u_cpu[r] = u.cpu_ns;   c->p_cpu[r] = p.cpu_ns;
        c->wall_ratio[r] = p.wall_ns / u.wall_ns;
        c->cpu_ratio[r] = p.cpu_ns / u.cpu_ns;
        c->captured[r] = (double)p.captured;
        c->dropped[r] = (double)p.dropped;
        c->overruns[r] = (double)p.overruns;
        c->weight[r] = (double)(p.captured + p.overruns);
        c->threads_sampled[r] = (double)p.threads_sampled;
        c->ns_per_sample[r] = p.captured ? (p.cpu_ns - u.cpu_ns) / (double)p.captured : 0;
    }
}

static long calibrate(void) {  /* iterations per second of CPU on one thread */
    long iters = 2000000;
    double best = 1e30;
    int r;
    work_chunks(iters);
    for (r = 0; r < 5; r++) {
        uint64_t t0 = clk_ns(CLOCK_THREAD_CPUTIME_ID);
        work_chunks(iters * 10);
        {
            double dt = (double)(clk_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e9;
            if (dt < best) best = dt;
        }
    }
    return (long)((double)(iters * 10) / best);
}

static const char *ratio_str(double ratio, char *buf, size_t n) {
    snprintf(buf, n, "%.4f (%+.2f%%)", ratio, (ratio - 1.0) * 100.0);
    return buf;
}

int main(int argc, char **argv) {
    static const int threads[] = {1, 8, 64};
    static const int rates[] = {100, 1000, 10000};
    int reps = argc > 1 ? atoi(argv[1]) : 9;
    double target = argc > 2 ? atof(argv[2]) : 0.5;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    long per_sec;
    int ri, ti;
    char b1[48], b2[48], b3[48];
    static cell cells[3][3], wcells[3];
    double idle[3], scan[3], maps[3], reg[3], c_sample[3], wakeup_us;
    const int wall_interval_us = 100;

    if (reps < 1) reps = 1;
    if (reps > MAXREP) reps = MAXREP;
    if (ncpu < 1) ncpu = 1;
    per_sec = calibrate();

    /* Part 3 first (its figures feed the model column of part 1), then part 2, then part 1; printed 1, 2, 3. */
    for (ti = 0; ti < 3; ti++) fixed_costs(threads[ti], &idle[ti], &scan[ti], &maps[ti], &reg[ti]);
    wakeup_us = bare_wakeup_us(10, 100);
    for (ti = 0; ti < 3; ti++) {
        int n = threads[ti];
        long busy = n < ncpu ? n : ncpu;
        long iters = (long)((double)per_sec * target * (double)busy / (double)n);
        spprof_config cfg = spprof_config_default();
        cfg.mode = SPPROF_MODE_WALL;
        cfg.interval_ns = 1000ll * wall_interval_us;
        cfg.auto_threads = 0;  /* only the workers (they register themselves), not the main thread in join */
        fprintf(stderr, "bench_overhead: per-sample cost, %d threads\n", n);
        run_cell(n, iters, &cfg, reps, &wcells[ti]);
        c_sample[ti] = median(wcells[ti].ns_per_sample, reps);
    }
    for (ri = 0; ri < 3; ri++) {
        for (ti = 0; ti < 3; ti++) {
            int n = threads[ti];
            long busy = n < ncpu ? n : ncpu;
            long iters = (long)((double)per_sec * target * (double)busy / (double)n);
            spprof_config cfg = spprof_config_default();
            cfg.mode = SPPROF_MODE_CPU;
            cfg.interval_ns = 1000000000ll / rates[ri];
            fprintf(stderr, "bench_overhead: %d Hz, %d threads\n", rates[ri], n);
            run_cell(n, iters, &cfg, reps, &cells[ri][ti]);
        }
    }

    printf("### Overhead on a CPU-bound workload (CPU mode, %d alternating pairs per cell, medians)\n\n", reps);
    printf("Workload: %ld iterations/s per core (calibrated); N = 1 runs %.2f s of work on one thread, N >= %ld "
           "threads share %ld x %.2f s of work equally (fixed iteration counts). Ratios: median of per-pair ratios "
           "profiled / unprofiled (the run next to it). samples = signals handled (one ring entry each); overruns = "
           "expirations merged into them by the kernel; weight = samples + overruns = intervals they stand for. "
           "CPU-clock timers are checked at kernel ticks, so a thread gets at most HZ signals per CPU second "
           "whatever the rate. modelled = (samples x per-sample cost (1-thread row of the next table) + collector "
           "idle CPU per second x profiled wall time + threads x (register/unregister + maps lookup), from the "
           "last table) / unprofiled CPU: what the measured CPU overhead should be without the run-to-run "
           "noise.\n\n", per_sec, target, ncpu, ncpu, target);
    printf("| rate | threads | iterations/thread | unprofiled wall s | wall ratio | unprofiled CPU s | CPU ratio | modelled CPU overhead | samples/run | overruns/run | weight/run | dropped |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (ri = 0; ri < 3; ri++) {
        for (ti = 0; ti < 3; ti++) {
            int n = threads[ti];
            long busy = n < ncpu ? n : ncpu;
            long iters = (long)((double)per_sec * target * (double)busy / (double)n);
            cell *c = &cells[ri][ti];
            /* per-sample cost of the 1-thread row of table 2 (no per-thread costs folded in), collector idle
               CPU over the run, and each thread's one-time costs (register/unregister + first-sample maps lookup) */
            double model = (median(c->captured, reps) * c_sample[0] +
                            idle[ti] * 1e3 * median(c->p_wall, reps) / 1e9 +
                            n * (reg[ti] + maps[ti]) * 1e3) / median(c->u_cpu, reps);
            printf("| %d Hz | %d | %ld | %.3f | %s | %.3f | %s | %+.2f%% | %.0f | %.0f | %.0f | %.0f |\n",
                   rates[ri], n, iters, median(c->u_wall, reps) / 1e9, ratio_str(median(c->wall_ratio, reps), b1, sizeof b1),
                   median(c->u_cpu, reps) / 1e9, ratio_str(median(c->cpu_ratio, reps), b2, sizeof b2), model * 100.0,
                   median(c->captured, reps), median(c->overruns, reps), median(c->weight, reps),
                   median(c->dropped, reps));
        }
    }

    printf("\n### Cost per sample as threads grow (wall mode, %d us per thread)\n\n", wall_interval_us);
    printf("A signal reaches a thread only while it runs, so with %ld cores the process handles about "
           "%ld x %d signals/s whatever N is (threads waiting for a core accumulate overruns instead); that keeps "
           "the extra CPU large enough to measure. extra CPU ns/sample = (profiled - unprofiled process CPU) / "
           "samples, median over %d alternating pairs. It includes the kernel's timer interrupt and signal "
           "delivery (compare the round-trip table of bench_handler), the handler, the collector's draining, and "
           "each thread's one-time costs (register, first-sample maps lookup, unregister) spread over its "
           "samples. Flat = the per-sample cost does not grow with the number of threads.\n\n",
           ncpu, ncpu, 1000000 / wall_interval_us, reps);
    printf("| threads | samples/run | samples/thread | overruns/run | dropped | unprofiled CPU s | CPU ratio | wall ratio | extra CPU ns/sample |\n");
    printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (ti = 0; ti < 3; ti++) {
        cell *c = &wcells[ti];
        printf("| %d | %.0f | %.0f | %.0f | %.0f | %.3f | %s | %s | **%.0f** |\n", threads[ti],
               median(c->captured, reps), median(c->captured, reps) / threads[ti], median(c->overruns, reps),
               median(c->dropped, reps), median(c->u_cpu, reps) / 1e9, ratio_str(median(c->cpu_ratio, reps), b1, sizeof b1),
               ratio_str(median(c->wall_ratio, reps), b2, sizeof b2), c_sample[ti]);
    }

    printf("\n### Fixed and per-thread costs of the machinery (no samples taken)\n\n");
    printf("collector idle = process CPU per second of a profiled process whose threads are all blocked (the "
           "collector wakes every drain_interval_ms = 20 ms and rescans threads every scan_interval_ms = 20 ms); "
           "one scan = spprof__sync_threads + spprof__refresh_xranges, the collector's periodic work; "
           "maps lookup = spprof__find_mapping, paid by each thread's first sample (parses /proc/self/maps); "
           "register + unregister = spprof_thread_register() + spprof_thread_unregister() on a new thread, its CPU "
           "time (what every sampled thread costs once, whether it registers itself or the scan finds it).\n\n");
    printf("| threads alive | collector idle, CPU us per s (%% of one core) | one scan, us | maps lookup (1st sample of a thread), us | register + unregister, us |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    for (ti = 0; ti < 3; ti++)
        printf("| %d | %.0f (%s) | %.1f | %.1f | %.1f |\n", threads[ti] + 1, idle[ti],
               (snprintf(b3, sizeof b3, "%.2f%%", idle[ti] / 1e4), b3), scan[ti], maps[ti], reg[ti]);
    printf("\nFor comparison, without spprof: one poll() wakeup after a 10 ms timeout costs %.1f us of CPU on this "
           "machine, i.e. %.0f us per s at the collector's 100 wakeups/s.\n\n", wakeup_us, wakeup_us * 100);
    return 0;
}
