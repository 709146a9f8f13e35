/* bench_windows.c - the Windows sampler's cost and achieved rate, for a Windows build (mingw-w64), run under
   wine here (`make bench-windows`; never run on real Windows).

   Part 1 (overhead): T worker threads (T = 1, 3), created inside the timed region, each doing a FIXED number
   of iterations of a loop under a few frames. Configurations: unprofiled, CPU mode 100 Hz, CPU mode 1 kHz,
   wall mode 1 kHz. Every round runs each configuration once, in an order rotated from round to round, so
   drift on this shared machine hits all alike. Measured per run: wall time (QueryPerformanceCounter) and the
   process's CPU time (GetProcessTimes, all threads, the sampler thread included). Reported: the median over
   rounds of profiled / unprofiled (the unprofiled run of the same round), and the spread (min..max).

   Part 2 (rate): the sampler thread alone with one sleeping thread, wall mode, at 1 kHz and 10 kHz for 2 s:
   ticks per second reached, late ticks, suspension time.

   Usage: bench_windows.exe [ROUNDS] [SECONDS_OF_WORK]   (prints markdown) */
#define SPPROF_IMPLEMENTATION
#include "../spprof.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXROUNDS 31
#define NCFG 4

static volatile uint64_t g_sink;
__attribute__((noinline)) static void leaf(long n) {
    uint64_t x = g_sink;
    long i;
    for (i = 0; i < n; i++) x = x * 6364136223846793005ull + 1;
    g_sink = x;
}
__attribute__((noinline)) static void middle(long n) { leaf(n); g_sink++; }
__attribute__((noinline)) static void outer(long n) { middle(n); g_sink++; }

static long g_iters;  /* calls of outer(10000) per thread */
static DWORD WINAPI worker(LPVOID arg) {
    long i;
    (void)arg;
    for (i = 0; i < g_iters; i++) outer(10000);
    return 0;
}

static uint64_t process_cpu_ns(void) {
    FILETIME c, e, k, u;
    GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u);
    return ((((uint64_t)k.dwHighDateTime << 32) | k.dwLowDateTime) + (((uint64_t)u.dwHighDateTime << 32) | u.dwLowDateTime)) * 100;
}

typedef struct run_result { double wall_s, cpu_s; spprof_stats st; } run_result;

/* cfg: 0 unprofiled, 1 CPU 100 Hz, 2 CPU 1 kHz, 3 wall 1 kHz */
static run_result run_once(int cfg, int nthreads) {
    run_result r;
    HANDLE th[8];
    uint64_t w0, c0;
    int i;
    memset(&r, 0, sizeof r);
    if (cfg) {
        spprof_config c = spprof_config_default();
        c.interval_ns = cfg == 1 ? 10000000 : 1000000;
        c.mode = cfg == 3 ? SPPROF_MODE_WALL : SPPROF_MODE_CPU;
        if (spprof_start(&c) != SPPROF_OK) {
            fprintf(stderr, "spprof_start: %s\n", spprof_last_error());
            exit(1);
        }
    }
    w0 = spprof__now_ns();
    c0 = process_cpu_ns();
    for (i = 0; i < nthreads; i++) th[i] = CreateThread(NULL, 0, worker, NULL, 0, NULL);
    WaitForMultipleObjects((DWORD)nthreads, th, TRUE, INFINITE);
    r.cpu_s = (double)(process_cpu_ns() - c0) / 1e9;
    r.wall_s = (double)(spprof__now_ns() - w0) / 1e9;
    for (i = 0; i < nthreads; i++) CloseHandle(th[i]);
    if (cfg) {
        spprof_stop();
        spprof_get_stats(&r.st);
        spprof_clear();
    }
    return r;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}
static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static DWORD WINAPI sleeper(LPVOID arg) {
    Sleep((DWORD)(uintptr_t)arg);
    return 0;
}

int main(int argc, char **argv) {
    static const char *names[NCFG] = {"unprofiled", "CPU 100 Hz", "CPU 1 kHz", "wall 1 kHz"};
    int rounds = argc > 1 ? atoi(argv[1]) : 7;
    double seconds = argc > 2 ? atof(argv[2]) : 1.0;
    int nts[2] = {1, 3}, ti, k;
    if (rounds < 1 || rounds > MAXROUNDS) rounds = 7;
    { /* size the work: one unprofiled thread runs `seconds` */
        uint64_t t0;
        g_iters = 50;
        t0 = spprof__now_ns();
        worker(NULL);
        g_iters = (long)(50.0 * seconds * 1e9 / (double)(spprof__now_ns() - t0));
        if (g_iters < 1) g_iters = 1;
    }
    printf("# spprof Windows sampler under wine: %d rounds, %ld calls of outer(10000) per thread (~%.1f s alone)\n\n",
           rounds, g_iters, seconds);
    printf("| threads | configuration | process CPU ratio, median (min..max) | wall ratio, median (min..max) | "
           "samples/s of CPU | suspension mean / max (us) | late ticks |\n|---|---|---|---|---|---|---|\n");
    for (ti = 0; ti < 2; ti++) {
        double cpu[NCFG][MAXROUNDS], wall[NCFG][MAXROUNDS], rate[NCFG][MAXROUNDS], susp[NCFG][MAXROUNDS];
        double smax[NCFG], late[NCFG][MAXROUNDS];
        int r, i;
        memset(smax, 0, sizeof smax);
        for (r = 0; r < rounds; r++) {
            run_result res[NCFG];
            for (i = 0; i < NCFG; i++) {
                int c = (i + r) % NCFG;
                res[c] = run_once(c, nts[ti]);
            }
            for (i = 1; i < NCFG; i++) {
                cpu[i][r] = res[i].cpu_s / res[0].cpu_s;
                wall[i][r] = res[i].wall_s / res[0].wall_s;
                rate[i][r] = (double)res[i].st.samples_in_profile / res[i].cpu_s;
                susp[i][r] = res[i].st.suspensions ? (double)res[i].st.suspend_ns_total / (double)res[i].st.suspensions / 1e3 : 0;
                late[i][r] = (double)res[i].st.ticks_late;
                if ((double)res[i].st.suspend_ns_max / 1e3 > smax[i]) smax[i] = (double)res[i].st.suspend_ns_max / 1e3;
            }
        }
        for (k = 1; k < NCFG; k++) {
            double lo_c = 1e9, hi_c = 0, lo_w = 1e9, hi_w = 0;
            for (r = 0; r < rounds; r++) {
                if (cpu[k][r] < lo_c) lo_c = cpu[k][r];
                if (cpu[k][r] > hi_c) hi_c = cpu[k][r];
                if (wall[k][r] < lo_w) lo_w = wall[k][r];
                if (wall[k][r] > hi_w) hi_w = wall[k][r];
            }
            printf("| %d | %s | %+.1f%% (%+.1f..%+.1f) | %+.1f%% (%+.1f..%+.1f) | %.0f | %.0f / %.0f | %.0f |\n", nts[ti],
                   names[k], (median(cpu[k], rounds) - 1) * 100, (lo_c - 1) * 100, (hi_c - 1) * 100,
                   (median(wall[k], rounds) - 1) * 100, (lo_w - 1) * 100, (hi_w - 1) * 100, median(rate[k], rounds),
                   median(susp[k], rounds), smax[k], median(late[k], rounds));
        }
    }
    printf("\n| wall mode, one sleeping thread, 2 s | ticks/s | late ticks | suspensions | suspension mean / max (us) |\n"
           "|---|---|---|---|---|\n");
    for (k = 0; k < 2; k++) {
        spprof_config c = spprof_config_default();
        spprof_stats st;
        HANDLE th;
        uint64_t t0;
        double secs;
        c.interval_ns = k ? 100000 : 1000000;
        c.mode = SPPROF_MODE_WALL;
        th = CreateThread(NULL, 0, sleeper, (LPVOID)(uintptr_t)2000, 0, NULL);
        t0 = spprof__now_ns();
        if (spprof_start(&c) != SPPROF_OK) {
            fprintf(stderr, "spprof_start: %s\n", spprof_last_error());
            return 1;
        }
        WaitForSingleObject(th, INFINITE);
        spprof_stop();
        secs = (double)(spprof__now_ns() - t0) / 1e9;
        CloseHandle(th);
        spprof_get_stats(&st);
        printf("| %s | %.0f | %llu | %llu | %.0f / %.0f |\n", k ? "10 kHz" : "1 kHz",
               (double)(spprof__g.win.ticks) / secs, (unsigned long long)st.ticks_late,
               (unsigned long long)st.suspensions,
               st.suspensions ? (double)st.suspend_ns_total / (double)st.suspensions / 1e3 : 0.0,
               (double)st.suspend_ns_max / 1e3);
        spprof_clear();
    }
    return 0;
}
