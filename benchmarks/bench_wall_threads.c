/* bench_wall_threads.c - wall mode with many mostly-sleeping threads: samples dropped and the collector's CPU.
   cc -O2 -g -fno-omit-frame-pointer benchmarks/bench_wall_threads.c -o build/bench_wall_threads -pthread -ldl -lrt
   ./build/bench_wall_threads [threads=1000] [perf=0|1] [sleep_ms=100]: each thread burns 20 us, sleeps sleep_ms, for 3 s
   of wall mode at 2 kHz. Figures: README, "Wall mode". */
#include "../tests/testutil.h"
static int stop_flag;
static int g_sleep_ms = 100;
static void *sleeper(void *a) {
    (void)a;
    while (!t_flag_get(&stop_flag)) { t_burn_ns(20000); t_sleep_ms(g_sleep_ms); }
    return NULL;
}
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000, i;
    if (argc > 3) g_sleep_ms = atoi(argv[3]);
    pthread_t *th = malloc(sizeof(pthread_t) * n);
    pthread_attr_t at;
    spprof_config cfg = t_config(500000);
    spprof_stats st, mid;
    uint64_t w0, c0, c1, wall;
    pthread_attr_init(&at);
    pthread_attr_setstacksize(&at, 64 << 10);
    for (i = 0; i < n; i++) pthread_create(&th[i], &at, sleeper, NULL);
    cfg.mode = SPPROF_MODE_WALL;
    cfg.source = SPPROF_SOURCE_POSIX;
    if (argc > 2 && atoi(argv[2])) cfg.source = SPPROF_SOURCE_AUTO;
    t_sleep_ms(200);
    {
        struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); c0 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    w0 = t_now_ns();
    spprof_start(&cfg);
    t_sleep_ms(3000);
    {
        struct timespec ts;
        clockid_t cid;
        pthread_getcpuclockid(spprof__g.lnx.collector, &cid);
        clock_gettime(cid, &ts);
        printf("collector CPU %.3f s\n", (double)ts.tv_sec + ts.tv_nsec / 1e9);
    }
    spprof_get_stats(&mid);
    spprof_stop();
    wall = t_now_ns() - w0;
    { struct timespec ts; clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); c1 = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec; }
    spprof_get_stats(&st);
    printf("threads %d: captured %llu, dropped %llu (%.1f%%), in profile %llu, process CPU %.2f s over %.2f s wall\n", n,
           (unsigned long long)st.samples_captured, (unsigned long long)st.samples_dropped,
           100.0 * (double)st.samples_dropped / (double)(st.samples_captured + st.samples_dropped + 1),
           (unsigned long long)st.samples_in_profile, (c1 - c0) / 1e9, wall / 1e9);
    printf("sources at stop: %llu threads on perf events, %llu on POSIX timers (%llu over the fd budget)\n",
           (unsigned long long)mid.threads_perf, (unsigned long long)mid.threads_posix,
           (unsigned long long)mid.perf_fd_fallbacks);
    t_flag_set(&stop_flag, 1);
    for (i = 0; i < n; i++) pthread_join(th[i], NULL);
    return 0;
}
