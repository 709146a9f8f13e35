/* test_timer_eagain.c - timer_create() failing with EAGAIN.
   Every POSIX timer preallocates a queued-signal slot that counts against RLIMIT_SIGPENDING of its user (the
   count is per user, across all of that user's processes; /proc/self/status "SigQ: used/limit" shows it).
   With the limit lowered to what is in use now + 16, only about 16 of the 60 busy threads can get a timer:
   spprof_start must still succeed, count the failures and retries, and sample the threads that did get one.
   Because other processes of the same user can take or release slots meanwhile, each assertion states the
   precondition it needs and is skipped (with the reason printed) only when that precondition did not hold. */
#include "testutil.h"
#include <dirent.h>
#include <sys/resource.h>

enum { NBUSY = 60, HEADROOM = 16, MAX_ATTEMPTS = 4 };

/* Which of tids[0..n) are the target of one of our timers ("notify: signal/tid.N")? Returns how many. */
static int count_tids_with_timer(const int *tids, int n) {
    char line[256];
    int hits = 0, i;
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "tid.");
        int tid;
        if (strncmp(line, "notify:", 7) || !p) continue;
        tid = atoi(p + 4);
        for (i = 0; i < n; i++) if (tids[i] == tid) { hits++; break; }
    }
    fclose(f);
    return hits;
}
/* SigQ: queued signals (and timer slots) of this user now, and the limit. */
static int read_sigq(long *used, long *limit) {
    char line[256];
    int ok = 0;
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "SigQ:", 5) && sscanf(line + 5, "%ld/%ld", used, limit) == 2) { ok = 1; break; }
    fclose(f);
    return ok;
}

static int busy_stop, busy_ready, tids[NBUSY];

static void *busy(void *arg) {
    int i = (int)(intptr_t)arg;
    tids[i] = spprof_gettid();
    __atomic_fetch_add(&busy_ready, 1, __ATOMIC_ACQ_REL);
    while (!__atomic_load_n(&busy_stop, __ATOMIC_ACQUIRE)) {
        double x = 1.0;
        int k;
        for (k = 0; k < 100000; k++) x = x * 1.0000001 + 1e-9;
        t_sink += x;
    }
    return NULL;
}

int main(void) {
    pthread_t th[NBUSY];
    struct rlimit orig, low;
    spprof_config cfg = t_config(1000000);  /* CPU mode, 1 ms */
    cfg.source = SPPROF_SOURCE_POSIX;  /* this test is about timer_create failing */
    spprof_stats st1, st2, st;
    long used0 = -1, lim0 = -1, used1 = -1, lim1 = -1;
    int i, created = 0, need = 0, timers1 = 0, busy_timers1 = 0, timers2 = -1, busy_timers2 = -1, raised = 0;
    int attempt, bad_start = 0, bad_stop = 0;
    uint64_t t0 = t_now_ns();

    CHECK(t_count_timers() == 0, "/proc/self/timers is readable and empty at start (%d)", t_count_timers());
    for (i = 0; i < NBUSY; i++) if (pthread_create(&th[i], NULL, busy, (void *)(intptr_t)i) == 0) created++;
    CHECK(created == NBUSY, "%d busy threads", created);
    while (__atomic_load_n(&busy_ready, __ATOMIC_ACQUIRE) < created) t_sleep_ms(1);

    CHECK(getrlimit(RLIMIT_SIGPENDING, &orig) == 0, "getrlimit(RLIMIT_SIGPENDING)");
    /* Other processes of this user (e.g. tests running in parallel) may hold many slots for a while; the
       limit becomes their usage + 16, so wait (up to 10 s) for a moment when that is well below what this
       process needs, or the kernel would not have to refuse any of our timers. */
    for (i = 0; i < 200; i++) {
        if (!read_sigq(&used0, &lim0) || used0 + HEADROOM + 10 < NBUSY) break;
        t_sleep_ms(50);
    }
    CHECK(read_sigq(&used0, &lim0), "SigQ of /proc/self/status: %ld in use of %ld (waited %d ms for a quiet moment)", used0, lim0, i * 50);
    low.rlim_cur = low.rlim_max = (rlim_t)(used0 + HEADROOM);
    CHECK(setrlimit(RLIMIT_SIGPENDING, &low) == 0, "RLIMIT_SIGPENDING lowered to %ld (soft and hard)", (long)low.rlim_cur);

    /* A session can come out empty-handed when other processes of this user take the free slots meanwhile:
       then stop and try again a little later (at most MAX_ATTEMPTS sessions). */
    for (attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        spprof_result r = spprof_start(&cfg);
        if (r != SPPROF_OK) { bad_start++; printf("  spprof_start: %s\n", spprof_last_error()); }
        need = t_count_tasks() - 1;  /* every thread but the collector wants a timer */
        t_sleep_ms(300);
        st1 = t_stats();
        timers1 = t_count_timers();
        busy_timers1 = count_tids_with_timer(tids, created);
        read_sigq(&used1, &lim1);
        t_sleep_ms(300);  /* more scans: each retries the threads without a timer once */
        st2 = t_stats();
        /* If we may raise the limit again (CAP_SYS_RESOURCE), the threads left without a timer get one at a
           later scan: the retry path recovers. Only in the last session: the limit stays raised. */
        timers2 = busy_timers2 = -1;
        raised = 0;
        if (busy_timers1 > 0 || attempt == MAX_ATTEMPTS) {
            raised = setrlimit(RLIMIT_SIGPENDING, &orig) == 0;
            for (i = 0; raised && i < 2000; i++) {
                timers2 = t_count_timers();
                if (timers2 >= need) break;
                t_sleep_ms(1);
            }
            if (raised) busy_timers2 = count_tids_with_timer(tids, created);
        }
        if (spprof_stop() != SPPROF_OK) { bad_stop++; printf("  spprof_stop: %s\n", spprof_last_error()); }
        if (busy_timers1 > 0 || attempt == MAX_ATTEMPTS) break;
        printf("  session %d: no busy thread got a timer (%d timers; this user had %ld slots in use): trying again\n", attempt, timers1, used1);
        t_sleep_ms(500);
    }
    CHECK(bad_start == 0, "spprof_start succeeds although timers cannot be created for every thread (%d sessions)", attempt);
    CHECK(bad_stop == 0, "spprof_stop");
    st = t_stats();  /* of the last session */
    printf("  limit %ld (user had %ld in use before, %ld while running); %d threads want a timer; %d timers (%d on busy threads)\n",
           (long)low.rlim_cur, used0, used1, need, timers1, busy_timers1);
    printf("  timer_create_failures %llu, retries %llu (%llu -> %llu between two looks 300 ms apart), threads sampled %llu, samples %llu\n",
           (unsigned long long)st.timer_create_failures, (unsigned long long)st.timer_create_retries,
           (unsigned long long)st1.timer_create_retries, (unsigned long long)st2.timer_create_retries,
           (unsigned long long)st.threads_sampled, (unsigned long long)st.samples_in_profile);

    /* Precondition: the limit is below what this process alone needs, so the kernel must refuse some. */
    if (need > (long)low.rlim_cur) {
        CHECK(st.timer_create_failures > 0, "timer_create_failures > 0 (%llu; limit %ld < %d timers needed)",
              (unsigned long long)st.timer_create_failures, (long)low.rlim_cur, need);
        CHECK(st.timer_create_retries > 0, "timer_create_retries > 0 (%llu)", (unsigned long long)st.timer_create_retries);
        CHECK(st.timer_create_failures <= (uint64_t)need, "each thread's failure is counted once (%llu <= %d)",
              (unsigned long long)st.timer_create_failures, need);
        CHECK(timers1 < need && timers1 <= (long)low.rlim_cur, "while limited, fewer timers than threads (%d < %d)", timers1, need);
        if (timers1 < need)
            CHECK(st2.timer_create_retries > st1.timer_create_retries, "threads without a timer are retried at later scans (%llu -> %llu)",
                  (unsigned long long)st1.timer_create_retries, (unsigned long long)st2.timer_create_retries);
    } else {
        printf("  SKIP failure checks: other processes of this user held %ld queued-signal slots, so the limit %ld is not below the %d this process needs\n",
               used0, (long)low.rlim_cur, need);
    }
    /* Precondition: at least one busy thread did get a timer (others may have taken every free slot). */
    if (busy_timers1 > 0)
        CHECK(st.threads_sampled >= 1, "threads that got a timer are sampled (threads_sampled %llu, %d busy threads had a timer)",
              (unsigned long long)st.threads_sampled, busy_timers1);
    else
        printf("  SKIP sampling check: no busy thread got a timer (%d timers; the user's other processes took the slots: %ld in use)\n", timers1, used1);
    if (raised)
        CHECK(timers2 >= need && busy_timers2 == created, "after the limit was raised again, later scans gave every thread a timer (%d timers, %d of %d busy threads)",
              timers2, busy_timers2, created);
    else
        printf("  SKIP recovery check: cannot raise RLIMIT_SIGPENDING back (no CAP_SYS_RESOURCE)\n");
    CHECK(t_count_timers() == 0, "no timer left after stop (%d)", t_count_timers());

    __atomic_store_n(&busy_stop, 1, __ATOMIC_RELEASE);
    for (i = 0; i < created; i++) pthread_join(th[i], NULL);
    CHECK(spprof_get_state() == SPPROF_STATE_STOPPED, "no crash; stopped");
    printf("total %.2f s\n", (double)(t_now_ns() - t0) / 1e9);
    return TEST_DONE();
}
